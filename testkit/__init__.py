"""The support layer shared by tests and benchmarks: stand-ins, hostile messages, server processes; never shipped,
never imported by shared/, backend/ or blender_addon/.

``tests/`` and ``bench/`` both import from here and never from each other (tests/test_boundaries.py checks it; the
import contracts in pyproject.toml keep the shipped packages off this one). Modules:

    hostile   hypothesis strategies for hostile protocol messages and the rules that judge the server's reply
    serve     a `joker-head serve` process, a free loopback endpoint, a client inbox, a tiny real filesystem
    load      the load run: many clients, jobs exactly once, round-robin start order (the benchmark and its test)
    soak      the memory soak: a flood of hostile messages from several processes while a real job runs
    audit     the static scan of the network-facing modules for unpickling, eval and unchecked loads
    tiny_prior        tiny random SD1.5 / ControlNet / Joker-checkpoint weights, saved in the real layouts
    reference_fields  analytic density fields (sphere, box, SDF grids) standing in for a distilled NeRF
    ict_head          the true ICT-FaceKit head as a density field, and samples of its skin
    export_helpers    GLB reading, watertightness, texture sampling, and the Khronos glTF validator (npm)
"""

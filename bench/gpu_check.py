"""The one-shot GPU check's Python parts (``bench/gpu_check.sh`` runs the CUDA tests first, then this).

    python bench/gpu_check.py                  # on CUDA: SD1.5-size random-weight prior in bf16 (< 8 min with the tests)
    python bench/gpu_check.py --cpu-dry-run    # the same code on the CPU: tiny prior, small sizes (the test suite)

Parts, one line of figures each:
  prior    the prior built at SD1.5 size with random weights (no download), written in the official checkpoint
           layout and loaded by the real loader; Stage-1 ms per view (encode, one CFG step, decode) cached and
           uncached at batch 8/16/32, one Stage-2 DDIM step per view, peak memory
  preview  a 25-step 512² ``preview`` through ``PreviewRunner.run`` (the job code), cold then warm, with a real
           portrait (scikit-image's astronaut) centre-framed (aligned framing needs mediapipe, too large to carry)
  turbo / fast / paper
           distillation with that prior for one target update and a few steps (counted by ``backend.costs``),
           extrapolated to a whole head: steps x s/step + every planned update's renders, one-step targets and
           further Stage-2 DDIM steps, from the measured per-unit costs
  oracle   the ``fast`` preset on the oracle head to its end, or to the time budget (then projected), PSNR and time
  costs    the measured per-unit costs in ``shared.config.distill.COSTS`` form, to paste there
Last line: ``gpu: preview_s=… turbo_head_s=… fast_head_s=… paper_head_s=… stage1_ms_per_view=… peak_gib=…``
(preview_s warm; stage1_ms_per_view cached at batch 8, the distillation's batch; peak_gib over the whole check).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backend import costs  # noqa: E402
from backend.distill import Schedule, distill  # noqa: E402
from backend.distill.schedule import whole_head_seconds  # noqa: E402
from backend.prior.guidance import PriorGuidance  # noqa: E402
from shared.config import DistillConfig, PriorConfig  # noqa: E402
from shared.conventions import reference_grid  # noqa: E402

PROMPT = "a man laughing, sticking the tongue out"
# What the dry run shrinks (the GPU run uses the presets as they are).
DRY_DISTILL = dict(n_az=3, n_el=2, batch_views=2, patch=16, resolutions=None, samples_per_ray=16, grid_levels=4,
                   grid_log2_table=10, grid_per_level_scale=1.6)
DRY_ORACLE = dict(preset="draft", n_az=3, n_el=2, levels=6, update_every=3, steps=24, batch_views=2, patch=8,
                  resolutions=(16,), milestones=(), samples_per_ray=24, grid_levels=4, grid_log2_table=10,
                  grid_per_level_scale=1.6)


class Check:
    """Sizes and device of one run of the check, and the figures it gathers."""

    def __init__(self, dry: bool, budget_s: float, out: Path) -> None:
        self.dry, self.out, self.started = dry, out, time.monotonic()
        self.device = "cpu" if dry else "cuda"
        self.precision = "fp32" if dry else "bf16"
        self.batches = (2, 4) if dry else (8, 16, 32)
        self.preview_steps = 2 if dry else 25
        self.distill_steps = 3 if dry else 20
        self.budget_s = budget_s
        self.figures: dict[str, float] = {}

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def peak(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device == "cuda" else float("nan")


def build_models(check: Check) -> Path:
    """Random prior modules (SD1.5 size on CUDA, tiny in the dry run) written in the joker layout."""
    from testkit.tiny_prior import save_joker_layout, tiny_modules

    t0 = time.monotonic()
    if check.dry:
        modules = tiny_modules(0)
    else:
        from prior_bench import sd15_modules

        with torch.device("cuda"):  # initialise 2.3 B parameters on the GPU: minutes on the CPU
            modules = sd15_modules()
    models = save_joker_layout(check.out / "models", modules, None if check.dry else torch.bfloat16)
    del modules
    if check.device == "cuda":
        torch.cuda.empty_cache()
    print(f"models: {'tiny' if check.dry else 'SD1.5-size'} random weights in the joker layout, "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    return models


def head_mesh() -> tuple[np.ndarray, np.ndarray, str]:
    """The posed ICT rig when present (JOKER_HEAD_RIG or the models dir), else a sphere of head size."""
    from shared.morphable import RigNotFound, load_default_rig

    try:
        rig = load_default_rig("ict")
        return rig.evaluate(expressions={"jawOpen": 0.3}), rig.normal_region_faces, "ict"
    except (RigNotFound, ValueError):
        return (*uv_sphere(0.09), "sphere")


def uv_sphere(radius: float, n_lat: int = 32, n_lon: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere (vertices float32 [V, 3] in metres, faces int64 [F, 3], outward winding)."""
    lat = np.linspace(0.0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(0.0, 2 * np.pi, n_lon, endpoint=False)
    ring = np.stack([np.sin(lat)[:, None] * np.cos(lon), np.cos(lat)[:, None] * np.ones_like(lon),
                     np.sin(lat)[:, None] * np.sin(lon)], -1).reshape(-1, 3)
    v = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]]) * radius
    idx = lambda i, j: 1 + i * n_lon + j % n_lon  # noqa: E731
    faces = [(0, idx(0, j + 1), idx(0, j)) for j in range(n_lon)]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            faces += [(idx(i, j), idx(i, j + 1), idx(i + 1, j)), (idx(i, j + 1), idx(i + 1, j + 1), idx(i + 1, j))]
    last = len(v) - 1
    faces += [(last, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)) for j in range(n_lon)]
    return v.astype(np.float32), np.asarray(faces, np.int64)


def part_preview(check: Check, models: Path, mesh) -> tuple[object, float]:
    """A preview through the job code twice (the first loads the prior); returns the runner's prior and warm s."""
    from backend.jobs.preview import PreviewRunner
    from backend.runner import JobContext
    from shared.jobs import PreviewParams
    from shared.png import encode_png
    from shared.protocol import Png

    runner = PreviewRunner(models_dir=models)
    config = PriorConfig(mode="joker", precision=check.precision)
    # "centre": the aligned framing needs mediapipe's face mesh, a wheel too large to carry (and CPU work, not GPU)
    params = PreviewParams(prompt=PROMPT, steps=check.preview_steps, prior=config, seed=1,
                           reference_framing="centre")
    from skimage.data import astronaut  # a real portrait shipped inside scikit-image

    inputs = {"vertices": mesh[0], "faces": mesh[1], "reference": Png(encode_png(astronaut()))}
    times = []
    for i in range(2):
        ctx = JobContext(f"gpu-check-preview-{i}", check.out / f"preview{i}", device=check.device)
        t0 = time.monotonic()
        result = runner.run(params, inputs, ctx)
        check.sync()
        times.append(time.monotonic() - t0)
    prior = runner.prior(config, check.device)
    image = next(a for a in result.artifacts if a.name == "image.png")
    print(f"preview: {check.preview_steps} steps {prior.resolution}px {prior.dtype} ({mesh[2]} mesh): "
          f"cold {times[0]:.2f} s (prior load included), warm {times[1]:.2f} s, image.png {len(image.data)} bytes",
          flush=True)
    return prior, times[1]


def part_prior(check: Check, prior) -> dict[str, float]:
    """Stage-1 ms per view at each batch, cached and uncached; one Stage-2 DDIM step per view; peak memory."""
    from prior_bench import per_view_ms

    if check.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out: dict[str, float] = {}
    for b in check.batches:
        out[f"cached_b{b}"] = per_view_ms(prior, views=2 * b, batch=b, cache=True, updates=1)
        out[f"uncached_b{b}"] = per_view_ms(prior, views=2 * b, batch=b, cache=False, updates=1)
    prior.reference_cache = True
    out["ddim_ms"] = ddim_step_ms_per_view(check, prior, check.batches[0])
    out["peak_gib"] = check.peak()
    cached = " ".join(f"b{b} {out[f'cached_b{b}']:.1f}" for b in check.batches)
    uncached = " ".join(f"b{b} {out[f'uncached_b{b}']:.1f}" for b in check.batches)
    print(f"prior: {prior.resolution}px {prior.dtype}: stage1 ms/view cached {cached}; uncached {uncached}; "
          f"stage2 DDIM step {out['ddim_ms']:.1f} ms/view (batch {check.batches[0]}); peak {out['peak_gib']:.2f} GiB",
          flush=True)
    return out


def ddim_step_ms_per_view(check: Check, prior, batch: int, repeats: int = 3) -> float:
    """One guided DDIM step (CFG ControlNet + UNet, reference from the cache) per view at ``batch`` views."""
    g = torch.Generator().manual_seed(0)
    text = prior.text_pair(PROMPT, "", 19.0)
    reference = prior.prepare_reference(torch.rand(1, 3, prior.resolution, prior.resolution, generator=g))
    control = prior.prepare_control(torch.rand(batch, 3, prior.resolution, prior.resolution, generator=g) * 2 - 1)
    side = prior.resolution // prior.vae_scale
    x = torch.randn(batch, 4, side, side, generator=g).to(prior.device, prior.dtype)
    prior.truncated_ddim(x, 400, 1, text, control, reference, 19.0)  # warm-up, and the level's reference cache
    check.sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        prior.truncated_ddim(x, 400, 1, text, control, reference, 19.0)
    check.sync()
    return (time.perf_counter() - t0) * 1000 / (repeats * batch)


def part_distill(check: Check, prior, mesh, preset: str, ddim_view_s: float) -> dict[str, float]:
    """One target update and a few steps of ``preset`` with the prior, extrapolated to a whole head."""
    from backend.distill.lpips import LPIPS
    from backend.render import render_normal_maps

    cfg = DistillConfig(preset=preset)
    if check.dry:
        r0 = cfg.resolved()
        cfg = DistillConfig(preset=preset, **{**DRY_DISTILL, "resolutions": tuple(16 + 4 * i for i in
                                                                                  range(len(r0.resolutions)))})
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    maps = render_normal_maps(torch.from_numpy(np.asarray(mesh[0], np.float32)), torch.from_numpy(mesh[1]),
                              [c.scaled(prior.resolution) for c in cams], device=check.device).cpu().numpy()
    portrait = torch.rand(1, 3, prior.resolution, prior.resolution, generator=torch.Generator().manual_seed(3))
    guidance = PriorGuidance(prior, maps, portrait, PROMPT, cfg=19.0)
    lpips = LPIPS() if r.lpips_weight > 0 else None  # random VGG weights: the cost of LPIPS, not its values
    if check.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = distill(guidance, cams, cfg, device=check.device, lpips=lpips, seed=0, max_steps=check.distill_steps)
    c, s = result.costs.counts, result.costs.seconds
    units = unit_costs(c, s, ddim_view_s)
    head_s = whole_head_seconds(cfg, units)
    planned = Schedule(cfg).planned_prior_evals(len(cams))["total"]
    peak = check.peak()
    print(f"{preset}: {len(cams)} views, counted {c[costs.TARGET_UPDATES]} update(s) + {c[costs.NERF_STEPS]} steps: "
          f"{c.get(costs.PRIOR_EVALS, 0)} prior evals, {c.get(costs.UNET, 0)} UNet / {c.get(costs.CONTROLNET, 0)} "
          f"ControlNet / {c.get(costs.REF_UNET, 0)} ref-UNet samples, {c.get(costs.VAE_ENCODES, 0)} encodes, "
          f"{c.get(costs.RAY_SAMPLES, 0) / 1e6:.2f}M samples; {units['step_s'] * 1000:.0f} ms/step, "
          f"{units['target_view_s'] * 1000:.1f} ms/target view; whole head: {planned} prior evals, {r.steps} steps "
          f"-> {head_s:.0f} s extrapolated; peak {peak:.2f} GiB", flush=True)
    return {"head_s": head_s, "peak_gib": peak, **units}


def unit_costs(c: dict[str, int], s: dict[str, float], ddim_view_s: float) -> dict[str, float]:
    """Per-unit costs from one run's counters and stage times (seconds per unit)."""
    train_samples = max(c.get(costs.RAY_SAMPLES, 0) - c.get(costs.TARGET_RAY_SAMPLES, 0), 1)
    renders = s.get("target_renders", 0.0)
    return {"step_s": s.get("optimisation", 0.0) / max(c.get(costs.NERF_STEPS, 0), 1),
            "render_ray_s": renders / max(c.get(costs.TARGET_RAYS, 0), 1),
            "target_view_s": (s.get("targets", 0.0) - renders) / max(c.get(costs.TARGET_VIEWS, 0), 1),
            "ddim_view_s": ddim_view_s,
            "train_msample_s": s.get("optimisation", 0.0) / (train_samples / 1e6),
            "render_msample_s": renders / (max(c.get(costs.TARGET_RAY_SAMPLES, 0), 1) / 1e6)}




def part_oracle(check: Check) -> Optional[dict[str, float]]:
    """``fast`` on the oracle head to its end, or to the time left (then the rest is projected from s/step)."""
    from backend.distill.oracle import OracleGuidance, default_oracle_head
    from distill_oracle import held_out
    from shared.morphable import RigNotFound

    try:
        head = default_oracle_head({"mouthSmile_L": 0.6, "mouthSmile_R": 0.6})
    except (RigNotFound, ValueError) as e:
        print(f"oracle: skipped, no ICT rig ({str(e)[:120]}); carry it and set JOKER_HEAD_RIG", flush=True)
        return None
    cfg = DistillConfig(**DRY_ORACLE) if check.dry else DistillConfig(preset="fast")
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    guidance = OracleGuidance(head, cams, r.resolutions[-1])
    work = check.out / "oracle"
    probe = min(r.steps, 8 if check.dry else 100)
    first = distill(guidance, cams, cfg, device=check.device, seed=0, workdir=work, max_steps=probe)
    per_step = first.seconds / probe
    affordable = int(max(0.0, check.left_s() - 30.0) / per_step)  # 30 s for the held-out renders and the summary
    rest = min(r.steps - probe, affordable if not check.dry else r.steps)
    result = first if rest <= 0 else distill(guidance, cams, cfg, device=check.device, seed=0, workdir=work,
                                             resume=True, max_steps=rest)
    seconds = first.seconds + (result.seconds if result is not first else 0.0)
    p, ssim = held_out(result, head, r.resolutions[-1], r.samples_per_ray)
    done = result.steps
    projected = seconds / done * r.steps
    how = "to its end" if done == r.steps else f"stopped at the time budget, whole run projected {projected:.0f} s"
    print(f"oracle: fast (L1 only: no LPIPS weights here) {done}/{r.steps} steps {how}: psnr {p:.2f} dB, "
          f"ssim {ssim:.3f}, {seconds:.1f} s, {done / seconds:.2f} steps/s", flush=True)
    return {"psnr": p, "seconds": seconds, "projected_s": projected}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny prior, small sizes, on the CPU")
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall seconds for these parts (the oracle run "
                    "takes what is left)")
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (models, checkpoints); a temp dir")
    args = ap.parse_args()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; run with --cpu-dry-run on a machine without one")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.out) as tmp:
        run(Check(args.cpu_dry_run, args.budget_s, Path(tmp)))


def run(check: Check) -> None:
    if check.dry:
        torch.set_num_threads(1)
    print(f"gpu_check: {'CPU dry run' if check.dry else torch.cuda.get_device_name()}, torch {torch.__version__}",
          flush=True)
    models = build_models(check)
    mesh = head_mesh()
    prior, preview_s = part_preview(check, models, mesh)
    p = part_prior(check, prior)
    peaks = [p["peak_gib"]]
    heads, last_units = {}, {}
    for preset in ("turbo", "fast", "paper"):
        d = part_distill(check, prior, mesh, preset, p["ddim_ms"] / 1000)
        heads[preset], last_units = d["head_s"], d
        peaks.append(d["peak_gib"])
    part_oracle(check)
    measured = {k: float(f"{last_units[k]:.4g}") for k in ("train_msample_s", "render_msample_s", "target_view_s",
                                                              "ddim_view_s")}
    print(f"costs: measured on {'the CPU (dry run)' if check.dry else torch.cuda.get_device_name()} (paper run; "
          f"COSTS['cuda'] in shared/config/distill.py): {json.dumps({**measured, 'source': 'measured'})}", flush=True)
    peak = max((x for x in peaks if not math.isnan(x)), default=float("nan"))
    print(f"gpu: preview_s={preview_s:.2f} turbo_head_s={heads['turbo']:.0f} fast_head_s={heads['fast']:.0f} "
          f"paper_head_s={heads['paper']:.0f} stage1_ms_per_view={p[f'cached_b{check.batches[0]}']:.1f} "
          f"peak_gib={peak:.2f}", flush=True)


if __name__ == "__main__":
    main()

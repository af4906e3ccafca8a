#!/usr/bin/env bash
# One-shot GPU check: on a bare H100/H200 machine with PyTorch + CUDA, install the carried wheelhouse, run the CUDA
# tests, then bench/gpu_check.py (SD1.5-size random-weight prior, a 25-step 512² preview through the job code,
# turbo/fast/paper extrapolated by the counters, the fast oracle run). Under 8 minutes; one line of figures per part,
# the last one `gpu: preview_s=… turbo_head_s=… fast_head_s=… paper_head_s=… stage1_ms_per_view=… peak_gib=…`.
#
#   bench/gpu_wheels.sh                 # here, once, with internet: wheels + the ICT rig into .whl/ (git-ignored)
#   bench/gpu_check.sh                  # there (device tool: carry [".whl"], timeout_s 600)
#   bench/gpu_check.sh --cpu-dry-run    # anywhere: the same code with a tiny prior on the CPU (the test suite runs it)
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (seconds for the Python parts, default 400).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=""
[ "${1:-}" = "--cpu-dry-run" ] && DRY="--cpu-dry-run"
t0=$(date +%s)

if [ -z "$DRY" ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-check-site .whl/*.whl || { echo "wheels: install failed"; exit 1; }
        export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
        echo "wheels: installed $(ls .whl/*.whl | wc -l) from .whl/ in $(( $(date +%s) - t0 )) s"
    else
        echo "wheels: none in .whl/ (run bench/gpu_wheels.sh here first); using what is installed"
    fi
    rig=.whl/shared-data/models/ict-facekit/ict_facekit_f16.npz
    if [ -f "$rig" ]; then
        export JOKER_SHARED_DATA="$PWD/.whl/shared-data" JOKER_HEAD_RIG="$PWD/$rig"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# Part 1: the CUDA tests (tinycudann parity where it imports, the CUDA rasterizer). -p no:cacheprovider: no writes.
tests_log=$(mktemp)
timeout 180 "$PY" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_field.py tests/test_raster.py \
    >"$tests_log" 2>&1
rc=$?
summary=$(grep -E "passed|failed|skipped|error|deselected" "$tests_log" | tail -1)
echo "tests: -m gpu exit $rc: ${summary:-no summary}"
grep -E "^(SKIPPED|FAILED|ERROR)" "$tests_log" | head -5 | sed 's/^/tests:   /'
[ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && tail -30 "$tests_log" | sed 's/^/tests:   /'
rm -f "$tests_log"

# Parts 2-6: prior, preview, turbo/fast/paper, oracle, costs, and the last line.
left=$(( ${GPU_CHECK_BUDGET_S:-400} - ($(date +%s) - t0) ))
"$PY" bench/gpu_check.py $DRY --budget-s "$left"

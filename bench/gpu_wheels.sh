#!/usr/bin/env bash
# The wheelhouse bench/gpu_check.sh installs on a bare GPU machine (PyTorch + CUDA, Python 3.12, no registry): the
# packages its image lacks (docs/DISTILLATION.md, "GPU check"), pinned to the versions the venv runs, and the ICT rig
# the oracle and the CUDA rasterizer test use. Written to .whl/ (git-ignored); about 25 MiB of the 64 MiB carried.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Not in the GPU image: diffusers (the prior), importlib_metadata (diffusers' import), pyzmq (the protocol's tests).
# transformers, huggingface_hub, safetensors, accelerate, Pillow, scipy, pytest(-timeout) are there already.
WHEELS=${GPU_WHEELS:-"diffusers==0.42.1 importlib_metadata==10.2.0 pyzmq==27.3.0"}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
rig_src=${JOKER_SHARED_DATA:-../shared}/models/ict-facekit/ict_facekit_f16.npz
mkdir -p .whl/shared-data/models/ict-facekit
cp "$rig_src" .whl/shared-data/models/ict-facekit/
du -sh .whl
ls .whl

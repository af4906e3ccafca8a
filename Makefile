# `make test` is self-contained on a fresh machine: venv, CPU torch (only when none is present), project, pytest.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0
# The newest Blender: the Blender tests run a second time under it (the add-on supports 4.2 LTS onwards).
BPY_NEXT ?= bpy==5.0.*
BVENV   := .venv-blender-next
BSTAMP  := $(BVENV)/.installed

# The Khronos glTF validator (npm), run on exported GLBs by the export tests (tests/export_helpers.validate_glb).
GLTFV   := build/node/node_modules/gltf-validator/package.json
GLTFV_PKG ?= gltf-validator@2.0.0-dev.3.10

.PHONY: test install demo bench addon clean lint gpu-wheels gpu-check-dry

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

$(STAMP): $(VPY) pyproject.toml
	@# Install torch first so that `torch>=2.1` in the backend extra pulls nothing more (no CUDA wheels).
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q -e ".[backend,blender,dev]"
	touch $(STAMP)

$(BSTAMP):
	@# Only what the bpy test scripts import: bpy (with its numpy), trimesh and Pillow for stand-in results.
	$(PY) -m venv $(BVENV)
	$(BVENV)/bin/python -m pip install -q "$(BPY_NEXT)" "trimesh>=4.0" "Pillow>=10"
	touch $(BSTAMP)

$(GLTFV):
	npm install --no-audit --no-fund --prefix build/node $(GLTFV_PKG)

install: $(STAMP)

# ruff (a small explicit rule set), mypy on shared/ and backend/, and the import contracts (no cycles; shared imports
# neither torch nor bpy nor the backend; the add-on never imports the backend; ML packages never import the job
# service). All configured in pyproject.toml; the tools come from the dev extra.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: $(STAMP) $(BSTAMP) $(GLTFV)
	$(VPY) -m pytest -q $(PYTEST_ARGS)
	JOKER_BLENDER_PYTHON=$(BVENV)/bin/python $(VPY) -m pytest -q -m bpy $(PYTEST_ARGS)

DEMO_OUT ?= demo-out

# The main job on the bundled head (the oracle prior and the draft preset when no weights are present), then the GLB
# imported into a .blend and rendered with Cycles beside it.
demo: $(STAMP)
	$(VPY) -m backend.cli demo --out $(DEMO_OUT)
	$(VPY) blender_addon/demo_scene.py $(DEMO_OUT)/head.glb --res 512 --samples 32

bench: $(STAMP)
	for b in bench/*.py; do $(VPY) $$b --quick || exit 1; done

# The one-shot GPU check (docs/DISTILLATION.md, "GPU check"): the wheelhouse it carries, and its CPU dry run.
gpu-wheels:
	PYTHON=$(VPY) bench/gpu_wheels.sh

gpu-check-dry: $(STAMP)
	PYTHON=$(VPY) bench/gpu_check.sh --cpu-dry-run

addon: $(STAMP)
	$(VPY) build_addon.py --output dist/joker_head.zip

clean:
	rm -rf $(VENV) $(BVENV) build dist .pytest_cache

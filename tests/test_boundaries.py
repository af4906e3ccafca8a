"""The package boundaries the design fixes: shared/ imports without torch or bpy; blender_addon never imports the
backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, shared
for m in pkgutil.walk_packages(shared.__path__, 'shared.'):
    importlib.import_module(m.name)
print('ok', len(sys.modules))
"""


def test_shared_imports_with_torch_bpy_and_backend_blocked():
    code = BLOCKER.format(blocked={"torch", "bpy", "backend", "blender_addon", "diffusers", "PIL"})
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_shared_uses_relative_imports_so_the_addon_can_vendor_it():
    import re

    offenders = [str(p) for p in (REPO / "shared").rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+shared\b", p.read_text(), re.M)]
    assert not offenders, f"use relative imports inside shared/: {offenders}"

"""The package boundaries the design fixes: shared/ imports without torch or bpy; blender_addon never imports the
backend; tests/ and bench/ share their support through testkit/ and never import each other; nothing of the three
is shipped."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
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


# --- tests, benchmarks and their support layer -------------------------------------------------------------------------

# Imports between tests/ and bench/ that other open work still has to move into testkit/ (file -> module). Each entry
# must still be true, so the list shrinks as they go and cannot hide a new one.
PENDING: set[tuple[str, str]] = set()  # cross-imports allowed while a move is under way (none now)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function-local imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def owned_by(module: str, folder: str) -> bool:
    """Whether ``module`` is code of ``folder``: ``folder.x`` as a namespace package, or ``x`` for a file ``folder/x.py``
    imported with the folder put on sys.path (how bench scripts import each other)."""
    top = module.split(".")[0]
    return top == folder or (REPO / folder / f"{top}.py").is_file()


def cross_imports() -> set[tuple[str, str]]:
    """(file, module) for every import of bench/ from tests/ or testkit/, and of tests/ from bench/ or testkit/."""
    rules = {"tests": ("bench",), "bench": ("tests",), "testkit": ("tests", "bench")}
    found = set()
    for src, forbidden in rules.items():
        for path in sorted((REPO / src).rglob("*.py")):
            for module in imported_modules(path):
                if any(owned_by(module, folder) for folder in forbidden):
                    found.add((str(path.relative_to(REPO)), module))
    return found


def test_tests_and_benchmarks_never_import_each_other():
    found = cross_imports()
    new = found - PENDING
    assert not new, (f"tests/ and bench/ must not import each other (nor testkit/ either of them): {sorted(new)}; "
                     "move what both need into testkit/ and import it from there")
    gone = PENDING - found
    assert not gone, f"these pending imports are gone: remove them from PENDING in {__file__}: {sorted(gone)}"


def test_the_boundary_check_sees_namespace_and_sys_path_imports(tmp_path):
    """The scan is not blind: both ways a file can reach into bench/ are found, including inside a function."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom bench.reliability import main\n\ndef f():\n    import prior_bench\n")
    modules = imported_modules(probe)
    assert {m for m in modules if owned_by(m, "bench")} == {"bench.reliability", "prior_bench"}
    assert not owned_by("os", "bench") and owned_by("tests.support", "tests") and owned_by("support", "tests")


def test_testkit_tests_and_bench_are_not_shipped():
    from setuptools import find_namespace_packages

    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_namespace_packages(str(REPO), include=find.get("include", ("*",)), exclude=find.get("exclude", ()))
    tops = {p.split(".")[0] for p in shipped}
    assert {"shared", "backend", "blender_addon"} <= tops, tops
    assert not tops & {"testkit", "tests", "bench"}, f"packages.find in pyproject.toml ships {sorted(tops)}"

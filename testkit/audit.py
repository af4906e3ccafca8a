"""The static security scan of the network-facing modules: nothing that deserializes into code, no eval/exec, and
np.load/torch.load only with their safe flag. Reported by bench/reliability.py and asserted by the tests."""

from __future__ import annotations

import ast

from testkit.serve import REPO

NETWORK_MODULES = ["shared/protocol.py", "shared/client.py", "shared/png.py", "shared/spec.py", "backend/server.py",
                   "backend/jobstore.py", "backend/fairqueue.py", "backend/commands/server_cmds.py"]
UNSAFE_MODULES = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "yaml", "joblib"}


def unsafe_calls() -> list[str]:
    """Deserializers that run code, eval/exec, and np.load/torch.load without their safe flag, in network code."""
    found = []
    for rel in NETWORK_MODULES:
        for node in ast.walk(ast.parse((REPO / rel).read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [f"{rel}:{node.lineno} import {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
            elif isinstance(node, ast.Call):
                func, kw = node.func, {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                name = getattr(func, "id", None) or getattr(func, "attr", None)
                owner = getattr(getattr(func, "value", None), "id", None)
                if name in ("eval", "exec", "__import__") and owner is None:
                    found.append(f"{rel}:{node.lineno} {name}()")
                if name == "load" and owner in ("np", "numpy") and kw.get("allow_pickle") is not False:
                    found.append(f"{rel}:{node.lineno} np.load without allow_pickle=False")
                if name == "load" and owner == "torch" and kw.get("weights_only") is not True:
                    found.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
    return found

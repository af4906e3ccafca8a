"""Joker Head: a Blender 4.2+ extension that poses a morphable head, sends it with a prompt and a reference portrait
to a joker-head backend, streams progress and previews back, and imports the textured result for Cycles.

The add-on is UI only (docs/ADDON.md): operators build a request from the vendored ``shared`` package
(``.shared``, placed here by build_addon.py) and hand it to one ``shared.client.Client``, whose replies are drained
on the main thread by :func:`net.pump` — called by ``bpy.app.timers`` in Blender and directly by tests.
"""

from __future__ import annotations

import importlib

# Order matters: properties before the operators and panels that use them.
_MODULE_NAMES = ("prefs", "props", "operators", "ui", "net", "live")


def _modules():
    return [importlib.import_module(f".{name}", __package__) for name in _MODULE_NAMES]


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()

"""The live normal-map preview: exactly what the prior sees, rendered by the shared reference renderer.

The posed rig (the same vertices and normal-map faces a request sends) is rendered from the panel's view with
``shared.conventions.orbit_camera`` at ``normal_map_res`` into the Image "Joker Normal Map". Rendering takes a
fraction of a second, so it never runs inside a slider drag: a depsgraph handler marks the rig dirty and a timer
re-renders once the rig has been still for ``SETTLE_S``.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import images, rig
from .shared.conventions import orbit_camera
from .shared.raster import render_normal_map as shared_render

SETTLE_S = 0.3
_dirty_since: Optional[float] = None


def normal_map(scene: bpy.types.Scene, depsgraph: Optional[bpy.types.Depsgraph] = None) -> np.ndarray:
    """uint8 [H, W, 3]: the rig's normal map from the panel's view (az, el) at the preview size."""
    state = scene.joker_head
    obj = state.rig
    camera = orbit_camera(state.view_az, state.view_el, res=state.normal_map_res)
    return shared_render(rig.posed_vertices(obj, depsgraph), rig.model_for(obj).normal_region_faces, camera)


def render_normal_map(scene: bpy.types.Scene, depsgraph: Optional[bpy.types.Depsgraph] = None) -> bpy.types.Image:
    return images.write_image(images.NORMAL_MAP_IMAGE, normal_map(scene, depsgraph))


@persistent
def _on_depsgraph(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> None:
    global _dirty_since
    state = getattr(scene, "joker_head", None)
    if state is None or state.rig is None or not state.auto_normal_map:
        return
    if any(u.id.original in (state.rig, state.rig.data, getattr(state.rig.data, "shape_keys", None))
           for u in depsgraph.updates):
        _dirty_since = time.monotonic()
        if not bpy.app.timers.is_registered(_settle):
            bpy.app.timers.register(_settle, first_interval=SETTLE_S)


def _settle() -> Optional[float]:
    global _dirty_since
    if _dirty_since is None:
        return None
    wait = SETTLE_S - (time.monotonic() - _dirty_since)
    if wait > 0:
        return wait
    _dirty_since = None
    scene = bpy.context.scene
    if scene is not None and scene.joker_head.rig is not None:
        try:
            render_normal_map(scene)
        except Exception as e:  # a preview must never break editing
            scene.joker_head.error, scene.joker_head.hint = f"normal-map preview failed: {e}", ""
    return None


def register() -> None:
    bpy.app.handlers.depsgraph_update_post.append(_on_depsgraph)


def unregister() -> None:
    if _on_depsgraph in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.remove(_on_depsgraph)
    if bpy.app.timers.is_registered(_settle):
        bpy.app.timers.unregister(_settle)

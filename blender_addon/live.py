"""The live normal-map preview: exactly what the prior sees, rendered by the shared reference renderer.

The posed rig (the same vertices and normal-map faces a request sends) is rendered from the panel's view
(``shared.conventions.orbit_camera`` at ``normal_map_res``) framed on the rig's 68 landmarks as the backend's
``preview`` and ``generate`` frame their views (``shared.framing.frame_rig_views``; the centred camera for rigs
without ``landmarks68``) into the Image "Joker Normal Map". The reference
renderer takes about two seconds, so it never runs on Blender's main thread during editing:

    depsgraph handler   the rig changed -> remember when
    _settle (timer)     the rig has been still for SETTLE_S -> snapshot vertices on the main thread, start a render
                        in a worker thread (numpy only: no bpy, no sockets there)
    _collect (timer)    the render finished -> write the Image on the main thread; render again if the rig
                        changed meanwhile
:func:`render_normal_map` is the synchronous path (tests, scripts).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import images, rig
from .shared.conventions import Camera, orbit_camera
from .shared.framing import frame_rig_views
from .shared.raster import render_normal_map as shared_render

SETTLE_S = 0.3
_dirty_since: Optional[float] = None
_executor: Optional[ThreadPoolExecutor] = None
_future: Optional[Future] = None


def snapshot(scene: bpy.types.Scene, depsgraph: Optional[bpy.types.Depsgraph] = None
             ) -> tuple[np.ndarray, np.ndarray, Camera]:
    """What a render needs, read from bpy on the main thread: vertices float32 [V, 3] and faces [F, 3] exactly as a
    request sends them, and the panel's camera framed on the posed rig's landmarks as the backend frames it."""
    state = scene.joker_head
    obj = state.rig
    model = rig.model_for(obj)
    vertices = rig.posed_vertices(obj, depsgraph)
    centred = orbit_camera(state.view_az, state.view_el, res=state.normal_map_res)
    (camera,), _ = frame_rig_views([centred], model, vertices)
    return vertices, model.normal_region_faces, camera


def normal_map(scene: bpy.types.Scene, depsgraph: Optional[bpy.types.Depsgraph] = None) -> np.ndarray:
    """uint8 [H, W, 3]: the rig's normal map from the panel's view (az, el) at the preview size."""
    return shared_render(*snapshot(scene, depsgraph))


def render_normal_map(scene: bpy.types.Scene, depsgraph: Optional[bpy.types.Depsgraph] = None) -> bpy.types.Image:
    """Render now, on this thread, into the Image."""
    return images.write_image(images.NORMAL_MAP_IMAGE, normal_map(scene, depsgraph))


def start_render(scene: bpy.types.Scene) -> bool:
    """Start a background render of the current rig; False when one is already running."""
    global _executor, _future
    if _future is not None and not _future.done():
        return False
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="joker-normal-map")
    _future = _executor.submit(shared_render, *snapshot(scene))
    if not bpy.app.timers.is_registered(_collect):
        bpy.app.timers.register(_collect, first_interval=0.1)
    return True


def collect(wait: bool = False) -> Optional[bpy.types.Image]:
    """Write a finished background render into the Image (main thread). ``wait``: block until it is done."""
    global _future
    if _future is None or not (wait or _future.done()):
        return None
    future, _future = _future, None
    try:
        return images.write_image(images.NORMAL_MAP_IMAGE, future.result())
    except Exception as e:  # a preview must never break editing
        for scene in bpy.data.scenes:
            scene.joker_head.error, scene.joker_head.hint = f"normal-map preview failed: {e}", ""
        return None


def _collect() -> Optional[float]:
    if _future is not None and not _future.done():
        return 0.1
    collect()
    if _dirty_since is not None and not bpy.app.timers.is_registered(_settle):
        bpy.app.timers.register(_settle, first_interval=SETTLE_S)
    return None


def _settle() -> Optional[float]:
    global _dirty_since
    if _dirty_since is None:
        return None
    wait = SETTLE_S - (time.monotonic() - _dirty_since)
    if wait > 0:
        return wait
    if _future is not None and not _future.done():
        return None  # _collect re-arms this timer when the running render ends
    scene = bpy.context.scene
    _dirty_since = None
    if scene is not None and scene.joker_head.rig is not None:
        try:
            start_render(scene)
        except Exception as e:
            scene.joker_head.error, scene.joker_head.hint = f"normal-map preview failed: {e}", ""
    return None


@persistent
def _on_depsgraph(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> None:
    global _dirty_since
    state = getattr(scene, "joker_head", None)
    if state is None or state.rig is None or not state.auto_normal_map:
        return
    watched = (state.rig, state.rig.data, getattr(state.rig.data, "shape_keys", None))
    if any(u.id.original in watched for u in depsgraph.updates):
        _dirty_since = time.monotonic()
        if not bpy.app.timers.is_registered(_settle):
            bpy.app.timers.register(_settle, first_interval=SETTLE_S)


def register() -> None:
    bpy.app.handlers.depsgraph_update_post.append(_on_depsgraph)


def unregister() -> None:
    global _executor
    if _on_depsgraph in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.remove(_on_depsgraph)
    for timer in (_settle, _collect):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    if _executor is not None:
        _executor.shutdown(wait=True, cancel_futures=True)
        _executor = None

"""A shaded "photo" of a posed rig head, for heads whose identity, expression and pose are known.

Used to build the mesh-to-rig correspondence (:mod:`backend.fit.correspondence`), by the tests and by
bench/fit_bench.py: the detector and the landmark model must see a face, so the render has skin, sclera, irises,
painted brows and lips, Lambertian light from the upper left and a grey background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from shared.conventions import Camera, crop_camera
from shared.morphable import MorphableModel

_HIDDEN = ("M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion", "M_EyeLashes")  # transparent layers in ICT
_COLOURS = {"M_Face": (0.78, 0.58, 0.47), "M_BackHead": (0.78, 0.58, 0.47), "M_GumsTongue": (0.45, 0.12, 0.12),
            "M_Teeth": (0.85, 0.83, 0.78), "M_ScleraLeft": (0.88, 0.86, 0.84), "M_ScleraRight": (0.88, 0.86, 0.84),
            "M_IrisLeft": (0.18, 0.12, 0.08), "M_IrisRight": (0.18, 0.12, 0.08)}
_BROW, _LIPS = (0.22, 0.15, 0.10), (0.62, 0.30, 0.30)
_LIGHT = np.array([-0.35, 0.45, 0.82])  # head frame: from the upper left of the picture, mostly frontal
_BACKGROUND = 0.55


@dataclass
class Headshot:
    """image uint8 [H, W, 3]; vertices float32 [V, 3] posed head frame; face_idx int64 [H, W] (-1 background)
    into ``faces``; bary float32 [H, W, 3]; faces int64 [F, 3] the rendered triangles; camera."""

    image: np.ndarray
    vertices: np.ndarray
    face_idx: np.ndarray
    bary: np.ndarray
    faces: np.ndarray
    camera: Camera


def _in_polygon(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """bool [P]: points [P, 2] inside the closed polygon [Q, 2] (even-odd rule)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    crosses = (a[None, :, 1] > p[:, None, 1]) != (b[None, :, 1] > p[:, None, 1])
    t = (p[:, None, 1] - a[None, :, 1]) / np.where(b[:, 1] == a[:, 1], 1e-12, b[:, 1] - a[:, 1])[None]
    x = a[None, :, 0] + t * (b[None, :, 0] - a[None, :, 0])
    return ((crosses & (p[:, None, 0] < x)).sum(axis=1) % 2) == 1


def polyline_distance(points: np.ndarray, polyline: np.ndarray, samples: int = 6) -> np.ndarray:
    """Distance float [P] from each point [P, 3] to a polyline [Q, 3], sampled ``samples`` times per segment
    (both ends included): the brows painted here, the skin the shading fit leaves out (backend.fit.photometric)."""
    seg = np.linspace(0.0, 1.0, samples)[:, None, None]
    line = (polyline[:-1][None] * (1 - seg) + polyline[1:][None] * seg).reshape(-1, 3)
    return np.linalg.norm(points[:, None] - line[None], axis=-1).min(axis=1)


def _vertex_colours(rig: MorphableModel, shape: np.ndarray) -> np.ndarray:
    """float32 [V, 3] albedo: per material, with brows and lips painted near their 68-landmark polylines."""
    names = [str(n) for n in rig.arrays["material_names"]]
    colours = np.full((rig.n_vertices, 3), _COLOURS["M_Face"], dtype=np.float32)
    fm = np.asarray(rig.arrays["face_material"])
    for i, name in enumerate(names):
        if name in _COLOURS and name not in ("M_Face", "M_BackHead"):
            idx = np.unique(rig.faces[fm == i])
            colours[idx] = _COLOURS[name]
            if name.startswith("M_Sclera"):  # ICT's eyeball covers the iris: paint iris and pupil around its front
                d = np.linalg.norm(shape[idx] - shape[idx[np.argmax(shape[idx, 2])]], axis=1)
                colours[idx[d < 0.0058]] = _COLOURS["M_IrisLeft"]
                colours[idx[d < 0.0025]] = (0.02, 0.02, 0.02)
    if "landmarks68" in rig.arrays:
        lm = shape[np.asarray(rig.arrays["landmarks68"])]
        skin = np.isin(np.arange(rig.n_vertices), np.unique(rig.faces[np.isin(fm, [names.index("M_Face")])]))
        for pts, colour, radius in ((lm[17:22], _BROW, 0.006), (lm[22:27], _BROW, 0.006),
                                    (lm[48:60], _LIPS, 0.0)):
            if radius == 0.0:  # lips: inside the outer lip polygon, seen from the front
                inside = _in_polygon(shape[:, :2], pts[:, :2]) & (shape[:, 2] > pts[:, 2].min() - 0.01)
            else:
                inside = polyline_distance(shape, pts, samples=8) < radius
            colours[inside & skin] = colour
    return colours


def render_headshot(rig: MorphableModel, identity: Optional[Sequence[float]] = None,
                    expressions: Optional[Mapping[str, float]] = None, pose: Sequence[float] = (0.0, 0.0, 0.0),
                    translation: Sequence[float] = (0.0, 0.0, 0.0), camera: Optional[Camera] = None) -> Headshot:
    """Render the rig posed as P = R(pose) S(identity, expressions) + translation, seen by ``camera`` (default the
    512² crop camera), shaded so that face detectors find it."""
    import torch

    from backend.render.raster import rasterize

    camera = camera or crop_camera()
    shape = rig.shape(identity, expressions)
    V = rig.evaluate(identity, expressions, pose) + np.asarray(translation, dtype=np.float32)
    names = [str(n) for n in rig.arrays["material_names"]]
    fm = np.asarray(rig.arrays["face_material"])
    keep = ~np.isin(fm, [names.index(n) for n in _HIDDEN if n in names])
    faces = rig.faces[keep].astype(np.int64)
    frag = rasterize(torch.from_numpy(V), torch.from_numpy(faces), [camera])
    face_idx, bary = frag.face_idx[0].numpy(), frag.bary[0].numpy()
    normals = rig.vertex_normals(V, faces)
    albedo = _vertex_colours(rig, shape)
    hit = face_idx >= 0
    f = faces[np.maximum(face_idx, 0)]  # [H, W, 3]
    n = (bary[..., None] * normals[f]).sum(-2)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    light = _LIGHT / np.linalg.norm(_LIGHT)
    shade = 0.35 + 0.75 * np.clip(n @ light, 0.0, 1.0)
    rgb = (bary[..., None] * albedo[f]).sum(-2) * shade[..., None]
    image = np.where(hit[..., None], rgb, _BACKGROUND)
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return Headshot(image, V, face_idx, bary, faces, camera)

"""The true ICT-FaceKit head as a field: the stand-in for an oracle distillation in tests and the benchmark.

The rig data (``ict_facekit_f16.npz``: centimetres, +Y up, +Z forward) becomes the head frame of
``shared.conventions``: metres, origin where the rig converter (``shared.ict``) puts it. The closed body is the skin
(face + head_neck) with the mouth and eye sockets and the eyeballs, the neck hole capped; its signed distance is
sampled on a grid (exact distances to dense surface samples in a narrow band, flood-fill signs elsewhere) and
turned into a NeRF-like density (``backend.export.complete.sdf_grid``) by
:class:`testkit.reference_fields.GridSDFField`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from backend.export.complete import cap_holes, sdf_grid
from testkit.reference_fields import GridSDFField
from shared.conventions import NERF_BOUND_RADIUS_M
from shared.ict import REGIONS, arrays_from_archive

SHELL = ("face", "head_neck", "mouth_socket", "eye_socket_L", "eye_socket_R")
EYES = ("eyeball_L", "eyeball_R")
SKIN = ("face", "head_neck")  # the visible surface the Chamfer distance is measured against


def load_ict(npz: Path) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int]]]:
    """Neutral vertices float64 [V, 3] (head frame, metres, the rig's origin), triangles int [F, 3], region ranges.

    Goes through the rig converter (``shared.ict``), so the origin is exactly the rig's."""
    with np.load(npz) as d:
        arrays = arrays_from_archive({k: d[k] for k in d.files})
    return arrays["neutral"].astype(np.float64), arrays["faces"].astype(np.int64), \
        {name: (a, b) for name, a, b in REGIONS}


def region_mesh(v: np.ndarray, tri: np.ndarray, regions: dict, names: tuple[str, ...]) -> trimesh.Trimesh:
    keep = np.zeros(len(v), bool)
    for n in names:
        a, b = regions[n]
        keep[a:b + 1] = True
    m = trimesh.Trimesh(v, tri[keep[tri].all(axis=1)], process=False)
    m.remove_unreferenced_vertices()
    return m


def _cap(m: trimesh.Trimesh) -> trimesh.Trimesh:
    """Fans closing each boundary loop of ``m`` around the loop's centroid (the neck hole), unoriented."""
    edges = m.edges_sorted
    boundary = edges[trimesh.grouping.group_rows(edges, require_count=1)]
    faces, verts, n = [], [m.vertices], len(m.vertices)
    for loop in trimesh.graph.connected_components(boundary, min_len=3):
        verts.append(m.vertices[loop].mean(axis=0)[None])
        members = set(loop)
        faces.append(np.array([[a, b, n] for a, b in boundary if a in members]))
        n += 1
    return trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=False)


def head_body(npz: Path) -> list[trimesh.Trimesh]:
    """The closed parts of the true head (capped shell, two eyeballs), outward-oriented, head frame."""
    v, tri, regions = load_ict(npz)
    parts = [cap_holes(region_mesh(v, tri, regions, SHELL))]
    for eye in EYES:
        m = region_mesh(v, tri, regions, (eye,))
        trimesh.repair.fix_normals(m)
        parts.append(m)
    return parts


def skin_samples(npz: Path, count: int, seed: int = 0) -> np.ndarray:
    """float64 [count, 3] points spread evenly (by area) on the visible skin of the true head, neck cap included
    (the field closes the neck there, so the exported mesh does too)."""
    v, tri, regions = load_ict(npz)
    shell = region_mesh(v, tri, regions, SHELL)
    cap = _cap(shell)
    skin = trimesh.util.concatenate([region_mesh(v, tri, regions, SKIN), trimesh.Trimesh(cap.vertices, cap.faces)])
    pts, _ = trimesh.sample.sample_surface(skin, count, seed=seed)
    return pts


def ict_head_field(npz: Path, resolution: int = 192, **kw) -> GridSDFField:
    """The true ICT head as a Field (density from its signed distance, colour a known smooth pattern)."""
    parts = [(np.asarray(p.vertices), np.asarray(p.faces)) for p in head_body(npz)]
    return GridSDFField(sdf_grid(parts, resolution), NERF_BOUND_RADIUS_M, **kw)

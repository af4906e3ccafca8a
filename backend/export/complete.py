"""Completion: the posed rig's full head where no training view looked, joined to the distilled surface.

The distillation's views cover a cone in front of the face (azimuth ±45°, elevation ±20° by default), so the field
behind, above and below the head is whatever its initial blob became. The export therefore builds one implicit
surface from two signed distances on its grid (metres, negative inside):

    phi = w · phi_field + (1 - w) · phi_rig

* ``phi_rig``: the signed distance to the posed rig's closed body (skin, mouth and eye sockets, the neck hole capped,
  eyeballs), exact in a narrow band, flood-filled signs elsewhere (:func:`sdf_grid`).
* ``phi_field``: the field's density around the chosen iso-level as a distance, first order
  (-(log sigma - log L) / |grad log sigma|), clipped to ±``FIELD_BAND_CELLS`` cells: its zero set is exactly the
  iso-surface.
* ``w`` in [0, 1]: how well the views saw the rig surface nearest to the point (:func:`vertex_visibility`: the best
  cos(view direction, normal) over unoccluded views, eased between ``SEEN_COS``) times how well the field resolved
  its surface there (:func:`resolved_weight`: along that vertex's best view ray, the distance over which
  transmittance drops from 0.9 to 0.1, eased between ``CRISP_M``), faded to 0 beyond ``NEAR_M``..``FAR_M`` from the
  rig. So volume the prior added (hair, a tongue) wins where it was seen and drawn crisply; an unconverged, fuzzy
  field loses to the rig even where the views looked; debris far from the head never wins.

w is smooth (computed on a coarse grid and interpolated), so the two surfaces meet without a step or a crease;
one marching cubes run on phi and keeping the component that holds the origin give one closed manifold head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree

from backend.export.grid import Grid, linear_interpolation, upsample
from shared.conventions import NERF_BOUND_RADIUS_M, Camera

SHELL_REGIONS = ("face", "head_neck", "mouth_socket", "eye_socket_L", "eye_socket_R")  # closed but for the neck
EYE_REGIONS = ("eyeball_L", "eyeball_R")
SEEN_COS = (0.45, 0.8)  # visibility below the first counts as unseen, above the second as fully seen (63°, 37°)
TEXTURE_SEEN_COS = (0.3, 0.7)  # for colour (73°, 46°): wider than SEEN_COS, so the fill starts from the seen rim
NEAR_M, FAR_M = 0.02, 0.04  # the field's say fades from full to none between these distances from the rig
SMOOTH_CELLS = 0.7  # Gaussian sigma applied to phi, in cells
FIELD_BAND_CELLS = 3.0  # phi_field is clipped to this many cells: beyond it only its sign matters
DEPTH_RES = 160  # pixels of the depth maps used for occlusion (1.4 mm per pixel at the face)
DEPTH_TOL_M = 0.006  # a point this far behind the nearest surface still counts as seen (rasterisation, thin rims)
BOUND_NEAR_M, BOUND_FAR_M = 0.015, 0.045  # the field has no say within the first, full say beyond the second from
# the NeRF's bound
CARVE_M = 0.004  # the field's surface may lie this far inside the rig's (a thinner face, a mouth's corner), no more
OPEN_M = 0.003  # added volume thinner than twice this is debris, not hair
BACKGROUND_RGB = (0.06, 0.15)  # RGB distance to the background colour: below the first a texel is backdrop
MAX_BACKGROUND_SHARE = 0.3  # if more of the seen surface than this looks like the background, the backdrop is
# skin-coloured and the test would eat the face: it is then skipped
RAY_AFTER_M = 0.03  # the view ray through a rig vertex is judged from the NeRF's bound to this far behind it
CRISP_M = (0.004, 0.012)  # the field's surface is resolved where transmittance drops from 0.9 to 0.1 within the
# first (full trust), unresolved beyond the second (none)
CRISP_CELLS = 2.0  # ... but never stricter than this many grid cells (trilinear sampling smears a step over a cell)
CRISP_SMOOTH_M = 0.006  # Gaussian sigma of the resolution factor over the lattice: no crease where it changes
MAX_VIEWS = 48  # visibility needs the range of directions, not every view: at most this many, evenly spread


@dataclass
class Completion:
    """What the export needs to complete a head: the rig's closed body and the views the field was trained on.

    body: closed, outward-wound parts of the posed rig, each (vertices float [V, 3] head frame in metres,
    faces int [F, 3]); cameras: the distillation's views (any resolution)."""

    body: list[tuple[np.ndarray, np.ndarray]]
    cameras: Sequence[Camera]
    # the field's background model (its environment map): unit ray directions float [N, 3] (head frame, torch) ->
    # colour float [N, 3] in 0..1. With it, texels showing the background colour seen along their view ray count as
    # unseen (the NeRF learnt the backdrop in concave places the views saw head-on).
    background: Optional[Callable[[Any], Any]] = None


def cap_holes(m: trimesh.Trimesh) -> trimesh.Trimesh:
    """``m`` with each boundary loop (the neck cut) closed by a fan around the loop's centroid, outward-wound."""
    edges = m.edges_sorted
    boundary = edges[trimesh.grouping.group_rows(edges, require_count=1)]
    faces, verts, n = [m.faces], [m.vertices], len(m.vertices)
    for loop in trimesh.graph.connected_components(boundary, min_len=3):
        verts.append(m.vertices[loop].mean(axis=0)[None])
        members = set(loop)
        faces.append(np.array([[a, b, n] for a, b in boundary if a in members]))
        n += 1
    capped = trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=True)
    trimesh.repair.fix_normals(capped)
    return capped


def rig_body(model: Any, vertices: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The closed parts of a posed ``shared.morphable.MorphableModel``: the capped shell and the eyeballs.

    vertices: float [V, 3] the posed rig (``model.evaluate(...)``), head frame, metres."""
    v = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(model.faces, dtype=np.int64)
    parts = []
    for names, cap in ((SHELL_REGIONS, True),) + tuple(((e,), False) for e in EYE_REGIONS):
        present = [n for n in names if n in model.region_names]
        if not present:
            continue
        keep = model.region_mask(*present)
        m = trimesh.Trimesh(v, faces[keep[faces].all(axis=1)], process=False)
        m.remove_unreferenced_vertices()
        if len(m.faces) == 0:
            continue
        if cap:
            m = cap_holes(m)
        else:
            trimesh.repair.fix_normals(m)
        parts.append((np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64)))
    if not parts:
        raise ValueError(f"rig has none of the regions {SHELL_REGIONS}: no body to complete the head with")
    return parts


def sdf_grid(parts: list[tuple[np.ndarray, np.ndarray]], resolution: int, bound: float = NERF_BOUND_RADIUS_M,
             band_cells: int = 2, seed: int = 0) -> np.ndarray:
    """Signed distance (metres, negative inside) to closed parts on linspace(-bound, bound, R)³: float32 [R, R, R].

    Within ``band_cells`` of the surface: the distance to the tangent plane of the nearest of dense surface samples
    (about 0.6 cells apart; exact to second order, so the zero set is smooth); elsewhere the distance transform of
    the band, signed by a flood fill from the grid's border (the parts must be closed)."""
    meshes = [trimesh.Trimesh(v, f, process=False) for v, f in parts]
    h = 2.0 * bound / (resolution - 1)
    pts, nrm = [], []
    for m in meshes:
        s, fi = trimesh.sample.sample_surface(m, int(3.0 * m.area / (0.6 * h) ** 2) + 1, seed=seed)
        pts.append(s)
        nrm.append(m.face_normals[fi])
    pts, nrm = np.concatenate(pts), np.concatenate(nrm)
    idx = np.clip(np.round((pts + bound) / h).astype(np.int64), 0, resolution - 1)
    band = np.zeros((resolution,) * 3, bool)
    band[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    band = ndimage.binary_dilation(band, iterations=band_cells)
    lab, _ = ndimage.label(~band)
    border = np.unique(np.concatenate([lab[[0, -1]].ravel(), lab[:, [0, -1]].ravel(), lab[:, :, [0, -1]].ravel()]))
    is_border = np.zeros(int(lab.max()) + 1, bool)
    is_border[border[border > 0]] = True
    outside = is_border[lab]
    far = _coarse_distance(band, h) + np.float32(band_cells * h)
    sdf = np.where(outside, far, -far)
    del far, outside, lab
    bi = np.argwhere(band)
    q = -bound + bi * h
    dist, nearest = cKDTree(pts).query(q, workers=2)
    plane = np.einsum("ij,ij->i", q - pts[nearest], nrm[nearest])
    near = dist < 1.5 * h
    sdf[bi[:, 0], bi[:, 1], bi[:, 2]] = np.where(near, plane, np.sign(plane) * dist)
    return sdf


def _coarse_distance(band: np.ndarray, h: float, c: int = 4) -> np.ndarray:
    """Distance (metres) to the nearest ``band`` sample, from a distance transform on blocks of c³ samples, linearly
    interpolated: float32 [R, R, R]. Off by up to ~c cells, which only matters far from the surface (the band is
    exact), and 50x cheaper than a full-resolution transform."""
    R = band.shape[0]
    Rc = -(-R // c)
    padded = np.zeros((Rc * c,) * 3, bool)
    padded[:R, :R, :R] = band
    coarse = padded.reshape(Rc, c, Rc, c, Rc, c).any(axis=(1, 3, 5))
    d = ndimage.distance_transform_edt(~coarse).astype(np.float32) * (c * h)
    m = linear_interpolation(np.arange(Rc, dtype=np.float32) * c + (c - 1) / 2.0, np.arange(R, dtype=np.float32))
    return upsample(d, m)


def _spread(cameras: Sequence[Camera], limit: int = MAX_VIEWS) -> list[Camera]:
    idx = np.unique(np.linspace(0, len(cameras) - 1, min(limit, len(cameras))).round().astype(int))
    return [cameras[i].scaled(DEPTH_RES) for i in idx]


def vertex_visibility(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                      cameras: Sequence[Camera]) -> np.ndarray:
    """How well the views saw each vertex: max over views of cos(normal, direction to the camera) where the vertex
    is not hidden behind the mesh (z-buffer of the mesh itself, ``DEPTH_TOL_M``). float32 [V] in [0, 1].

    vertices float [V, 3] head frame (metres), faces int [F, 3], normals float [V, 3] unit, outward."""
    return vertex_views(vertices, faces, normals, cameras)[0]


def vertex_views(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, cameras: Sequence[Camera]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`vertex_visibility` and the direction of the view ray that gave it: (float32 [V], float32 [V, 3] unit,
    camera -> vertex, head frame; the first view's for vertices no view saw)."""
    import torch

    from backend.render import rasterize_chunks
    from shared.conventions import project_points

    v = np.asarray(vertices, dtype=np.float64)
    cams = _spread(cameras)
    best = np.zeros(len(v), np.float32)
    ray = np.zeros((len(v), 3), np.float32)
    vt = torch.from_numpy(np.ascontiguousarray(v, np.float32))
    ft = torch.from_numpy(np.ascontiguousarray(faces, np.int64))
    for chunk, frag in rasterize_chunks(vt, ft, cams):
        depth = frag.depth.numpy()  # [n, H, W], 0 on background
        for k, cam in enumerate(cams[chunk]):
            px, z = project_points(cam, v)
            col = np.clip(px[:, 0].astype(np.int64), 0, cam.width - 1)
            row = np.clip(px[:, 1].astype(np.int64), 0, cam.height - 1)
            d = depth[k, row, col]
            inside = (px[:, 0] >= 0) & (px[:, 0] < cam.width) & (px[:, 1] >= 0) & (px[:, 1] < cam.height)
            shown = inside & (z > 0) & ((d <= 0) | (z <= d + DEPTH_TOL_M))
            to_cam = cam.centre[None] - v
            dist = np.maximum(np.linalg.norm(to_cam, axis=1), 1e-12)
            cos = np.einsum("ij,ij->i", normals, to_cam) / dist
            cos = np.where(shown, np.clip(cos, 0.0, 1.0), 0.0).astype(np.float32)
            better = (cos > best) | ((best == 0) & (ray == 0).all(axis=1))
            ray[better] = (-to_cam / dist[:, None])[better]
            best = np.maximum(best, cos)
    return best, ray


def at_points(values: np.ndarray, grid: Grid, points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a grid quantity float [R, R, R] at head-frame points float [N, 3]: float32 [N]."""
    idx = ((np.asarray(points, np.float64) + grid.bound) / grid.spacing).T
    return ndimage.map_coordinates(values, idx, order=1, mode="nearest").astype(np.float32)


def background_trust(colours: np.ndarray, background: np.ndarray) -> np.ndarray:
    """0 where a colour is the background seen along its view ray, 1 where it is clearly not: float32 [N] from
    float [N, 3] colours and background colours, 0..1 (smoothstep over the RGB distance, ``BACKGROUND_RGB``)."""
    d = np.linalg.norm(np.asarray(colours, np.float64) - np.asarray(background, np.float64), axis=1)
    return seen_weight(d, *BACKGROUND_RGB)


def seen_weight(visibility: np.ndarray, lo: float = SEEN_COS[0], hi: float = SEEN_COS[1]) -> np.ndarray:
    """Visibility -> trust in what the views showed, 0..1 with a smooth (smoothstep) transition."""
    x = np.clip((np.asarray(visibility, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def field_distance(sigma: np.ndarray, level: float, grid: Grid) -> np.ndarray:
    """The density's iso-surface sigma = level as a clipped first-order signed distance (metres, negative inside):
    -(log sigma - log L) / |grad log sigma| within ±FIELD_BAND_CELLS cells. float32 [R, R, R]."""
    floor = level * 1e-4
    g = np.log(np.maximum(sigma, floor), dtype=np.float32) - np.float32(np.log(level))  # > 0 inside
    gx, gy, gz = np.gradient(g, grid.spacing)
    mag = np.sqrt(gx * gx + gy * gy + gz * gz)
    del gx, gy, gz
    band = FIELD_BAND_CELLS * grid.spacing
    mag = np.maximum(mag, 1.0 / band)  # flat regions (deep inside, empty space): only the sign counts
    return np.clip(-g / mag, -band, band).astype(np.float32)


@dataclass
class RigTerms:
    """What the completion computes before the field is sampled (:func:`rig_terms`).

    phi_rig float32 [R, R, R] metres, negative inside; w_seen float32 [R, R, R] in [0, 1]: the views' say (the
    field's density is needed only where it is > 0); the rest lets :func:`resolved_weight` redo w with the field's
    resolution: the rig's vertices float [V, 3] (head frame, metres), their seen weight float32 [V] and best view
    ray float32 [V, 3] (unit, camera -> vertex), the coarse lattice's axis float32 [Rc], nearest vertex int [Rc³]
    and distance fade float32 [Rc³]."""

    phi_rig: np.ndarray
    w_seen: np.ndarray
    vertices: np.ndarray
    seen: np.ndarray
    rays: np.ndarray
    lattice: np.ndarray
    nearest: np.ndarray
    fade: np.ndarray
    info: dict[str, Any]


def blend_weight(body: list[tuple[np.ndarray, np.ndarray]], cameras: Sequence[Camera], grid: Grid,
                 spacing_m: float = 0.006) -> RigTerms:
    """The views' say w_seen on the grid (see the module docstring) and what :func:`resolved_weight` needs; phi_rig
    is left empty.

    Computed on a lattice about ``spacing_m`` apart (the nearest rig vertex's seen weight, faded with the distance
    to the rig) and trilinearly interpolated: a smooth w keeps the join between the two surfaces smooth."""
    coarse = max(1, int(round(spacing_m / grid.spacing)))
    verts, vis, rays = [], [], []
    for v, f in body:
        n = trimesh.Trimesh(v, f, process=False).vertex_normals
        best, ray = vertex_views(v, f, n, cameras)
        verts.append(v)
        vis.append(best)
        rays.append(ray)
    allv, allw = np.concatenate(verts), seen_weight(np.concatenate(vis))
    ax = grid.axis()[::coarse]
    if ax[-1] < np.float32(grid.bound):  # cover the far edge so the interpolation never extrapolates (compared in
        # float32: the axis is float32, and a float64 bound would append a duplicate of its last sample)
        ax = np.append(ax, grid.bound).astype(np.float32)
    q = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    # beyond FAR_M w is 0 whichever vertex is nearest: a bounded search is ~10x faster on a fine lattice
    dist, nearest = cKDTree(allv).query(q, distance_upper_bound=FAR_M, workers=2)
    nearest = np.minimum(nearest, len(allv) - 1)  # misses (dist = inf) get any vertex: their fade is 0
    fade = np.clip((FAR_M - dist) / (FAR_M - NEAR_M), 0.0, 1.0).astype(np.float32)
    terms = RigTerms(np.zeros(0, np.float32), np.zeros(0, np.float32), allv, allw, np.concatenate(rays), ax,
                     nearest, fade, {"rig_seen_fraction": round(float((allw > 0.5).mean()), 4)})
    terms.w_seen = _lattice_to_grid(terms, allw[nearest] * fade, grid)
    return terms


def _lattice_to_grid(terms: RigTerms, values: np.ndarray, grid: Grid) -> np.ndarray:
    """Lattice values float [Rc³] -> float32 [R, R, R] in [0, 1], trilinear, faded to 0 near the NeRF's bound."""
    n = len(terms.lattice)
    w = upsample(values.reshape(n, n, n).astype(np.float32), linear_interpolation(terms.lattice, grid.axis()))
    # near the NeRF's bound the field is clipped and its blob prior dominates (a neck cut there comes out torn)
    edge = np.clip((grid.bound - np.abs(grid.axis()) - BOUND_NEAR_M) / (BOUND_FAR_M - BOUND_NEAR_M), 0.0, 1.0)
    w *= edge[:, None, None] * edge[None, :, None] * edge[None, None, :]
    return np.clip(w, 0.0, 1.0)


def resolved_weight(terms: RigTerms, sigma: np.ndarray, grid: Grid) -> tuple[np.ndarray, dict[str, Any]]:
    """The blend weight w = w_seen · resolved on the grid: float32 [R, R, R] in [0, 1], and a summary.

    ``resolved`` (0..1) says how crisp the field's surface is along the best view ray of the nearest rig vertex:
    the distance over which transmittance drops from 0.9 to 0.1 (:func:`surface_thickness`), eased from 1 at
    ``CRISP_M[0]`` to 0 at ``CRISP_M[1]`` (never below ``CRISP_CELLS`` grid cells: a step is smeared over a cell).
    It is smoothed over ``CRISP_SMOOTH_M`` on the lattice (normalised over the seen vertices) so w has no crease."""
    seen = terms.seen > 0
    thick = np.full(len(terms.vertices), np.inf, np.float32)
    if seen.any():
        thick[seen] = surface_thickness(sigma, grid, terms.vertices[seen], terms.rays[seen])
    lo = max(CRISP_M[0], CRISP_CELLS * grid.spacing)
    hi = lo + (CRISP_M[1] - CRISP_M[0])
    crisp = 1.0 - seen_weight(np.minimum(thick, 1.0), lo, hi)
    n = len(terms.lattice)
    r = CRISP_SMOOTH_M / float(terms.lattice[1] - terms.lattice[0])
    mask = (seen[terms.nearest] & (terms.fade > 0)).reshape(n, n, n).astype(np.float32)
    num = ndimage.gaussian_filter(crisp[terms.nearest].reshape(n, n, n) * mask, r)
    den = ndimage.gaussian_filter(mask, r)
    smooth = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0).reshape(-1)
    w = _lattice_to_grid(terms, terms.seen[terms.nearest] * terms.fade * smooth, grid)
    finite = thick[seen & np.isfinite(thick)]
    well = terms.seen > 0.5
    return w, {"field_resolved_fraction": round(float((crisp[well] > 0.5).mean()) if well.any() else 0.0, 4),
               "field_thickness_mm": round(1000.0 * float(np.median(finite)), 2) if len(finite) else None}


def ray_profile(sigma: np.ndarray, grid: Grid, points: np.ndarray, directions: np.ndarray,
                after_m: float = RAY_AFTER_M) -> tuple[np.ndarray, np.ndarray]:
    """Transmittance along each view ray through a point, from where it enters the NeRF's bound to ``after_m``
    behind the point: (offsets float32 [S] metres from the point, positive away from the camera; T float32 [N, S] in
    0..1, 1 before the bound). points float [N, 3] head frame, directions float [N, 3] unit, camera -> point; sigma
    the density grid (per metre), trilinearly interpolated, one sample per cell."""
    step = grid.spacing
    s = np.arange(-2.0 * np.sqrt(3.0) * grid.bound, after_m + 0.5 * step, step, dtype=np.float32)
    out = np.empty((len(points), len(s)), np.float32)
    n = max(1, (1 << 22) // len(s))  # bounded memory: ~4 M samples at a time
    for a in range(0, len(points), n):
        p = np.asarray(points[a:a + n], np.float32)[:, None] + s[None, :, None] * np.asarray(
            directions[a:a + n], np.float32)[:, None]
        inside = (np.abs(p) <= grid.bound).all(axis=2)
        d = np.zeros(inside.shape, np.float32)
        d[inside] = at_points(sigma, grid, p[inside])
        tau = np.cumsum(np.maximum(d, 0.0) * np.float32(step), axis=1)
        out[a:a + n] = np.exp(-(tau - tau[:, :1]))
    return s, out


def crossing(s: np.ndarray, T: np.ndarray, t: float) -> np.ndarray:
    """Offset (metres) at which each transmittance profile float [N, S] first drops below ``t``, linearly
    interpolated between samples; +inf where it never does. float32 [N]."""
    below = T < t
    k = np.argmax(below, axis=1)
    hit = below[np.arange(len(T)), k] & (k > 0)
    k = np.maximum(k, 1)
    t0, t1 = T[np.arange(len(T)), k - 1], T[np.arange(len(T)), k]
    frac = np.clip((t0 - t) / np.maximum(t0 - t1, 1e-12), 0.0, 1.0)
    x = s[k - 1] + frac * (s[k] - s[k - 1])
    return np.where(hit, x, np.inf).astype(np.float32)


def surface_thickness(sigma: np.ndarray, grid: Grid, points: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """How resolved the field's surface is along each view ray: the distance (metres) over which transmittance
    drops from 0.9 to 0.1 on the ray through a point (see :func:`ray_profile`); +inf where it never reaches 0.1
    (a translucent blob). float32 [N]. A resolved surface: a few mm; an unconverged blob: centimetres."""
    s, T = ray_profile(sigma, grid, points, directions)
    end, start = crossing(s, T, 0.1), crossing(s, T, 0.9)
    thick = np.full(len(end), np.inf, np.float32)
    done = np.isfinite(end)  # then the 0.9 crossing is finite too
    thick[done] = end[done] - start[done]
    return thick


def guard_field(phi_field: np.ndarray, phi_rig: np.ndarray, grid: Grid) -> np.ndarray:
    """phi_field with what a distillation gets wrong even where the views looked taken out (in place; float32
    [R, R, R], metres): pits deeper than ``CARVE_M`` into the rig's head are filled (a NeRF leaves holes where it
    saw background through a thin rim), and volume outside the rig thinner than ``2 OPEN_M`` (porous debris around
    the neck and hairline) is removed by a morphological opening. Thick added volume (hair, a tongue) stays."""
    np.minimum(phi_field, phi_rig + np.float32(CARVE_M), out=phi_field)
    solid = phi_field < 0
    r = max(1, int(round(OPEN_M / grid.spacing)))
    ball = ndimage.generate_binary_structure(3, 1)
    opened = ndimage.binary_dilation(ndimage.binary_erosion(solid, ball, iterations=r), ball, iterations=r)
    thin = solid & ~opened & (phi_rig > 0)
    phi_field[thin] = np.maximum(phi_rig[thin], np.float32(grid.spacing))
    return phi_field


def rig_terms(grid: Grid, completion: Completion) -> RigTerms:
    """What the completion needs before the field is sampled (:class:`RigTerms`): phi_rig and the views' say."""
    terms = blend_weight(completion.body, completion.cameras, grid)
    terms.phi_rig = sdf_grid(completion.body, grid.resolution, grid.bound)
    return terms


def completed_distance(sigma: np.ndarray, level: float, grid: Grid, phi_rig: np.ndarray, w: np.ndarray
                       ) -> np.ndarray:
    """phi = w phi_field + (1 - w) phi_rig on the grid: float32 [R, R, R], metres, negative inside."""
    phi = guard_field(field_distance(sigma, level, grid), phi_rig, grid)
    phi *= w
    phi += (1.0 - w) * phi_rig
    # a light smoothing (well under a cell) takes the NeRF's voxel-scale noise out of the surface: fewer slivers for
    # the decimator, fewer UV charts, no change at the scale of a feature
    return ndimage.gaussian_filter(phi, SMOOTH_CELLS)

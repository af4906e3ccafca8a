"""ICT-FaceKit (MIT) in the project's rig format: layout facts, triangulation and the normal-map region.

Facts from the ICT-FaceKit README (commit da5f95a): 26,719 vertices / 26,384 polygons in fixed index ranges per
part; the "narrow face area" is vertices [0, 6705] and polygons [0, 6559]; eyeballs are sclera + iris. The model is
in centimetres, +Y up, +Z forward, +X the subject's left: already our head frame's axes.

Normal-map region (what the prior's ControlNet sees), chosen to resemble BFM's 35,709-vertex front face:
    narrow face area (forehead to under the chin, cheek to cheek; no ears, neck or scalp)
  + a lip membrane: the mouth opening triangulated across, upper lip to lower lip, so the surface is hole-free
    over the mouth exactly like BFM's (whose lips are joined by triangles that stretch when the jaw opens);
    its triangles are repeated MEMBRANE_WEIGHT times (see there) so an open mouth shades smoothly.
    The prior never saw teeth or a tongue in a normal map; gums, teeth, tongue and the mouth socket stay in the
    mesh (Blender, textured renders) but are left out of normal maps, and the text prompt decides them.
  + both eyeballs (sclera and iris) filling the eye openings, so gaze shows as in a real eye; the thin shells
    (lacrimal fluid, eye blend, occlusion, lashes) are left out.
The head-frame origin is the centroid of the neutral shape's vertices used by that region (Deep3DFaceRecon
recentres BFM on its front-face vertex centroid).
"""

from __future__ import annotations

import numpy as np

from .rigformat import FORMAT_KIND, FORMAT_VERSION

COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
N_VERTICES, N_POLYGONS = 26719, 26384
CM = 0.01  # the model's unit in metres

# (name, first vertex, last vertex) inclusive, from the README's topology table.
REGIONS = (
    ("face", 0, 9408), ("head_neck", 9409, 11247), ("mouth_socket", 11248, 13293),
    ("eye_socket_L", 13294, 13677), ("eye_socket_R", 13678, 14061), ("gums_tongue", 14062, 17038),
    ("teeth", 17039, 21450), ("eyeball_L", 21451, 23020), ("eyeball_R", 23021, 24590),
    ("lacrimal_L", 24591, 24794), ("lacrimal_R", 24795, 24998), ("eyeblend_L", 24999, 25022),
    ("eyeblend_R", 25023, 25046), ("eye_occlusion_L", 25047, 25198), ("eye_occlusion_R", 25199, 25350),
    ("eyelashes_L", 25351, 26034), ("eyelashes_R", 26035, 26718),
)
NARROW_FACE_POLYGONS = (0, 6559)
EYEBALL_POLYGONS = (21496, 24691)  # sclera + iris, both eyes
SCLERA = {"L": (21451, 22220), "R": (23021, 23790)}
EYEBALL = {"L": (21451, 23020), "R": (23021, 24590)}
INNER_LIP_LANDMARKS = slice(60, 68)  # Multi-PIE 68: the inner lip contour
# The lip membrane's triangles are listed this many times in normal_region_faces. Vertex normals sum unit face
# normals per face listed, so the membrane then dominates the irregular inner-lip vertices and an open mouth shades
# as one smooth surface instead of stripes; duplicates coincide, so rasterization is unchanged.
MEMBRANE_WEIGHT = 6

LICENSE = f"""ICT-FaceKit, https://github.com/ICT-VGL/ICT-FaceKit (commit {COMMIT}), folder FaceXModel/.
Converted to the joker-head rig format (metres, triangulated, recentred); the shape data is unchanged.

MIT License

Copyright (c) 2020 USC Institute for Creative Technologies

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def triangulate(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quads/triangles int [P, 4] (-1 in slot 3 for a triangle) -> triangles int32 [T, 3] and their polygon [T].

    A quad (a, b, c, d) becomes (a, b, c), (a, c, d), keeping the winding; triangles keep their polygon order.
    """
    polygons = np.asarray(polygons)
    quad = polygons[:, 3] >= 0
    first = polygons[:, [0, 1, 2]]
    second = polygons[quad][:, [0, 2, 3]]
    poly_of = np.concatenate([np.arange(len(polygons)), np.flatnonzero(quad)])
    tris = np.concatenate([first, second])
    order = np.argsort(poly_of, kind="stable")  # triangles of one polygon stay adjacent
    return tris[order].astype(np.int32), poly_of[order]


def boundary_loops(tris: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops of a manifold triangle set, each int [L] in the faces' edge direction."""
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    _, inv, cnt = np.unique(np.sort(e, axis=1), axis=0, return_inverse=True, return_counts=True)
    nxt = {int(a): int(b) for a, b in e[cnt[inv.reshape(-1)] == 1]}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.array(loop))
    return loops


def lip_membrane(loop: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Triangles int32 [L - 2, 3] zipping the upper and lower lip chains of the mouth ``loop`` together.

    The loop is split at its mouth corners (extreme x) and the two chains are merged by their normalised vertex
    index, so the zip alternates between the lips and every lip vertex gets the same share of membrane triangles
    (uneven shares tilt single vertex normals and show as stripes); every triangle joins one lip edge to the
    opposite lip, like BFM's. The winding is opposite to the loop's
    (which follows the lip faces), so the membrane faces out of the mouth like the skin around it.
    """
    x = vertices[loop, 0]
    i0, i1 = int(np.argmin(x)), int(np.argmax(x))
    rolled = np.roll(loop, -i0)
    k = (i1 - i0) % len(loop)
    chain_a, chain_b = rolled[: k + 1], np.concatenate([rolled[k:], rolled[:1]])[::-1]  # both left -> right
    t_a, t_b = np.linspace(0, 1, len(chain_a)), np.linspace(0, 1, len(chain_b))
    tris, i, j = [], 0, 0
    while i < len(chain_a) - 1 or j < len(chain_b) - 1:
        if j == len(chain_b) - 1 or (i < len(chain_a) - 1 and t_a[i + 1] <= t_b[j + 1]):
            # chain_a runs along the loop: its loop edge (a_i -> a_i+1) appears reversed in the membrane.
            tris.append((chain_a[i + 1], chain_a[i], chain_b[j]))
            i += 1
        else:
            # chain_b runs against the loop: its loop edge (b_j+1 -> b_j) appears as (b_j -> b_j+1).
            tris.append((chain_b[j], chain_b[j + 1], chain_a[i]))
            j += 1
    faces = np.array(tris, dtype=np.int32)
    degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    return faces[~degenerate]  # the two triangles at the mouth corners that would repeat the corner vertex


def normal_region(tris: np.ndarray, poly_of: np.ndarray, neutral: np.ndarray,
                  landmarks68: np.ndarray) -> np.ndarray:
    """int32 [F', 3]: narrow face + lip membrane + eyeballs (see the module docstring)."""
    lo, hi = NARROW_FACE_POLYGONS
    face = tris[(poly_of >= lo) & (poly_of <= hi)]
    lips = neutral[landmarks68[INNER_LIP_LANDMARKS]].mean(axis=0)
    loops = boundary_loops(face)
    mouth = min(loops, key=lambda L: np.linalg.norm(neutral[L].mean(axis=0) - lips))
    lo, hi = EYEBALL_POLYGONS
    eyes = tris[(poly_of >= lo) & (poly_of <= hi)]
    membrane = np.tile(lip_membrane(mouth, neutral), (MEMBRANE_WEIGHT, 1))
    return np.concatenate([face, membrane, eyes]).astype(np.int32)


def arrays_from_archive(raw: dict) -> dict:
    """The team's ``ict_facekit_f16.npz`` layout (cm, quads) -> rig-format arrays (metres, triangles, recentred).

    ``raw`` keys: neutral [V, 3] cm; identity_deltas [I, V, 3] and expression_deltas [E, V, 3] (cm, any float
    dtype, stored as given with basis_unit_m = 0.01); expression_names; faces [P, 4]; optional face_uv_index,
    uv, face_material, material_names, landmarks_multipie68; source.
    """
    neutral_cm = np.asarray(raw["neutral"], dtype=np.float64)
    if neutral_cm.shape != (N_VERTICES, 3):
        raise ValueError(f"ICT neutral: expected {N_VERTICES} vertices, received {neutral_cm.shape}")
    tris, poly_of = triangulate(raw["faces"])
    landmarks = np.asarray(raw["landmarks_multipie68"], dtype=np.int32)
    region_faces = normal_region(tris, poly_of, neutral_cm, landmarks)
    origin_cm = neutral_cm[np.unique(region_faces)].mean(axis=0)
    vertex_region = np.full(N_VERTICES, -1, dtype=np.int8)
    for i, (_, first, last) in enumerate(REGIONS):
        vertex_region[first: last + 1] = i
    out = dict(
        kind=np.array(FORMAT_KIND), format_version=np.array(FORMAT_VERSION), name=np.array("ict-facekit"),
        source=np.array(str(raw.get("source", f"ICT-VGL/ICT-FaceKit@{COMMIT} FaceXModel"))),
        license=np.array(LICENSE), coefficient_layout=np.array("identity: 100 PCA modes (1 sd each); "
                                                               "expressions: ARKit-named blendshapes, 0..1"),
        neutral=((neutral_cm - origin_cm) * CM).astype(np.float32),
        origin_in_source_units=origin_cm, basis_unit_m=np.array(CM),
        identity_basis=np.asarray(raw["identity_deltas"]), expression_basis=np.asarray(raw["expression_deltas"]),
        expression_names=np.asarray(raw["expression_names"]).astype(str),
        faces=tris, normal_region_faces=region_faces, landmarks68=landmarks,
        region_names=np.array([r[0] for r in REGIONS]), vertex_region=vertex_region,
    )
    for side in ("L", "R"):
        out[f"eye_rotating_{side}"] = np.arange(EYEBALL[side][0], EYEBALL[side][1] + 1, dtype=np.int32)
        out[f"eye_pivot_{side}"] = np.arange(SCLERA[side][0], SCLERA[side][1] + 1, dtype=np.int32)
    if "face_uv_index" in raw:
        out["face_uv"] = triangulate(raw["face_uv_index"])[0]
        out["uv"] = np.asarray(raw["uv"], dtype=np.float32)
    if "face_material" in raw:
        out["face_material"] = np.asarray(raw["face_material"], dtype=np.int16)[poly_of]
        out["material_names"] = np.asarray(raw["material_names"]).astype(str)
    return out

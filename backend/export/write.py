"""Write the textured mesh: GLB (always) and OBJ + MTL + PNG (optional).

Both stay in the head frame, in metres: glTF is +Y up with the front facing +Z, exactly our head frame, so Blender's
glTF importer turns it into Blender's +Z up / face toward -Y and the mesh lands on a rig built with
``shared.conventions.head_to_blender``. The material is a metallic-roughness PBR material whose baseColorTexture
Blender maps to a Principled BSDF with an Image Texture on Base Color.
"""

from __future__ import annotations


import numpy as np
import trimesh
from PIL import Image

MATERIAL_NAME = "joker_head"
ROUGHNESS = 0.6  # skin-like; the NeRF colour has lighting baked in, so keep the specular modest
GENERATOR = "joker-head backend.export"


def write_glb(positions: np.ndarray, normals: np.ndarray, faces: np.ndarray, uv: np.ndarray,
              texture: np.ndarray) -> bytes:
    """GLB bytes of one mesh: positions/normals float [V, 3] head frame, faces int [F, 3], uv float [V, 2] (v up)."""
    material = trimesh.visual.material.PBRMaterial(
        name=MATERIAL_NAME, baseColorTexture=Image.fromarray(texture), baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0, roughnessFactor=ROUGHNESS, doubleSided=False)
    mesh = trimesh.Trimesh(vertices=positions, faces=faces, vertex_normals=normals, process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv, material=material))
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name="joker_head", geom_name="joker_head")
    return scene.export(file_type="glb", include_normals=True)


def write_obj(positions: np.ndarray, normals: np.ndarray, faces: np.ndarray, uv: np.ndarray,
              texture_name: str = "joker_head.png", mtl_name: str = "joker_head.mtl") -> tuple[bytes, bytes]:
    """OBJ and MTL text (UTF-8 bytes) referring to the PNG ``texture_name`` beside them. +Y up, metres."""
    f1 = faces + 1
    lines = [f"# {GENERATOR}: head frame (+Y up, face toward +Z), metres", f"mtllib {mtl_name}", "o joker_head"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in positions]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
    lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in normals]
    lines += [f"usemtl {MATERIAL_NAME}", "s 1"]
    lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in f1]
    mtl = [f"newmtl {MATERIAL_NAME}", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", f"Pr {ROUGHNESS}", "d 1", "illum 1",
           f"map_Kd {texture_name}"]
    return ("\n".join(lines) + "\n").encode(), ("\n".join(mtl) + "\n").encode()

"""Run in a subprocess with bpy: import a GLB, render a Cycles turntable, report holes and backdrop-coloured pixels.

Usage: python blender_turntable.py head.glb out_dir [r,g,b] -> one JSON line on stdout:
{"frames": [{"azimuth", "elevation", "coverage", "holes", "backdrop_pixels"}, ...]}. Eight azimuths at elevation 10°
and one from above (70°), 64 px, 8 samples, a transparent film: the alpha channel is the head's silhouette, and a
transparent pixel enclosed by the silhouette is a hole. A head pixel is backdrop-coloured when its linear
chromaticity (rgb / sum, so white light does not change it; the Standard view transform keeps colours as they are)
is within 0.08 of the backdrop's (an sRGB colour; default: the oracle's light blue).
"""

import json
import math
import sys
from pathlib import Path

import bpy
import numpy as np

RES, SAMPLES, DISTANCE_M = 64, 8, 1.0
BACKDROP = (0.55, 0.60, 0.66)  # the oracle's backdrop seen head-on (backend.distill.oracle.background)
CHROMA_TOL = 0.08
VIEWS = [(az, 10.0) for az in range(0, 360, 45)] + [(30.0, 70.0)]


def enclosed(background: np.ndarray) -> np.ndarray:
    """bool [H, W]: background pixels not connected (4-neighbour) to the image border."""
    reach = np.zeros_like(background)
    reach[0, :], reach[-1, :], reach[:, 0], reach[:, -1] = (background[0, :], background[-1, :], background[:, 0],
                                                            background[:, -1])
    while True:
        grown = reach.copy()
        grown[1:] |= reach[:-1]
        grown[:-1] |= reach[1:]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown &= background
        if (grown == reach).all():
            return background & ~reach
        reach = grown


def main() -> None:
    glb, out = sys.argv[1], Path(sys.argv[2])
    backdrop = np.array([float(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else BACKDROP)
    backdrop_chroma = _linear(backdrop) / _linear(backdrop).sum()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    (obj,) = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    corners = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
    centre = (corners.min(0) + corners.max(0)) / 2.0
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.device = SAMPLES, "CPU"
    scene.render.resolution_x = scene.render.resolution_y = RES
    scene.render.film_transparent = True
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    scene.render.image_settings.file_format, scene.render.image_settings.color_mode = "PNG", "RGBA"
    world = bpy.data.worlds.new("turntable")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.5, 0.5, 0.5, 1.0)
    scene.world = world
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), 0.0, math.radians(30))
    scene.collection.objects.link(sun)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    cam.data.lens = 85.0
    scene.collection.objects.link(cam)
    scene.camera = cam
    frames = []
    for az, el in VIEWS:
        a, e = math.radians(az), math.radians(el)
        # Blender world: the face looks toward -Y; azimuth 0 is in front of the face
        offset = np.array([math.sin(a) * math.cos(e), -math.cos(a) * math.cos(e), math.sin(e)]) * DISTANCE_M
        cam.location = tuple(centre + offset)
        direction = -offset
        cam.rotation_euler = _look(direction)
        scene.render.filepath = str(out / f"turntable_{int(az):03d}_{int(el):02d}.png")
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(scene.render.filepath)
        px = np.array(img.pixels[:], dtype=np.float32).reshape(RES, RES, 4)
        bpy.data.images.remove(img)
        head = px[..., 3] > 0.5
        rgb = px[..., :3]
        lin = _linear(rgb)
        chroma = lin / np.maximum(lin.sum(-1, keepdims=True), 1e-6)
        blue = head & (np.abs(chroma - backdrop_chroma).max(-1) < CHROMA_TOL)
        frames.append({"azimuth": az, "elevation": el, "coverage": float(head.mean()),
                       "holes": int(enclosed(~head).sum()),
                       "backdrop_pixels": float(blue.sum() / max(head.sum(), 1))})
    print(json.dumps({"frames": frames}))


def _linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values -> linear light."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _look(direction: np.ndarray):
    import mathutils

    return mathutils.Vector(tuple(direction)).to_track_quat("-Z", "Y").to_euler()


if __name__ == "__main__":
    main()

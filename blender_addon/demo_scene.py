"""Import a result GLB into a new .blend and render it with Cycles: the `make demo` viewer step.

    python blender_addon/demo_scene.py OUT/result.glb [--samples 32] [--res 512]
        -> OUT/result.blend and OUT/result_render.png beside the GLB

Run from the repository root with the bpy wheel installed (headless Blender). The camera is the prior's frontal
camera (``shared.conventions.orbit_camera``), so the render frames the head as the normal maps did. This file is a
repository tool: build_addon.py leaves it out of the extension.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path
from typing import Optional

import bpy
import numpy as np
from mathutils import Matrix

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.conventions import camera_to_blender, orbit_camera  # noqa: E402  (repository tool, not the extension)


def _importer():
    """The add-on's importer module, loaded by path (it imports only bpy and mathutils)."""
    spec = importlib.util.spec_from_file_location("joker_head_importer", Path(__file__).with_name("importer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_camera(scene: bpy.types.Scene, res: int, origin: Matrix = Matrix.Identity(4), az_deg: float = 0.0,
               el_deg: float = 0.0) -> bpy.types.Object:
    """The prior's orbit camera at (az, el) around a head whose head-frame origin sits at ``origin`` (world)."""
    bc = camera_to_blender(orbit_camera(az_deg, el_deg, res=res))
    cam = bpy.data.cameras.new("Joker Camera")
    cam.lens, cam.sensor_width, cam.sensor_fit = bc.lens_mm, bc.sensor_width_mm, bc.sensor_fit
    cam.shift_x, cam.shift_y = bc.shift_x, bc.shift_y
    cam.clip_start, cam.clip_end = 0.05, 10.0
    obj = bpy.data.objects.new("Joker Camera", cam)
    scene.collection.objects.link(obj)
    obj.matrix_world = origin @ Matrix(bc.matrix_world.tolist())
    scene.camera = obj
    scene.render.resolution_x, scene.render.resolution_y = bc.resolution_x, bc.resolution_y
    scene.render.resolution_percentage = 100
    return obj


def add_lights(scene: bpy.types.Scene, origin: Matrix = Matrix.Identity(4)) -> None:
    """A soft key light from the front-left above and a dim grey world."""
    light = bpy.data.lights.new("Joker Key", "AREA")
    light.energy, light.size = 60.0, 1.0
    key = bpy.data.objects.new("Joker Key", light)
    scene.collection.objects.link(key)
    key.matrix_world = origin @ Matrix.Translation((0.6, -1.2, 0.6)) @ Matrix.Rotation(math.radians(60), 4, "X") \
        @ Matrix.Rotation(math.radians(25), 4, "Z")
    world = scene.world or bpy.data.worlds.new("Joker World")
    scene.world = world
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 1.0


def render(scene: bpy.types.Scene, path: Path, samples: int = 32, transparent: bool = False) -> np.ndarray:
    """Render with Cycles on the CPU into ``path`` (PNG); returns float32 [H, W, 4] pixels, row 0 at the top."""
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.film_transparent = transparent
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path), check_existing=False)
    w, h = image.size
    px = np.empty(w * h * 4, dtype=np.float32)
    image.pixels.foreach_get(px)
    bpy.data.images.remove(image)
    return px.reshape(h, w, 4)[::-1]


def demo(glb: Path, res: int = 512, samples: int = 32, blend: Optional[Path] = None,
         png: Optional[Path] = None) -> tuple[Path, Path]:
    """Fresh scene + imported head + camera + lights -> .blend and Cycles PNG beside the GLB."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = _importer().import_glb(glb, name="Joker Head")
    if _importer().textured_material(obj) is None:
        print(f"warning: {glb} has no image-textured material", file=sys.stderr)
    add_camera(scene, res)
    add_lights(scene)
    blend = blend or glb.with_suffix(".blend")
    png = png or glb.with_name(glb.stem + "_render.png")
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    render(scene, png, samples)
    return blend, png


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("glb", type=Path)
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--samples", type=int, default=32)
    args = ap.parse_args(argv)
    blend, png = demo(args.glb.resolve(), args.res, args.samples)
    print(f"wrote {blend} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

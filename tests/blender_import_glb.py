"""Run in a subprocess (bpy and torch do not share a process well): import a GLB headless, print what Blender made.

Usage: python blender_import_glb.py file.glb  -> one JSON line on stdout.
"""

import json
import sys

import bpy

bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=sys.argv[1])
meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
obj = meshes[0]
world = [obj.matrix_world @ v.co for v in obj.data.vertices]
xs, ys, zs = ([p[i] for p in world] for i in range(3))
front = min(world, key=lambda p: p[1])
principled, image = False, None
for slot in obj.material_slots:
    nodes = slot.material.node_tree.nodes
    for node in nodes:
        if node.type == "BSDF_PRINCIPLED":
            principled = True
            link = node.inputs["Base Color"].links
            if link and link[0].from_node.type == "TEX_IMAGE" and link[0].from_node.image:
                image = list(link[0].from_node.image.size)
print(json.dumps({
    "meshes": len(meshes), "uv_layers": len(obj.data.uv_layers), "faces": len(obj.data.polygons),
    "principled": principled, "base_color_image": image,
    "bbox_min": [min(xs), min(ys), min(zs)], "bbox_max": [max(xs), max(ys), max(zs)],
    "front_point": list(front),
}))

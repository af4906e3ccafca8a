"""joker-head shared package: protocol, client, conventions, morphable models, reference rasterizer.

Imported by both the Blender add-on and the backend: numpy, pyzmq and the standard library only — never torch or bpy.
"""

__version__ = "0.1.0"

"""Add-on preferences: where the backend is, how to authenticate, how long to wait, defaults."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from . import quality

ADDON_ID = __package__  # bl_ext.<repo>.joker_head once installed as an extension


class JokerPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_address: StringProperty(
        name="Backend", default="tcp://127.0.0.1:5555",
        description="ZeroMQ address of `joker-head serve` (tcp://host:port). Loopback is your own machine; any "
                    "other host needs Blender's online access and, across a network, CURVE keys")
    server_public_key: StringProperty(
        name="Server Public Key", subtype="FILE_PATH", default="",
        description="server.key from the GPU box (`joker-head keys`); leave empty for an unencrypted loopback")
    client_secret_key: StringProperty(
        name="Your Secret Key", subtype="FILE_PATH", default="",
        description="your .key_secret file; its public half must be in the server's authorized/ folder")
    timeout_s: FloatProperty(
        name="Timeout", default=10.0, min=1.0, max=600.0, unit="TIME_ABSOLUTE",
        description="declare the backend unreachable (and reconnect) after this long without a reply")
    default_quality: EnumProperty(
        name="Default Quality", items=quality.enum_items(), default=quality.default_preset(),
        description="quality preset for new scenes")
    auto_import: BoolProperty(
        name="Import Results Automatically", default=True,
        description="import a finished head onto its rig as soon as it arrives")
    results_dir: StringProperty(
        name="Results Folder", subtype="DIR_PATH", default="",
        description="where result files are saved (empty: the extension's user folder)")
    rig_file: StringProperty(
        name="Rig File", subtype="FILE_PATH", default="",
        description="a converted morphable model (.npz, e.g. from `joker-head import-rig bfm`); empty: the bundled "
                    "ICT-FaceKit rig")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "backend_address")
        col.prop(self, "server_public_key")
        col.prop(self, "client_secret_key")
        col.prop(self, "timeout_s")
        col.separator()
        col.prop(self, "default_quality")
        col.prop(self, "auto_import")
        col.prop(self, "results_dir")
        col.prop(self, "rig_file")
        box = layout.box()
        box.label(text="This add-on contacts only the backend address above.", icon="INFO")
        box.label(text="A loopback address (127.0.0.1, localhost, ipc://) never leaves this machine.")


def get(context: bpy.types.Context | None = None) -> JokerPreferences:
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


def register() -> None:
    bpy.utils.register_class(JokerPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(JokerPreferences)

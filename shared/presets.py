"""Expression presets: named ARKit blendshape weights (ICT-FaceKit's names, with _L/_R for left/right) plus a prompt
hint for what a 3DMM cannot show — the prior reads the mouth interior, tongue and teeth from the text, because the
normal map covers the mouth with a closed membrane (see shared/ict.py).

``_L`` is the subject's left (+x in the head frame). Weights are 0..1. ``gaze`` is (yaw, pitch) in radians for
MorphableModel.evaluate, as ICT's eyeLook shapes move the lids only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .spec import SpecError


@dataclass(frozen=True)
class Preset:
    """One expression: weights by ARKit name, a short prompt phrase, and an optional gaze (yaw, pitch) radians."""

    name: str
    weights: Mapping[str, float]
    prompt_hint: str
    gaze: tuple[float, float] = (0.0, 0.0)
    note: str = ""


def _both(name: str, w: float) -> dict[str, float]:
    return {f"{name}_L": w, f"{name}_R": w}


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("neutral", {}, "with a neutral expression"),
    Preset("smile", {**_both("mouthSmile", 0.8), **_both("cheekSquint", 0.4), **_both("eyeSquint", 0.2)},
           "smiling"),
    Preset("big_smile", {**_both("mouthSmile", 1.0), **_both("cheekSquint", 0.6), "jawOpen": 0.15,
                         **_both("mouthUpperUp", 0.3), **_both("eyeSquint", 0.3)},
           "with a big toothy smile"),
    Preset("laugh", {**_both("mouthSmile", 1.0), "jawOpen": 0.45, **_both("cheekSquint", 0.8),
                     **_both("eyeSquint", 0.6), **_both("mouthUpperUp", 0.4), **_both("browInnerUp", 0.2)},
           "laughing with the mouth wide open, teeth showing"),
    Preset("jaw_open", {"jawOpen": 0.7}, "with the mouth wide open"),
    Preset("surprise", {"jawOpen": 0.45, **_both("eyeWide", 0.9), **_both("browInnerUp", 0.9),
                        **_both("browOuterUp", 0.8), "mouthFunnel": 0.2}, "looking surprised, mouth open"),
    Preset("anger", {**_both("browDown", 1.0), **_both("eyeSquint", 0.5), **_both("noseSneer", 0.4),
                     **_both("mouthPress", 0.5), **_both("mouthFrown", 0.5)}, "angry, frowning"),
    Preset("disgust", {**_both("noseSneer", 0.9), "mouthShrugUpper": 0.6, **_both("mouthUpperUp", 0.5),
                       **_both("browDown", 0.5), **_both("mouthFrown", 0.4), **_both("eyeSquint", 0.4)},
           "with a disgusted expression"),
    Preset("sadness", {**_both("browInnerUp", 0.9), **_both("mouthFrown", 0.8), "mouthShrugLower": 0.4,
                       **_both("eyeBlink", 0.2)}, "sad"),
    Preset("fear", {**_both("eyeWide", 1.0), **_both("browInnerUp", 1.0), **_both("mouthStretch", 0.7),
                    "jawOpen": 0.2}, "frightened"),
    Preset("pucker", {"mouthPucker": 1.0, "mouthFunnel": 0.2}, "puckering the lips"),
    Preset("kiss", {"mouthPucker": 1.0, "mouthFunnel": 0.4, **_both("eyeBlink", 0.8)}, "blowing a kiss"),
    Preset("sneer", {"noseSneer_L": 1.0, "mouthUpperUp_L": 0.7, "mouthSmile_L": 0.2, "eyeSquint_L": 0.3},
           "sneering"),
    Preset("smirk", {"mouthSmile_L": 0.8, "cheekSquint_L": 0.3, "mouthDimple_L": 0.4}, "smirking"),
    Preset("wink", {"eyeBlink_L": 1.0, "cheekSquint_L": 0.5, "mouthSmile_L": 0.5, "mouthSmile_R": 0.2},
           "winking"),
    Preset("eyes_closed", _both("eyeBlink", 1.0), "with the eyes closed"),
    Preset("cheek_puff", {**_both("cheekPuff", 1.0), "mouthClose": 0.3}, "puffing out the cheeks"),
    Preset("scream", {"jawOpen": 1.0, **_both("mouthStretch", 0.6), **_both("browInnerUp", 0.8),
                      **_both("eyeWide", 0.6), **_both("mouthUpperUp", 0.4)}, "screaming with the mouth wide open"),
    Preset("tongue_out", {"jawOpen": 0.35, **_both("mouthLowerDown", 0.3)}, "sticking the tongue out",
           note="ICT-FaceKit has no tongue control and normal maps cover the mouth; the prompt makes the tongue"),
    Preset("look_left", {"eyeLookOut_L": 0.8, "eyeLookIn_R": 0.8}, "looking to the side", gaze=(0.35, 0.0),
           note="gaze toward the subject's left"),
    Preset("look_up", _both("eyeLookUp", 0.8), "looking up", gaze=(0.0, -0.3)),
]}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a SpecError lists the known names otherwise."""
    if name not in PRESETS:
        raise SpecError("preset", f"one of {', '.join(PRESETS)}", name, "pick a listed preset")
    return PRESETS[name]


def preset_weights(name: str, expression_names: Sequence[str], strength: float = 1.0) -> dict[str, float]:
    """The preset's weights scaled by ``strength`` for a rig with ``expression_names``; a rig lacking one of its
    shapes (e.g. BFM's PCA expressions) gets a SpecError rather than a silently different expression."""
    preset = get_preset(name)
    missing = sorted(set(preset.weights) - set(expression_names))
    if missing:
        raise SpecError(f"preset {name}", "a rig with ARKit-named expressions (ICT-FaceKit)",
                        f"a rig without {', '.join(missing[:4])}", "use the ICT rig for presets")
    return {k: v * strength for k, v in preset.weights.items()}

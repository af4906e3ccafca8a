"""Photos as jobs receive them: decoded within the protocol's limits, their face found, the reference framed.

Shared by the ``fit`` job (any photo file) and by ``preview`` / ``generate`` (the ``reference`` portrait). Every
failure is a :class:`JobFailed` naming the input, what was expected and the fix; ``backend.fit`` raises its own
errors (``PhotoError``, ``FitError``: code, message, hint), converted here so the ML code never imports the job
service.

Frames: image px are the photo's pixels after EXIF orientation (x right, y down, (0, 0) the top-left corner);
crop px are the 512² aligned crop's pixels (``backend.fit.reference_crop``).
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from backend.fit import FitError, PhotoError, detect_faces, load_photo
from backend.fit.landmarks import aligned_crop
from backend.runner import JobContext, JobFailed
from shared.protocol import Blob, Png

Payload = Union[Png, Blob, bytes]


def payload_bytes(payload: Payload) -> bytes:
    return payload.data if isinstance(payload, (Png, Blob)) else bytes(payload)


def decode_photo(payload: Payload, name: str) -> np.ndarray:
    """A photo payload -> float32 [H, W, 3] RGB in 0..1 (EXIF orientation applied, alpha composited over black).
    Past the protocol's side limit it fails from the header alone, before any pixels are decoded."""
    try:
        return load_photo(payload_bytes(payload), name=f"inputs.{name}")
    except PhotoError as e:
        raise as_job_failed(e, name) from None


# backend.fit's codes -> the protocol's (docs/PROTOCOL.md): one code for one limit, whichever side checks it
CODES = {"too_large": "image_too_large"}


def as_job_failed(e: Exception, name: str) -> JobFailed:
    """A ``backend.fit`` error (a SpecError: field, expected, received, hint, code) as the job's failure, naming
    the input."""
    message = str(e)
    if f"inputs.{name}" not in message:
        message = f"inputs.{name}: {message}"
    code = getattr(e, "code", "fit_failed")
    return JobFailed(message, getattr(e, "hint", ""), code=CODES.get(code, code))


def faces_warning(faces: list, name: str) -> str:
    """The warning for a photo with several faces: the largest is used, the others are named by their boxes."""
    others = "; ".join(f"face {i + 1} at x {f.box[0]:.0f}..{f.box[2]:.0f}, y {f.box[1]:.0f}..{f.box[3]:.0f} px"
                       for i, f in enumerate(faces[1:], start=1))
    b = faces[0].box
    return (f"inputs.{name}: {len(faces)} faces found; using the largest (x {b[0]:.0f}..{b[2]:.0f}, "
            f"y {b[1]:.0f}..{b[3]:.0f} px) and ignoring {others}. Crop the photo to one face to choose another.")


def largest_face(image: np.ndarray, name: str, ctx: JobContext) -> Any:
    """The photo's largest face (``backend.fit.Face``); several faces report a warning event naming the others."""
    faces = detect_faces(image)
    if not faces:
        h, w = image.shape[:2]
        raise JobFailed(f"inputs.{name}: expected a photo with a face, received a {w}x{h} image where none was "
                        "found", "send a photo where the face is visible, lit and at least 40 px tall, or set "
                        "reference_framing to \"centre\" to use the image without a face", code="no_face")
    if len(faces) > 1:
        warn(ctx, faces_warning(faces, name))
    return faces[0]


def warn(ctx: JobContext, message: str) -> None:
    """A warning the user sees: a progress event of stage ``warning`` (shown by the CLI and the add-on)."""
    ctx.progress("warning", 0, 0, message)


def read_reference(payload: Payload, resolution: int, framing: str, ctx: JobContext) -> np.ndarray:
    """The ``reference`` portrait -> float32 [3, R, R] in 0..1, framed as the prior was trained.

    ``aligned``: the face's 5 landmarks fitted to the 5 standard 3D landmarks, cropped as the reference
    implementation does (``backend.fit.reference_crop`` on the face mesh's steadier 5 points,
    ``backend.fit.landmarks.aligned_crop``, as the fit job crops: 512², black outside the photo), Lanczos to R when
    R != 512.
    ``centre``: the centre square, Lanczos to R (for images without a detectable face).
    Several faces report a warning through ``ctx``.
    """
    from PIL import Image

    if framing == "centre":
        rgb = _centre_square(payload)
    elif framing == "aligned":
        image = decode_photo(payload, "reference")
        face = largest_face(image, "reference", ctx)
        try:  # the fit's own crop: the same framing as Match Portrait's, steadier than MTCNN's 5 points
            rgb = aligned_crop(image, face)[0].image  # uint8 [512, 512, 3]
        except FitError as e:
            raise as_job_failed(e, "reference") from None
    else:
        raise JobFailed(f"params.reference_framing: expected aligned or centre, received {framing!r}",
                        "choose aligned (the default) or centre", code="invalid_field")
    if rgb.shape[0] != resolution:
        rgb = np.asarray(Image.fromarray(rgb).resize((resolution, resolution), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0


def _centre_square(payload: Payload) -> np.ndarray:
    """uint8 [S, S, 3]: the centre square of the reference (EXIF orientation applied)."""
    image = decode_photo(payload, "reference")
    h, w = image.shape[:2]
    s = min(w, h)
    square = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return (square * 255.0).round().astype(np.uint8)

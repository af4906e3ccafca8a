"""MTCNN (Zhang et al. 2016) in plain PyTorch: P-Net, R-Net, O-Net and the cascade that finds faces and 5 landmarks.

The reference implementation detects with facenet-pytorch's MTCNN; we run the same cascade (image pyramid with
factor 0.709 from a 20 px minimum face, thresholds 0.6 / 0.7 / 0.7, NMS 0.7 / 0.7 / 0.7 "min" at the end) on the
original networks' weights as the MIT-licensed ``mtcnn`` wheel ships them (Keras layout: conv kernels HWIO, dense
kernels [in, out]). The weight files are joblib dumps: we check their sha256 against the pinned values before
loading, so only those exact bytes are ever unpickled. No torchvision: NMS is below.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FitError

WEIGHT_SHA256 = {  # mtcnn==1.0.0: mtcnn/assets/weights/*.lz4
    "pnet": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}
MIN_FACE_PX = 40  # smallest face searched (px); the reference searches from 20 px, but faces under ~40 px
# are refused anyway (portrait.MIN_EYE_DISTANCE_PX) and the finest pyramid levels cost most of the time
FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)


def weights_dir() -> Path:
    """Where the installed ``mtcnn`` wheel keeps the weights (FitError naming the install command if absent)."""
    spec = importlib.util.find_spec("mtcnn")  # located, never imported: the package itself imports TensorFlow
    if spec is None or not spec.submodule_search_locations:
        raise FitError("detector weights", "the mtcnn package (MTCNN weights)", "not installed",
                       "pip install 'joker-head[backend]' (or pip install 'mtcnn==1.0.0')", code="missing_model")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"


def load_weights(name: str, folder: Path | None = None) -> list[np.ndarray]:
    """The arrays of one net (``pnet``, ``rnet``, ``onet``), after checking the file's pinned sha256."""
    path = (folder or weights_dir()) / f"{name}.lz4"
    if not path.is_file():
        raise FitError("detector weights", f"{path}", "a missing file", "reinstall: pip install 'mtcnn==1.0.0'",
                       code="missing_model")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHT_SHA256[name]:
        raise FitError("detector weights", f"{name}.lz4 with sha256 {WEIGHT_SHA256[name][:12]}...",
                       f"sha256 {digest[:12]}...", "reinstall the pinned version: pip install 'mtcnn==1.0.0'",
                       code="bad_model")
    import joblib  # only after the checksum: these exact bytes are the audited arrays

    return [np.asarray(a, dtype=np.float32) for a in joblib.load(path)]


def _build_nets(folder: Path | None = None) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    def conv(w, b):
        return (torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(), torch.from_numpy(b))

    def prelu(x, a):
        a = torch.from_numpy(a.reshape(-1)) if isinstance(a, np.ndarray) else a
        return torch.where(x > 0, x, x * (a.view(1, -1, 1, 1) if x.dim() == 4 else a.view(1, -1)))

    def pool_same(x, k, s):  # Keras "same" max pooling: pad at the end first, with -inf
        h, w = x.shape[-2:]
        ph = max((-(-h // s) - 1) * s + k - h, 0)
        pw = max((-(-w // s) - 1) * s + k - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float("-inf"))
        return F.max_pool2d(x, k, s)

    p, r, o = (load_weights(n, folder) for n in ("pnet", "rnet", "onet"))
    P = [conv(p[0], p[1]), p[2], conv(p[3], p[4]), p[5], conv(p[6], p[7]), p[8], conv(p[9], p[10]),
         conv(p[11], p[12])]
    R = [conv(r[0], r[1]), r[2], conv(r[3], r[4]), r[5], conv(r[6], r[7]), r[8]] + \
        [torch.from_numpy(a) for a in r[9:]]
    O = [conv(o[0], o[1]), o[2], conv(o[3], o[4]), o[5], conv(o[6], o[7]), o[8], conv(o[9], o[10]), o[11]] + \
        [torch.from_numpy(a) for a in o[12:]]

    def pnet(x):  # [N, 3, H, W] -> box offsets [N, 4, h, w], face probability [N, h, w]
        x = pool_same(prelu(F.conv2d(x, *P[0]), P[1]), 2, 2)
        x = prelu(F.conv2d(x, *P[2]), P[3])
        x = prelu(F.conv2d(x, *P[4]), P[5])
        return F.conv2d(x, *P[6]), torch.softmax(F.conv2d(x, *P[7]), dim=1)[:, 1]

    def flat(x):  # Keras Permute((2, 1, 3)) then Flatten, from NCHW: order (w, h, c)
        return x.permute(0, 3, 2, 1).reshape(len(x), -1)

    def rnet(x):  # [N, 3, 24, 24] -> offsets [N, 4], probability [N]
        x = pool_same(prelu(F.conv2d(x, *R[0]), R[1]), 3, 2)
        x = F.max_pool2d(prelu(F.conv2d(x, *R[2]), R[3]), 3, 2)
        x = prelu(F.conv2d(x, *R[4]), R[5])
        x = prelu(flat(x) @ R[6] + R[7], R[8])
        return x @ R[9] + R[10], torch.softmax(x @ R[11] + R[12], dim=1)[:, 1]

    def onet(x):  # [N, 3, 48, 48] -> offsets [N, 4], landmarks [N, 10] (x0..x4, y0..y4), probability [N]
        x = pool_same(prelu(F.conv2d(x, *O[0]), O[1]), 3, 2)
        x = F.max_pool2d(prelu(F.conv2d(x, *O[2]), O[3]), 3, 2)
        x = pool_same(prelu(F.conv2d(x, *O[4]), O[5]), 2, 2)
        x = prelu(F.conv2d(x, *O[6]), O[7])
        x = prelu(flat(x) @ O[8] + O[9], O[10])
        return x @ O[11] + O[12], x @ O[13] + O[14], torch.softmax(x @ O[15] + O[16], dim=1)[:, 1]

    return {"pnet": pnet, "rnet": rnet, "onet": onet}


_NETS: dict[str, Any] = {}


def nets() -> dict[str, Any]:
    """The three nets as functions of torch tensors (loaded once per process)."""
    if not _NETS:
        _NETS.update(_build_nets())
    return _NETS


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices int [K] of kept boxes, best first.

    boxes: float [N, 4] (x0, y0, x1, y1); "union" compares IoU, "min" intersection over the smaller area.
    """
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    b = boxes.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += w * 0.5 - side * 0.5
    b[:, 1] += h * 0.5 - side * 0.5
    b[:, 2:4] = b[:, 0:2] + side[:, None]
    return b


def _patches(img, boxes: np.ndarray, size: int):
    """Crops of the normalised image [1, 3, H, W] at integer boxes (1-based inclusive, zeros outside), resized by
    area averaging to size² as facenet-pytorch does: float32 [N, 3, size, size]."""
    import torch
    import torch.nn.functional as F

    H, W = img.shape[-2:]
    out = []
    for x0, y0, x1, y1 in np.fix(boxes[:, :4]).astype(np.int64):
        x0, y0 = x0 - 1, y0 - 1  # 1-based to 0-based start
        canvas = torch.zeros((1, 3, y1 - y0, x1 - x0))
        a, b, c, d = max(x0, 0), min(x1, W), max(y0, 0), min(y1, H)
        if a < b and c < d:
            canvas[..., c - y0:d - y0, a - x0:b - x0] = img[..., c:d, a:b]
        out.append(F.interpolate(canvas, size=(size, size), mode="area"))
    return torch.cat(out) if out else torch.zeros((0, 3, size, size))


def _calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    b = boxes.copy()
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, :4] += offsets * np.stack([w, h, w, h], axis=1)
    return b


def detect(image_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces in uint8 [H, W, 3] RGB: boxes float64 [N, 5] (x0, y0, x1, y1, score) and landmarks float64 [N, 5, 2]
    (left eye, right eye, nose, left mouth, right mouth; image left), both in pixel-index coordinates (pixel
    centres at integers), the convention of facenet-pytorch's output."""
    import torch
    import torch.nn.functional as F

    n = nets()
    img = (torch.from_numpy(np.ascontiguousarray(image_u8)).permute(2, 0, 1)[None].float() - 127.5) * 0.0078125
    H, W = image_u8.shape[:2]
    m = 12.0 / MIN_FACE_PX
    scale, min_l = m, min(H, W) * m
    found = []
    with torch.no_grad():
        while min_l >= 12:  # 1. P-Net on the pyramid
            hs, ws = int(H * scale + 1), int(W * scale + 1)
            reg, prob = n["pnet"](F.interpolate(img, size=(hs, ws), mode="area"))
            prob, reg = prob[0].numpy(), reg[0].numpy()
            ys, xs = np.nonzero(prob >= THRESHOLDS[0])
            if len(ys):
                q1 = np.floor((2 * np.stack([xs, ys], 1) + 1) / scale)
                q2 = np.floor((2 * np.stack([xs, ys], 1) + 12) / scale)
                b = np.concatenate([q1, q2, prob[ys, xs, None], reg[:, ys, xs].T], axis=1)
                found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
            scale *= FACTOR
            min_l *= FACTOR
        if not found:
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        b = np.concatenate(found)
        b = b[nms(b[:, :4], b[:, 4], 0.7)]
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        boxes = np.stack([b[:, 0] + b[:, 5] * bw, b[:, 1] + b[:, 6] * bh, b[:, 2] + b[:, 7] * bw,
                          b[:, 3] + b[:, 8] * bh, b[:, 4]], axis=1)
        boxes = _square(boxes)
        # 2. R-Net
        reg, prob = (t.numpy() for t in n["rnet"](_patches(img, boxes, 24)))
        keep = prob > THRESHOLDS[1]
        boxes, reg = boxes[keep], reg[keep]
        boxes[:, 4] = prob[keep]
        if not len(boxes):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_calibrate(boxes[pick], reg[pick]))
        # 3. O-Net: final boxes and landmarks
        reg, pts, prob = (t.numpy() for t in n["onet"](_patches(img, boxes, 48)))
        keep = prob > THRESHOLDS[2]
        boxes, reg, pts = boxes[keep], reg[keep], pts[keep]
        boxes[:, 4] = prob[keep]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        lm = np.stack([w[:, None] * pts[:, :5] + boxes[:, 0:1] - 1, h[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1], -1)
        boxes = _calibrate(boxes, reg)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
        return boxes[pick].astype(np.float64), lm[pick].astype(np.float64)


# --- steady landmarks: the O-Net re-run on jittered boxes ----------------------------------------------------------
# The cascade's landmarks depend on the box the O-Net sees, and that box on the pyramid scale and the R-Net: between
# scaled or shifted copies of one photo the 5 points move by 2-10 % of the eye distance. Re-running only the O-Net
# (48², ~1 ms a patch) on boxes around the final one, its mirror image included, and moving the box to the O-Net's
# own box regression a few times averages that dependence out. Patches are sampled at sub-pixel box positions
# (no rounding to whole pixels, which alone moves small faces' points by a pixel), from a window resampled to one
# face size, so that the O-Net's response to the photo's resolution drops out too.
STEADY_ROUNDS = 3  # box updates before the final average
STEADY_SHIFT = 0.06  # box jitter: shift, as a fraction of the box side
STEADY_SCALE = 0.08  # box jitter: relative side change
STEADY_SIDE_PX = 96  # the face box's side in the resampled window the O-Net runs on (2x its 48² input)
STEADY_MARGIN = 1.0  # the window reaches this many box sides beyond the box on each side (room for the box to move)
_GRID_FULL = [(dx, dy, ds) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for ds in (-1, 0, 1)]  # 27 boxes
_GRID_FAST = [(dx, dy, 0 if dx == dy == 0 else (dx + dy) % 2 * 2 - 1) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]


def _patches_subpixel(img, boxes: np.ndarray, size: int):
    """Like :func:`_patches` (same box convention, zeros outside) at real-valued box corners: each output pixel the
    mean of m² bilinear samples (m = ceil(side / size)), an area average that moves smoothly with the box.
    img: float32 [1, 3, H, W]; boxes: float [N, 4]; returns float32 [N, 3, size, size]."""
    import torch
    import torch.nn.functional as F

    H, W = img.shape[-2:]
    out = []
    for x0, y0, x1, y1 in boxes[:, :4]:
        a, b, c, d = x0 - 1.0, x1, y0 - 1.0, y1  # the pixel-corner extent of _patches' pixels x0-1 .. x1-1
        m = max(int(np.ceil(max(b - a, d - c) / size)), 1)
        n = size * m
        gx = 2.0 * (a + (np.arange(n) + 0.5) * (b - a) / n) / W - 1.0  # grid_sample's [-1, 1] = the image's corners
        gy = 2.0 * (c + (np.arange(n) + 0.5) * (d - c) / n) / H - 1.0
        grid = np.stack(np.meshgrid(gx, gy, indexing="xy"), axis=-1)[None].astype(np.float32)
        p = F.grid_sample(img, torch.from_numpy(grid), mode="bilinear", padding_mode="zeros", align_corners=False)
        out.append(F.avg_pool2d(p, m))
    return torch.cat(out) if out else torch.zeros((0, 3, size, size))


def _onet_average(img, box: np.ndarray, grid: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """O-Net on ``grid`` jitters of the square ``box`` [4] and their mirror images: (mean landmarks float64 [5, 2],
    median calibrated box [4]), pixel-index coordinates."""
    import torch

    onet = nets()["onet"]
    cx, cy, side = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0]
    boxes = np.array([[cx + dx * STEADY_SHIFT * side - s / 2, cy + dy * STEADY_SHIFT * side - s / 2,
                       cx + dx * STEADY_SHIFT * side + s / 2, cy + dy * STEADY_SHIFT * side + s / 2]
                      for dx, dy, ds in grid for s in [side * (1 + ds * STEADY_SCALE)]])
    patches = _patches_subpixel(img, boxes, 48)
    reg, pts, _ = (t.numpy() for t in onet(patches))
    _, pts_m, _ = (t.numpy() for t in onet(torch.flip(patches, dims=[-1])))
    swap = [1, 0, 2, 4, 3]  # the mirror's left eye / mouth corner is the image's right one
    pts_m = np.concatenate([1.0 - pts_m[:, :5][:, swap], pts_m[:, 5:][:, swap]], axis=1)
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    lm = [np.stack([w * p[:, :5] + boxes[:, 0:1] - 1, h * p[:, 5:] + boxes[:, 1:2] - 1], -1) for p in (pts, pts_m)]
    calibrated = _calibrate(boxes, reg)
    return np.concatenate(lm).mean(axis=0), np.median(calibrated, axis=0)


def _face_window(image_u8: np.ndarray, square: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The square box's surroundings resampled (Lanczos) so that the box side is ``STEADY_SIDE_PX``: (window uint8
    [n, n, 3], its top-left corner (x, y) in the image's pixel-corner coordinates, window px per image px). Outside the
    image: grey 128, the cascade's zero after normalisation. A copy of a photo scaled by any factor gives nearly the
    same window, so the O-Net sees nearly the same pixels: at the photo's own resolution it does not (~2 px)."""
    from PIL import Image

    side = square[2] - square[0]
    half = side * (0.5 + STEADY_MARGIN)
    x0, y0 = (square[0] - 1 + square[2]) / 2 - half, (square[1] - 1 + square[3]) / 2 - half  # corner coordinates
    n = max(int(round(2 * half * STEADY_SIDE_PX / side)), 1)
    H, W = image_u8.shape[:2]
    a0, c0 = int(np.floor(x0)) - 4, int(np.floor(y0)) - 4  # the source region, with room for the filter's support
    a1, c1 = int(np.ceil(x0 + 2 * half)) + 4, int(np.ceil(y0 + 2 * half)) + 4
    region = np.full((c1 - c0, a1 - a0, 3), 128, np.uint8)
    a, b, c, d = max(a0, 0), min(a1, W), max(c0, 0), min(c1, H)
    if a < b and c < d:
        region[c - c0:d - c0, a - a0:b - a0] = image_u8[c:d, a:b]
    box = (x0 - a0, y0 - c0, x0 - a0 + 2 * half, y0 - c0 + 2 * half)
    window = np.array(Image.fromarray(region).resize((n, n), Image.Resampling.LANCZOS, box=box))
    return window, np.array([x0, y0]), n / (2 * half)


def steady_landmarks(image_u8: np.ndarray, box: np.ndarray) -> np.ndarray:
    """MTCNN's 5 landmarks of the face in ``box``, steadied: float64 [5, 2] pixel-index coordinates (as
    :func:`detect`'s). image_u8: uint8 [H, W, 3] RGB; box: float [>=4] (x0, y0, x1, y1) from :func:`detect`.

    The face's surroundings resampled to a fixed face size (:func:`_face_window`); there the O-Net re-run on 9
    jittered copies of the box (and their mirror images), the box moved to the O-Net's own regression,
    ``STEADY_ROUNDS`` times; then the landmarks averaged over 27 jitters and their mirrors, and mapped back.
    """
    import torch

    square = _square(np.asarray(box, dtype=np.float64)[None, :4])[0]
    window, origin, k = _face_window(image_u8, square)
    img = (torch.from_numpy(window).permute(2, 0, 1)[None].float() - 127.5) * 0.0078125
    # the box in the window's pixel-index convention (corner u -> (u - origin) k; index = corner + 1 at the start)
    square = np.concatenate([(square[:2] - 1 - origin) * k + 1, (square[2:4] - origin) * k])
    with torch.no_grad():
        for _ in range(STEADY_ROUNDS):
            _, calibrated = _onet_average(img, square, _GRID_FAST)
            square = _square(calibrated[None])[0]
        lm, _ = _onet_average(img, square, _GRID_FULL)
    return (lm + 0.5) / k + origin - 0.5  # pixel index -> corner -> image corner -> image pixel index

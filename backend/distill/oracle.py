"""The oracle prior: a ``Guidance`` whose "denoised" targets are renders of a known textured head (the ICT head with a
procedural albedo and simple Lambert shading), optionally perturbed in a view-inconsistent way that grows with the
noise level. It stands in for the Joker prior in tests, benchmarks and the offline demo (the reference ships a
ground-truth guidance for the same purpose).

Perturbation model (``perturb`` = s > 0), per call and per view, with a = s (t / 999)^2:
  * geometry: an image-plane similarity warp (shift ~ 5% a of the image, rotation ~ 10 a deg, scale ~ 5% a),
  * colour: per-channel gains ~ 15% a and a smooth 4x4 colour field ~ 10% a,
  * trust in the input: out = truth' + sqrt(abar_t) (lowpass(render) - lowpass(truth')), the low-pass keeping
    structure coarser than sigma_t = 2 sqrt((1 - abar_t) / abar_t) px (at 64 px): noise at level t destroys detail
    below about that scale, and x_t holds sqrt(abar_t) of its input, so a denoiser (or an SDEdit run from t) keeps
    that much of the render's coarse structure (abar_t: SD1.5's cumulative alphas);
  * one step versus a DDIM run: a one-step x0 (n_steps = 1) is the posterior mean, so its detail finer than
    sigma_t is attenuated by sqrt(abar_t) (blurry at high noise, as real one-step predictions are); a multi-step
    run (Stage 2) returns the sharp result.
With s = 0 the targets are the exact renders, whatever t.

Rasterisation is a small numpy z-buffer with perspective-correct colour interpolation (``shared.raster`` renders
normals only, ``backend.render.rasterize`` is the batched torch path for normal maps); it follows
``shared.conventions`` (OpenCV cameras, pixel centres at +0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from backend import costs
from backend.prior.sampling import alphas_cumprod
from backend.render import interpolate, rasterize_chunks
from shared.conventions import NERF_BOUND_RADIUS_M, Camera, pixel_rays
from shared.morphable import load_default_rig, vertex_normals

THIN_REGIONS = ("lacrimal", "eyeblend", "eye_occlusion", "eyelashes")  # shells that are no surface of their own
LIGHT_DIR = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])  # head frame, fixed to the head
MATERIAL_ALBEDO = {"M_Face": (0.80, 0.58, 0.47), "M_BackHead": (0.80, 0.58, 0.47), "M_GumsTongue": (0.70, 0.30, 0.32),
                   "M_Teeth": (0.92, 0.90, 0.84), "M_ScleraLeft": (0.93, 0.92, 0.90),
                   "M_ScleraRight": (0.93, 0.92, 0.90), "M_IrisLeft": (0.25, 0.35, 0.45),
                   "M_IrisRight": (0.25, 0.35, 0.45)}


@dataclass
class OracleHead:
    vertices: np.ndarray  # float64 [V, 3] head frame, metres
    faces: np.ndarray  # int64 [F, 3]
    colours: np.ndarray  # float64 [V, 3] shaded albedo in 0..1


def background(dirs: np.ndarray) -> np.ndarray:
    """The oracle's environment: a smooth function of the ray direction float [..., 3] -> colour [..., 3]."""
    base = np.array([0.55, 0.60, 0.66])
    return np.clip(base + 0.8 * dirs[..., 1:2] * np.array([0.6, 0.5, 0.3]) + 0.4 * dirs[..., 0:1], 0, 1)


def procedural_albedo(v: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Skin-like detail on top of per-vertex ``base`` colours: freckle-scale and blotch-scale patterns (3D sines)."""
    p = v * 100.0  # centimetres
    fine = np.sin(2.1 * p[:, 0] + 1.3 * p[:, 1]) * np.sin(1.7 * p[:, 1] - 2.3 * p[:, 2]) * np.sin(1.9 * p[:, 2])
    coarse = np.sin(0.45 * p[:, 0] + 0.2) * np.cos(0.38 * p[:, 1] - 0.5 * p[:, 2])
    return np.clip(base * (1.0 + 0.12 * fine[:, None] + 0.10 * coarse[:, None] * np.array([1.0, 0.6, 0.5])), 0, 1)


def oracle_head(model, identity: Optional[Sequence[float]] = None, expressions: Optional[dict[str, float]] = None,
                pose: Sequence[float] = (0.0, 0.0, 0.0), gaze: Sequence[float] = (0.0, 0.0)) -> OracleHead:
    """A posed ``shared.morphable.MorphableModel`` (the ICT head) as the oracle's textured head: thin shells left
    out, per-material albedo (skin, a short dark hair cap, sclera, iris, teeth, gums) with procedural detail, and
    Lambert shading from a light fixed to the head, baked per vertex."""
    v = model.evaluate(identity, expressions, pose, gaze).astype(np.float64)  # [V, 3] head frame, metres
    faces = model.faces.astype(np.int64)
    thin_ids = [i for i, n in enumerate(model.region_names) if n.startswith(THIN_REGIONS)]
    keep = ~np.isin(model.vertex_region[faces], thin_ids).any(1)
    faces = faces[keep]
    albedo = np.tile(np.array(MATERIAL_ALBEDO["M_Face"]), (len(v), 1))
    if "face_material" in model.arrays:
        names = [str(m) for m in model.arrays["material_names"]]
        per_face = np.array([MATERIAL_ALBEDO.get(n, (0.5, 0.5, 0.5)) for n in names])[
            model.arrays["face_material"].astype(np.int64)[keep]]
        for k in range(3):  # a vertex takes the colour of (one of) its faces
            albedo[faces[:, k]] = per_face
    neutral = model.neutral.astype(np.float64)
    skin = np.isin(model.vertex_region, [model.region_names.index(n) for n in ("face", "head_neck")
                                          if n in model.region_names])
    hair = skin & ((neutral[:, 1] > 0.075) | ((neutral[:, 2] < -0.06) & (neutral[:, 1] > -0.02)))
    albedo[hair] = (0.22, 0.15, 0.10)
    shade = 0.35 + 0.65 * np.clip(vertex_normals(v, faces, area_weighted=True) @ LIGHT_DIR, 0.0, 1.0)
    return OracleHead(v, faces, procedural_albedo(neutral, albedo) * shade[:, None])


def default_oracle_head(expressions: Optional[dict[str, float]] = None) -> OracleHead:
    """The default ICT rig (``shared.morphable.find_default_rig``) as the oracle head."""
    return oracle_head(load_default_rig("ict"), expressions=expressions)


def render_oracle_views(head: OracleHead, cameras: Sequence[Camera],
                        radius: float = NERF_BOUND_RADIUS_M) -> np.ndarray:
    """Ground-truth images float32 [N, 3, H, W] in 0..1, rasterized in batches with ``backend.render`` (cameras
    of one size); surfaces outside the NeRF's bound count as background."""
    v = torch.from_numpy(np.ascontiguousarray(head.vertices, np.float32))
    f = torch.from_numpy(np.ascontiguousarray(head.faces, np.int64))
    colours = torch.from_numpy(np.ascontiguousarray(head.colours, np.float32))
    images = []
    for chunk, frag in rasterize_chunks(v, f, cameras):
        point = interpolate(frag, f, v)  # [n, H, W, 3] head frame
        hit = ((frag.face_idx >= 0) & (point.abs() <= radius).all(-1)).numpy()
        colour = interpolate(frag, f, colours).numpy()
        for k, camera in enumerate(cameras[chunk]):
            _, dirs = pixel_rays(camera)
            img = np.where(hit[k, ..., None], colour[k], background(dirs))
            images.append(img.transpose(2, 0, 1).astype(np.float32))
    return np.stack(images)


def render_oracle(head: OracleHead, camera: Camera, radius: float = NERF_BOUND_RADIUS_M) -> np.ndarray:
    """The ground-truth image float32 [3, H, W] of one view (see :func:`render_oracle_views`)."""
    return render_oracle_views(head, [camera], radius)[0]


KEEP_SCALE_PX = 2.0  # at 64 px, level t keeps the input's structure coarser than 2 sqrt((1 - abar) / abar) px


class OracleGuidance:
    """``backend.guidance.Guidance`` from a known head. Renders every view once at ``resolution``."""

    def __init__(self, head: OracleHead, cameras: Sequence[Camera], resolution: int, perturb: float = 0.0,
                 seed: int = 0):
        self.resolution, self.perturb = int(resolution), float(perturb)
        self.truth = torch.from_numpy(render_oracle_views(head, [c.scaled(resolution) for c in cameras]))
        self.alphas_cumprod = alphas_cumprod(dtype=torch.float64)  # SD1.5's schedule, as the prior's
        self.generator = torch.Generator().manual_seed(seed)
        self.uses_images = self.perturb > 0  # the exact oracle ignores the renders: the loop may skip them
        self.counter = costs.CostCounter()  # prior evaluations it stands in for (views x DDIM steps)

    def targets(self, images: torch.Tensor, views: torch.Tensor, t: int, n_steps: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """See ``backend.guidance.Guidance.targets``; float [B, 3, resolution, resolution] in 0..1."""
        truth = self.truth[views.cpu()].to(images.device)
        self.counter.add(costs.PRIOR_EVALS, views.numel() * int(n_steps))
        if self.perturb <= 0:
            return truth.clone()
        g = generator or self.generator
        a = self.perturb * (t / 999.0) ** 2
        out = _colour_jitter(_warp(truth, a, g), a, g)
        x = F.interpolate(images.detach().float(), size=truth.shape[-2:], mode="bilinear", align_corners=False)
        abar = float(self.alphas_cumprod[int(t)])
        sigma = KEEP_SCALE_PX * self.resolution / 64.0 * ((1.0 - abar) / abar) ** 0.5
        keep = abar ** 0.5  # x_t holds sqrt(abar) of its input's signal
        base = out + keep * (lowpass(x, sigma) - lowpass(out, sigma))
        if n_steps == 1:  # a one-step x0 is a posterior mean: detail finer than sigma_t only in proportion to keep
            coarse = lowpass(base, sigma)
            base = coarse + keep * (base - coarse)
        return base.clamp(0.0, 1.0)


def lowpass(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Keep structure coarser than about ``sigma`` pixels: area-downsample by 2 sigma, bilinear back up."""
    if sigma < 0.5:
        return img
    H = img.shape[-1]
    small = F.interpolate(img, size=max(1, round(H / (2.0 * sigma))), mode="area")
    return F.interpolate(small, size=img.shape[-2:], mode="bilinear", align_corners=False)


def _randn(shape, g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def _warp(img: torch.Tensor, a: float, g: torch.Generator) -> torch.Tensor:
    """A random similarity warp per image (shift ~5% a, rotation ~10 a deg, scale ~5% a); edges replicate."""
    B = img.shape[0]
    n = _randn((B, 4), g).to(img.device)
    ang = torch.deg2rad(10.0 * a * n[:, 0])
    s = 1.0 + 0.05 * a * n[:, 1]
    theta = torch.stack([torch.stack([s * torch.cos(ang), -s * torch.sin(ang), 0.1 * a * n[:, 2]], -1),
                         torch.stack([s * torch.sin(ang), s * torch.cos(ang), 0.1 * a * n[:, 3]], -1)], 1)
    grid = F.affine_grid(theta.float(), list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _colour_jitter(img: torch.Tensor, a: float, g: torch.Generator) -> torch.Tensor:
    B, _, H, W = img.shape
    gains = 1.0 + 0.15 * a * _randn((B, 3, 1, 1), g).to(img.device)
    field = F.interpolate(_randn((B, 3, 4, 4), g).to(img.device), size=(H, W), mode="bicubic", align_corners=False)
    return img * gains + 0.1 * a * field

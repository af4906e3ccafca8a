"""Volume rendering of a ``HeadNeRF`` (docs/REFERENCE.md §4 "Renderer").

Rays come from ``shared.conventions.Camera`` (OpenCV axes, pixel centres at +0.5), are clipped to the field's cube
bound and marched with a fixed step ``2 sqrt(3) radius / samples_per_ray`` (the reference's 1.732 * 2 * 0.25 / 200),
jittered per ray when ``stratified``. An :class:`OccupancyGrid` (nerfacc's ``OccGridEstimator`` semantics, written in
PyTorch) removes samples in empty cells before the field is evaluated. Compositing (Max 1995):
    alpha_k = 1 - exp(-sigma_k delta),  T_k = prod_{j<k} (1 - alpha_j),  w_k = T_k alpha_k
    rgb = sum_k w_k c_k + (1 - opacity) bg(d),  opacity = sum_k w_k,  depth = sum_k w_k t_k / opacity
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from backend import costs
from backend.costs import CostCounter
from shared.conventions import Camera


@dataclass
class RayBundle:
    origins: torch.Tensor  # [R, 3] head frame, metres
    dirs: torch.Tensor  # [R, 3] unit, head frame


def camera_rays(camera: Camera, u: torch.Tensor, v: torch.Tensor) -> RayBundle:
    """Rays through pixels (u = column, v = row; integer indices, long [R]) of ``camera``; pixel centres at +0.5."""
    K = torch.as_tensor(camera.K, dtype=torch.float64, device=u.device)
    c2w = torch.as_tensor(camera.c2w, dtype=torch.float64, device=u.device)
    d_cam = torch.stack([(u.double() + 0.5 - K[0, 2]) / K[0, 0], (v.double() + 0.5 - K[1, 2]) / K[1, 1],
                         torch.ones_like(u, dtype=torch.float64)], dim=-1)  # [R, 3] OpenCV camera frame
    d = d_cam @ c2w[:3, :3].T
    d = d / d.norm(dim=-1, keepdim=True)
    return RayBundle(c2w[:3, 3].expand_as(d).float().contiguous(), d.float())


def image_rays(camera: Camera, device: torch.device | str = "cpu") -> RayBundle:
    """All rays of ``camera``, row-major ([H * W])."""
    v, u = torch.meshgrid(torch.arange(camera.height, device=device), torch.arange(camera.width, device=device),
                          indexing="ij")
    return camera_rays(camera, u.reshape(-1), v.reshape(-1))


def patch_rays(camera: Camera, x0: int, y0: int, size: int, device: torch.device | str = "cpu") -> RayBundle:
    """Rays of the ``size`` x ``size`` patch with top-left pixel (x0, y0), row-major."""
    v, u = torch.meshgrid(torch.arange(y0, y0 + size, device=device), torch.arange(x0, x0 + size, device=device),
                          indexing="ij")
    return camera_rays(camera, u.reshape(-1), v.reshape(-1))


def ray_box(rays: RayBundle, radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against [-radius, radius]^3: (t_near [R], t_far [R], hit bool [R]); t_near >= 0."""
    inv = 1.0 / torch.where(rays.dirs.abs() < 1e-12, torch.full_like(rays.dirs, 1e-12), rays.dirs)
    t0, t1 = (-radius - rays.origins) * inv, (radius - rays.origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far, t_far > t_near


class OccupancyGrid(nn.Module):
    """A binary grid over the bound marking cells whose density may be non-negligible (nerfacc ``OccGridEstimator``,
    one level): an EMA of sigma * step per cell, occupied when above min(threshold, mean)."""

    def __init__(self, radius: float, res: int = 32, threshold: float = 0.01, decay: float = 0.95):
        super().__init__()
        self.radius, self.res, self.threshold, self.decay = float(radius), int(res), threshold, decay
        self.register_buffer("ema", torch.zeros(res ** 3))
        self.register_buffer("occupied", torch.ones(res ** 3, dtype=torch.bool))  # everything until the 1st update

    def cell_centres(self, jitter: Optional[torch.Tensor] = None) -> torch.Tensor:
        """float [res^3, 3] head-frame points, one per cell (centres, or jittered inside the cell)."""
        idx = torch.arange(self.res ** 3, device=self.ema.device)
        ijk = torch.stack([idx // (self.res * self.res), (idx // self.res) % self.res, idx % self.res], -1).float()
        offset = jitter if jitter is not None else torch.full_like(ijk, 0.5)
        return ((ijk + offset) / self.res * 2.0 - 1.0) * self.radius

    @torch.no_grad()
    def update(self, sigma_fn, step_size: float, generator: Optional[torch.Generator] = None,
               chunk: int = 1 << 16) -> None:
        """Re-evaluate every cell at a random point: ema = max(ema * decay, sigma * step)."""
        jitter = torch.rand(self.res ** 3, 3, generator=generator).to(self.ema.device)
        pts = self.cell_centres(jitter)
        sigma = torch.cat([sigma_fn(pts[i:i + chunk]) for i in range(0, pts.shape[0], chunk)])
        self.ema.copy_(torch.maximum(self.ema * self.decay, sigma * step_size))
        self.occupied.copy_(self.ema > min(self.threshold, float(self.ema.mean())))

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """points float [..., 3] head frame -> bool [...] (False outside the bound)."""
        ijk = torch.floor((points / self.radius + 1.0) * 0.5 * self.res).long()
        inside = ((ijk >= 0) & (ijk < self.res)).all(-1)
        ijk = ijk.clamp(0, self.res - 1)
        flat = (ijk[..., 0] * self.res + ijk[..., 1]) * self.res + ijk[..., 2]
        return self.occupied[flat] & inside


ALPHA_THRESHOLD = 0.01  # the reference's alpha_thre: samples below it are skipped
EARLY_STOP_EPS = 1e-4  # nerfacc's early stop: samples behind a transmittance below this are skipped


def step_size(radius: float, samples_per_ray: int) -> float:
    """The marching step: the bound's diagonal over ``samples_per_ray``."""
    return 2.0 * math.sqrt(3.0) * radius / samples_per_ray


def render_rays(field, rays: RayBundle, samples_per_ray: int, occupancy: Optional[OccupancyGrid] = None,
                stratified: bool = False, generator: Optional[torch.Generator] = None,
                chunk: int = 1 << 14, prune: Optional[bool] = None,
                counter: Optional[CostCounter] = None) -> dict[str, torch.Tensor]:
    """Render rays through ``field`` (a ``HeadNeRF``): {"rgb" [R, 3], "opacity" [R], "depth" [R]} (depth in metres
    from the ray origin, 0 where nothing was hit). ``chunk`` rays at a time.

    ``prune`` (default: when gradients are on): first evaluate density alone without gradients and keep only samples
    with alpha >= 0.01 in front of transmittance 1e-4, as nerfacc's estimator does with the reference's alpha_thre;
    the differentiable pass then sees a few samples per ray. ``counter``: rays and samples marched are added to it."""
    prune = torch.is_grad_enabled() if prune is None else prune
    outs = [_render_chunk(field, RayBundle(rays.origins[i:i + chunk], rays.dirs[i:i + chunk]), samples_per_ray,
                          occupancy, stratified, generator, prune, counter)
            for i in range(0, rays.origins.shape[0], chunk)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def _render_chunk(field, rays: RayBundle, samples_per_ray: int, occupancy: Optional[OccupancyGrid],
                  stratified: bool, generator: Optional[torch.Generator], prune: bool,
                  counter: Optional[CostCounter] = None) -> dict[str, torch.Tensor]:
    R, S, device = rays.origins.shape[0], samples_per_ray, rays.origins.device
    delta = step_size(field.radius, S)
    t_near, t_far, hit = ray_box(rays, field.radius)
    jitter = (torch.rand(R, 1, generator=generator).to(device) if stratified
              else torch.full((R, 1), 0.5, device=device))
    t = t_near[:, None] + (torch.arange(S, device=device)[None] + jitter) * delta  # [R, S] sample midpoints
    valid = (t < t_far[:, None]) & hit[:, None]
    ray_id, sample_id = valid.nonzero(as_tuple=True)  # candidates inside the bound
    points = rays.origins[ray_id] + t[ray_id, sample_id, None] * rays.dirs[ray_id]  # [M, 3]
    if occupancy is not None:  # empty-space skipping
        keep = occupancy.query(points)
        ray_id, sample_id, points = ray_id[keep], sample_id[keep], points[keep]
    if counter is not None:  # shapes are known here (nonzero synchronised): counting costs no extra sync
        counter.add(costs.RAYS, R)
        counter.add(costs.RAY_SAMPLES, points.shape[0])
    if prune:  # nerfacc's sigma_fn pass: drop samples that cannot contribute before the differentiable pass
        with torch.no_grad():
            sigma0 = field(points, with_colour=False)[0]
            tau0 = torch.zeros(R, S, device=device).index_put((ray_id, sample_id), sigma0 * delta)
            alpha0 = 1.0 - torch.exp(-tau0)
            T0 = torch.exp(-(torch.cumsum(tau0, 1) - tau0))
            keep = ((alpha0 >= ALPHA_THRESHOLD) & (T0 >= EARLY_STOP_EPS))[ray_id, sample_id]
        ray_id, sample_id, points = ray_id[keep], sample_id[keep], points[keep]
        if counter is not None:
            counter.add(costs.SHADED_SAMPLES, points.shape[0])
    sigma_packed, rgb_packed = field(points)
    sigma = torch.zeros(R, S, device=device, dtype=sigma_packed.dtype).index_put((ray_id, sample_id), sigma_packed)
    rgb = torch.zeros(R, S, 3, device=device, dtype=rgb_packed.dtype).index_put((ray_id, sample_id), rgb_packed)
    tau = sigma * delta  # optical thickness per sample
    alpha = 1.0 - torch.exp(-tau)
    T = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], 1), 1))
    w = T * alpha  # [R, S]
    opacity = w.sum(1)
    depth = (w * t).sum(1) / opacity.clamp_min(1e-6)
    bg = field.background(rays.dirs)
    return {"rgb": (w[..., None] * rgb).sum(1) + bg * (1.0 - opacity[:, None]), "opacity": opacity, "depth": depth}


def render_image(field, camera: Camera, samples_per_ray: int, occupancy: Optional[OccupancyGrid] = None,
                 chunk: int = 1 << 14) -> dict[str, torch.Tensor]:
    """A full view: {"rgb" [3, H, W], "opacity" [H, W], "depth" [H, W]} (deterministic sample positions; call it
    under ``torch.no_grad()`` unless gradients are wanted)."""
    device = next(field.parameters()).device
    out = render_rays(field, image_rays(camera, device), samples_per_ray, occupancy, chunk=chunk)
    H, W = camera.height, camera.width
    return {"rgb": out["rgb"].T.reshape(3, H, W), "opacity": out["opacity"].reshape(H, W),
            "depth": out["depth"].reshape(H, W)}

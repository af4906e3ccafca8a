"""``export_field``: the export stages in order, each timed and reported."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable, Iterator, Optional

import numpy as np

from backend.export import bake as bake_mod
from backend.export import complete, surface, unwrap as unwrap_mod, write
from backend.export import fill as fill_mod
from backend.export.complete import Completion
from backend.export.grid import Grid, _field_device, query, sample_density
from backend.export.iso import choose_iso_level
from backend.export.sparse import sample_sparse
from backend.export.errors import ExportError
from shared.config.export import ExportConfig
from shared.conventions import HEAD_FRAME, HEAD_UNITS
from shared.morphable import vertex_normals
from shared.png import encode_png
from shared.spec import check

FRAME = HEAD_FRAME  # re-exported by backend.export
Progress = Optional[Callable[[str, int, int], None]]


@dataclass
class ExportResult:
    glb: bytes  # the textured mesh, binary glTF 2.0
    meta: dict[str, Any]  # faces, vertices, texture, units, frame, iso_level, timings_s, ...
    files: dict[str, bytes] = dc_field(default_factory=dict)  # optional extras by file name (OBJ, MTL, PNG)


@contextmanager
def _timed(timings: dict[str, float], stage: str, progress: Progress) -> Iterator[None]:
    if progress:
        progress(stage, 0, 1)
    t0 = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - t0, 3)
    if progress:
        progress(stage, 1, 1)


def export_field(field: Any, cfg: ExportConfig, progress: Progress = None,
                 completion: Optional[Completion] = None) -> ExportResult:
    """Extract, clean, decimate, unwrap, bake and write the field's head as a GLB (see the package docstring).

    field: a :class:`backend.interfaces.Field` (head frame, metres). cfg is validated here. ``progress(stage, step,
    total)`` may raise (e.g. :class:`backend.runner.JobCancelled`) to stop the export between chunks.
    completion: the posed rig's body and the training views; with it the surface is completed from the rig where
    the views did not look, the result is one closed component, and texels the views saw poorly are filled
    (``files["visibility.png"]`` holds the trust map). Raises :class:`backend.export.errors.ExportError` when the field
    holds no surface.
    """
    cfg = check(cfg)
    grid, t, info = Grid(cfg.resolution), {}, {}
    t_start = time.perf_counter()
    terms = w = None
    if completion is not None:  # before sampling: the field is only needed where the views saw the rig
        with _timed(t, "complete", progress):
            terms = complete.rig_terms(grid, completion)
            info.update(terms.info)
    sigma, level, iso_info = _sample(field, grid, cfg, None if terms is None else terms.w_seen > 0, progress, info,
                                     t)
    if terms is not None:
        with _timed(t, "blend", progress):
            # the field's surface wins where it was seen *and* is resolved; texture trust needs only the former
            w_geometry, resolved_info = complete.resolved_weight(terms, sigma, grid)
            info.update(resolved_info)
            phi = complete.completed_distance(sigma, level, grid, terms.phi_rig, w_geometry)
            w = terms.w_seen
            del terms, w_geometry
    with _timed(t, "marching_cubes", progress):
        if completion is not None:
            v, f = surface.marching_cubes_sdf(phi, grid)
            del phi
        else:
            v, f = surface.marching_cubes(sigma, level, grid)
        del sigma
        if len(f) == 0:
            raise ExportError(f"no surface at density {level:.4g}", hint="lower ExportConfig.iso or leave it unset")
        info["marching_cubes_faces"] = int(len(f))
    with _timed(t, "clean", progress):
        # a completed head is one component: nothing beside it is part of the head
        v, f, clean_info = surface.keep_head(v, f, grid, 2.0 if completion is not None else cfg.keep_fraction)
    with _timed(t, "decimate", progress):
        v, f = surface.decimate(v, f, cfg.faces)
        if completion is not None:  # decimation can pinch off an inner cavity (a closed mouth's): drop it
            v, f, _ = surface.keep_head(v, f, grid, 2.0)
        info["open_edges"] = surface.open_edges(f)
        n = vertex_normals(v, f, area_weighted=True)  # on the welded mesh, so seams do not show in the shading
    with _timed(t, "unwrap", progress):
        uw = unwrap_mod.unwrap(v, f, cfg.texture, cfg.padding, cfg.uv_patches)
    positions, normals = v[uw.source], n[uw.source]
    device = _field_device(field)

    def colour(p: np.ndarray) -> np.ndarray:
        return query(field.colour, p, cfg.chunk, device)

    seen = fill_colours = background = None
    if completion is not None:
        with _timed(t, "fill", progress):
            vis, ray = complete.vertex_views(v, f, n, completion.cameras)
            seen_v = complete.seen_weight(vis, *complete.TEXTURE_SEEN_COS)
            if w is not None:  # colour from the field only where the views saw the rig's surface (a fuzzy field's
                # colour there is what the views saw, though its geometry lost to the rig's)
                seen_v = seen_v * complete.at_points(w, grid, v)
                del w
            colour_v = colour(v.astype(np.float32))
            if completion.background is not None:
                bg_v = query(completion.background, ray, cfg.chunk, device)
                trust = complete.background_trust(colour_v, bg_v)
                share = float((seen_v * (1.0 - trust)).sum() / max(float(seen_v.sum()), 1e-9))
                info["background_share"] = round(share, 4)  # of the seen surface, backdrop-coloured
                if share <= complete.MAX_BACKGROUND_SHARE:
                    seen_v = seen_v * trust
                    background = bg_v[uw.source]
                else:
                    info["background_note"] = (f"{share:.0%} of the seen surface has the background's colour: the "
                                               "backdrop resembles the head, so no texel was rejected for it")
            fill_v = fill_mod.harmonic_fill(len(v), f, colour_v, seen_v)
            seen, fill_colours = seen_v[uw.source], fill_v[uw.source]
            info["seen_vertex_fraction"] = round(float((seen_v > 0.5).mean()), 4)
    with _timed(t, "bake", progress):
        texture, coverage, visibility = bake_mod.bake(uw.uv, uw.faces, positions, cfg.texture, colour, seen,
                                                      fill_colours, background)
    with _timed(t, "write", progress):
        glb = write.write_glb(positions, normals, uw.faces, uw.uv, texture)
        files = _extra_files(cfg, positions, normals, uw, texture)
        if visibility is not None:
            files["visibility.png"] = encode_png(visibility)
    t["total"] = round(time.perf_counter() - t_start, 3)
    lo, hi = positions.min(0), positions.max(0)
    meta = {"faces": int(len(uw.faces)), "vertices": int(len(positions)), "texture": [cfg.texture, cfg.texture],
            "units": HEAD_UNITS, "frame": FRAME, "iso_level": level, **iso_info, **info, **clean_info,
            "charts": uw.charts, "uv_utilization": round(uw.utilization, 4), "texel_coverage": round(coverage, 4),
            "bbox_min_m": lo.round(5).tolist(), "bbox_max_m": hi.round(5).tolist(), "timings_s": t,
            "grid": cfg.resolution, "format": cfg.format, "completed": completion is not None}
    return ExportResult(glb=glb, meta=meta, files=files)


def _sample(field: Any, grid: Grid, cfg: ExportConfig, need: Optional[np.ndarray], progress: Progress,
            info: dict[str, Any], timings: dict[str, float]) -> tuple[np.ndarray, float, dict[str, Any]]:
    """The density grid float32 [R, R, R] (per metre), its iso-level and the level's summary; sampling figures go
    into ``info``, the stages' times (``sample``, ``iso``: the level choices, interleaved with sparse sampling) into
    ``timings``. Sparse (``backend.export.sparse``) unless ``cfg.sampling`` is "dense"."""
    iso_s = [0.0]

    def choose(sigma: np.ndarray) -> tuple[float, dict[str, Any]]:
        if progress:
            progress("iso", 0, 1)
        t0 = time.perf_counter()
        out = _iso_level(sigma, grid, cfg, need)
        iso_s[0] += time.perf_counter() - t0
        if progress:
            progress("iso", 1, 1)
        return out

    if progress:
        progress("sample", 0, 1)
    t0 = time.perf_counter()
    if cfg.sampling == "dense":
        sigma = sample_density(field, grid, cfg.chunk, progress)
        info.update({"sample_points": int(sigma.size), "sample_fraction": 1.0})
        level, level_info = choose(sigma)
    else:
        out = sample_sparse(field, grid, cfg.chunk, choose, need, progress)
        info.update(out.info)
        sigma, level, level_info = out.sigma, out.level, out.level_info
    timings["sample"] = round(time.perf_counter() - t0 - iso_s[0], 3)
    timings["iso"] = round(iso_s[0], 3)
    return sigma, level, level_info


def _iso_level(sigma: np.ndarray, grid: Grid, cfg: ExportConfig, where: Optional[np.ndarray] = None
               ) -> tuple[float, dict[str, Any]]:
    if cfg.iso is not None:
        return float(cfg.iso), {"iso_source": "override"}
    choice = choose_iso_level(sigma, grid.spacing, where=where)
    if not np.isfinite(choice.level):
        raise ExportError("the field is empty: no ray through the bound reaches opacity 1/2",
                          hint="the distillation produced no head; check its previews, or set ExportConfig.iso")
    return choice.level, {"iso_source": "auto", "iso_error": round(choice.error, 4),
                          "iso_opaque_rays": choice.opaque_rays}


def _extra_files(cfg: ExportConfig, positions: np.ndarray, normals: np.ndarray, uw: unwrap_mod.Unwrapped,
                 texture: np.ndarray) -> dict[str, bytes]:
    if cfg.format != "glb+obj":
        return {}
    obj, mtl = write.write_obj(positions, normals, uw.faces, uw.uv)
    return {"joker_head.obj": obj, "joker_head.mtl": mtl, "joker_head.png": encode_png(texture)}

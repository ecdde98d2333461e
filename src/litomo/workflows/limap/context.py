"""Stage ``context``: Li next to internal voids versus particle bulk, and the 2-D projection of the map.

Runs after ``statistics`` on the final x_Li map (:mod:`litomo.xanes.li_context`): per particle the
mean x_Li within :data:`NEAR_VOID_DISTANCE_VOX` map voxels of its own internal voids versus its
bulk (``tables/li_context.csv``), and per state the AM-weighted projection of the map along z, as
a 2-D TXM-XANES image would record it, with its Li classes against the 3-D ones
(``tables/li_projection.csv``, ``tables/li_projection_hist.csv``, the 2-D map in
``volumes/<state>/li_projection.ome.zarr`` and ``run.json`` ``li_projection``).

Li versus carbon-binder contact (:func:`litomo.xanes.li_context.cbd_contact_li`): the CBD is the
brighter class of the non-AM voxels of the registration-grid post-edge volume
(:func:`litomo.xanes.li_context.cbd_from_post_edge`), carried to the map grid
(:func:`~litomo.xanes.li_context.map_grid_phases`); per particle the share of its surface voxels
touching CBD and the mean x_Li there versus on its free surface (columns of ``li_context``; per
state ``cbd_source``, ``cbd_effectiveness`` and the pooled means in ``li_projection``). Where the
post-edge image does not separate CBD from pores (electrolyte-filled pores absorb about as much as
binder) the columns are NaN and ``cbd_source`` says ``"not separable"``: absent, not zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from litomo.manifest import StateSpec
from litomo.preprocess import bin_factors
from litomo.workflows.limap.li import LiMap
from litomo.workflows.limap.mapping import Mapped
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.particles import Particles
from litomo.workflows.limap.registration import Registration
from litomo.workflows.limap.stage import StateStage

#: "near a void": within 1.5 map voxels (face and edge neighbours of a void voxel, not corners)
NEAR_VOID_DISTANCE_VOX = 1.5


@dataclass
class LiContext:
    """Output of :class:`ContextStage`: one state's rows of the context tables and its 2-D map."""

    li_context: pd.DataFrame
    li_projection: pd.DataFrame
    li_projection_hist: pd.DataFrame
    #: AM-weighted mean x_Li along z, (y, x), NaN for columns without AM
    map_2d: np.ndarray


#: the run tables this stage contributes (one per DataFrame field of LiContext)
CONTEXT_TABLES = ("li_context", "li_projection", "li_projection_hist")


#: the CBD-contact columns of the per-particle table (NaN where the run has no CBD mask)
CBD_COLUMNS = ("n_surface_voxels", "cbd_contact_fraction", "mean_li_cbd_contact", "mean_li_free_surface")


def state_context(state: str, li: np.ndarray, am_fraction: np.ndarray, labels: np.ndarray,
                  voxel_size_um: tuple[float, float, float], *, poor_max: float, rich_min: float,
                  bins: np.ndarray, phases: np.ndarray | None = None, cbd_source: str = "none") -> LiContext:
    """The context tables of one state (see the module docstring); ``am_fraction`` weights every mean.

    ``phases`` (pore 0 / AM 1 / CBD 2 on the map grid, :func:`litomo.xanes.li_context.map_grid_phases`)
    adds the CBD-contact columns :data:`CBD_COLUMNS`; without it they are NaN.
    """
    from litomo.xanes.li_context import cbd_contact_li, pore_proximity_li, projection_comparison

    d_um = NEAR_VOID_DISTANCE_VOX * float(max(voxel_size_um))
    near = pore_proximity_li(li, labels, voxel_size_um=voxel_size_um, distance_um=d_um, weights=am_fraction)
    near.insert(1, "near_void_distance_um", d_um)
    if phases is not None:
        near = near.merge(cbd_contact_li(li, labels, phases, weights=am_fraction), on="particle", how="left")
    else:
        near = near.assign(**{c: np.nan for c in CBD_COLUMNS})
    comp = projection_comparison(li, am_fraction, poor_max=poor_max, rich_min=rich_min, bins=bins)
    summary = pd.DataFrame([{"state": state, **comp.summary(),
                             "n_columns_2d": int(np.isfinite(comp.map_2d).sum()),
                             "n_particles_with_voids": int((near["void_voxels"] > 0).sum()),
                             "mean_li_near_void": _pooled(near, "near_void"),
                             "mean_li_bulk": _pooled(near, "bulk"), **_cbd_summary(near, cbd_source)}])
    hist = comp.histogram
    for df in (near, hist):
        df.insert(0, "state", state)
    return LiContext(near, summary, hist, comp.map_2d.astype(np.float32))


def _cbd_summary(near: pd.DataFrame, source: str) -> dict[str, Any]:
    """Per-state CBD-contact scalars: surface share touching CBD and pooled Li there versus free surface."""
    n_surf = near["n_surface_voxels"].to_numpy(float)
    touch = n_surf * near["cbd_contact_fraction"].to_numpy(float)
    ok = np.isfinite(touch) & (n_surf > 0)
    frac = float(touch[ok].sum() / n_surf[ok].sum()) if ok.any() else float("nan")
    free = near.assign(n_free_surface=n_surf - touch, n_cbd_contact=touch)
    return {"cbd_source": source, "cbd_contact_fraction": frac,
            "mean_li_cbd_contact": _pooled(free, "cbd_contact"), "mean_li_free_surface": _pooled(free, "free_surface")}


def _pooled(table: pd.DataFrame, part: str) -> float:
    """Voxel-count-weighted mean of the particles' ``mean_li_<part>`` (NaN when no voxel)."""
    n = table[f"n_{part}"].to_numpy(float)
    m = table[f"mean_li_{part}"].to_numpy(float)
    ok = (n > 0) & np.isfinite(m)
    return float(np.sum(n[ok] * m[ok]) / np.sum(n[ok])) if ok.any() else float("nan")


class ContextStage(StateStage):
    """Li near internal voids versus bulk per particle, and the 2-D projection (:func:`state_context`)."""

    name = "context"
    needs = ("li", "map", "particles", "register")
    output = LiContext

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        from litomo.xanes.li_context import CBD_MIN_EFFECTIVENESS, CBD_MIN_SHARE

        p, s = ctx.manifest.processing, ctx.manifest.sample
        # the label file's checksum is taken once, with the run's other inputs (run.prepare_context)
        labels = None if s.labels is None else {"sha256": ctx.checksums[str(s.labels)], "cbd_value": s.cbd_value}
        return {"li_poor_max": p.li_poor_max, "li_rich_min": p.li_rich_min, "histogram_bins": p.histogram_bins,
                "near_void_distance_vox": NEAR_VOID_DISTANCE_VOX, "voxel_size_um": ctx.map_voxel_size_um(state.name),
                "cbd": {"min_share": CBD_MIN_SHARE, "min_effectiveness": CBD_MIN_EFFECTIVENESS, "labels": labels}}

    def run(self, ctx: RunContext, state: StateSpec, *, li: LiMap, map: Mapped, particles: Particles,
            register: Registration) -> LiContext:
        from litomo.xanes.li_context import cbd_from_post_edge, map_grid_phases

        p = ctx.manifest.processing
        bins = np.linspace(0.0, 1.2, int(p.histogram_bins) + 1)
        effectiveness = float("nan")
        if ctx.manifest.sample.labels is not None:
            phases = map_grid_phases(user_cbd(ctx, state), particles.labels, 1, bin_factors(p.bin))
            source = "sample.labels"
        else:
            cbd = cbd_from_post_edge(register.separation_grid, register.threshold)
            phases, source, effectiveness = None, "not separable", cbd.effectiveness
            if cbd.mask is not None:
                phases = map_grid_phases(cbd.mask, particles.labels, register.register_factor, bin_factors(p.bin))
                source = "post-edge threshold"
        out = state_context(state.name, li.li, map.am_fraction, particles.labels,
                            ctx.map_voxel_size_um(state.name), poor_max=p.li_poor_max,
                            rich_min=p.li_rich_min, bins=bins, phases=phases, cbd_source=source)
        out.li_projection["cbd_effectiveness"] = effectiveness
        return out


def user_cbd(ctx: RunContext, state: StateSpec) -> np.ndarray:
    """The CBD voxels of ``[sample] labels`` (full-resolution grid of the state's post-edge volume)."""
    from litomo.errors import DataError
    from litomo.io import read_volume

    s = ctx.manifest.sample
    lab = read_volume(s.labels, voxel_size_um=s.voxel_size_um).array
    shape = ctx.raw_shapes[state.name]
    if tuple(lab.shape) != tuple(shape) or not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"sample.labels must be an integer volume of the state {state.name!r} volumes' shape "
                        f"{tuple(shape)}, got {lab.dtype} {tuple(lab.shape)}")
    cbd = np.asarray(lab) == s.cbd_value
    if not cbd.any():
        raise DataError(f"sample.labels holds no voxel of cbd_value {s.cbd_value}")
    return cbd


def projection_record(table: pd.DataFrame) -> dict[str, Any]:
    """``run.json`` ``li_projection``: per state, the 2-D versus 3-D class fractions and Li near voids.

    Examples
    --------
    >>> projection_record(pd.DataFrame({"state": ["a"], "false_intermediate_fraction": [0.5]}))
    {'a': {'false_intermediate_fraction': 0.5}}
    """
    return {str(r.pop("state")): r for r in table.to_dict("records")}


def write_projection_map(rd: Any, cache: Any, state: str, voxel_size_um: Any) -> None:
    """``volumes/<state>/li_projection.ome.zarr``: the state's 2-D map as a one-slice volume (for the report)."""
    from litomo.io import write_ome_zarr
    from litomo.volume import Volume

    m = cache.field(state, "context", LiContext, "map_2d")
    path = rd.output(rd.volumes(state).relative_to(rd.root) / "li_projection.ome.zarr")
    write_ome_zarr(path, Volume(m[None], voxel_size_um, {"name": "li_projection", "state": state}))

"""Stage ``context``: Li next to internal voids versus particle bulk, and the 2-D projection of the map.

Runs after ``statistics`` on the final x_Li map (:mod:`litomo.xanes.li_context`): per particle the
mean x_Li within :data:`NEAR_VOID_DISTANCE_VOX` map voxels of its own internal voids versus its
bulk (``tables/li_context.csv``), and per state the AM-weighted projection of the map along z, as
a 2-D TXM-XANES image would record it, with its Li classes against the 3-D ones
(``tables/li_projection.csv``, ``tables/li_projection_hist.csv``, the 2-D map in
``volumes/<state>/li_projection.ome.zarr`` and ``run.json`` ``li_projection``).

The run has no carbon-binder phase (the three-energy images separate AM from the rest, not CBD
from pore), so the CBD-contact columns of :func:`litomo.xanes.li_context.cbd_contact_li` are
absent from its table rather than zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from litomo.manifest import StateSpec
from litomo.workflows.limap.li import LiMap
from litomo.workflows.limap.mapping import Mapped
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.particles import Particles
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


def state_context(state: str, li: np.ndarray, am_fraction: np.ndarray, labels: np.ndarray,
                  voxel_size_um: tuple[float, float, float], *, poor_max: float, rich_min: float,
                  bins: np.ndarray) -> LiContext:
    """The context tables of one state (see the module docstring); ``am_fraction`` weights every mean."""
    from litomo.xanes.li_context import pore_proximity_li, projection_comparison

    d_um = NEAR_VOID_DISTANCE_VOX * float(max(voxel_size_um))
    near = pore_proximity_li(li, labels, voxel_size_um=voxel_size_um, distance_um=d_um, weights=am_fraction)
    near.insert(1, "near_void_distance_um", d_um)
    comp = projection_comparison(li, am_fraction, poor_max=poor_max, rich_min=rich_min, bins=bins)
    summary = pd.DataFrame([{"state": state, **comp.summary(),
                             "n_columns_2d": int(np.isfinite(comp.map_2d).sum()),
                             "n_particles_with_voids": int((near["void_voxels"] > 0).sum()),
                             "mean_li_near_void": _pooled(near, "near_void"),
                             "mean_li_bulk": _pooled(near, "bulk")}])
    hist = comp.histogram
    for df in (near, hist):
        df.insert(0, "state", state)
    return LiContext(near, summary, hist, comp.map_2d.astype(np.float32))


def _pooled(table: pd.DataFrame, part: str) -> float:
    """Voxel-count-weighted mean of the particles' ``mean_li_<part>`` (NaN when no voxel)."""
    n = table[f"n_{part}"].to_numpy(float)
    m = table[f"mean_li_{part}"].to_numpy(float)
    ok = (n > 0) & np.isfinite(m)
    return float(np.sum(n[ok] * m[ok]) / np.sum(n[ok])) if ok.any() else float("nan")


class ContextStage(StateStage):
    """Li near internal voids versus bulk per particle, and the 2-D projection (:func:`state_context`)."""

    name = "context"
    needs = ("li", "map", "particles")
    output = LiContext

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p = ctx.manifest.processing
        return {"li_poor_max": p.li_poor_max, "li_rich_min": p.li_rich_min, "histogram_bins": p.histogram_bins,
                "near_void_distance_vox": NEAR_VOID_DISTANCE_VOX, "voxel_size_um": ctx.map_voxel_size_um(state.name)}

    def run(self, ctx: RunContext, state: StateSpec, *, li: LiMap, map: Mapped, particles: Particles) -> LiContext:
        p = ctx.manifest.processing
        bins = np.linspace(0.0, 1.2, int(p.histogram_bins) + 1)
        return state_context(state.name, li.li, map.am_fraction, particles.labels,
                             ctx.map_voxel_size_um(state.name), poor_max=p.li_poor_max,
                             rich_min=p.li_rich_min, bins=bins)


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

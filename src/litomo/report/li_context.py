"""Report figures of the ``context`` stage: the 2-D projection against the 3-D map, Li near internal voids.

Drawn from a run folder's ``tables/li_projection_hist.csv``, ``tables/li_context.csv`` and
``volumes/<state>/{li, li_projection}.ome.zarr`` (see :mod:`litomo.workflows.limap.context`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from litomo.errors import LitomoError
from litomo.io.rundir import RunLayout

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn (report.html imports this module)
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: the report's figures of the context stage: name -> (title, tables needed, caption)
CONTEXT_FIGURES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "li_projection": (
        "2-D projection versus 3-D", ("li_projection_hist",),
        "Left: a mid-depth slice of the 3-D Li map; middle: the same electrode as a 2-D TXM image would "
        "see it (AM-weighted mean x_Li along z); right: the Li distributions of the 3-D voxels and the 2-D "
        "columns (shaded: the intermediate range). Columns mixing Li-poor and Li-rich voxels project into "
        "the intermediate range: a 2-D image shows an intermediate phase the 3-D map does not have "
        "(tables/li_projection.csv: false_intermediate_fraction)."),
    "li_voids": (
        "Li next to internal voids", ("li_context",),
        "Mean Li of each particle next to its own internal pores and enclosed cracks against its bulk "
        "(dashed: equal). Points below the line: the void surfaces are delithiated ahead of the bulk, as "
        "an extra reacting surface would be."),
    "li_cbd_contact": (
        "Li at carbon-binder contacts", ("li_context",),
        "Mean Li of each particle's surface voxels that touch the carbon-binder domain against its free "
        "surface voxels (dashed: equal; colour: share of the surface touching CBD). The CBD comes from "
        "[sample] labels or a post-edge threshold (tables/li_projection.csv: cbd_source); binder films "
        "thinner than a quarter of a map voxel are not seen."),
}


def read_projection_maps(run_dir: str | Path, states: Sequence[str]) -> dict[str, np.ndarray]:
    """The 2-D maps ``volumes/<state>/li_projection.ome.zarr`` of the states that have one."""
    from litomo.io import read_ome_zarr

    out = {}
    for s in states:
        path = RunLayout(Path(run_dir)).volume(s, "li_projection")
        if path.exists():
            out[s] = np.asarray(read_ome_zarr(path).numpy())[0]
    return out


def context_extra(run_dir: Path, states: Sequence[str], li_maps: dict[str, Any],
                  parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What the report needs besides the tables: the 2-D maps, and (``separator_side = "z_max"``)
    the Li maps turned so that depth runs down from the separator in every orthoslice."""
    out: dict[str, Any] = {"li_projection_maps": {}}
    try:
        out["li_projection_maps"] = read_projection_maps(run_dir, states)
    except (LitomoError, OSError) as exc:
        log.warning("2-D projection maps not read: %s", exc)
    if parameters.get("separator_side") == "z_max":
        out["li_maps"] = {k: v[::-1] for k, v in li_maps.items()}
    return out


def context_unavailable(name: str, tables: Mapping[str, pd.DataFrame | None], extra: Mapping[str, Any]) -> str | None:
    """Why figure ``name`` cannot be drawn (None: it can)."""
    if name == "li_projection" and not (extra.get("li_maps") and extra.get("li_projection_maps")):
        return "no Li maps or 2-D maps under volumes/<state>/{li, li_projection}.ome.zarr"
    lc = tables.get("li_context")
    if name == "li_voids" and lc is not None and not (lc.get("n_near_void", pd.Series(dtype=float)) > 0).any():
        return "no particle has an internal void in the Li map"
    if name == "li_cbd_contact" and lc is not None and not (lc.get("cbd_contact_fraction",
                                                                    pd.Series(dtype=float)) > 0).any():
        return ("no CBD mask: the post-edge image does not separate binder from pores "
                "(give [sample] labels with cbd_value)")
    return None


def draw_context(name: str, tables: Mapping[str, Any], extra: Mapping[str, Any]) -> Figure:
    """Figure ``name`` of :data:`CONTEXT_FIGURES` from the run's tables and ``extra`` (:func:`context_extra`)."""
    if name == "li_voids":
        return void_figure(tables["li_context"])
    if name == "li_cbd_contact":
        return cbd_figure(tables["li_context"])
    p = extra.get("parameters", {})
    return projection_figure(extra["li_maps"], extra["li_projection_maps"], tables["li_projection_hist"],
                             poor_max=float(p.get("li_poor_max", 0.6)), rich_min=float(p.get("li_rich_min", 0.9)))


def projection_figure(maps_3d: Mapping[str, Any], maps_2d: Mapping[str, np.ndarray], hist: pd.DataFrame, *,
                      poor_max: float = 0.6, rich_min: float = 0.9) -> Figure:
    """Per state: a mid-depth slice of the 3-D map, the 2-D projection, and both histograms.

    Parameters
    ----------
    maps_3d : dict state -> (z, y, x) array
        The 3-D x_Li maps (only the middle slice is read).
    maps_2d : dict state -> (y, x) array
        The AM-weighted projections along z.
    hist : DataFrame
        ``tables/li_projection_hist.csv``: ``state, bin_left, bin_right, fraction_3d, fraction_2d``.
    poor_max, rich_min : float
        Class thresholds, shaded in the histogram.

    Returns
    -------
    Figure
        One row per state with a map in the 2-D table.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from litomo.report.figures import LI_CMAP, LI_LABEL, NAN_COLOUR

    names = [s for s in maps_2d if s in maps_3d]
    fig = Figure(figsize=(11.0, 3.0 * max(len(names), 1) + 0.6), layout="constrained")
    axs = np.atleast_2d(fig.subplots(max(len(names), 1), 3, squeeze=False))
    cm = colormaps[LI_CMAP].with_extremes(bad=NAN_COLOUR)
    im = None
    for row, name in enumerate(names):
        a3 = maps_3d[name]
        mid = np.asarray(a3[a3.shape[0] // 2], dtype=np.float32)
        for ax, img, title in ((axs[row, 0], mid, "3-D: xy slice at mid-depth"),
                               (axs[row, 1], maps_2d[name], "2-D: AM-weighted mean along z")):
            im = ax.imshow(img, cmap=cm, vmin=0.0, vmax=1.1, interpolation="nearest")
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_axis_off()
        g = hist[hist["state"].astype(str) == name]
        ax = axs[row, 2]
        ax.axvspan(poor_max, rich_min, color="#fdae61", alpha=0.2, lw=0, label="intermediate range")
        for col, colour, lab in (("fraction_3d", "0.2", "3-D voxels"), ("fraction_2d", "#d7191c", "2-D columns")):
            ax.stairs(100 * g[col].to_numpy(float), np.r_[g["bin_left"].to_numpy(float),
                                                          g["bin_right"].to_numpy(float)[-1:]],
                      color=colour, label=lab)
        ax.set_xlabel(LI_LABEL)
        ax.set_ylabel("share of AM (%)")
        ax.legend(fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axs[:, :2].ravel().tolist(), label=LI_LABEL, shrink=0.8)
    fig.suptitle("2-D projection versus the 3-D map")
    return fig


def void_figure(li_context: pd.DataFrame) -> Figure:
    """Per particle with internal voids: mean x_Li near its voids against its bulk, one colour per state.

    Parameters
    ----------
    li_context : DataFrame
        ``tables/li_context.csv``: ``state, mean_li_near_void, mean_li_bulk, n_near_void``.

    Returns
    -------
    Figure
    """
    from matplotlib.figure import Figure

    from litomo.report.figures import LI_LABEL

    fig = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = fig.subplots()
    df = li_context[li_context["n_near_void"] > 0]
    for name, g in df.groupby(df["state"].astype(str), sort=False):
        ax.scatter(g["mean_li_bulk"], g["mean_li_near_void"], s=16, label=name, edgecolors="0.2", linewidths=0.3)
    lo, hi = 0.0, 1.1
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
    ax.set_xlabel(f"particle bulk mean {LI_LABEL}")
    ax.set_ylabel(f"mean {LI_LABEL} next to internal voids")
    ax.legend(fontsize=8, title="state")
    return fig


def cbd_figure(li_context: pd.DataFrame) -> Figure:
    """Per particle touching CBD: mean x_Li of its CBD-contact surface against its free surface.

    Parameters
    ----------
    li_context : DataFrame
        ``tables/li_context.csv``: ``state, mean_li_cbd_contact, mean_li_free_surface,
        cbd_contact_fraction``.

    Returns
    -------
    Figure
        One panel per state, points coloured by the particle's CBD-contact share.
    """
    from matplotlib.figure import Figure

    from litomo.report.figures import LI_LABEL

    df = li_context[li_context["cbd_contact_fraction"] > 0]
    groups = list(df.groupby(df["state"].astype(str), sort=False))
    fig = Figure(figsize=(4.2 * max(len(groups), 1) + 0.8, 4.0), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, max(len(groups), 1), squeeze=False)[0])
    sc = None
    for ax, (name, g) in zip(axs, groups, strict=False):
        sc = ax.scatter(g["mean_li_free_surface"], g["mean_li_cbd_contact"], c=g["cbd_contact_fraction"], s=16,
                        vmin=0.0, vmax=1.0, cmap="viridis", edgecolors="0.2", linewidths=0.3)
        ax.plot([0.0, 1.1], [0.0, 1.1], color="0.5", lw=0.8, ls="--")
        ax.set_title(f"state {name}", fontsize=9)
        ax.set_xlabel(f"free surface mean {LI_LABEL}")
    axs[0].set_ylabel(f"CBD-contact surface mean {LI_LABEL}")
    if sc is not None:
        fig.colorbar(sc, ax=list(axs), label="share of surface touching CBD", shrink=0.8)
    return fig


__all__ = ["CONTEXT_FIGURES", "cbd_figure", "context_extra", "context_unavailable", "draw_context",
           "projection_figure", "read_projection_maps", "void_figure"]

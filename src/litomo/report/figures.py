"""Figures of a Li-mapping run, each a small function from tables/arrays to a matplotlib Figure.

Every function takes the tables written by the pipeline (``OUT/tables/*.csv`` as pandas
DataFrames) or arrays, and returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (no pyplot state, no ``show``), so they work headless and in threads.
:func:`save_figure` (from :mod:`litomo.report.savefig`) writes a figure as PNG (150 dpi) and SVG atomically.

Conventions: z is the through-plane axis, depth is measured from z = 0 (separator side);
lengths in micrometres; the Li content is x in Li_xMO2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from litomo.report.savefig import save_figure
from litomo.volume import as_voxel_size

LI_LABEL = "Li content x in LixMO2"
LI_CMAP = "cividis"  # perceptually uniform and readable with colour-vision deficiency
NAN_COLOUR = "#d9d9d9"  # light grey: outside the active material; cividis' mid-tones are darker greys
CLASS_COLOURS = {"li_rich": "#2c7bb6", "li_moderate": "#fdae61", "li_poor": "#d7191c"}
CLASS_NAMES = {"li_rich": "Li-rich", "li_moderate": "Li-moderate", "li_poor": "Li-poor"}
DEFAULT_POOR_MAX = 0.6
DEFAULT_RICH_MIN = 0.9


def _figure(nrows: int = 1, ncols: int = 1, *, width_in: float = 6.4, height_in: float = 4.0,
            **kw: Any) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axs


def _state_order(df: pd.DataFrame, states: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(df["state"].astype(str)))
    if states is None:
        return present
    ordered = [s for s in map(str, states) if s in present]
    return ordered + [s for s in present if s not in ordered]


def _state_colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.9, max(n, 1))][:n]


def _nice_length(target: float) -> float:
    """Largest 1-2-5 x 10^k not above ``target`` (for scale bars)."""
    if not (target > 0 and math.isfinite(target)):
        return 1.0
    k = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**k <= target:
            return m * 10**k
    return 10**k


def _scale_bar(ax: Any, width_um: float) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = _nice_length(0.25 * width_um)
    label = f"{length:g} um"
    bar = AnchoredSizeBar(ax.transData, length, label, "lower right", pad=0.3, color="white",
                          frameon=False, size_vertical=max(width_um / 120, 1e-9), label_top=True)
    ax.add_artist(bar)


def li_orthoslices(
    li: Mapping[str, Any],
    voxel_size_um: float | Sequence[float],
    *,
    vmin: float = 0.3,
    vmax: float = 1.1,
    cmap: str = LI_CMAP,
) -> Figure:
    """Centre orthoslices of the Li map of each state (one row per state).

    Columns: the xy plane at mid-depth, and the xz and yz planes, where depth z runs downwards
    from the separator side (z = 0). NaN (outside the active material) is grey.

    Parameters
    ----------
    li : dict state -> (z, y, x) array
        Li maps (numpy or dask; only the three slices are read).
    voxel_size_um : float or (z, y, x)
        Voxel size of the maps in um (sets the axes extent and the scale bar).
    vmin, vmax : float
        Colour range of x_Li.
    cmap : str
        Perceptual colour map.

    Returns
    -------
    Figure
        ``3 * n_states`` image axes plus one colour bar.

    Examples
    --------
    >>> m = np.full((4, 6, 6), 0.8, np.float32); m[0, 0, 0] = np.nan
    >>> len(li_orthoslices({"I": m}, 0.5).axes)
    4
    """
    from matplotlib import colormaps

    vz, vy, vx = as_voxel_size(voxel_size_um)
    names = list(li)
    if not names:
        raise ValueError("li_orthoslices needs at least one state")
    cm = colormaps[cmap].with_extremes(bad=NAN_COLOUR)
    fig, axs = _figure(len(names), 3, width_in=10.0, height_in=2.9 * len(names) + 0.6)
    im = None
    for row, name in enumerate(names):
        arr = li[name]
        nz, ny, nx = arr.shape
        views = [
            (arr[nz // 2], (0, nx * vx, ny * vy, 0), f"xy plane at z = {(nz // 2 + 0.5) * vz:.3g} um", "x (um)", "y (um)"),
            (arr[:, ny // 2], (0, nx * vx, nz * vz, 0), "xz plane (depth down)", "x (um)", "depth z (um)"),
            (arr[:, :, nx // 2], (0, ny * vy, nz * vz, 0), "yz plane (depth down)", "y (um)", "depth z (um)"),
        ]
        for col, (img, extent, title, xl, yl) in enumerate(views):
            ax = axs[row, col]
            img = np.asarray(img, dtype=np.float32)
            im = ax.imshow(img, cmap=cm, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.locator_params(nbins=4)
            _scale_bar(ax, extent[1])
    cb = fig.colorbar(im, ax=axs, shrink=0.8, extend="both")
    cb.set_label(LI_LABEL)
    return fig


def class_fraction_bars(states: pd.DataFrame, *, order: Sequence[str] | None = None) -> Figure:
    """Stacked bars of the Li-rich / moderate / poor volume fractions of each state.

    Parameters
    ----------
    states : DataFrame
        ``tables/states.csv``: ``state``, ``frac_li_rich``, ``frac_li_moderate``,
        ``frac_li_poor`` (fractions of AM volume), optional ``label``.
    order : sequence of str, optional
        State order (default: table order).

    Returns
    -------
    Figure
        One axis with three bar containers of ``n_states`` bars each.
    """
    df = states.copy()
    df["state"] = df["state"].astype(str)
    names = _state_order(df, order)
    df = df.set_index("state").loc[names]
    ticks = [_state_tick(n, df.loc[n]) for n in names]
    fig, axs = _figure(width_in=max(4.5, 1.0 + 0.8 * len(names)), height_in=3.8)
    ax = axs[0, 0]
    bottom = np.zeros(len(names))
    x = np.arange(len(names))
    for cls in ("li_rich", "li_moderate", "li_poor"):
        vals = 100 * df[f"frac_{cls}"].astype(float).fillna(0.0).to_numpy()
        ax.bar(x, vals, bottom=bottom, color=CLASS_COLOURS[cls], label=CLASS_NAMES[cls], width=0.7)
        bottom += vals
    ax.set_xticks(x, ticks)
    ax.set_ylabel("share of active-material volume (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("Li classes per state")
    return fig


def _state_tick(name: str, row: Any) -> str:
    label = row.get("label") if hasattr(row, "get") else None
    if isinstance(label, str) and label.strip() and label.strip() != name:
        return f"{name}\n{label.strip()}"
    return name


def _class_spans(ax: Any, poor_max: float, rich_min: float) -> None:
    lo, hi = ax.get_xlim()
    ax.axvspan(min(lo, poor_max), poor_max, color=CLASS_COLOURS["li_poor"], alpha=0.08, lw=0)
    ax.axvspan(rich_min, max(hi, rich_min), color=CLASS_COLOURS["li_rich"], alpha=0.08, lw=0)
    ax.set_xlim(lo, hi)


def li_histograms(
    histograms: pd.DataFrame,
    *,
    order: Sequence[str] | None = None,
    poor_max: float = DEFAULT_POOR_MAX,
    rich_min: float = DEFAULT_RICH_MIN,
) -> Figure:
    """Overlaid Li-content histograms (shared bins), one step line per state.

    Parameters
    ----------
    histograms : DataFrame
        ``tables/histograms.csv``: ``state``, ``bin_left``, ``bin_right``, ``density``
        (or ``count``).
    poor_max, rich_min : float
        Class thresholds, shaded red (Li-poor) and blue (Li-rich).

    Returns
    -------
    Figure
        One axis with one line per state.
    """
    names = _state_order(histograms, order)
    fig, axs = _figure(width_in=6.4, height_in=3.8)
    ax = axs[0, 0]
    ycol = "density" if "density" in histograms else "count"
    for name, colour in zip(names, _state_colours(len(names)), strict=True):
        h = histograms[histograms["state"].astype(str) == name].sort_values("bin_left")
        edges = np.append(h["bin_left"].to_numpy(float), h["bin_right"].to_numpy(float)[-1:])
        y = h[ycol].to_numpy(float)
        ax.plot(edges, np.append(y, y[-1:]), drawstyle="steps-post", color=colour, label=name, lw=1.5)
    _class_spans(ax, poor_max, rich_min)
    ax.set_xlabel(LI_LABEL)
    ax.set_ylabel("probability density" if ycol == "density" else "voxels")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, title="state")
    ax.set_title("Distribution of Li content over the active material")
    return fig


def z_profiles(z_profile: pd.DataFrame, *, order: Sequence[str] | None = None) -> Figure:
    """Mean Li (with +- std band) and the Li-rich / Li-poor fractions versus depth.

    Parameters
    ----------
    z_profile : DataFrame
        ``tables/z_profile.csv``: ``state``, ``depth_um`` (from the separator side; else ``z_um``),
        ``mean_li``, optional ``std_li``, ``frac_li_rich``, ``frac_li_poor``.

    Returns
    -------
    Figure
        Three axes (mean Li, Li-rich fraction, Li-poor fraction), one line per state each.
    """
    names = _state_order(z_profile, order)
    depth = "depth_um" if "depth_um" in z_profile else "z_um"  # older runs: z = 0 is the separator
    fig, axs = _figure(1, 3, width_in=12.0, height_in=3.8, sharex=True)
    colours = _state_colours(len(names))
    for name, colour in zip(names, colours, strict=True):
        g = z_profile[z_profile["state"].astype(str) == name].sort_values(depth)
        z = g[depth].to_numpy(float)
        m = g["mean_li"].to_numpy(float)
        axs[0, 0].plot(z, m, color=colour, label=name)
        if "std_li" in g:
            s = g["std_li"].to_numpy(float)
            axs[0, 0].fill_between(z, m - s, m + s, color=colour, alpha=0.15, lw=0)
        for ax, col in ((axs[0, 1], "frac_li_rich"), (axs[0, 2], "frac_li_poor")):
            vals = 100 * g[col].to_numpy(float) if col in g else np.full_like(z, np.nan)
            ax.plot(z, vals, color=colour, label=name)
    axs[0, 0].set_ylabel(f"mean {LI_LABEL}")
    axs[0, 1].set_ylabel("Li-rich share of AM in slice (%)")
    axs[0, 2].set_ylabel("Li-poor share of AM in slice (%)")
    for ax in axs[0]:
        ax.set_xlabel("depth from the separator side (um)")
    fig.legend(*axs[0, 0].get_legend_handles_labels(), loc="outside right upper", fontsize=8, title="state")
    fig.suptitle("Through-plane profiles (depth 0: separator side)")
    return fig


def core_shell_profiles(core_shell: pd.DataFrame, *, order: Sequence[str] | None = None) -> Figure:
    """Mean Li versus distance from the particle surface (0 = surface, larger = deeper inside).

    Parameters
    ----------
    core_shell : DataFrame
        ``tables/core_shell.csv``: ``state``, ``distance_um``, ``mean_li``, optional ``n_voxels``.

    Returns
    -------
    Figure
        One axis with one line per state.
    """
    names = _state_order(core_shell, order)
    fig, axs = _figure(width_in=6.4, height_in=3.8)
    ax = axs[0, 0]
    for name, colour in zip(names, _state_colours(len(names)), strict=True):
        g = core_shell[core_shell["state"].astype(str) == name].sort_values("distance_um")
        ax.plot(g["distance_um"].to_numpy(float), g["mean_li"].to_numpy(float), marker="o", ms=3,
                color=colour, label=name)
    ax.set_xlabel("distance from particle surface (um)")
    ax.set_ylabel(f"mean {LI_LABEL}")
    ax.legend(fontsize=8, title="state")
    ax.set_title("Core-shell profile (all particles)")
    return fig


_MARKERS = "osD^v<>ph*X"


def particle_scatter(particles: pd.DataFrame, *, order: Sequence[str] | None = None,
                     include_boundary: bool = False) -> Figure:
    """Per-particle mean Li against size (colour: Li-rich fraction) and against depth.

    Parameters
    ----------
    particles : DataFrame
        ``tables/particles.csv``: ``state``, ``eq_diameter_um``, ``depth_um`` (or
        ``centroid_z_um``), ``mean_li``, ``li_rich_fraction``, optional ``touches_boundary``.
    include_boundary : bool
        Also plot particles cut by the volume boundary (their size is underestimated).

    Returns
    -------
    Figure
        Two axes (one scatter collection per state each) plus a colour bar.
    """
    df = particles.copy()
    n_cut = 0
    if not include_boundary and "touches_boundary" in df:
        cut = df["touches_boundary"].astype(str).str.lower().isin(("true", "1", "1.0"))
        n_cut = int(cut.sum())
        df = df[~cut]
    depth_col = "depth_um" if "depth_um" in df else "centroid_z_um"
    names = _state_order(particles, order)
    fig, axs = _figure(1, 2, width_in=11.0, height_in=4.0)
    sc = None
    for k, name in enumerate(names):
        g = df[df["state"].astype(str) == name]
        colour = g["li_rich_fraction"].to_numpy(float) if "li_rich_fraction" in g else None
        kw = {"marker": _MARKERS[k % len(_MARKERS)], "s": 18, "label": name, "edgecolors": "0.2",
              "linewidths": 0.3}
        sc = axs[0, 0].scatter(g["eq_diameter_um"], g["mean_li"], c=colour, cmap="viridis",
                               vmin=0, vmax=1, **kw)
        axs[0, 1].scatter(g[depth_col], g["mean_li"], c=colour, cmap="viridis", vmin=0, vmax=1, **kw)
    axs[0, 0].set_xlabel("equivalent-sphere diameter (um)")
    axs[0, 1].set_xlabel("particle depth from the separator side (um)")
    for ax in axs[0]:
        ax.set_ylabel(f"particle mean {LI_LABEL}")
    leg = axs[0, 0].legend(fontsize=8, title="state (marker)")
    for h in leg.legend_handles:  # the marker shape is the key; its colour would mislead
        h.set_facecolor("0.75")
    if sc is not None:
        fig.colorbar(sc, ax=axs[0, 1]).set_label("Li-rich fraction of particle")
    note = f" ({n_cut} particles cut by the volume boundary left out)" if n_cut else ""
    fig.suptitle(f"Particles: Li versus size and depth{note}")
    return fig


def _evolution_long(evolution: pd.DataFrame) -> pd.DataFrame:
    """Long ``particle, state, mean_li`` view of an evolution table (long or wide layout)."""
    df = evolution.copy()
    pid = next((c for c in ("particle", "particle_ref", "ref_particle", "track", "track_id", "id")
                if c in df), None)
    if pid is None:
        raise ValueError(f"evolution table has no particle id column (columns: {list(df.columns)})")
    if "state" in df and "mean_li" in df:
        return df[[pid, "state", "mean_li"]].rename(columns={pid: "particle"})
    wide = [c for c in df.columns if str(c).startswith("mean_li_")]
    if not wide:
        raise ValueError(f"evolution table has neither state/mean_li nor mean_li_<state> columns: {list(df.columns)}")
    long = df.melt(id_vars=[pid], value_vars=wide, var_name="state", value_name="mean_li")
    long["state"] = long["state"].str.removeprefix("mean_li_")
    return long.rename(columns={pid: "particle"})


def evolution_lines(evolution: pd.DataFrame, *, order: Sequence[str] | None = None,
                    max_particles: int = 200) -> Figure:
    """Mean Li of each tracked particle across states, plus the median over particles.

    Parameters
    ----------
    evolution : DataFrame
        ``tables/evolution.csv`` in long (``particle``, ``state``, ``mean_li``) or wide
        (``particle``, ``mean_li_<state>``) layout.
    max_particles : int
        At most this many particles are drawn (the first by id) to keep the figure legible.

    Returns
    -------
    Figure
        One axis with one thin line per drawn particle and one thick median line.
    """
    long = _evolution_long(evolution)
    long["state"] = long["state"].astype(str)
    names = _state_order(long, order)
    pos = {n: i for i, n in enumerate(names)}
    wide = long.pivot_table(index="particle", columns="state", values="mean_li", aggfunc="mean")
    wide = wide.reindex(columns=names)
    fig, axs = _figure(width_in=6.4, height_in=4.0)
    ax = axs[0, 0]
    x = np.array([pos[n] for n in names])
    shown = wide.iloc[:max_particles]
    for _, row in shown.iterrows():
        ax.plot(x, row.to_numpy(float), color="0.5", alpha=0.35, lw=0.7)
    ax.plot(x, wide.median(axis=0, skipna=True).to_numpy(float), color="k", lw=2.5, marker="o",
            label="median over particles")
    ax.set_xticks(x, names)
    ax.set_xlabel("state")
    ax.set_ylabel(f"particle mean {LI_LABEL}")
    extra = f" (first {max_particles} of {len(wide)})" if len(wide) > max_particles else ""
    ax.set_title(f"{len(shown)} tracked particles{extra}")
    ax.legend(fontsize=8)
    return fig


def _pair_label(row: Any) -> str:
    parts = [str(row[c]) for c in ("state", "moving") if c in row and pd.notna(row[c])]
    label = " ".join(parts)
    if "fixed" in row and pd.notna(row["fixed"]):
        label += f"\n-> {row['fixed']}"
    return label


def registration_qa(registration: pd.DataFrame) -> Figure:
    """Normalised cross-correlation before and after registration for every pair.

    Parameters
    ----------
    registration : DataFrame
        ``tables/registration.csv``: ``state``, ``moving``, ``fixed``, ``ncc_before``,
        ``ncc_after``.

    Returns
    -------
    Figure
        One axis with two bar containers (before, after) of ``n_pairs`` bars each; pairs whose
        NCC did not improve are marked with a red "x".
    """
    df = registration.reset_index(drop=True)
    n = len(df)
    fig, axs = _figure(width_in=max(5.0, 1.0 + 0.9 * n), height_in=4.0)
    ax = axs[0, 0]
    x = np.arange(n)
    before = df["ncc_before"].to_numpy(float)
    after = df["ncc_after"].to_numpy(float)
    ax.bar(x - 0.2, before, width=0.4, color="0.7", label="before")
    ax.bar(x + 0.2, after, width=0.4, color="#2c7bb6", label="after")
    bad = ~(after > before)
    if bad.any():
        ax.scatter(x[bad] + 0.2, np.nan_to_num(after[bad]) + 0.03, marker="x", color="red", s=40,
                   label="not improved", zorder=3)
    ax.set_xticks(x, [_pair_label(r) for _, r in df.iterrows()], fontsize=7)
    finite = np.concatenate([before[np.isfinite(before)], after[np.isfinite(after)]])
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    ax.set_ylim(lo, 1.08)
    ax.set_ylabel("normalised cross-correlation (NCC)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Registration QA")
    return fig


__all__ = [
    "LI_LABEL",
    "class_fraction_bars",
    "core_shell_profiles",
    "evolution_lines",
    "li_histograms",
    "li_orthoslices",
    "particle_scatter",
    "registration_qa",
    "save_figure",
    "z_profiles",
]

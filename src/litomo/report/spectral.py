"""Figures of N-energy Li maps (issue 16): edge-energy slices and R-factor histograms per state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from litomo.io.rundir import RunLayout

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn (report start-up stays light)
    from matplotlib.figure import Figure

#: title and caption of each N-energy figure of the run report (litomo.report.html)
FIGURE_TEXT: dict[str, tuple[str, str]] = {
    "edge_energy": (
        "Edge energy",
        "Half-jump energy of the normalised Ni K edge in the mid-depth slice of every state (N-energy "
        "runs; grey: outside the active material). Delithiation oxidises Ni and moves the edge up, so "
        "the map shows the same pattern as the Li map without any reference spectrum."),
    "r_factor": (
        "LCF R-factor",
        "Distribution of the R-factor of the two-reference fit over the active material of each state; "
        "dashed: the bad-fit limit (median + 8 robust sigma). Voxels beyond it are left unmapped. A long "
        "tail means spectra the references cannot describe: misregistration, a third phase or wrong "
        "references."),
}


def state_maps(run_dir: Path, states: Sequence[str], name: str) -> dict[str, Any]:
    """Lazy N-energy maps ``volumes/<state>/<name>.ome.zarr`` (empty for a three-energy run)."""
    from litomo.io import read_ome_zarr

    out = {}
    for s in states:
        path = RunLayout(Path(run_dir)).volume(s, name)
        if path.exists():
            out[s] = read_ome_zarr(path).array
    return out


def draw(name: str, extra: Mapping[str, Any]) -> Figure:
    """The report figure ``name`` of :data:`FIGURE_TEXT` from the report's maps and run record."""
    if name == "edge_energy":
        return edge_energy_slices(extra["edge_ev"])
    limits = {s: float(v.get("r_factor_max", float("nan"))) for s, v in (extra.get("nenergy") or {}).items()}
    return r_factor_histograms({s: np.asarray(a) for s, a in extra["r_factor"].items()}, limits)


def edge_energy_slices(edge_ev: Mapping[str, Any], *, cmap: str = "magma") -> Figure:
    """The mid-depth xy slice of each state's half-jump edge-energy map (eV), one colour scale.

    Examples
    --------
    >>> m = np.full((4, 6, 6), 8341.0, np.float32); m[0, 0, 0] = np.nan
    >>> len(edge_energy_slices({"I": m, "II": m + 1}).axes)
    3
    """
    names = list(edge_ev)
    if not names:
        raise ValueError("edge_energy_slices needs at least one state")
    slices = {n: np.asarray(edge_ev[n][edge_ev[n].shape[0] // 2], float) for n in names}
    finite = np.concatenate([s[np.isfinite(s)] for s in slices.values()] or [np.zeros(0)])
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.6 * len(names) + 1.0, 3.0), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    from matplotlib import colormaps

    cm = colormaps[cmap].with_extremes(bad="0.8")
    im = None
    for ax, n in zip(axes, names, strict=True):
        im = ax.imshow(slices[n], cmap=cm, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"{n}: z = {edge_ev[n].shape[0] // 2}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), label="edge energy (eV, half jump)", shrink=0.8)
    return fig


def r_factor_histograms(r_factor: Mapping[str, Any], r_factor_max: Mapping[str, float]) -> Figure:
    """Distribution of the LCF R-factor over the active material of each state, with the bad-fit limit.

    Examples
    --------
    >>> r = np.abs(np.random.default_rng(0).normal(0, 0.01, (4, 5, 5)))
    >>> len(r_factor_histograms({"I": r}, {"I": 0.03}).axes)
    1
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    vals = {n: np.asarray(r, float)[np.isfinite(r)] for n, r in r_factor.items()}
    top = max([float(np.percentile(v, 99.5)) for v in vals.values() if v.size]
              + [float(x) for x in r_factor_max.values() if np.isfinite(x)] + [1e-6])
    bins = np.linspace(0.0, 1.1 * top, 60)
    for colour, (n, v) in zip([f"C{k % 10}" for k in range(len(vals))], vals.items(), strict=True):
        ax.hist(np.clip(v, 0.0, bins[-1]), bins=bins, histtype="step", color=colour, label=n)
        lim = r_factor_max.get(n, float("nan"))
        if np.isfinite(lim):
            ax.axvline(lim, color=colour, ls="--", lw=1)
    ax.set_xlabel("R-factor (dashed: bad-fit limit)")
    ax.set_ylabel("voxels")
    ax.legend(frameon=False)
    return fig

"""Figures of the microstructure (``litomo micro``) and damage (``litomo damage``) workflows.

Each function takes the workflow's arrays and tables and returns ``{name: Figure}``; the
workflow saves them (:func:`litomo.report.figures.save_figure`) into its run folder and
:mod:`litomo.report.micro` embeds them in ``report.html``. Plain :class:`matplotlib.figure.Figure`
objects (no pyplot), so nothing here touches a GUI backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

_PHASE_CMAP = ListedColormap(["#3b4cc0", "#d9a441", "#444444"])


def phase_orthoslices(labels: np.ndarray, voxel_size_um: tuple[float, float, float]) -> Figure:
    """Centre slices normal to z, y and x of a canonical label volume (0 pore, 1 AM, 2 CBD).

    Examples
    --------
    >>> fig = phase_orthoslices(np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 1.0))
    >>> len(fig.axes)
    3
    """
    v = voxel_size_um
    fig = Figure(figsize=(12, 4), layout="constrained")
    axs = fig.subplots(1, 3)
    nz, ny, nx = labels.shape
    views = [(labels[nz // 2], "z (xy plane)", (nx * v[2], ny * v[1])),
             (labels[:, ny // 2], "y (xz plane)", (nx * v[2], nz * v[0])),
             (labels[:, :, nx // 2], "x (yz plane)", (ny * v[1], nz * v[0]))]
    for ax, (img, title, (w, h)) in zip(axs, views, strict=True):
        ax.imshow(img, cmap=_PHASE_CMAP, vmin=0, vmax=2, interpolation="nearest", extent=(0, w, h, 0))
        ax.set_title(f"centre slice normal to {title}")
        ax.set_xlabel("um")
    fig.suptitle("phases: blue pore, gold AM, grey CBD")
    return fig


def particle_size_figures(particles: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Figure]:
    """PSD (by number and by volume, with D10/D50/D90) and sphericity histogram of inner particles.

    Examples
    --------
    >>> t = pd.DataFrame({"eq_diameter_um": [1.0, 2.0], "volume_um3": [0.5, 4.2],
    ...                   "sphericity": [0.9, np.nan], "touches_boundary": [False, False]})
    >>> s = {"d10_volume_um": 1.0, "d50_volume_um": 2.0, "d90_volume_um": 2.0, "n_boundary_particles": 0,
    ...      "sphericity_min_voxels": 64}
    >>> sorted(particle_size_figures(t, s))
    ['psd', 'sphericity']
    """
    inner = particles[~particles["touches_boundary"].astype(bool)]
    psd = Figure(figsize=(6, 4), layout="constrained")
    ax = psd.subplots()
    if len(inner):
        d = inner["eq_diameter_um"].to_numpy(float)
        bins = np.linspace(0, d.max() * 1.05, 30)
        ax.hist(d, bins=bins, alpha=0.6, label="by number")
        w = inner["volume_um3"].to_numpy(float)
        ax.hist(d, bins=bins, weights=w / w.sum() * len(d), alpha=0.4, label="by volume (scaled)")
        for q, ls in (("d10", ":"), ("d50", "--"), ("d90", "-.")):
            ax.axvline(summary[f"{q}_volume_um"], color="k", ls=ls, label=f"{q.upper()} (volume)")
        ax.legend(fontsize=8)
    ax.set_xlabel("equivalent-sphere diameter (um)")
    ax.set_ylabel("particles")
    ax.set_title(f"PSD, {len(inner)} inner particles "
                 f"({summary['n_boundary_particles']} at the boundary excluded)")
    sph = Figure(figsize=(6, 4), layout="constrained")
    ax = sph.subplots()
    s = inner["sphericity"].to_numpy(float)
    ax.hist(s[np.isfinite(s)], bins=30, range=(0, 1))
    ax.set_xlabel(f"sphericity psi (particles of >= {summary['sphericity_min_voxels']} voxels)")
    ax.set_ylabel("particles")
    return {"psd": psd, "sphericity": sph}


def rev_figure(rev: pd.DataFrame) -> Figure:
    """Volume fractions and face-counted specific surfaces over random sub-volumes (mean +- std)."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axs = fig.subplots(1, 2)
    for ax, prefix, ylabel in ((axs[0], "vf_", "volume fraction"), (axs[1], "ssa_face_", "a_i, faces (um^-1)")):
        for q, g in rev[rev["quantity"].str.startswith(prefix)].groupby("quantity"):
            ax.errorbar(g["edge_um"], g["mean"], yerr=g["std"], marker="o", capsize=3, label=q[len(prefix):])
        ax.set_xscale("log")
        ax.set_xlabel("sub-volume edge (um)")
        ax.set_ylabel(ylabel)
        ax.legend()
    fig.suptitle("REV: mean +- std over random sub-volumes")
    return fig


def s2_figure(s2: pd.DataFrame, volume_fraction: dict[str, float]) -> Figure:
    """Two-point correlation per phase and axis, with phi^2 dotted."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for (ph, a), g in s2.groupby(["phase", "axis"]):
        (line,) = ax.plot(g["r_um"], g["s2"], label=f"{ph} along {a}")
        ax.axhline(volume_fraction[ph] ** 2, color=line.get_color(), ls=":", lw=0.8)
    ax.set_xlabel("r (um)")
    ax.set_ylabel("S2(r)  (dotted: phi^2)")
    ax.legend(fontsize=8)
    return fig


def micro_figures(labels: np.ndarray, voxel_size_um: tuple[float, float, float], summary: dict[str, Any],
                  particles: pd.DataFrame | None, rev: pd.DataFrame, s2: pd.DataFrame) -> dict[str, Figure]:
    """Every figure of ``litomo micro`` (names are the file stems under ``figures/``)."""
    figs = {"phase_orthoslices": phase_orthoslices(labels, voxel_size_um)}
    if particles is not None and len(particles):
        figs.update(particle_size_figures(particles, summary))
    if len(rev):
        figs["rev"] = rev_figure(rev)
    if len(s2):
        figs["s2"] = s2_figure(s2, summary["volume_fraction"])
    return figs


def local_map_figure(local: pd.DataFrame, profile: pd.DataFrame) -> Figure:
    """Local property maps: z-profiles (mean +- std over the tiles of each layer) and one tile map.

    Left to right: phase volume fractions, specific surfaces, pore tortuosity factor of the tiles
    (when solved), and the pore fraction of the tiles on the centre row of y tiles (z down, x across).

    Examples
    --------
    >>> from litomo.metrics.local import local_property_maps, tile_profile
    >>> lab = np.zeros((8, 4, 8), np.uint8); lab[4:] = 1; lab[:, :, 6:] = 2
    >>> t = local_property_maps(lab, 1.0, 4.0, tortuosity_axis=None)
    >>> len(local_map_figure(t, tile_profile(t)).axes)  # three panels and the colour bar
    4
    """
    from litomo.metrics.local import tile_map

    taus = [c for c in local if c.startswith("tau_pore_")]
    fig = Figure(figsize=(4 * (3 + bool(taus)), 4), layout="constrained")
    axs = fig.subplots(1, 3 + bool(taus))
    zc = (profile["z0_um"] + profile["z1_um"]) / 2
    for ax, prefix, xlabel in ((axs[0], "volume_fraction_", "volume fraction"),
                               (axs[1], "specific_surface_", "specific surface (um^-1)"),
                               *(((axs[2], "tau_pore_", "pore tortuosity factor of the tile"),) if taus else ())):
        for col in [c for c in local if c.startswith(prefix)]:
            name = col[len(prefix):].removesuffix("_um-1")
            name = f"pore along {name} (finite tiles)" if prefix == "tau_pore_" else name
            ax.errorbar(profile[f"{col}_mean"], zc, xerr=profile[f"{col}_std"], marker="o", capsize=3, label=name)
        ax.set(xlabel=xlabel, ylabel="z (um)")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    m = tile_map(local, "volume_fraction_pore")[:, int(local["iy"].max()) // 2]
    x1, z1 = float(local["x1_um"].max()), float(local["z1_um"].max())
    im = axs[-1].imshow(m, cmap="viridis", vmin=0, vmax=1, extent=(0, x1, z1, 0), interpolation="nearest")
    axs[-1].set(xlabel="x (um)", ylabel="z (um)", title="pore fraction of the tiles (centre y row)")
    fig.colorbar(im, ax=axs[-1], shrink=0.8)
    fig.suptitle("local property maps over tiles")
    return fig


def damage_figures(table: pd.DataFrame, depth: pd.DataFrame, mild_threshold: float,
                   severe_threshold: float) -> dict[str, Figure]:
    """Damage-index histogram with the class thresholds, and class populations against depth.

    Examples
    --------
    >>> t = pd.DataFrame({"damage_index": [0.0, 0.1, 0.7]})
    >>> d = pd.DataFrame({"z_start_um": [0.0], "z_end_um": [10.0], "n_least": [1], "n_mild": [1],
    ...                   "n_severe": [1]})
    >>> sorted(damage_figures(t, d, 0.03, 0.6))
    ['damage_classes_vs_depth', 'damage_index_histogram']
    """
    hist = Figure(figsize=(5, 3.5), layout="constrained")
    ax = hist.subplots()
    ax.hist(table["damage_index"], bins=30, color="0.4")
    for t, name in ((mild_threshold, "mild"), (severe_threshold, "severe")):
        ax.axvline(t, color="C3", ls="--", lw=1)
        ax.text(t, ax.get_ylim()[1] * 0.95, f" {name}", color="C3", va="top", fontsize=8)
    ax.set_xlabel("damage index D (-)")
    ax.set_ylabel("particles")
    bars = Figure(figsize=(5, 3.5), layout="constrained")
    ax = bars.subplots()
    mid = (depth["z_start_um"] + depth["z_end_um"]) / 2
    width = float((depth["z_end_um"] - depth["z_start_um"]).iloc[0]) * 0.9 if len(depth) else 1.0
    bottom = 0
    for cls, colour in (("least", "C2"), ("mild", "C1"), ("severe", "C3")):
        ax.barh(mid, depth[f"n_{cls}"], height=width, left=bottom, color=colour, label=cls)
        bottom = bottom + depth[f"n_{cls}"]
    ax.invert_yaxis()
    ax.set_ylabel("depth z (um)")
    ax.set_xlabel("particles")
    ax.legend(frameon=False)
    return {"damage_index_histogram": hist, "damage_classes_vs_depth": bars}


__all__ = ["damage_figures", "local_map_figure", "micro_figures", "particle_size_figures", "phase_orthoslices", "rev_figure",
           "s2_figure"]

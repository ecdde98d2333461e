"""Stage ``statistics``: the per-state tables (SPEC 2.4): summary, histogram, z profile,
particles, core-shell profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from litomo.manifest import ProcessingSpec, StateSpec
from litomo.workflows.limap.li import LiMap
from litomo.workflows.limap.mapping import Mapped
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.particles import Particles
from litomo.workflows.limap.stage import StateStage


@dataclass
class StateTables:
    """Output of :class:`StatisticsStage`: one state's rows of the run's tables."""

    states: pd.DataFrame
    histograms: pd.DataFrame
    z_profile: pd.DataFrame
    particles: pd.DataFrame
    core_shell: pd.DataFrame
    registration: pd.DataFrame


def _sliver_fill(x: np.ndarray, frac: np.ndarray, labels: np.ndarray) -> tuple[Any, Any, Any, float]:
    """x_Li with unmapped AM slivers at their nearest mapped voxel's value (see :func:`state_statistics`).

    Returns the filled map, the labels extended to the slivers, the sliver mask and the
    AM-weighted mean x_Li.
    """
    from scipy import ndimage

    mapped_ok = np.isfinite(x)
    if not mapped_ok.any():
        return x, labels, np.zeros(x.shape, bool), float("nan")
    dist, nearest = ndimage.distance_transform_edt(~mapped_ok, return_indices=True)
    x_fill = x[tuple(nearest)]
    # the slivers next to a particle belong to it (for its AM-weighted mean x_Li)
    sliver = ~mapped_ok & (dist <= 1.5) & (frac > 0)
    labels_ext = np.where(sliver, labels[tuple(nearest)], labels)
    x_w = float(np.sum(frac * x_fill, dtype=np.float64) / frac.sum()) if frac.sum() > 0 else float("nan")
    return x_fill, labels_ext, sliver, x_w


def _class_uncertainty(li: LiMap, p: ProcessingSpec) -> tuple[float, float]:
    """Share of mapped bins that noise can put in the other Li class, and the net change of the
    class fractions it causes (litomo.xanes.noise)."""
    from litomo.xanes.noise import class_fraction_shift, class_uncertainty

    if li.li_variance is None:
        return float("nan"), float("nan")
    th = (p.li_poor_max, p.li_rich_min)
    return (float(class_uncertainty(li.li, li.li_variance, th)),
            float(class_fraction_shift(li.li, li.li_variance, th)))


def _class_fraction_columns(li: LiMap, am_fraction: np.ndarray, p: ProcessingSpec,
                            summary: dict[str, Any]) -> dict[str, float]:
    """The states table's class fractions: fractions of the mapped AM volume (bins weighted by
    their AM fraction) deconvolved from the map's noise (issue 16,
    :func:`litomo.xanes.classes.deconvolved_class_fractions`), with their standard deviations
    and the share within 0.02 of a threshold (``frac_li_near_threshold``: what systematic map
    errors can move); the plain counts of mapped bins stay as ``frac_li_<class>_map``."""
    from litomo.xanes.classes import deconvolved_class_fractions

    names = ("poor", "moderate", "rich")
    out = {f"frac_li_{c}_map": float(summary[f"frac_li_{c}"]) for c in names}
    if li.li_variance is None:
        return out
    f = deconvolved_class_fractions(li.li, li.li_variance, (p.li_poor_max, p.li_rich_min), weights=am_fraction)
    for c in names:
        out[f"frac_li_{c}"] = float(getattr(f, c))
        out[f"frac_li_{c}_sd"] = float(getattr(f, f"{c}_sd"))
    out["frac_li_near_threshold"] = float(f.near_threshold)
    return out


def state_statistics(state: StateSpec, li: LiMap, mapped: Mapped, particles: Particles, p: ProcessingSpec,
                     voxel_size_um: tuple[float, float, float], bins: np.ndarray,
                     separator_side: str = "z_min") -> dict[str, pd.DataFrame]:
    """Per-state statistics tables (SPEC 2.4), keyed by table name.

    Total Li = sum over voxels of (AM fraction from the edge jump) x x_Li: surface voxels count
    by their AM fraction, and AM in voxels below the mapping threshold (thin surface slivers) is
    not lost, which counting mapped voxels as whole AM voxels would do. Those slivers take the
    x_Li of the nearest mapped voxel - the particle surface they belong to, which in a partly
    (de)lithiated electrode differs from the mean (measured on the phantom: the mean overstated
    total Li by ~2 % in the intermediate states). When the map stage has the state's mean x_Li
    from the summed images (``Mapped.mean_li_global``, which does not depend on where
    misregistered surfaces lie; issue 16), that mean is used for the total instead.
    """
    from litomo import statistics as st
    from litomo.statistics_core_shell import core_shell_profile

    x, labels, frac = li.li, particles.labels, mapped.am_fraction
    summary = st.state_summary(x, voxel_size_um=voxel_size_um, poor_max=p.li_poor_max,
                               rich_min=p.li_rich_min, expected_li=state.expected_li)
    ids = np.unique(labels)
    am_volume = float(frac.sum() * float(np.prod(voxel_size_um)))
    x_fill, labels_ext, sliver, x_w = _sliver_fill(x, frac, labels)
    if np.isfinite(mapped.mean_li_global) and np.isfinite(x_w):
        x_w = float(mapped.mean_li_global)
    summary.update(_class_fraction_columns(li, mapped.am_fraction, p, summary))
    summary["am_volume_um3"] = am_volume
    summary["mean_li_volume_weighted"] = x_w
    summary["total_li_um3"] = x_w * am_volume
    summary = {"state": state.name, "label": state.label or "", **summary,
               "n_particles": int((ids > 0).sum()), "clipped_fraction": li.clipped_fraction,
               "jump_threshold": mapped.jump_threshold, "background_li_shift": mapped.background_li_shift,
               "li_noise_sigma_full_bin": li.li_noise_sigma_full_bin,
               "li_noise_pair_ratio": li.noise_pair_ratio,
               "background_level_measured": li.background_level_measured,
               "background_level_predicted": li.background_level_predicted,
               **dict(zip(("li_class_uncertainty", "li_class_shift"), _class_uncertainty(li, p), strict=True))}
    h = st.li_histogram(x, bins)
    hist = h.to_frame()
    hist["density"] = hist["count"] / max(int(h.counts.sum()), 1) / np.diff(h.edges)
    hist.insert(0, "state", state.name)
    zp = st.z_profile(x, voxel_size_um=voxel_size_um, poor_max=p.li_poor_max, rich_min=p.li_rich_min,
                      separator_side=separator_side)
    parts = st.li_particle_table(x, labels, voxel_size_um=voxel_size_um, rich_min=p.li_rich_min,
                                 boundary_ids=particles.boundary_ids,
                                 depth_from="low" if separator_side == "z_min" else "high")
    if len(parts):
        # mean_li per particle: AM-weighted over its mapped voxels and its unmapped surface
        # slivers (at their nearest mapped neighbour's x_Li), like the total Li above
        w = np.where(np.isfinite(x) | sliver, np.clip(frac, 0.0, None), 0.0).ravel()
        lab = labels_ext.ravel().astype(np.intp)
        s0 = np.bincount(lab, weights=w)
        s1 = np.bincount(lab, weights=w * np.nan_to_num(x_fill.ravel()))
        pid = parts["particle"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            parts["mean_li"] = s1[pid] / s0[pid]
    cs = core_shell_profile(x, labels, voxel_size_um=voxel_size_um)
    if "particle" in cs.columns:
        cs = cs[cs["particle"].astype(str) == "all"].drop(columns="particle")
    for df in (zp, parts, cs):
        df.insert(0, "state", state.name)
    return {"states": pd.DataFrame([summary]), "histograms": hist, "z_profile": zp,
            "particles": parts, "core_shell": cs}


class StatisticsStage(StateStage):
    """Per-state statistics tables (:func:`state_statistics`) and the registration QA rows."""

    name = "statistics"
    needs = ("li", "map", "particles", "warp")
    output = StateTables

    energies = "three"  # N-energy runs: litomo.workflows.limap.spectral

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p = ctx.manifest.processing
        return {"li_poor_max": p.li_poor_max, "li_rich_min": p.li_rich_min,
                "histogram_bins": p.histogram_bins, "name": state.name, "label": state.label,
                "expected_li": state.expected_li, "voxel_size_um": ctx.map_voxel_size_um(state.name),
                "separator_side": ctx.manifest.sample.separator_side,
                # session 13: the class fractions' sd is the estimator's bootstrap error, not the
                # posterior sd of the class memberships (stored tables recompute)
                "class_fraction_sd": "bootstrap"}

    def run(self, ctx: RunContext, state: StateSpec, *, li: LiMap, map: Mapped,
            particles: Particles, warp: Any) -> StateTables:
        p = ctx.manifest.processing
        vs = ctx.map_voxel_size_um(state.name)
        bins = np.linspace(0.0, 1.2, int(p.histogram_bins) + 1)
        tables = state_statistics(state, li, map, particles, p, vs, bins,
                                  separator_side=ctx.manifest.sample.separator_side)
        return StateTables(**tables, registration=warp.qa)

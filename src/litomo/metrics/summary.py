"""Microstructure summary of a three-phase label volume: every metric in one JSON-ready dict.

The metrics themselves live in :mod:`litomo.metrics.fractions`, ``percolation``, ``surface``,
``tpb`` and ``particles`` and :mod:`litomo.transport.diffusion`; this module calls them in
order, names the results (:data:`DEFINITIONS` says what each name means) and lays them out as
the seed paper's table (:func:`seed_table`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from litomo.damage import close_cracks
from litomo.errors import DataError
from litomo.metrics.fractions import am_fraction_bracket, axis_index, check_labels, volume_fractions
from litomo.metrics.internal_pores import internal_pore_table, internal_pore_totals
from litomo.metrics.particles import (
    depth_by_size_class,
    shape_table,
    size_classes,
    size_statistics,
)
from litomo.metrics.percolation import percolation
from litomo.metrics.surface import DEFAULT_SMOOTH_SIGMA_VOX, surface_areas
from litomo.metrics.tpb import tpb_stats
from litomo.phases import PHASE_CODES, PHASES
from litomo.progress import ProgressCallback
from litomo.segment.particles import separate_particles
from litomo.transport.diffusion import tortuosity
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)

NAN = float("nan")
SIZE_KEYS = ("d10_number_um", "d50_number_um", "d90_number_um", "d10_volume_um", "d50_volume_um",
             "d90_volume_um", "d50_um", "sphericity_mean", "sphericity_median")

#: what each key of the summary means (copied into ``microstructure.json`` as ``definitions``)
DEFINITIONS: dict[str, str] = {
    "through_fraction": "fraction of the phase volume in 6-connected clusters touching both faces "
                        "normal to the axis (percolating)",
    "dead_end_cluster_fraction": "fraction of the phase volume in clusters touching exactly one of the "
                                 "two faces normal to the axis (a connectivity measure; not the "
                                 "low-flux 'stagnant_flux_fraction' of `litomo tortuosity`)",
    "isolated_fraction": "fraction of the phase volume in clusters touching neither face",
    "surface_area_face_um-1": "voxel-face area of the phase per control volume (over-estimates smooth "
                              "surfaces 1.2-1.5x)",
    "surface_area_mc_smoothed_um-1": "marching-cubes area after a Gaussian smoothing of mc_smooth_sigma_vox "
                                     "(sphere within 1.5 %; thin features lose area)",
    "surface_area_mc_unsmoothed_um-1": "marching-cubes area of the binary indicator (sphere +9 %; "
                                       "TauFactor's 'marching-nosmooth')",
    "sphericity": "pi^(1/3) (6 V)^(2/3) / A with A and V of one closed marching-cubes surface of the "
                  "particle (smoothed): in (0, 1]; only particles of at least sphericity_min_voxels voxels",
    "internal_pore_volume_um3": "volume of the voids each particle alone encloses (6-connected, not cut by the "
                                "volume boundary), CBD-filled parts included; summed over particles",
    "internal_pore_cbd_volume_um3": "the CBD-filled part of internal_pore_volume_um3",
    "internal_pore_empty_volume_um3": "the pore (empty) part of internal_pore_volume_um3",
    "internal_pore_fraction": "internal_pore_volume_um3 / (AM volume + internal_pore_volume_um3)",
    "constrictivity": "(r_min / r_max)^2 of the pore phase along the axis: r_max the median of the continuous "
                      "PSD (local thickness), r_min the median of a simulated mercury intrusion from the "
                      "axis' low face (Holzer et al. 2013); tables/pore_size_distribution.csv",
    "characteristic_length_um": "lag where (S2(r) - phi^2) / (phi - phi^2) first falls to 1/e (correlation "
                                "length; the Debye length of a Debye medium)",
    "rev_edge_um": "smallest REV sub-volume edge from which mean and spread of the quantity stay within "
                   "rev_tolerance of the largest sub-volume's value (NaN: not converged); tables/rev_size.csv",
}


def _separate(am: np.ndarray, v: tuple[float, float, float], close: bool) -> np.ndarray:
    """Particle labels of the AM mask; with ``close``, one-voxel cracks and enclosed voids are
    closed before the watershed (a cracked particle stays one) and the labels kept on AM only."""
    if not close:
        return separate_particles(am, voxel_size_um=v)
    labels = separate_particles(close_cracks(am, 1), voxel_size_um=v)
    labels[~am] = 0
    return labels


def _percolation(labels: np.ndarray, axes: Sequence[str], connectivity: int) -> dict[str, Any]:
    perc: dict[str, dict[str, dict[str, float]]] = {
        k: {p: {} for p in PHASES} for k in ("through", "dead_end", "isolated")}
    for p in PHASES:
        mask = labels == PHASE_CODES[p]
        for a in axes:
            res = percolation(mask, a, connectivity=connectivity)
            for k in perc:
                perc[k][p][a] = res[k]
    return {"through_fraction": perc["through"], "dead_end_cluster_fraction": perc["dead_end"],
            "isolated_fraction": perc["isolated"], "percolation_connectivity": connectivity}


def _surfaces(labels: np.ndarray, v: tuple[float, float, float], sigma: float) -> dict[str, Any]:
    face = surface_areas(labels, v, method="face")
    smooth = surface_areas(labels, v, method="mc", smooth_sigma_vox=sigma)
    raw = surface_areas(labels, v, method="mc", smooth_sigma_vox=0.0)
    return {"surface_area_face_um-1": face["specific"], "interfacial_area_face_um-1": face["interfacial"],
            "surface_area_mc_smoothed_um-1": smooth["specific"],
            "interfacial_area_mc_smoothed_um-1": smooth["interfacial"],
            "surface_area_mc_unsmoothed_um-1": raw["specific"],
            "interfacial_area_mc_unsmoothed_um-1": raw["interfacial"],
            "mc_smooth_sigma_vox": sigma}


def _particles(labels: np.ndarray, v: tuple[float, float, float], particles: np.ndarray | bool | None,
               close: bool, sigma: float, notes: list[str]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    plabels = None
    if particles is False:
        notes.append("particle metrics skipped")
    elif not (labels == PHASE_CODES["am"]).any():
        notes.append("no active material: particle metrics are NaN")
    elif particles is None or particles is True:
        plabels = _separate(labels == PHASE_CODES["am"], v, close)
    else:
        plabels = np.asarray(particles)
        if plabels.shape != labels.shape:
            raise DataError(f"particle labels {plabels.shape} and phase labels {labels.shape} differ in shape")
    if plabels is None:
        out: dict[str, Any] = {k: NAN for k in SIZE_KEYS}
        out.update({"n_particles": 0, "n_inner_particles": 0, "n_boundary_particles": 0})
        out.update({k: NAN for k in ("internal_pore_volume_um3", "internal_pore_cbd_volume_um3",
                                     "internal_pore_empty_volume_um3", "internal_pore_fraction")})
        return out, None
    table = shape_table(plabels, labels, v, smooth_sigma_vox=sigma)
    table["size_class"] = size_classes(table)
    pores = internal_pore_table(plabels, labels, v)
    table = table.merge(pores, on="particle", how="left")
    out = dict(size_statistics(table))
    out.update(internal_pore_totals(pores, float(np.count_nonzero(labels == PHASE_CODES["am"]) * np.prod(v))))
    out["mean_depth_by_size_class_um"] = {
        r["size_class"]: r["mean_depth_um"] for _, r in depth_by_size_class(table).iterrows()}
    out["cracks_closed_before_separation"] = bool(close) and (particles is None or particles is True)
    if out["n_inner_particles"] == 0:
        notes.append("every particle touches the volume boundary: size statistics are NaN")
    return out, table


def microstructure_report(
    labels: np.ndarray,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    *,
    axes: Sequence[str] = ("z", "y", "x"),
    particles: np.ndarray | bool | None = None,
    close_cracks_first: bool = True,
    expected: dict[str, Any] | None = None,
    transport: bool = True,
    transport_axes: Sequence[str] = ("z",),
    smooth_sigma_vox: float = DEFAULT_SMOOTH_SIGMA_VOX,
    progress: ProgressCallback | None = None,
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """All microstructure metrics of a three-phase label volume as a JSON-ready dict.

    Parameters
    ----------
    labels : ndarray of uint8
        Canonical labels (0 pore, 1 AM, 2 CBD; see :func:`litomo.phases.to_canonical`).
    voxel_size_um : float or (z, y, x)
    axes : sequence of {"z", "y", "x"}
        Axes for the percolation fractions (6-connected clusters).
    particles : ndarray of int, bool or None
        AM particle labels; ``None`` separates them with
        :func:`litomo.segment.particles.separate_particles`; ``False`` skips particle metrics.
    close_cracks_first : bool
        When separating: close one-voxel cracks and fill enclosed voids of the AM mask first
        (:func:`litomo.damage.close_cracks`), so a cracked particle is one particle, as in the
        Li-mapping workflow; particle labels are then kept on AM voxels only.
    expected : dict, optional
        Expected values, ``{phase: volume_fraction}`` or ``{metric: {phase: value}}``; copied
        into the report (see :func:`seed_table`).
    transport : bool
        Compute ``tau``, ``mcmullin``, ``deff`` with :func:`litomo.transport.diffusion.tortuosity`
        for pore and CBD along ``transport_axes``.
    smooth_sigma_vox : float
        Smoothing before marching cubes (see :mod:`litomo.metrics.surface`).
    progress : callable, optional
        ``progress(done, total, description)``.

    Returns
    -------
    report : dict
        Keys ``volume_fraction``, ``am_fraction_bracket``, ``through_fraction``,
        ``dead_end_cluster_fraction``, ``isolated_fraction`` (phase -> axis),
        ``surface_area_face_um-1``, ``surface_area_mc_smoothed_um-1``,
        ``surface_area_mc_unsmoothed_um-1`` (phase), the same three ``interfacial_area_*``
        ("am/cbd", ...), ``tpb_density_um-2``, ``tpb_length_um``, ``tpb_edge_fraction``,
        D10/D50/D90 by number and volume (``d10_number_um`` ...), ``d50_um``,
        ``sphericity_mean``, ``sphericity_median``, ``n_particles``, ``n_boundary_particles``,
        ``tau``, ``mcmullin``, ``deff`` (phase -> axis), ``definitions`` (what the names mean)
        and ``notes`` (why entries are NaN/inf).
    particles : pandas.DataFrame or None
        The per-particle table (:func:`litomo.metrics.particles.shape_table` plus
        ``size_class``), None without particles.

    Examples
    --------
    >>> lab = np.zeros((8, 8, 8), np.uint8); lab[:, :, 4:] = 1
    >>> r, _ = microstructure_report(lab, 1.0, particles=False, transport=False)
    >>> r["volume_fraction"]["am"], r["through_fraction"]["cbd"]["z"]
    (0.5, nan)
    """
    labels = check_labels(labels)
    v = as_voxel_size(voxel_size_um)
    axes = [a.lower() for a in axes]
    for a in axes:
        axis_index(a)
    notes: list[str] = []
    names = ["fractions", "percolation", "surfaces", "TPB", "particles"] + (["transport"] if transport else [])

    def step(name: str) -> None:
        if progress is not None:
            progress(names.index(name) + 1, len(names), f"microstructure: {name}")

    vf = volume_fractions(labels)
    absent = [p for p in PHASES if vf[p] == 0]
    for p in absent:
        notes.append(f"phase '{p}' is absent: its percolation fractions are NaN and its tortuosity is inf")
    report: dict[str, Any] = {"shape": list(labels.shape), "voxel_size_um": list(v), "volume_fraction": vf,
                              "am_fraction_bracket": am_fraction_bracket(labels)}
    step("fractions")
    report.update(_percolation(labels, axes, 6))
    step("percolation")
    report.update(_surfaces(labels, v, smooth_sigma_vox))
    step("surfaces")
    tpb = tpb_stats(labels, v)
    report.update({"tpb_density_um-2": tpb["density_um-2"], "tpb_length_um": tpb["length_um"],
                   "tpb_edge_fraction": tpb["edge_fraction"]})
    if absent:
        notes.append("TPB density is 0 because a phase is absent")
    step("TPB")
    stats, table = _particles(labels, v, particles, close_cracks_first, smooth_sigma_vox, notes)
    report.update(stats)
    step("particles")
    if transport:
        report.update(_transport(labels, v, ("pore", "cbd"), transport_axes, notes))
        step("transport")
    if expected:
        report["expected"] = normalise_expected(expected)
    report["definitions"] = DEFINITIONS
    report["notes"] = notes
    return report, table


def _transport(labels: np.ndarray, v: tuple[float, float, float], phases: Sequence[str],
               axes: Sequence[str], notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"tau": {}, "mcmullin": {}, "deff": {}, "transport_converged": {}}
    for p in phases:
        for k in out:
            out[k][p] = {}
        mask = labels == PHASE_CODES[p]
        for a in axes:
            if not mask.any():
                res_tau, res_mm, res_deff, conv = math.inf, math.inf, 0.0, False
            else:
                r = tortuosity(mask, a, voxel_size_um=v)
                res_tau, res_mm, res_deff, conv = r.tau, r.mcmullin, r.deff, r.converged
                if r.reason:
                    notes.append(f"tortuosity {p} along {a}: {r.reason}")
            out["tau"][p][a] = float(res_tau)
            out["mcmullin"][p][a] = float(res_mm)
            out["deff"][p][a] = float(res_deff)
            out["transport_converged"][p][a] = bool(conv)
    return out


def normalise_expected(expected: dict[str, Any]) -> dict[str, Any]:
    """``{phase: value}`` (volume fractions) or ``{metric: {phase: value}}`` -> nested form.

    Examples
    --------
    >>> normalise_expected({"am": 0.6})
    {'volume_fraction': {'am': 0.6}}
    """
    out: dict[str, Any] = {}
    for k, val in expected.items():
        if k in PHASE_CODES:
            out.setdefault("volume_fraction", {})[k] = float(val)
        elif isinstance(val, dict):
            out[k] = val
        else:
            out[k] = float(val)
    return out


_ROWS: tuple[tuple[str, str, str], ...] = (
    ("volume_fraction", "Volume fraction", "-"),
    ("through_fraction", "Through (percolating) fraction", "-"),
    ("dead_end_cluster_fraction", "Dead-end (one-face cluster) fraction", "-"),
    ("isolated_fraction", "Isolated fraction", "-"),
    ("surface_area_face_um-1", "Specific surface area, face counting", "um^-1"),
    ("surface_area_mc_smoothed_um-1", "Specific surface area, marching cubes (smoothed)", "um^-1"),
    ("surface_area_mc_unsmoothed_um-1", "Specific surface area, marching cubes (unsmoothed)", "um^-1"),
    ("interfacial_area_face_um-1", "Interfacial area, face counting", "um^-1"),
    ("interfacial_area_mc_smoothed_um-1", "Interfacial area, marching cubes (smoothed)", "um^-1"),
    ("interfacial_area_mc_unsmoothed_um-1", "Interfacial area, marching cubes (unsmoothed)", "um^-1"),
    ("tpb_density_um-2", "TPB density", "um^-2"),
    ("d10_number_um", "D10 by number", "um"),
    ("d50_number_um", "D50 by number", "um"),
    ("d90_number_um", "D90 by number", "um"),
    ("d10_volume_um", "D10 by volume", "um"),
    ("d50_volume_um", "D50 by volume", "um"),
    ("d90_volume_um", "D90 by volume", "um"),
    ("sphericity_mean", "Mean sphericity", "-"),
    ("sphericity_median", "Median sphericity", "-"),
    ("internal_pore_volume_um3", "Internal pore volume of particles (incl. CBD-filled)", "um^3"),
    ("internal_pore_cbd_volume_um3", "Internal pore volume filled with CBD", "um^3"),
    ("internal_pore_fraction", "Internal pore fraction of particles", "-"),
    ("constrictivity", "Constrictivity of the pore (r_min/r_max)^2", "-"),
    ("characteristic_length_um", "Characteristic length (S2, 1/e)", "um"),
    ("n_particles", "Particles", "count"),
    ("n_boundary_particles", "Boundary particles (excluded)", "count"),
    ("tau", "Tortuosity factor", "-"),
    ("mcmullin", "McMullin number", "-"),
    ("deff", "D_eff / D_0", "-"),
)


def _flatten(value: Any) -> list[tuple[str, str, Any]]:
    """metric value -> [(phase_or_pair, axis, value)]."""
    if not isinstance(value, dict):
        return [("", "", value)]
    rows = []
    for k, sub in value.items():
        if isinstance(sub, dict):
            rows += [(k, a, x) for a, x in sub.items()]
        else:
            rows.append((k, "", sub))
    return rows


def seed_table(report: dict[str, Any], expected: dict[str, Any] | None = None, *, sample: str = "sample"
               ) -> pd.DataFrame:
    """The report as a table laid out like the seed paper's (rows = metrics, columns = sample).

    With expected values (argument or ``report["expected"]``) an ``"<sample> Expected"``
    column sits beside ``"<sample> Data"``.

    Examples
    --------
    >>> t = seed_table({"volume_fraction": {"am": 0.61}}, {"am": 0.6})
    >>> t[["metric", "phase", "sample Expected", "sample Data"]].values.tolist()
    [['Volume fraction', 'am', 0.6, 0.61]]
    """
    exp = normalise_expected(expected) if expected else report.get("expected") or {}
    rows = []
    for key, name, unit in _ROWS:
        if key not in report:
            continue
        for phase, axis, val in _flatten(report[key]):
            row = {"metric": name, "phase": phase, "axis": axis, "unit": unit}
            if exp:
                e = exp.get(key)
                if isinstance(e, dict):
                    e = e.get(phase)
                    if isinstance(e, dict):
                        e = e.get(axis)
                row[f"{sample} Expected"] = NAN if e is None or isinstance(e, dict) else float(e)
            row[f"{sample} Data"] = val
            rows.append(row)
    return pd.DataFrame(rows)

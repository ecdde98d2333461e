"""One-call microstructure report (SPEC 3 + transport of SPEC 4) and the seed-paper table."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from litomo.errors import DataError
from litomo.metrics.fractions import am_fraction_bracket, axis_index, check_labels, volume_fractions
from litomo.metrics.particles import (
    depth_by_size_class,
    particle_table,
    size_classes,
    size_statistics,
)
from litomo.metrics.percolation import percolation
from litomo.metrics.surface import DEFAULT_SMOOTH_SIGMA_VOX, surface_areas
from litomo.metrics.tpb import tpb_stats
from litomo.phases import PHASE_CODES, PHASES
from litomo.progress import ProgressCallback
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)

NAN = float("nan")
SIZE_KEYS = ("d10_number_um", "d50_number_um", "d90_number_um", "d10_volume_um", "d50_volume_um",
             "d90_volume_um", "d50_um", "sphericity_mean")


def _separate(am: np.ndarray, voxel_size_um: tuple[float, float, float]) -> np.ndarray:
    from litomo.segment.particles import separate_particles  # owned by the segmentation module

    out = separate_particles(am, voxel_size_um=voxel_size_um)
    return np.asarray(getattr(out, "labels", out))


def microstructure_report(
    labels: np.ndarray,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    *,
    axes: Sequence[str] = ("z", "y", "x"),
    particles: np.ndarray | bool | None = None,
    expected: dict[str, Any] | None = None,
    transport: bool = True,
    transport_phases: Sequence[str] = ("pore", "cbd"),
    transport_axes: Sequence[str] = ("z",),
    connectivity: int = 6,
    smooth_sigma_vox: float = DEFAULT_SMOOTH_SIGMA_VOX,
    return_tables: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """All SPEC 3 metrics of a three-phase label volume as a JSON-ready dict.

    Parameters
    ----------
    labels : ndarray of uint8
        Canonical labels (0 pore, 1 AM, 2 CBD; see :func:`litomo.phases.to_canonical`).
    voxel_size_um : float or (z, y, x)
    axes : sequence of {"z", "y", "x"}
        Axes for the percolation fractions.
    particles : ndarray of int, bool or None
        AM particle labels; ``None`` separates them with
        :func:`litomo.segment.particles.separate_particles`; ``False`` skips particle metrics.
    expected : dict, optional
        Expected values, ``{phase: volume_fraction}`` or ``{metric: {phase: value}}``; copied
        into the report (see :func:`seed_table`).
    transport : bool
        Compute ``tau``, ``mcmullin``, ``deff`` with :func:`litomo.transport.diffusion.tortuosity`
        for ``transport_phases`` along ``transport_axes`` (default pore and CBD along z).
    connectivity : {6, 18, 26}
        Cluster connectivity for percolation (SPEC: 6).
    smooth_sigma_vox : float
        Smoothing before marching cubes (see :mod:`litomo.metrics.surface`).
    return_tables : bool
        Also return ``{"particles": DataFrame, "depth_by_size_class": DataFrame}``.
    progress : callable, optional

    Returns
    -------
    dict
        Keys ``volume_fraction``, ``am_fraction_bracket``, ``through_fraction``,
        ``dead_end_fraction``, ``isolated_fraction`` (phase -> axis), ``surface_area_face_um-1``,
        ``surface_area_mc_um-1`` (phase), ``interfacial_area_face_um-1``,
        ``interfacial_area_mc_um-1`` ("am/cbd", ...), ``tpb_density_um-2``, ``tpb_length_um``,
        ``tpb_edge_fraction``, D10/D50/D90 by number and volume (``d10_number_um`` ...),
        ``d50_um``, ``sphericity_mean``, ``n_particles``, ``n_boundary_particles``, ``tau``,
        ``mcmullin``, ``deff`` (phase -> axis), ``notes`` (why entries are NaN/inf).

    Examples
    --------
    >>> lab = np.zeros((8, 8, 8), np.uint8); lab[:, :, 4:] = 1
    >>> r = microstructure_report(lab, 1.0, particles=False, transport=False)
    >>> r["volume_fraction"]["am"], r["through_fraction"]["cbd"]["z"]
    (0.5, nan)
    """
    labels = check_labels(labels)
    v = as_voxel_size(voxel_size_um)
    axes = [a.lower() for a in axes]
    for a in axes:
        axis_index(a)
    notes: list[str] = []
    steps = 6 + (1 if transport else 0)
    done = 0

    def step(name: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps, f"microstructure: {name}")

    vf = volume_fractions(labels)
    absent = [p for p in PHASES if vf[p] == 0]
    for p in absent:
        notes.append(f"phase '{p}' is absent: its percolation fractions are NaN and its tortuosity is inf")
    report: dict[str, Any] = {
        "shape": list(labels.shape),
        "voxel_size_um": list(v),
        "volume_fraction": vf,
        "am_fraction_bracket": am_fraction_bracket(labels),
    }
    step("fractions")

    perc = {k: {p: {} for p in PHASES} for k in ("through", "dead_end", "isolated")}
    for p in PHASES:
        mask = labels == PHASE_CODES[p]
        for a in axes:
            res = percolation(mask, a, connectivity=connectivity)
            for k in perc:
                perc[k][p][a] = res[k]
    report["through_fraction"] = perc["through"]
    report["dead_end_fraction"] = perc["dead_end"]
    report["isolated_fraction"] = perc["isolated"]
    report["percolation_connectivity"] = connectivity
    step("percolation")

    face = surface_areas(labels, v, method="face")
    report["surface_area_face_um-1"] = face["specific"]
    report["interfacial_area_face_um-1"] = face["interfacial"]
    step("surface (faces)")
    mc = surface_areas(labels, v, method="mc", smooth_sigma_vox=smooth_sigma_vox)
    report["surface_area_mc_um-1"] = mc["specific"]
    report["interfacial_area_mc_um-1"] = mc["interfacial"]
    report["mc_smooth_sigma_vox"] = smooth_sigma_vox
    step("surface (marching cubes)")

    tpb = tpb_stats(labels, v)
    report["tpb_density_um-2"] = tpb["density_um-2"]
    report["tpb_length_um"] = tpb["length_um"]
    report["tpb_edge_fraction"] = tpb["edge_fraction"]
    if absent:
        notes.append("TPB density is 0 because a phase is absent")
    step("TPB")

    tables: dict[str, pd.DataFrame] = {}
    plabels = None
    if particles is False:
        notes.append("particle metrics skipped")
    elif vf["am"] == 0:
        notes.append("no active material: particle metrics are NaN")
    elif particles is None or particles is True:
        try:
            plabels = _separate(labels == PHASE_CODES["am"], v)
        except ImportError as exc:
            notes.append(f"particle separation unavailable (litomo.segment.particles: {exc}); "
                         "particle metrics are NaN")
    else:
        plabels = np.asarray(particles)
        if plabels.shape != labels.shape:
            raise DataError(f"particle labels {plabels.shape} and phase labels {labels.shape} differ in shape")
    if plabels is not None:
        table = particle_table(plabels, labels, v, smooth_sigma_vox=smooth_sigma_vox)
        table["size_class"] = size_classes(table)
        stats = size_statistics(table)
        report.update(stats)
        report["mean_depth_by_size_class_um"] = {
            r["size_class"]: r["mean_depth_um"] for _, r in depth_by_size_class(table).iterrows()}
        if stats["n_inner_particles"] == 0:
            notes.append("every particle touches the volume boundary: size statistics are NaN")
        tables["particles"] = table
    else:
        report.update({k: NAN for k in SIZE_KEYS})
        report.update({"n_particles": 0, "n_inner_particles": 0, "n_boundary_particles": 0})
    step("particles")

    if transport:
        report.update(_transport(labels, v, transport_phases, transport_axes, notes))
        step("transport")
    if expected:
        report["expected"] = normalise_expected(expected)
    report["notes"] = notes
    if return_tables:
        return report, tables
    return report


def _transport(labels: np.ndarray, v: tuple[float, float, float], phases: Sequence[str],
               axes: Sequence[str], notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"tau": {}, "mcmullin": {}, "deff": {}, "transport_converged": {}}
    try:
        from litomo.transport.diffusion import tortuosity
    except ImportError as exc:
        notes.append(f"transport skipped: litomo.transport.diffusion.tortuosity is not importable ({exc})")
        for k in ("tau", "mcmullin", "deff"):
            out[k] = {p: {a: NAN for a in axes} for p in phases}
        return out
    for p in phases:
        if p not in PHASE_CODES:
            raise DataError(f"unknown transport phase {p!r}; known: {', '.join(PHASES)}")
        for k in out:
            out[k][p] = {}
        mask = labels == PHASE_CODES[p]
        for a in axes:
            if not mask.any():
                res_tau, res_mm, res_deff, conv = math.inf, math.inf, 0.0, False
            else:
                r = tortuosity(mask, a, voxel_size_um=v)
                res_tau, res_mm, res_deff, conv = r.tau, r.mcmullin, r.deff, r.converged
                if getattr(r, "reason", ""):
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
    ("dead_end_fraction", "Dead-end fraction", "-"),
    ("isolated_fraction", "Isolated fraction", "-"),
    ("surface_area_face_um-1", "Specific surface area, face counting", "um^-1"),
    ("surface_area_mc_um-1", "Specific surface area, marching cubes", "um^-1"),
    ("interfacial_area_face_um-1", "Interfacial area, face counting", "um^-1"),
    ("interfacial_area_mc_um-1", "Interfacial area, marching cubes", "um^-1"),
    ("tpb_density_um-2", "TPB density", "um^-2"),
    ("d10_number_um", "D10 by number", "um"),
    ("d50_number_um", "D50 by number", "um"),
    ("d90_number_um", "D90 by number", "um"),
    ("d10_volume_um", "D10 by volume", "um"),
    ("d50_volume_um", "D50 by volume", "um"),
    ("d90_volume_um", "D90 by volume", "um"),
    ("sphericity_mean", "Mean sphericity", "-"),
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

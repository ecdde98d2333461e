"""The microstructure part of ``report.html`` (output directories of ``litomo micro``).

The figures are drawn by ``litomo micro`` itself (``DIR/figures/*.png``); this module only
embeds them, with captions, next to a plain-language summary of ``tables/microstructure.json``
and the seed-style metrics table ``tables/metrics_table.csv``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from litomo.io.rundir import RunLayout
from litomo.progress import ProgressCallback
from litomo.report.blocks import (
    dict_table,
    esc,
    figure_gallery,
    html_table,
    note,
    notes_html,
    read_table,
)

#: captions of the figures ``litomo micro`` writes; others are embedded with their file name
MICRO_CAPTIONS = {
    "phase_orthoslices": "Centre slices of the phase labels (blue pore, gold active material, grey "
                         "carbon-binder domain). Check that the segmentation follows the particles and "
                         "that no phase is systematically thickened or missing.",
    "psd": "Particle-size distribution (equivalent-sphere diameter) of particles not cut by the "
           "volume boundary, by number and by volume, with D10/D50/D90 by volume.",
    "sphericity": "Sphericity of the particles large enough to mesh (1 for a sphere, 0.81 for a cube; "
                  "small angular particles read high, see docs/science.md). Low values mean "
                  "irregular or merged particles: check the particle separation.",
    "rev": "Representative volume: the metric over random sub-volumes of growing edge length. Where "
           "the spread (error bars) becomes small, the volume is representative.",
    "s2": "Two-point correlation S2(r): starts at the volume fraction and levels off at its square "
          "(dotted); the distance where it levels off is the characteristic feature size.",
    "pore_radius_maps": "Pore radius maps (centre z-x slice): the largest ball containing each pore "
                        "voxel (left) and the largest ball reaching it by simulated mercury intrusion "
                        "from z = 0 (right). Darker on the right than on the left = a bottleneck "
                        "upstream; constrictivity = (median right / median left)^2.",
}
MICRO_CAPTIONS["particle_summary"] = (
    "Left: laser-diffraction-style volume PSD of the inner particles, corrected for the boundary "
    "exclusion of large particles (bars: volume % per size class; line: cumulative), with the measured "
    "D10/D50/D90 and, where given (--supplier-psd), the supplier's (red). Right: surface coverage by "
    "carbon-binder and by other particles (AM-AM contact) against particle size, with Spearman's rho; "
    "the star marks the representative particle (nearest the medians of size, sphericity and coverage).")
MICRO_CAPTIONS["local_maps"] = (
    "Local property maps (--tile-um): phase fractions, specific surfaces and the pore tortuosity factor of "
    "each tile (solved on the tile alone) as mean +- std over the tiles of each z layer, and the pore "
    "fraction of the tiles on the centre y row. A trend with z is a through-thickness gradient "
    "(e.g. binder migration during drying); a large spread within a layer is in-plane heterogeneity.")
_ORDER = ("phase_orthoslices", "psd", "particle_summary", "sphericity", "rev", "s2", "pore_radius_maps",
          "local_maps")


def _num(v: Any) -> float:
    if isinstance(v, str):
        return math.inf if v.strip().lower() == "inf" else math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


_NAMES = {"am": "active material", "pore": "pore", "cbd": "carbon-binder"}


def _glance_percolation(report: dict[str, Any]) -> list[str]:
    out = []
    through = report.get("through_fraction") or {}
    for phase in ("pore", "cbd"):
        for axis, val in (through.get(phase) or {}).items():
            t = _num(val)
            if math.isnan(t):
                continue
            if t == 0:
                out.append(f"The {_NAMES[phase]} phase does not percolate along {axis}.")
            else:
                out.append(f"{_pct(t)} of the {_NAMES[phase]} volume lies in clusters spanning {axis} "
                           f"(percolating){'; the rest is dead-end or isolated' if t < 0.995 else ''}.")
    return out


def _glance_transport(report: dict[str, Any]) -> list[str]:
    out = []
    for phase in ("pore", "cbd"):
        for axis, val in ((report.get("tau") or {}).get(phase) or {}).items():
            tau = _num(val)
            if math.isinf(tau):
                out.append(f"The {_NAMES[phase]} phase does not percolate along {axis} for transport "
                           "(tortuosity factor infinite).")
            elif not math.isnan(tau):
                nm = _num(((report.get("mcmullin") or {}).get(phase) or {}).get(axis))
                extra = f", McMullin number {nm:.3g}" if math.isfinite(nm) else ""
                out.append(f"{_NAMES[phase].capitalize()} tortuosity factor along {axis}: {tau:.3g}{extra}.")
    return out


def particle_summary_figure(particles: Any, psd: Any, summary: dict[str, Any]) -> Any:
    """Volume PSD (with supplier D-values) and coverage vs size, representative particle starred.

    Examples
    --------
    >>> import pandas as pd
    >>> from litomo.metrics.psd import volume_psd
    >>> t = pd.DataFrame({"particle": [1, 2, 3], "eq_diameter_um": [1.0, 2.0, 3.0], "volume_um3": [0.5, 4.2, 14.1],
    ...                   "coverage_cbd": [0.1, 0.2, 0.3], "coverage_am": [0.3, 0.2, 0.1],
    ...                   "touches_boundary": [False] * 3})
    >>> s = {"particle_psd_volume": {"d10_um": 1.5, "d50_um": 2.5, "d90_um": 2.9}, "representative_particle": 2}
    >>> len(particle_summary_figure(t, volume_psd(t["eq_diameter_um"], t["volume_um3"]), s).axes)
    3
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    ax.bar(psd["size_low_um"], psd["q3_percent"], width=psd["size_high_um"] - psd["size_low_um"], align="edge",
           alpha=0.6, label="q3 (volume % per class)")
    ax.set_xscale("log")
    axc = ax.twinx()
    axc.plot(psd["size_high_um"], psd["Q3_percent"], "k-", lw=1)
    axc.set(ylim=(0, 100), ylabel="cumulative volume Q3 (%)")
    dv = summary.get("particle_psd_volume") or {}
    for q, ls in (("d10", ":"), ("d50", "--"), ("d90", "-.")):
        if math.isfinite(_num(dv.get(f"{q}_um"))):
            ax.axvline(dv[f"{q}_um"], color="k", ls=ls, label=f"{q.upper()} {dv[f'{q}_um']:.3g} um")
        if f"{q}_supplier_um" in dv:
            ax.axvline(dv[f"{q}_supplier_um"], color="tab:red", ls=ls, label=f"supplier {q.upper()}")
    ax.set(xlabel="equivalent-sphere diameter (um)", ylabel="volume % per class")
    ax.legend(fontsize=7)
    inner = particles[~particles["touches_boundary"].astype(bool)]
    rho = summary.get("coverage_size_spearman") or {}
    for col, colour, name in (("coverage_cbd", "tab:grey", "CBD"), ("coverage_am", "tab:orange", "AM-AM contact")):
        if col in inner:
            r = _num(rho.get(col))
            ax2.scatter(inner["eq_diameter_um"], inner[col], s=8, color=colour, alpha=0.6,
                        label=f"{name} (rho {r:.2f})" if math.isfinite(r) else name)
    rep = inner[inner["particle"] == summary.get("representative_particle", -1)]
    for col in ("coverage_cbd", "coverage_am"):
        if len(rep) and col in rep:
            ax2.scatter(rep["eq_diameter_um"], rep[col], marker="*", s=160, color="k", zorder=3)
    ax2.set(xlabel="equivalent-sphere diameter (um)", ylabel="fraction of particle surface", ylim=(0, 1))
    ax2.legend(fontsize=7)
    return fig


def _glance_particles(report: dict[str, Any]) -> list[str]:
    d50 = _num(report.get("d50_um"))
    if not math.isfinite(d50):
        return []
    s = f"Median particle size D50 {d50:.3g} um"
    n, nb = report.get("n_inner_particles"), report.get("n_boundary_particles")
    if n is None and report.get("n_particles") is not None:
        n = int(report["n_particles"]) - int(nb or 0)
    if n is not None:
        s += f" over {n} particles inside the volume"
        if nb:
            s += f" ({nb} cut by the volume boundary left out)"
    sph, med = _num(report.get("sphericity_mean")), _num(report.get("sphericity_median"))
    if math.isfinite(sph):
        s += f"; sphericity mean {sph:.2f}" + (f", median {med:.2f}" if math.isfinite(med) else "")
        if report.get("sphericity_min_voxels"):
            s += f" (particles of at least {report['sphericity_min_voxels']} voxels)"
    out = [s + "."]
    dv = report.get("particle_psd_volume") or {}
    if "d50_supplier_um" in dv:
        out.append("Volume PSD (edge-corrected) D10/D50/D90 " + "/".join(f"{_num(dv[f'{q}_um']):.3g}" for q in
                   ("d10", "d50", "d90")) + " um vs the supplier's " + "/".join(
                   f"{_num(dv[f'{q}_supplier_um']):.3g}" for q in ("d10", "d50", "d90")) + " um.")
    return out


def glance_micro(report: dict[str, Any]) -> list[str]:
    """Plain-language sentences summarising ``microstructure.json``.

    Examples
    --------
    >>> glance_micro({"volume_fraction": {"pore": 0.3, "am": 0.6, "cbd": 0.1}})[0]
    'Volume fractions: active material 60 %, pore 30 %, carbon-binder 10 %.'
    >>> glance_micro({"d50_um": 2.0, "n_inner_particles": 9, "sphericity_mean": 0.9,
    ...               "sphericity_median": 0.91, "sphericity_min_voxels": 64})[0]
    'Median particle size D50 2 um over 9 particles inside the volume; sphericity mean 0.90, median 0.91 (particles of at least 64 voxels).'
    >>> glance_micro({"multiphase_tortuosity_z": {"cbd_porosity": 0.47, "cbd_relative_diffusivity": 0.322,
    ...               "tau": 1.52, "deff": 0.33, "mcmullin": 3.04}})[0]
    'With a porous carbon-binder (porosity 0.47, D/D0 0.322): tortuosity along z 1.52, D_eff/D0 0.33, MacMullin number 3.04.'
    """
    out: list[str] = []
    vf = report.get("volume_fraction") or {}
    if vf:
        out.append("Volume fractions: " + ", ".join(
            f"{_NAMES.get(p, p)} {_pct(_num(vf[p]))}" for p in ("am", "pore", "cbd") if p in vf) + ".")
    out += _glance_percolation(report) + _glance_transport(report) + _glance_particles(report)
    tpb = _num(report.get("tpb_density_um-2"))
    if math.isfinite(tpb):
        out.append(f"Triple-phase-boundary density {tpb:.3g} um^-2.")
    mp = report.get("multiphase_tortuosity_z") or {}
    if mp:
        out.append(f"With a porous carbon-binder (porosity {_num(mp.get('cbd_porosity')):.2f}, D/D0 "
                   f"{_num(mp.get('cbd_relative_diffusivity')):.3f}): tortuosity along z {_num(mp.get('tau')):.3g}, "
                   f"D_eff/D0 {_num(mp.get('deff')):.3g}, MacMullin number {_num(mp.get('mcmullin')):.3g}.")
    return out


def micro_body(run_dir: Path, progress: ProgressCallback | None = None) -> tuple[str, list[str]]:
    """Subtitle and HTML sections of the microstructure report of ``run_dir``."""
    notes: list[str] = []
    report: dict[str, Any] = {}
    jpath = RunLayout(run_dir).table("microstructure", ".json")
    if jpath.is_file():
        try:
            report = json.loads(jpath.read_text())
        except json.JSONDecodeError as exc:
            notes.append(f"tables/microstructure.json unreadable ({exc})")
    else:
        notes.append("tables/microstructure.json not found")
    body = ['<h2 id="glance">At a glance</h2>']
    glance = glance_micro(report)
    body.append(f'<p class="glance">{esc(" ".join(glance)) if glance else "No summary found."}</p>')
    for n in report.get("notes") or []:
        body.append(f'<div class="warning">Note: {esc(n)}</div>')

    body.append('<h2 id="figures">Figures</h2>')
    body += figure_gallery(run_dir, _ORDER, MICRO_CAPTIONS, "litomo micro", progress)

    body.append('<h2 id="metrics">Metrics</h2>')
    mt = read_table(run_dir, "metrics_table", notes)
    if mt is not None:
        body.append(html_table(mt))
    else:
        body.append(note("tables/metrics_table.csv not found: no metrics table."))

    body.append('<h2 id="run">Input</h2>')
    info = {k: report[k] for k in ("input", "shape", "voxel_size_um", "label_mapping", "seed",
                                    "percolation_connectivity", "mc_smooth_sigma_vox") if k in report}
    body.append(dict_table(info, "item", "value") if info else note("No input information recorded."))
    body += notes_html(notes)
    return esc(str(run_dir.resolve())), body


__all__ = ["MICRO_CAPTIONS", "glance_micro", "micro_body"]

"""Figures and ``report.html`` of ``litomo damage`` output directories.

The workflow draws the figures (:func:`damage_edge_figures`, :func:`crack_li_figure`, and
:func:`litomo.report.workflow_figures.damage_figures`) into ``DIR/figures``; :func:`damage_body`
embeds them with captions beside a plain-language summary of ``tables/damage.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from litomo.io.rundir import RunLayout
from litomo.progress import ProgressCallback
from litomo.report.blocks import esc, figure_gallery, html_table, notes_html, read_table

_CLASS_COLOURS = {"intact": "C2", "moderate": "C1", "severe": "C3"}

#: captions of the figures ``litomo damage`` writes
DAMAGE_CAPTIONS = {
    "damage_index_histogram": "litomo's damage index per particle, with the least/mild/severe thresholds.",
    "damage_classes_vs_depth": "Particles per damage-index class in each depth window.",
    "damage_edges_depth": "The crack paper's method: Canny crack-edge length per particle section area in "
                          "each depth window from the separator (bars) and the section-weighted fraction of "
                          "particle surface detached from the carbon-binder network (line, where a CBD "
                          "phase exists). Damage concentrated near the separator shows as tall bars at "
                          "small depth.",
    "damage_edges_particles": "Per particle against depth: left, the crack trace number (edge density x "
                              "equivalent diameter) coloured by Canny damage class, with the class "
                              "thresholds; right, the detachment gap: fraction of the surface that has come "
                              "off the carbon-binder network and the mean gap over it.",
    "crack_li": "Damage against Li content of the same particles (paired by centroid with the Li run), "
                "coloured by Canny damage class, with Spearman's rho: a negative rho means damaged "
                "particles hold less Li.",
}
_ORDER = ("damage_edges_depth", "damage_edges_particles", "crack_li", "damage_index_histogram",
          "damage_classes_vs_depth")


def damage_edge_figures(particles: pd.DataFrame, depth: pd.DataFrame, thresholds: tuple[float, float]
                        ) -> dict[str, Figure]:
    """Canny edge density per depth window, and trace number / detachment gap per particle.

    Parameters
    ----------
    particles, depth : pandas.DataFrame
        The two tables of :func:`litomo.damage_edges.edge_damage`.
    thresholds : (moderate, severe)
        Class thresholds of the crack trace number.

    Examples
    --------
    >>> per = pd.DataFrame({"depth_um": [1.0, 12.0], "crack_trace_number": [0.0, 3.0],
    ...                     "edge_damage_class": ["intact", "severe"], "cbd_detached_fraction": [0.1, 0.5],
    ...                     "cbd_gap_mean_um": [0.2, 0.4]})
    >>> d = pd.DataFrame({"depth_start_um": [0.0, 10.0], "depth_end_um": [10.0, 20.0],
    ...                   "edge_density_per_um": [0.0, 1.0], "cbd_detached_fraction": [0.1, 0.5]})
    >>> sorted(damage_edge_figures(per, d, (0.3, 2.0)))
    ['damage_edges_depth', 'damage_edges_particles']
    """
    fd = Figure(figsize=(6, 4), layout="constrained")
    ax = fd.subplots()
    if len(depth):
        width = depth["depth_end_um"] - depth["depth_start_um"]
        ax.bar(depth["depth_start_um"], depth["edge_density_per_um"], width=width * 0.9, align="edge",
               color="0.45", label="Canny edge density")
        if "cbd_detached_fraction" in depth and depth["cbd_detached_fraction"].notna().any():
            ax2 = ax.twinx()
            ax2.plot(depth["depth_start_um"] + width / 2, depth["cbd_detached_fraction"], "o-", color="C0")
            ax2.set(ylabel="CBD-detached surface fraction", ylim=(0, 1))
    ax.set(xlabel="depth from the separator (um)", ylabel="crack edge length / section area (um^-1)",
           title="Canny crack-edge density per depth window")
    fp = Figure(figsize=(11, 4), layout="constrained")
    a1, a2 = fp.subplots(1, 2)
    for cls, colour in _CLASS_COLOURS.items():
        sel = particles[particles["edge_damage_class"] == cls]
        a1.scatter(sel["depth_um"], sel["crack_trace_number"], s=14, color=colour, label=f"{cls} ({len(sel)})")
    for t in thresholds:
        a1.axhline(t, color="k", ls="--", lw=0.8)
    a1.set(xlabel="depth from the separator (um)", ylabel="crack trace number (-)")
    a1.legend(fontsize=8)
    if particles["cbd_detached_fraction"].notna().any():
        a2.scatter(particles["depth_um"], particles["cbd_detached_fraction"], s=14, color="C0",
                   label="detached surface fraction")
        a2.set(ylabel="CBD-detached surface fraction", ylim=(0, 1))
        a3 = a2.twinx()
        a3.scatter(particles["depth_um"], particles["cbd_gap_mean_um"], s=10, marker="x", color="C3",
                   label="mean gap (um)")
        a3.set(ylabel="mean detachment gap (um)")
        a2.legend(fontsize=8, loc="upper left")
    else:
        a2.text(0.5, 0.5, "no carbon-binder phase: no detachment gap", ha="center", transform=a2.transAxes)
    a2.set(xlabel="depth from the separator (um)")
    return {"damage_edges_depth": fd, "damage_edges_particles": fp}


def crack_li_figure(table: pd.DataFrame, correlation: pd.DataFrame, li_column: str = "mean_li") -> Figure:
    """Scatter of each damage metric against the Li metric of the paired particles, with rho.

    Examples
    --------
    >>> t = pd.DataFrame({"damage_index": [0.1, 0.5], "edge_density_per_um": [0.0, 2.0], "mean_li": [0.9, 0.6]})
    >>> c = pd.DataFrame({"damage_metric": ["damage_index"], "li_metric": ["mean_li"], "n": [2],
    ...                   "spearman_rho": [-1.0], "p_value": [1.0]})
    >>> len(crack_li_figure(t, c).axes)
    2
    """
    metrics = [m for m in ("damage_index", "edge_density_per_um", "cbd_detached_fraction")
               if m in table and table[m].notna().any()]
    fig = Figure(figsize=(4.5 * max(len(metrics), 1), 4), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, max(len(metrics), 1)))
    rho = {r.damage_metric: r.spearman_rho for r in correlation.itertuples() if r.li_metric == li_column}
    for ax, m in zip(axs, metrics, strict=False):
        if "edge_damage_class" in table:  # colour by the Canny class: the paper's class-wise view
            for cls, colour in _CLASS_COLOURS.items():
                sel = table[table["edge_damage_class"] == cls]
                ax.scatter(sel[m], sel[li_column], s=14, color=colour, label=cls)
            ax.legend(fontsize=8)
        else:
            ax.scatter(table[m], table[li_column], s=14)
        r = rho.get(m, math.nan)
        ax.set(xlabel=m, ylabel=li_column, title=f"Spearman rho {r:.2f}" if math.isfinite(r) else "")
    return fig


def glance_damage(summary: dict[str, Any]) -> list[str]:
    """Plain-language sentences from ``tables/damage.json``.

    Examples
    --------
    >>> glance_damage({"n_particles": 5, "edge_class_counts": {"intact": 2, "moderate": 1, "severe": 2}})
    ['5 particles; Canny damage classes: 2 intact, 1 moderate, 2 severe.']
    """
    out = []
    if "n_particles" in summary:
        s = f"{summary['n_particles']} particles"
        counts = summary.get("edge_class_counts") or {}
        if counts:
            s += "; Canny damage classes: " + ", ".join(f"{n} {c}" for c, n in counts.items())
        out.append(s + ".")
    if "crack_li_pairs" in summary:
        out.append(f"{summary['crack_li_pairs']} particles paired with the Li run "
                   f"({summary.get('crack_li_unpaired', 0)} unpaired).")
    return out


def damage_body(run_dir: Path, progress: ProgressCallback | None = None) -> tuple[str, list[str]]:
    """Subtitle and HTML sections of the damage report of ``run_dir``."""
    notes: list[str] = []
    summary: dict[str, Any] = {}
    jpath = RunLayout(run_dir).table("damage", ".json")
    try:
        summary = json.loads(jpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        notes.append(f"tables/damage.json unreadable ({exc})")
    glance = glance_damage(summary)
    body = ['<h2 id="glance">At a glance</h2>',
            f'<p class="glance">{esc(" ".join(glance)) if glance else "No summary found."}</p>',
            '<h2 id="figures">Figures</h2>']
    body += figure_gallery(run_dir, _ORDER, DAMAGE_CAPTIONS, "litomo damage", progress)
    for table, title in (("damage_edges_depth", "Canny damage per depth window"),
                         ("crack_li_correlation", "Damage vs Li content (Spearman)")):
        df = read_table(run_dir, table, notes) if RunLayout(run_dir).table(table).is_file() else None
        if df is not None:
            body += [f"<h2>{esc(title)}</h2>", html_table(df)]
    body += notes_html(notes)
    return esc(str(run_dir.resolve())), body


__all__ = ["DAMAGE_CAPTIONS", "crack_li_figure", "damage_body", "damage_edge_figures", "glance_damage"]

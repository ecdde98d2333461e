"""Figures and ``report.html`` of a ``litomo map2d`` run (2-D TXM-XANES maps).

The figures are drawn from the :class:`litomo.workflows.map2d.Map2DResult` in memory, saved as
PNG and SVG under ``OUT/figures`` and embedded in a self-contained page (inline CSS, base64 PNG).
"""

from __future__ import annotations

import datetime as _dt
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from litomo.report.blocks import CSS, dict_table, esc, figure_html, fmt, html_table, note

CLASS_COLOURS = ("#d7191c", "#fdae61", "#2c7bb6")  # poor, moderate, rich (as in the 3-D report)


def _extent_um(shape: tuple[int, ...], px: float) -> list[float]:
    return [0.0, shape[1] * px, shape[0] * px, 0.0]


def od_figure(res: Any) -> Figure:
    """OD of every energy after alignment (a shared 1-99 % grey scale per frame)."""
    n = len(res.energies_ev)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows), layout="constrained")
    axs = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, od, e in zip(axs, res.od, res.energies_ev, strict=False):
        lo, hi = np.nanpercentile(od, [1, 99])
        ax.imshow(od, cmap="gray", vmin=lo, vmax=hi, extent=_extent_um(od.shape, res.pixel_size_um))
        ax.set_title(f"OD at {e:.1f} eV", fontsize=9)
        ax.set_xlabel("x (um)", fontsize=8)
    for ax in axs[n:]:
        ax.axis("off")
    return fig


def jump_figure(res: Any) -> Figure:
    """Edge-jump (Ni) map with the particle outlines."""
    from skimage.segmentation import find_boundaries

    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    j = res.edge_jump
    lo, hi = np.nanpercentile(j, [1, 99.5])
    im = ax.imshow(j, cmap="magma", vmin=lo, vmax=hi, extent=_extent_um(j.shape, res.pixel_size_um))
    edges = np.ma.masked_where(~find_boundaries(res.particles, mode="inner"), np.ones(j.shape))
    ax.imshow(edges, cmap="winter", alpha=0.9, extent=_extent_um(j.shape, res.pixel_size_um),
              interpolation="nearest")
    fig.colorbar(im, ax=ax, label="edge jump OD(high) - OD(low)")
    ax.set_title(f"Ni edge jump, {len(res.particle_table)} particles outlined")
    ax.set_xlabel("x (um)")
    ax.set_ylabel("y (um)")
    return fig


def li_figure(res: Any, poor_max: float, rich_min: float) -> Figure:
    """Li map and its classes side by side."""
    from matplotlib.colors import ListedColormap

    fig = Figure(figsize=(11, 4.8), layout="constrained")
    a, b = fig.subplots(1, 2)
    ext = _extent_um(res.x_li.shape, res.pixel_size_um)
    im = a.imshow(res.x_li, cmap="viridis", vmin=0.0, vmax=1.2, extent=ext)
    fig.colorbar(im, ax=a, label="x_Li")
    a.set_title("Li content (Ni-weighted mean along the beam)")
    cls = np.full(res.x_li.shape, np.nan)
    fin = np.isfinite(res.x_li)
    cls[fin] = np.where(res.x_li[fin] <= poor_max, 0, np.where(res.x_li[fin] >= rich_min, 2, 1))
    b.imshow(cls, cmap=ListedColormap(CLASS_COLOURS), vmin=-0.5, vmax=2.5, extent=ext, interpolation="nearest")
    b.set_title(f"classes: poor <= {poor_max:g} < moderate < {rich_min:g} <= rich")
    for ax in (a, b):
        ax.set_xlabel("x (um)")
    a.set_ylabel("y (um)")
    return fig


def histogram_figure(res: Any, poor_max: float, rich_min: float) -> Figure:
    """Histogram of x_Li over the active-material pixels with the class spans."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    h = res.histogram
    ax.bar(h["bin_centre"], h["fraction"], width=h["bin_right"] - h["bin_left"], color="#555")
    for lo, hi, c in ((0.0, poor_max, CLASS_COLOURS[0]), (poor_max, rich_min, CLASS_COLOURS[1]),
                      (rich_min, 1.2, CLASS_COLOURS[2])):
        ax.axvspan(lo, hi, color=c, alpha=0.15)
    ax.set_xlabel("x_Li")
    ax.set_ylabel("fraction of AM pixels")
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_map2d_report(rd: Any, res: Any, *, poor_max: float = 0.6, rich_min: float = 0.9) -> list[Any]:
    """Save the figures under ``rd.figures`` and write ``rd.report`` (``report.html``)."""
    from litomo.io.atomic import write_text_atomic
    from litomo.report.figures import save_figure

    specs = [("od", "Optical density per energy (aligned)", od_figure(res)),
             ("edge_jump", "Edge-jump (Ni) map and particles", jump_figure(res))]
    if res.x_li is not None:
        specs += [("li_map", "Li map and classes", li_figure(res, poor_max, rich_min)),
                  ("li_histogram", "Li histogram", histogram_figure(res, poor_max, rich_min))]
    out: list[Any] = []
    body = [f'<div class="glance">{_glance(res)}</div>']
    for name, title, fig in specs:
        out += list(save_figure(fig, rd.figures, name).values())
        body.append(f"<h2>{esc(title)}</h2>" + figure_html(_png(fig), esc(title), title))
    if res.method == "edge-jump":
        body.append(note("Two energies give the Ni (edge-jump) map, the particles and the alignment QA; "
                         "a Li map needs three energies (pre-edge, edge, post-edge) or a spectrum."))
    body += ["<h2>Alignment across energies</h2>", html_table(res.alignment),
             "<h2>Frames</h2>", html_table(res.frames),
             "<h2>Particles</h2>", html_table(res.particle_table),
             "<h2>Summary</h2>", dict_table(res.summary)]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(res.name)}: 2-D TXM-XANES map</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(res.name)}: 2-D TXM-XANES map</h1><p class=\"meta\">litomo map2d, {stamp}</p>"
            + "\n".join(body) + "</body></html>\n")
    out.append(write_text_atomic(rd.report, page))
    return out


def _glance(res: Any) -> str:
    s = res.summary
    e = ", ".join(f"{v:.1f}" for v in res.energies_ev)
    parts = [f"Method <b>{esc(res.method)}</b> on {len(res.energies_ev)} energies ({e} eV); "
             f"{s['n_particles']} particles, active-material area {fmt(s['am_area_um2'])} um^2"]
    if "edge_jump_cnr" in s:
        parts.append(f"edge-jump contrast-to-noise {fmt(s['edge_jump_cnr'], 3)}")
    if "mean_li" in s:
        parts.append(f"mean x_Li {fmt(s['mean_li'], 3)}; rich {fmt(100 * s['frac_li_rich'], 3)} %, "
                     f"moderate {fmt(100 * s['frac_li_moderate'], 3)} %, poor {fmt(100 * s['frac_li_poor'], 3)} %")
    a = res.alignment
    moved = a[~a["reference"].astype(bool)] if "reference" in a else a.iloc[0:0]
    if len(moved):
        parts.append("alignment: scale " + ", ".join(fmt(v, 4) for v in moved["scale"])
                     + "; NCC after " + ", ".join(fmt(v, 3) for v in moved["ncc_after"]))
    return "; ".join(parts) + "."

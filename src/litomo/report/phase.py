"""Figures of a ``litomo phase`` run: holograms per distance, retrieved phase, a slice, histogram, axis QA."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from litomo.report.figures import save_figure


def hologram_panel(images: np.ndarray, phase: np.ndarray, z1_mm: Any) -> Figure:
    """One flat-corrected projection per distance (common grid) and its retrieved phase.

    Examples
    --------
    >>> fig = hologram_panel(np.ones((2, 8, 8)), np.zeros((8, 8)), [5.0, 6.0])
    >>> len(fig.axes) >= 3
    True
    """
    n = images.shape[0]
    fig = Figure(figsize=(3.0 * (n + 1), 3.2), layout="constrained")
    axs = fig.subplots(1, n + 1, squeeze=False)[0]
    for j in range(n):
        axs[j].imshow(images[j], cmap="gray")
        axs[j].set_title(f"z1 = {float(z1_mm[j]):g} mm")
        axs[j].axis("off")
    im = axs[n].imshow(phase, cmap="gray")
    axs[n].set_title("retrieved phase (rad)")
    axs[n].axis("off")
    fig.colorbar(im, ax=axs[n], shrink=0.8)
    return fig


def slice_and_histogram(volume: np.ndarray, voxel_size_um: float, *, classes: int = 3) -> Figure:
    """Central slice of the delta volume and its grey histogram with multi-Otsu thresholds and class peaks.

    Examples
    --------
    >>> v = np.repeat([0.0, 1.0, 3.0], 64).reshape(3, 8, 8) + np.random.default_rng(0).normal(0, .1, (3, 8, 8))
    >>> len(slice_and_histogram(v, 0.5).axes) >= 2
    True
    """
    from skimage.filters import threshold_multiotsu

    vol = np.asarray(volume)
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    sl = vol[vol.shape[0] // 2]
    n = sl.shape[1]
    im = ax0.imshow(sl, cmap="gray", extent=(0, n * voxel_size_um, n * voxel_size_um, 0))
    ax0.set_title("central slice")
    ax0.set_xlabel("x (um)")
    fig.colorbar(im, ax=ax0, label="delta x 1e6", shrink=0.8)
    vals = vol.ravel()[:: max(1, vol.size // 2_000_000)]
    counts, edges = np.histogram(vals, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ax1.plot(centres, counts, color="k", lw=1)
    thr = threshold_multiotsu(vals, classes=classes)
    bounds = [-np.inf, *thr, np.inf]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sel = (centres > lo) & (centres <= hi)
        if sel.any():
            peak = centres[sel][np.argmax(counts[sel])]
            ax1.axvline(peak, color="tab:blue", ls="-", lw=0.8)
    for t in thr:
        ax1.axvline(t, color="tab:red", ls="--", lw=0.8)
    ax1.set_xlabel("delta x 1e6")
    ax1.set_ylabel("voxels")
    ax1.set_title("histogram: class peaks (blue), multi-Otsu thresholds (red)")
    return fig


def axis_figure(axis: Any, sinogram_row: np.ndarray | None = None) -> Figure:
    """Centre-of-rotation QA: the entropy search around Vo's estimate, its checks, the axis used.

    ``axis`` is a :class:`litomo.holo.axis.AxisResult`. With an entropy curve (automatic centre
    of a full scan) the figure is :func:`litomo.report.recon.center_figure` plus the independent
    opposite-view estimate; otherwise (axis given, or half acquisition) it shows the axis on
    ``sinogram_row`` (one phase sinogram, angles x columns) when given.

    Examples
    --------
    >>> from litomo.holo.axis import AxisResult
    >>> ax = AxisResult(4.2, "vo (entropy check)", {"vo_px": 4.2, "opposite_px": 4.3},
    ...                 curve=(np.arange(8.0), np.abs(np.arange(8.0) - 4)))
    >>> len(axis_figure(ax).axes)
    1
    """
    from litomo.report.recon import center_figure

    d = axis.details
    if axis.curve is not None:
        fig = center_figure(axis.curve[0], axis.curve[1], float(d.get("vo_px", axis.center_px)), axis.center_px)
        if d.get("opposite_px") is not None:
            fig.axes[0].axvline(float(d["opposite_px"]), color="C2", ls=":",
                                label=f"opposite views {float(d['opposite_px']):.2f}")
            fig.axes[0].legend()
        return fig
    fig = Figure(figsize=(5.0, 3.5), layout="constrained")
    a = fig.subplots()
    if sinogram_row is not None:
        a.imshow(sinogram_row, cmap="gray", aspect="auto")
        a.set(xlabel="detector column (px)", ylabel="projection")
    c = float(d.get("center_stitched_px", axis.center_px))  # half acquisition: the stitched sinogram's column
    a.axvline(c, color="C1", lw=1, label=f"axis {c:.2f} px ({axis.method})")
    a.legend(loc="upper right", fontsize=7)
    a.set_title("rotation axis")
    return fig


def phase_figures(result: Any, figures_dir: str | os.PathLike, z1_mm: Any) -> dict[str, Path]:
    """Write the figures of a :class:`litomo.workflows.phase.PhaseResult` as PNG/SVG."""
    out = {}
    fig = hologram_panel(result.example_images, result.example_phase, z1_mm)
    out["holograms"] = save_figure(fig, figures_dir, "phase_projections")["png"]
    fig = slice_and_histogram(np.asarray(result.volume.array), result.volume.voxel_size_um[0])
    out["slice_histogram"] = save_figure(fig, figures_dir, "phase_slice_histogram")["png"]
    if result.axis is not None:
        sino = result.outputs.get("phase_projections")
        row = None
        if sino is not None and Path(sino).is_file():
            p = np.load(sino, mmap_mode="r")
            row = np.asarray(p[:, p.shape[1] // 2, :])
        out["rotation_axis"] = save_figure(axis_figure(result.axis, row), figures_dir, "phase_rotation_axis")["png"]
    return out


def phase_report_html(record: dict[str, Any], pngs: dict[str, bytes]) -> str:
    """The self-contained ``report.html`` page of a phase run (figures embedded as PNG).

    Examples
    --------
    >>> page = phase_report_html({"settings": {"method": "ctf"}, "voxel_size_um": 0.2, "n_angles": 4}, {})
    >>> "ctf" in page and page.startswith("<!DOCTYPE html>")
    True
    """
    from litomo.report.blocks import CSS, dict_table, esc, figure_html

    g, st, al = record.get("geometry", {}), record.get("settings", {}), record.get("alignment", {})
    summary = {"method": st.get("method"), "delta/beta": st.get("delta_beta"),
               "regularisation": st.get("regularization"), "energy (keV)": g.get("energy_kev"),
               "z1 (mm)": g.get("z1_mm"), "z1+z2 (mm)": g.get("z12_mm"),
               "magnification": g.get("magnification"), "Fresnel number": g.get("fresnel_number"),
               "voxel size (um)": record.get("voxel_size_um"), "projections": record.get("n_angles"),
               "alignment shift (px)": al.get("shift_px"), "alignment scale": al.get("scale"),
               "alignment NCC": al.get("correlation"), **_axis_rows(record.get("center") or {})}
    captions = {
        "holograms": "One flat-corrected projection per distance on the common grid (Fresnel-scaled and "
                     "aligned), and its retrieved phase.",
        "rotation_axis": "Centre-of-rotation QA: for an automatic axis, the slice entropy over trial centres "
                         "around Vo's estimate (minimum = sharpest slice) and the independent opposite-view "
                         "estimate; for a given or half-acquisition axis, the axis drawn on the middle "
                         "row's phase sinogram.",
        "slice_histogram": "Central slice of the reconstructed delta (x 1e6) and the grey histogram with "
                           "the class peaks (blue) and multi-Otsu thresholds (red): pore, carbon-binder, "
                           "active material from low to high delta.",
    }
    body = [f"<h2>Run</h2>{dict_table({k: v for k, v in summary.items() if v is not None})}"]
    body += [f"<h2>{esc(k.replace('_', ' '))}</h2>" + figure_html(png, esc(captions.get(k, k)), k)
             for k, png in pngs.items()]
    title = "litomo phase report"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
            + "\n".join(body) + "</body></html>\n")


def _axis_rows(center: dict[str, Any]) -> dict[str, Any]:
    """Summary-table rows of the rotation axis (``phase.json`` "center")."""
    if not center:
        return {}
    rows: dict[str, Any] = {"rotation axis (px)": round(float(center["center_px"]), 2), "axis method": center.get("method")}
    if center.get("check_method"):
        # the check may be any second method (opposite views, entropy, sharpness): check_px names its estimate
        check = center.get("check_px", center.get("entropy_px"))
        rows["axis check"] = (f"{center.get('method')} {float(center['center_px']):.2f} vs {center['check_method']} "
                              f"{check:.2f} px: "
                              + ("agree" if center.get("agree") else "DISAGREE, check the figure or give --center-px"))
    if "center_stitched_px" in center:
        rows["axis in stitched sinogram (px)"] = round(float(center["center_stitched_px"]), 2)
    return rows


def write_phase_report(rd: Any, result: Any, z1_mm: Any) -> dict[str, str]:
    """Figures (``rd.figures``) and ``report.html`` of a phase run in an open :class:`~litomo.io.rundir.RunDir`.

    Returns the written files by name (``rotation_axis``, ``holograms``, ``slice_histogram``,
    ``report_html``).
    """
    from litomo.io.atomic import write_text_atomic

    figs = phase_figures(result, rd.figures, z1_mm)
    page = phase_report_html(result.record, {k: Path(v).read_bytes() for k, v in figs.items()})
    report = rd.report  # records report.html as owned before it is written
    write_text_atomic(report, page)
    return {**{k: str(v) for k, v in figs.items()}, "report_html": str(report)}

"""QA figures of a reconstruction from projections: sinogram before/after alignment, per-projection
shifts, the centre search, orthoslices. Each function returns a matplotlib Figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from litomo.report.figures import save_figure


def _fig(nrows: int, ncols: int, w: float, h: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(w, h), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def sinogram_figure(before: np.ndarray, after: np.ndarray, angles_deg: np.ndarray) -> Figure:
    """Middle-row sinogram before and after alignment (angle vertical, detector column horizontal)."""
    fig, ax = _fig(1, 2, 9, 4)
    ext = (0, before.shape[1], float(angles_deg[-1]), float(angles_deg[0]))
    for a, img, title in ((ax[0, 0], before, "before alignment"), (ax[0, 1], after, "after alignment")):
        a.imshow(img, cmap="gray", aspect="auto", extent=ext)
        a.set(title=f"sinogram, middle row: {title}", xlabel="detector column (px)", ylabel="angle (deg)")
    return fig


def shifts_figure(angles_deg: np.ndarray, shifts_px: np.ndarray, history: list[dict[str, float]]) -> Figure:
    """Per-projection shifts and the convergence of the reprojection alignment."""
    fig, ax = _fig(1, 2, 9, 3.5)
    ax[0, 0].plot(angles_deg, shifts_px[:, 1], ".", ms=2, label="horizontal")
    ax[0, 0].plot(angles_deg, shifts_px[:, 0], ".", ms=2, label="vertical")
    ax[0, 0].set(xlabel="angle (deg)", ylabel="estimated shift (px)", title="per-projection shifts")
    ax[0, 0].legend()
    if history:
        it = [h["iteration"] for h in history]
        ax[0, 1].semilogy(it, [max(h["update_rms_px"], 1e-4) for h in history], "o-", label="shift update RMS (px)")
        ax[0, 1].semilogy(it, [h["residual"] for h in history], "s-", label="reprojection residual")
        ax[0, 1].set(xlabel="iteration", title="reprojection alignment")
        ax[0, 1].legend()
    else:
        ax[0, 1].set_axis_off()
    return fig


def center_figure(trial_px: np.ndarray, entropy: np.ndarray, vo_px: float, used_px: float,
                  others: dict[str, float | None] | None = None) -> Figure:
    """Slice entropy versus trial centre, with Vo's estimate, the other methods' (``others``) and the centre used."""
    fig, ax = _fig(1, 1, 5, 3.5)
    a = ax[0, 0]
    a.plot(trial_px, entropy, "o-", ms=3, label="slice entropy")
    a.axvline(vo_px, color="C1", ls="--", label=f"Vo (algotom) {vo_px:.2f}")
    for k, (name, px) in enumerate((others or {}).items()):
        if px is not None and np.isfinite(px):
            a.axvline(px, color=f"C{k + 2}", ls=":", label=f"{name} {px:.2f}")
    a.axvline(used_px, color="k", lw=0.8, label=f"used {used_px:.2f}")
    a.set(xlabel="centre of rotation (px)", ylabel="histogram entropy", title="centre search")
    a.legend()
    return fig


def orthoslices_figure(volume: np.ndarray, voxel_size_um: float | None) -> Figure:
    """Three central orthogonal slices of the reconstructed volume (1st-99th percentile grey range)."""
    v = np.asarray(volume)
    fig, ax = _fig(1, 3, 11, 4)
    lo, hi = np.nanpercentile(v[v.shape[0] // 2], [1, 99])  # NaN: outside the field of view
    unit = f" ({voxel_size_um:g} um voxels)" if voxel_size_um else ""
    for a, img, title in ((ax[0, 0], v[v.shape[0] // 2], "z (slice)"), (ax[0, 1], v[:, v.shape[1] // 2], "y"),
                          (ax[0, 2], v[:, :, v.shape[2] // 2], "x")):
        a.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect="equal")
        a.set_title(f"central {title}{unit}")
        a.set_axis_off()
    return fig


def write_recon_figures(result: Any, figures_dir: str | Path) -> list[Path]:
    """Write all QA figures of a :class:`litomo.workflows.reconstruct.ReconstructionResult`; returns the PNG paths."""
    d = Path(figures_dir)
    out = []
    out.append(save_figure(sinogram_figure(result.sinogram_before, result.sinogram_after, result.angles_deg), d, "sinogram_alignment")["png"])
    if result.alignment is not None:
        out.append(save_figure(shifts_figure(result.angles_deg, result.alignment.shifts_px, result.alignment.history), d, "shifts")["png"])
    if result.center is not None:
        c = result.center
        others = {"opposite views": c.opposite_px, "sharpness": c.sharpness_px}
        out.append(save_figure(center_figure(c.trial_px, c.entropy, c.vo_px, c.center_px, others), d,
                               "center_search")["png"])
    out.append(save_figure(orthoslices_figure(result.volume, result.voxel_size_um), d, "orthoslices")["png"])
    return out

"""Figure of one normalised XANES spectrum (``litomo spectrum --plot``)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

PLOT_FORMATS = (".png", ".svg", ".pdf")


def spectrum_figure(energy_ev, norm, *, e0_ev: float, edge_half_ev: float, white_line_ev: float | None = None,
                    name: str = "") -> Figure:
    """Normalised spectrum with E0 (derivative maximum) and the half-jump energy marked.

    Examples
    --------
    >>> e = np.linspace(8300, 8400, 101); n = 1 / (1 + np.exp(-(e - 8340) / 2))
    >>> fig = spectrum_figure(e, n, e0_ev=8340.0, edge_half_ev=8340.0)
    >>> [t.get_text() for t in fig.axes[1].get_legend().get_texts()][:2]
    ['normalised mu', 'E0 8340.0 eV (derivative max.)']
    """
    e, n = np.asarray(energy_ev, float), np.asarray(norm, float)
    fig = Figure(figsize=(10, 4.0), layout="constrained")
    full, ax = fig.subplots(1, 2, width_ratios=[1, 1.3])
    full.plot(e, n, color="k", lw=1.0)
    full.axvspan(e0_ev - 30, e0_ev + 60, color="#bbb", alpha=0.3)
    full.set_xlabel("energy (eV)")
    full.set_ylabel("normalised absorption")
    full.set_title(name or "XANES spectrum")
    # the edge region, where the markers are told apart
    near = (e >= e0_ev - 30) & (e <= e0_ev + 60)
    ax.plot(e[near], n[near], color="k", lw=1.2, marker=".", ms=3, label="normalised mu")
    ax.axvline(e0_ev, color="#2c7bb6", ls="--", label=f"E0 {e0_ev:.1f} eV (derivative max.)")
    ax.axvline(edge_half_ev, color="#d7191c", ls=":", label=f"half jump {edge_half_ev:.1f} eV")
    ax.axhline(0.5, color="#d7191c", lw=0.6, alpha=0.5)
    if white_line_ev is not None and np.isfinite(white_line_ev):
        ax.axvline(white_line_ev, color="#1a9641", ls="-.", lw=0.8, label=f"white line {white_line_ev:.1f} eV")
    ax.set_xlabel("energy (eV)")
    ax.set_title("edge region")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def save_spectrum_plot(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .svg or .pdf), atomically."""
    from litomo.errors import LitomoError
    from litomo.io.atomic import write_bytes_atomic

    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in PLOT_FORMATS:
        raise LitomoError(f"--plot {path}: unknown figure format {fmt or '(none)'!r}; use .png, .svg or .pdf")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt[1:], dpi=150)
    return write_bytes_atomic(path, buf.getvalue())

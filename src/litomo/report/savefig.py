"""Saving report figures: PNG + SVG written atomically, the layout solved once per figure."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from litomo.io.atomic import atomic_path


def freeze_layout(fig: Figure, dpi: float) -> None:
    """Place the axes of ``fig`` once with its layout engine (at ``dpi``), then remove the engine.

    ``savefig`` of a figure with a layout engine draws it twice per file (a dry run that places the
    axes, then the real drawing); without an engine it draws once. The positions solved here are
    the ones the dry run of the first file would have found: the files are byte-identical, and a
    report's figures cost ~25 % less CPU (docs/benchmarks.md, session 10).

    Examples
    --------
    >>> fig = Figure(layout="constrained"); ax = fig.subplots()
    >>> freeze_layout(fig, 150); fig.get_layout_engine() is None
    True
    """
    engine = fig.get_layout_engine()
    if engine is None:
        return
    old_dpi = fig.dpi
    fig.set_dpi(dpi)
    try:
        engine.execute(fig)
    finally:
        fig.set_dpi(old_dpi)
    # set_layout_engine(None) would fall back to the rc defaults if a user turned those on
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)


def save_figure(fig: Figure, figures_dir: str | os.PathLike, name: str, *, dpi: int = 150) -> dict[str, Path]:
    """Write ``fig`` as ``figures_dir/name.png`` (``dpi``) and ``name.svg``, atomically.

    The figure's layout is solved once and then fixed (:func:`freeze_layout`).

    Returns
    -------
    dict
        ``{"png": path, "svg": path}``.

    Examples
    --------
    >>> import tempfile
    >>> fig = Figure(); _ = fig.subplots().plot([0, 1])
    >>> sorted(save_figure(fig, tempfile.mkdtemp(), "line"))
    ['png', 'svg']
    """
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    freeze_layout(fig, dpi)
    paths = {}
    for fmt in ("png", "svg"):
        path = out / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        paths[fmt] = path
    return paths


__all__ = ["freeze_layout", "save_figure"]

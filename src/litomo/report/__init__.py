"""Figures, the self-contained ``report.html`` and viewer hand-off of a run directory.

- :mod:`litomo.report.figures`: one function per figure (tables/arrays -> matplotlib Figure)
  and :func:`~litomo.report.figures.save_figure`;
- :mod:`litomo.report.html`: :func:`~litomo.report.html.build_report`;
- :mod:`litomo.report.glance`: the Li page's "at a glance" sentences;
- :mod:`litomo.report.micro`: the microstructure part of the report;
- here: the volumes of a run (:func:`run_volumes`) and their export to ParaView
  (:func:`export_vti`), used by ``litomo view``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from litomo.errors import DataError
from litomo.io.rundir import RunLayout
from litomo.progress import ProgressCallback

#: OME-Zarr images of each state that the viewer hand-off knows, in display order
VOLUME_NAMES = ("li", "labels", "li_diff_vs_first")


def run_states(run_dir: str | os.PathLike) -> list[str]:
    """The state names of a run: ``run.json``'s order, else the folders under ``volumes/``."""
    lay = RunLayout(Path(run_dir))
    found = lay.state_folders()
    try:
        order = [str(s) for s in json.loads(lay.record.read_text()).get("states", [])]
    except (OSError, json.JSONDecodeError):
        order = []
    return [s for s in order if s in found] + [s for s in found if s not in order]


def run_volumes(run_dir: str | os.PathLike, names: tuple[str, ...] = VOLUME_NAMES, *,
                states: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Lazy volumes of every state: ``{state: {"li": Volume, "labels": Volume, ...}}``.

    Reads ``run_dir/volumes/<state>/<name>.ome.zarr`` with :func:`litomo.io.read_ome_zarr`
    (dask-backed, nothing is loaded yet); images that are absent are left out.

    Parameters
    ----------
    run_dir : path
    names : tuple of str
        Image names to read.
    states : list of str, optional
        Only these states (default all).

    Raises
    ------
    DataError
        No volume found under ``run_dir/volumes``, or an unknown state was asked for.

    Examples
    --------
    >>> vols = run_volumes("run-out")  # doctest: +SKIP
    >>> vols["I"]["li"].voxel_size_um  # doctest: +SKIP
    (0.2, 0.2, 0.2)
    """
    from litomo.io import read_ome_zarr

    d = Path(run_dir)
    lay = RunLayout(d)
    known = run_states(d)
    if states:
        unknown = [s for s in states if s not in known]
        if unknown:
            raise DataError(f"{d}: no state {', '.join(unknown)} under volumes/ (states: {', '.join(known) or 'none'})")
    out: dict[str, dict[str, Any]] = {}
    for state in states or known:
        vols = {}
        for name in names:
            path = lay.volume(state, name)
            if path.exists():
                vols[name] = read_ome_zarr(path)
        if vols:
            out[state] = vols
    if not out:
        raise DataError(f"{d}: no volumes found under volumes/<state>/*.ome.zarr "
                        "(is this a Li-mapping run directory?)")
    return out


def export_vti(run_dir: str | os.PathLike, names: tuple[str, ...] = ("li", "labels"), *,
               states: list[str] | None = None, progress: ProgressCallback | None = None) -> list[Path]:
    """Write ``volumes/<state>/<name>.vti`` (VTK ImageData for ParaView) next to each OME-Zarr image.

    The grid spacing is the voxel size in um. NaN (outside the active material) is kept in the
    Li maps; ParaView shows it with its NaN colour.

    Returns
    -------
    list of Path
        The files written.
    """
    from litomo.io import write_vti

    vols = run_volumes(run_dir, names, states=states)
    jobs = [(s, n, v) for s, d in vols.items() for n, v in d.items()]
    written = []
    for k, (state, name, vol) in enumerate(jobs, start=1):
        path = RunLayout(Path(run_dir)).volume(state, name, ".vti")
        written.append(write_vti(path, vol, name=name))
        if progress is not None:
            progress(k, len(jobs), "export .vti")
    return written


__all__ = ["VOLUME_NAMES", "export_vti", "run_states", "run_volumes"]

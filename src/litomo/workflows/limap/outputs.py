"""Stage ``outputs`` (over all states): the run's tables, volumes and run record.

Everything is written through :class:`litomo.io.rundir.RunDir` (each file recorded as
litomo's before it is written); the completion record ``run.json`` comes last.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from litomo import __version__
from litomo.io.rundir import RunDir

_REPORTED_PACKAGES = (
    "numpy", "scipy", "scikit-image", "scikit-learn", "dask", "distributed", "zarr",
    "tifffile", "h5py", "itk-elastix", "pandas", "matplotlib",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on (for run.json).

    Examples
    --------
    >>> package_versions()["numpy"] == np.__version__
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "litomo": __version__}
    for name in _REPORTED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_tables(rd: RunDir, tables: dict[str, pd.DataFrame]) -> None:
    """``tables/<name>.csv`` for every table."""
    from litomo.io.atomic import write_csv_atomic

    for name, df in tables.items():
        write_csv_atomic(rd.output(f"tables/{name}.csv"), df)


def write_volumes(rd: RunDir, state: str, li: np.ndarray, labels: np.ndarray, difference: np.ndarray | None,
                  voxel_size_um: Any, *, tiff: bool) -> None:
    """``volumes/<state>/``: the Li map, the particle labels and the difference to the first
    state (OME-Zarr), and optionally TIFF copies."""
    from litomo.io import write_ome_zarr, write_tiff
    from litomo.volume import Volume

    vdir = rd.volumes(state).relative_to(rd.root)
    li_v = Volume(li, voxel_size_um, {"name": "li", "state": state})
    parts = Volume(labels, voxel_size_um, {"name": "particles", "state": state})
    write_ome_zarr(rd.output(vdir / "li.ome.zarr"), li_v)
    write_ome_zarr(rd.output(vdir / "labels.ome.zarr"), parts)
    if difference is not None:
        write_ome_zarr(rd.output(vdir / "li_diff_vs_first.ome.zarr"),
                       Volume(difference.astype(np.float32), voxel_size_um))
    if tiff:
        write_tiff(rd.output(vdir / "li.tif"), li_v)
        write_tiff(rd.output(vdir / "particles.tif"), parts)


def write_report(rd: RunDir, record: dict[str, Any],
                 progress: Callable[[int, int, str], None] | None = None) -> None:
    """``report.html`` and ``figures/``, from the run folder and the (not yet written) run record."""
    from litomo.report.html import build_report

    rd.output("report.html")
    _ = rd.figures
    build_report(rd.root, run=record, progress=progress)

"""``litomo info FILE``: shape, dtype, voxel size, extent and value range of a volume file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, setup_logging


def volume_info(path: Path, *, voxel_size_um: float | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Summary of a volume file; min/max/NaN count are computed chunk by chunk (dask)."""
    import dask.array as da
    import numpy as np

    from litomo.io import read_volume, read_xrm, xrm_to_volume

    suffix = path.suffix.lower()
    xrm = None
    if suffix in (".xrm", ".txrm"):
        xrm = read_xrm(path)
        vol = xrm_to_volume(xrm, voxel_size_um).to_dask()
    else:
        vol = read_volume(path, lazy=True, voxel_size_um=voxel_size_um, dataset=dataset)
    arr = vol.array
    if arr.dtype.kind == "f":
        vmin, vmax, n_nan = da.compute(da.nanmin(arr), da.nanmax(arr), da.isnan(arr).sum())
    else:
        vmin, vmax = da.compute(arr.min(), arr.max())
        n_nan = 0
    info: dict[str, Any] = {
        "file": str(path),
        "format": vol.metadata.get("format"),
        "shape_zyx": list(vol.shape),
        "dtype": str(vol.dtype),
        "voxel_size_um_zyx": list(vol.voxel_size_um),
        "extent_um_zyx": list(vol.extent_um),
        "min": vmin.item() if hasattr(vmin, "item") else vmin,
        "max": vmax.item() if hasattr(vmax, "item") else vmax,
        "nan_count": int(n_nan),
        "size_mib": float(np.prod(vol.shape)) * vol.dtype.itemsize / 2**20,
    }
    for key in ("dataset", "chunks", "n_levels", "image", "n_files"):
        if key in vol.metadata:
            info[key] = vol.metadata[key]
    if xrm is not None:
        info["energy_ev"] = xrm.energy_ev
        info["energy_source"] = xrm.metadata.get("energy_source")
        info["pixel_size_um"] = xrm.pixel_size_um
        info["exposure_s"] = xrm.exposure_s
    return info


@app.command()
def info(
    file: Path = typer.Argument(..., help="Volume file: .tif/.tiff, folder of TIFF slices, .h5/.nxs, .ome.zarr, .xrm/.txrm."),
    json_out: bool = typer.Option(False, "--json", help="Print strict JSON instead of text."),
    voxel_size_um: float | None = typer.Option(
        None, "--voxel-size-um", help="Voxel edge length in micrometres (overrides the file's value)."
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="HDF5 dataset path or OME-Zarr image name."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Show shape (z, y, x), dtype, voxel size (um), physical extent (um), value range and
    NaN count of a volume file (computed chunk-wise, so large files are fine), plus the
    energy (eV) of Xradia frames and the chunking of zarr stores."""
    setup_logging(verbose)
    summary = volume_info(file, voxel_size_um=voxel_size_um, dataset=dataset)
    if json_out:
        print_json(summary)
        return
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, list) and value and isinstance(value[0], float):
            value = " x ".join(f"{v:.6g}" for v in value)
        typer.echo(f"{key:18s} {value}")

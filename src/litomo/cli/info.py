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
    special = _projection_or_sinogram(path, suffix, dataset)
    if special is not None and "projections" in special:
        return special
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
    if not vol.metadata.get("voxel_size_known", True):
        # a default resolution tag (72 dpi) or none: no length can be given (issue #21)
        info["voxel_size_um_zyx"] = None
        info["extent_um_zyx"] = None
        info["voxel_size_note"] = "not recorded in the file (none, or a default such as 72 dpi); pass --voxel-size-um"
    for key in ("dataset", "chunks", "n_levels", "image", "n_files"):
        if key in vol.metadata:
            info[key] = vol.metadata[key]
    if arr.dtype.kind in "iub":
        values = _label_values(arr, int(info["min"]), int(info["max"]))
        if values is not None:
            info["label_values"] = values
    if special is not None:
        info.update(special)
    if xrm is not None:
        info["energy_ev"] = xrm.energy_ev
        info["energy_source"] = xrm.metadata.get("energy_source")
        info["pixel_size_um"] = xrm.pixel_size_um
        info["exposure_s"] = xrm.exposure_s
    return info


def _projection_or_sinogram(path: Path, suffix: str, dataset: str | None) -> dict[str, Any] | None:
    """A projection series (DXchange/NXtomo: no volume to describe) or a .mat sinogram's layout."""
    if dataset is not None:
        return None
    if suffix in (".h5", ".hdf5", ".hdf", ".nxs"):
        from litomo.io.nexus import projection_summary

        p = projection_summary(path)
        if p is None:
            return None
        theta = p["theta_range_deg"]
        text = (f"projection series: {p['n_angles']} angles of {p['rows']} x {p['cols']}, "
                f"flats {p['n_flats']}, darks {p['n_darks']}")
        if theta is not None:
            text += f", angles {theta[0]:.4g} to {theta[1]:.4g} deg"
        return {"file": str(path), "format": p["format"], "kind": "projections", "projections": text,
                "data_path": p["data_path"], "n_angles": p["n_angles"], "detector_rows": p["rows"],
                "detector_cols": p["cols"], "n_flats": p["n_flats"], "n_darks": p["n_darks"], "dtype": p["dtype"],
                "theta_range_deg": theta}
    if suffix == ".mat":
        from litomo.io.mat import describe_mat

        d = describe_mat(path)
        out: dict[str, Any] = {"mat_variables": ", ".join(f"{v['name']} {tuple(v['shape'])} {v['class']}"
                                                          for v in d["variables"])}
        sino = d.get("sinogram")
        if sino is not None:
            out["kind"] = "sinogram"
            out["sinogram"] = (f"{sino['variable']}: {sino['n_angles']} angles x {sino['n_detector']} detector "
                               f"pixels (angles on axis {sino['angle_axis']}, from {sino['angles_variable']}, "
                               f"span {sino['angle_span_deg']:.4g} deg)")
        return out
    return None


def _label_values(arr: Any, vmin: int, vmax: int, max_labels: int = 64) -> dict[int, int] | None:
    """``{value: voxel count}`` of an integer volume with at most ``max_labels`` distinct values."""
    import dask.array as da
    import numpy as np

    if vmax - vmin > 65535:
        return None
    flat = arr.ravel().astype(np.int64) - vmin
    counts = np.asarray(da.bincount(flat, minlength=vmax - vmin + 1).compute())
    present = np.nonzero(counts)[0]
    if present.size > max_labels:
        return None
    return {int(v + vmin): int(counts[v]) for v in present}


@app.command()
def info(
    file: Path = typer.Argument(..., help="Volume file: .tif/.tiff, folder of TIFF slices, .h5/.nxs, .ome.zarr, .xrm/.txrm, .mat."),
    json_out: bool = typer.Option(False, "--json", help="Print strict JSON instead of text."),
    voxel_size_um: float | None = typer.Option(
        None, "--voxel-size-um", help="Voxel edge length in micrometres (overrides the file's value)."
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="HDF5 dataset path, OME-Zarr image name or .mat variable."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Show shape (z, y, x), dtype, voxel size (um), physical extent (um), value range and
    NaN count of a volume file (computed chunk-wise, so large files are fine), plus the
    energy (eV) of Xradia frames and the chunking of zarr stores. An integer volume with at
    most 64 distinct values (a label volume) lists each value's voxel count. A DXchange or
    NeXus file of raw projections is reported as a projection series (angles, detector
    rows x columns, flats, darks), not as a volume; a .mat file lists its variables and
    recognises a sinogram (a 2-D array with an angle vector of matching length)."""
    setup_logging(verbose)
    summary = volume_info(file, voxel_size_um=voxel_size_um, dataset=dataset)
    if json_out:
        print_json(summary)
        return
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif key.endswith("_range_deg") and value:
            value = f"{value[0]:.6g} to {value[1]:.6g}"
        elif isinstance(value, list) and value and isinstance(value[0], float):
            value = " x ".join(f"{v:.6g}" for v in value)
        elif isinstance(value, dict):  # label values: "0: 1234 (12.3 %), ..."
            total = sum(value.values()) or 1
            value = ", ".join(f"{k}: {v} ({100 * v / total:.3g} %)" for k, v in value.items())
        typer.echo(f"{key:18s} {value}")

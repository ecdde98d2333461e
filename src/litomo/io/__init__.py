"""Readers and writers. ``read_volume`` picks the reader from the file name.

Supported: multi-page TIFF and folders of TIFF slices, HDF5/NeXus volumes, OME-Zarr,
Xradia ``.xrm``/``.txrm`` (as a z=1 or n-frame volume); DXchange/NXtomo projections;
writers for TIFF, HDF5, OME-Zarr and VTK ImageData.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from litomo.errors import InputFileError
from litomo.io.guards import check_input_path, check_real_dtype
from litomo.io.hdf5 import HDF5_SUFFIXES, read_hdf5_volume, write_hdf5_volume
from litomo.io.mat import MAT_SUFFIXES, read_mat_volume
from litomo.io.nexus import ProjectionData, read_dxchange, read_nxtomo
from litomo.io.tiff import TIFF_SUFFIXES, list_tiff_slices, read_tiff, read_tiff_folder, write_tiff
from litomo.io.vtk import write_vti
from litomo.io.xrm import XRM_SUFFIXES, XrmImage, energy_from_filename, read_xrm
from litomo.volume import Volume, as_voxel_size

# zarr costs ~0.5-3 s to import: OME-Zarr names are loaded on first use, so that `import
# litomo.io` (and light commands such as `litomo spectrum`) do not pay for it (issue #21 item 7)
_LAZY_OMEZARR = ("list_ome_images", "read_ome_zarr", "write_ome_zarr")


def __getattr__(name: str) -> Any:
    if name in _LAZY_OMEZARR:
        from litomo.io import omezarr

        return getattr(omezarr, name)
    raise AttributeError(f"module 'litomo.io' has no attribute {name!r}")


SUPPORTED_FORMATS = (
    ".tif/.tiff (multi-page), a folder of .tif slices, .h5/.hdf5/.nxs (HDF5/NeXus), "
    ".zarr/.ome.zarr (OME-Zarr), .xrm/.txrm (Xradia), .mat (MATLAB, a 2-D or 3-D array)"
)


def xrm_to_volume(image: XrmImage, voxel_size_um: float | Sequence[float] | None = None) -> Volume:
    """An :class:`XrmImage` as a Volume: ``(1, y, x)`` for a frame, ``(n, y, x)`` for a stack.

    The pixel size is used for all three axes (z has no physical meaning for a 2D frame).
    """
    arr = image.image if image.image.ndim == 3 else image.image[None]
    meta = dict(image.metadata)
    meta.update({"energy_ev": image.energy_ev, "exposure_s": image.exposure_s, "pixel_size_um": image.pixel_size_um})
    if voxel_size_um is None:
        voxel_size_um = image.pixel_size_um if image.pixel_size_um is not None else 1.0
    return Volume(arr, as_voxel_size(voxel_size_um), meta)


def read_volume(
    path: str | os.PathLike,
    *,
    lazy: bool = False,
    chunks: Any = None,
    voxel_size_um: float | Sequence[float] | None = None,
    dataset: str | None = None,
) -> Volume:
    """Read a 3D volume from any supported format, chosen by extension (or a folder of TIFFs).

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff``, a folder of TIFF slices, ``.h5``/``.hdf5``/``.nxs``,
        ``.zarr``/``.ome.zarr`` or ``.xrm``/``.txrm``.
    lazy : bool
        Return a dask-backed volume where the format allows (OME-Zarr is always lazy).
    chunks : optional
        Dask chunks for lazy reads.
    voxel_size_um : float or (z, y, x), optional
        Overrides the voxel size stored in the file (micrometres).
    dataset : str, optional
        HDF5 dataset path, or the image name inside a multi-image OME-Zarr store.

    Raises
    ------
    InputFileError
        Missing file, not a regular file (a FIFO would block), unknown format, complex voxels,
        or a file the reader cannot decode.

    Examples
    --------
    >>> v = read_volume("scan.tif", voxel_size_um=0.03)  # doctest: +SKIP
    """
    path = check_input_path(path)
    vol = _read_any(path, lazy=lazy, chunks=chunks, voxel_size_um=voxel_size_um, dataset=dataset)
    check_real_dtype(vol.dtype, path)
    return vol


def _read_any(path: Path, *, lazy: bool, chunks: Any, voxel_size_um: Any, dataset: str | None) -> Volume:
    name = path.name.lower()
    is_zarr_dir = path.is_dir() and ((path / "zarr.json").exists() or (path / ".zattrs").exists())
    if name.endswith(".zarr") or is_zarr_dir:
        from litomo.io.omezarr import read_ome_zarr

        vol = read_ome_zarr(path, image=dataset, voxel_size_um=voxel_size_um)
        if chunks is not None:
            vol = vol.to_dask(chunks)
        return vol if lazy else vol.compute()
    if path.is_dir():
        if not list_tiff_slices(path):
            raise InputFileError(f"{path}: folder holds no .tif/.tiff slices; supported formats: {SUPPORTED_FORMATS}")
        return read_tiff_folder(path, lazy=lazy, chunks=chunks, voxel_size_um=voxel_size_um)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return read_tiff(path, lazy=lazy, chunks=chunks, voxel_size_um=voxel_size_um)
    if suffix in HDF5_SUFFIXES:
        return read_hdf5_volume(path, dataset, lazy=lazy, chunks=chunks, voxel_size_um=voxel_size_um)
    if suffix in XRM_SUFFIXES:
        vol = xrm_to_volume(read_xrm(path), voxel_size_um)
        return vol.to_dask(chunks or "auto") if lazy else vol
    if suffix in MAT_SUFFIXES:
        vol = read_mat_volume(path, dataset, voxel_size_um=voxel_size_um)
        return vol.to_dask(chunks or "auto") if lazy else vol
    raise InputFileError(f"{path}: unknown file format {suffix or '(no extension)'!r}; supported: {SUPPORTED_FORMATS}")


__all__ = [
    "SUPPORTED_FORMATS",
    "ProjectionData",
    "XrmImage",
    "energy_from_filename",
    "list_ome_images",
    "list_tiff_slices",
    "read_dxchange",
    "read_hdf5_volume",
    "read_nxtomo",
    "read_ome_zarr",
    "read_tiff",
    "read_tiff_folder",
    "read_volume",
    "read_xrm",
    "write_hdf5_volume",
    "write_ome_zarr",
    "write_tiff",
    "write_vti",
    "xrm_to_volume",
]

"""HDF5 volumes (h5py): reading and writing plain 3-D volumes, and the shared HDF5 helpers.

Projection series (DXchange, NeXus NXtomo) are read by :mod:`litomo.io.nexus`.

Lazy reads open the file per chunk (a small picklable accessor) so dask graphs carry no open
h5py handles and work with any scheduler.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from litomo.errors import InputFileError
from litomo.io.atomic import atomic_path
from litomo.io.guards import VOXEL_SIZE_KNOWN, check_fits_in_memory, check_real_dtype
from litomo.io.tiffmeta import unit_to_um
from litomo.volume import Volume, as_voxel_size

logger = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi")
# where common writers put a reconstructed volume, tried in this order
COMMON_VOLUME_PATHS = ("/volume", "/exchange/data", "/entry/data/data", "/entry/instrument/detector/data", "/data")
_VOXEL_ATTRS = ("voxel_size_um", "element_size_um", "voxel_size", "pixel_size", "resolution")


def open_hdf5(path: Path) -> h5py.File:
    """``path`` opened read-only; :class:`InputFileError` if missing or not HDF5."""
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(f"{path}: not a readable HDF5 file, truncated or corrupt ({exc})") from exc


def decode_attr(value: Any) -> Any:
    """An HDF5 attribute or scalar dataset value with bytes (also 1-element arrays) as ``str``."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.size == 1:
        return decode_attr(value.reshape(-1)[0])
    return value


def walk_datasets(group: h5py.Group) -> tuple[dict[str, h5py.Dataset], dict[str, str]]:
    """All datasets under ``group`` following soft/external links, and the dangling links.

    Returns
    -------
    datasets : dict
        Path -> dataset.
    dangling : dict
        Path -> a description of the missing target (e.g. the external file it points to).
    """
    datasets: dict[str, h5py.Dataset] = {}
    dangling: dict[str, str] = {}
    seen: set[Any] = set()

    def visit(g: h5py.Group, prefix: str) -> None:
        for name in g:
            p = f"{prefix}/{name}"
            try:
                obj = g[name]
            except (KeyError, OSError) as exc:
                link = g.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    dangling[p] = f"external link to {link.filename}:{link.path} (file or object missing)"
                elif isinstance(link, h5py.SoftLink):
                    dangling[p] = f"soft link to {link.path} (object missing)"
                else:
                    dangling[p] = f"unreadable ({exc})"
                continue
            if isinstance(obj, h5py.Dataset):
                datasets[p] = obj
            elif isinstance(obj, h5py.Group):
                key = (obj.file.filename, obj.id.addr if hasattr(obj.id, "addr") else p)
                if key in seen:
                    continue
                seen.add(key)
                visit(obj, p)

    visit(group, "")
    return datasets, dangling


def _voxel_from_attrs(*objs: Any) -> tuple[float, float, float] | None:
    for obj in objs:
        attrs = obj.attrs
        for key in _VOXEL_ATTRS:
            if key not in attrs:
                continue
            val = np.atleast_1d(np.asarray(attrs[key], dtype=float))
            if key.endswith("_um"):
                factor = 1.0
            else:
                unit = decode_attr(attrs.get(f"{key}_units", attrs.get("units", attrs.get("unit"))))
                factor = unit_to_um(unit) if unit is not None else None
                if factor is None:
                    continue
            vals = val * factor
            if vals.size == 1:
                return as_voxel_size(float(vals[0]))
            if vals.size == 3:
                return as_voxel_size(tuple(vals))
    return None


class _H5Slicer:
    """Picklable array-like that opens the file for every slice (for dask)."""

    def __init__(self, path: str, name: str, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, shape, np.dtype(dtype)
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        # a garbled chunk shows only when dask reads it, deep inside a run: say which file
        try:
            with h5py.File(self.path, "r") as f:
                return f[self.name][key]
        except (OSError, KeyError, ValueError) as exc:
            raise InputFileError(f"{self.path}: cannot read dataset {self.name!r}, the file is "
                                 f"truncated or corrupt ({exc})") from None


def _pick_volume_dataset(f: h5py.File, path: Path) -> str:
    for name in COMMON_VOLUME_PATHS:
        try:
            obj = f.get(name)
        except (KeyError, OSError):
            obj = None
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            return name
    datasets, dangling = walk_datasets(f)
    cands = [p for p, d in datasets.items() if d.ndim == 3 and d.dtype.kind in "biuf"]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        extra = f"; dangling links: {', '.join(dangling)}" if dangling else ""
        raise InputFileError(f"{path}: no 3D numeric dataset found{extra}")
    listing = ", ".join(f"{p} {datasets[p].shape}" for p in cands)
    raise InputFileError(f"{path}: several 3D datasets, pass --dataset (Python: dataset=) one of: {listing}")


def read_hdf5_volume(
    path: str | os.PathLike,
    dataset: str | None = None,
    *,
    lazy: bool = False,
    chunks: Any = None,
    voxel_size_um: float | Sequence[float] | None = None,
) -> Volume:
    """Read a 3D dataset from an HDF5/NeXus file as a :class:`~litomo.volume.Volume`.

    Parameters
    ----------
    path : path-like
        ``.h5``/``.hdf5``/``.nxs`` file.
    dataset : str, optional
        Dataset path. By default the first of ``/volume``, ``/exchange/data``,
        ``/entry/data/data``, ... that is 3D, else the only 3D dataset in the file (an error
        lists the candidates when there are several).
    lazy : bool
        Return a dask-backed volume (chunks from the file's own chunking unless ``chunks``).
    chunks : optional
        Dask chunks for ``lazy=True``.
    voxel_size_um : float or (z, y, x), optional
        Overrides attributes ``voxel_size_um`` / ``element_size_um`` / ``voxel_size`` +
        ``units`` on the dataset or the file root.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.h5"
    >>> _ = write_hdf5_volume(p, Volume(np.ones((2, 3, 4), np.float32), voxel_size_um=0.05))
    >>> read_hdf5_volume(p).voxel_size_um
    (0.05, 0.05, 0.05)
    """
    path = Path(path)
    with open_hdf5(path) as f:
        if dataset is None:
            dataset = _pick_volume_dataset(f, path)
        try:
            dset = f[dataset]
        except (KeyError, OSError) as exc:
            raise InputFileError(f"{path}: dataset {dataset!r} not found or its link dangles ({exc})") from exc
        if not isinstance(dset, h5py.Dataset):
            raise InputFileError(f"{path}: {dataset!r} is a group, not a dataset")
        shape = tuple(int(s) for s in dset.shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise InputFileError(f"{path}: dataset {dataset!r} has shape {dset.shape}, expected 3D (z, y, x)")
        found = _voxel_from_attrs(dset, f)
        meta: dict[str, Any] = {"source": str(path), "format": "hdf5", "dataset": dataset}
        if "litomo_metadata" in dset.attrs:
            try:
                meta.update(json.loads(decode_attr(dset.attrs["litomo_metadata"])))
            except (ValueError, TypeError):
                logger.warning("%s: ignoring unreadable litomo_metadata attribute", path)
            meta["source"], meta["format"], meta["dataset"] = str(path), "hdf5", dataset
        dtype = check_real_dtype(dset.dtype, path)
        file_chunks = dset.chunks
        if not lazy:
            check_fits_in_memory(shape, dtype, str(path))
            try:
                data = dset[()].reshape(shape)
            except (OSError, ValueError) as exc:
                raise InputFileError(f"{path}: cannot read dataset {dataset!r} ({exc})") from exc
    if voxel_size_um is not None:
        vox = as_voxel_size(voxel_size_um)
    elif found is not None:
        vox = found
    else:
        logger.info("%s records no voxel size; 1 um stands in", path)
        vox = (1.0, 1.0, 1.0)
    meta[VOXEL_SIZE_KNOWN] = voxel_size_um is not None or found is not None
    if not lazy:
        return Volume(data, vox, meta)
    import dask.array as da

    if chunks is None:
        if file_chunks is not None and len(file_chunks) == 3:
            # whole file chunks, grown along z to about 64 MiB
            per = int(np.prod(file_chunks)) * dtype.itemsize
            chunks = (min(shape[0], file_chunks[0] * max(1, (64 * 1024**2) // max(per, 1))), *file_chunks[1:])
        else:
            chunks = (max(1, min(shape[0], (64 * 1024**2) // max(1, shape[1] * shape[2] * dtype.itemsize))), -1, -1)
    file_shape = tuple(int(s) for s in dset.shape)
    src = _H5Slicer(str(path), dataset, file_shape, dtype)
    token = f"hdf5-{path.name}-{dataset}-{path.stat().st_mtime_ns}"
    arr = da.from_array(src, chunks=chunks if len(file_shape) == 3 else -1, name=token)
    return Volume(arr.reshape(shape), vox, meta)


def _jsonable_meta(meta: dict[str, Any]) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.dumps(meta, default=default)


def write_hdf5_volume(
    path: str | os.PathLike,
    volume: Volume,
    dataset: str = "/volume",
    *,
    compression: str | None = "gzip",
) -> Path:
    """Write a volume to an HDF5 file (atomic) with a ``voxel_size_um`` attribute (z, y, x).

    Dask arrays are stored chunk by chunk. The volume's metadata is kept as JSON in the
    ``litomo_metadata`` attribute.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.h5"
    >>> write_hdf5_volume(p, Volume(np.zeros((2, 3, 4), np.uint8))).name
    'v.h5'
    """
    if not isinstance(volume, Volume):
        volume = Volume(volume)
    arr = volume.array
    path = Path(path)
    chunks = tuple(min(s, c) for s, c in zip(volume.shape, (32, 128, 128), strict=True))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset(dataset, shape=volume.shape, dtype=volume.dtype, chunks=chunks,
                                compression=compression)
        if volume.is_lazy:
            import dask.array as da

            # a lock: h5py is not safe for concurrent writes from threads
            da.store(arr, dset, lock=True)
        else:
            dset[...] = arr
        dset.attrs["voxel_size_um"] = np.asarray(volume.voxel_size_um, dtype=float)
        dset.attrs["axes"] = "z,y,x"
        dset.attrs["litomo_metadata"] = _jsonable_meta(volume.metadata)
    return path

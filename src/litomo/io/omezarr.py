"""OME-Zarr (OME-NGFF 0.5 on zarr v3): chunked multiscale volumes that napari and Fiji open.

Layout written by :func:`write_ome_zarr` for one volume::

    out.ome.zarr/zarr.json      group; attributes {"ome": {"version": "0.5", "multiscales": [...]},
                                "litomo": {"metadata": ...}}
    out.ome.zarr/0, 1, ...      arrays (z, y, x), level k downsampled 2**k (2x2x2 mean)

For a dict of volumes each name is such an image group under the root
(``out.zarr/li``, ``out.zarr/labels``, ...). We write the metadata ourselves with zarr
(small, fully specified JSON) rather than through ome-zarr-py, whose writer pulls in
network/S3 dependencies and decides chunking itself; the tests read our output back with
ome-zarr-py's reader when it is installed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from litomo.errors import InputFileError
from litomo.io.atomic import atomic_path
from litomo.io.guards import VOXEL_SIZE_KNOWN, check_real_dtype
from litomo.io.tiffmeta import unit_to_um
from litomo.progress import ProgressCallback
from litomo.volume import Volume, as_voxel_size

logger = logging.getLogger(__name__)

NGFF_VERSION = "0.5"
ZARR_SUFFIXES = (".zarr",)
_AXES = [{"name": n, "type": "space", "unit": "micrometer"} for n in ("z", "y", "x")]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def _downsample(arr: Any, factors: tuple[int, int, int], method: str) -> Any:
    """2x downsampling of a dask array: block mean (intensities) or nearest (labels)."""
    import dask.array as da

    if method == "nearest":
        return arr[:: factors[0], :: factors[1], :: factors[2]]
    out = da.coarsen(np.mean, arr.astype(np.float32) if arr.dtype.kind != "f" else arr,
                     dict(enumerate(factors)), trim_excess=True)
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        out = da.clip(da.round(out), info.min, info.max)
    return out.astype(arr.dtype)


def _write_image(
    group: zarr.Group,
    volume: Volume,
    *,
    chunks: Sequence[int],
    n_scales: int,
    name: str | None,
    method: str,
    progress: ProgressCallback | None,
    label: str,
) -> None:
    import dask.array as da

    arr = volume.array
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
        method = "nearest"
    if not volume.is_lazy:
        arr = da.from_array(np.asarray(arr), chunks=tuple(min(c, s) for c, s in zip(chunks, arr.shape, strict=True)))
    vox = np.asarray(volume.voxel_size_um, float)
    datasets = []
    cum = np.ones(3, int)
    shapes = []
    level_arr = arr
    for level in range(n_scales):
        if level > 0:
            factors = tuple(2 if s >= 2 else 1 for s in level_arr.shape)
            if factors == (1, 1, 1):
                logger.info("%s: stopping at %d levels (volume is 1 voxel)", label, level)
                break
            # read the previous level back from disk so the first level's graph is not recomputed
            prev = da.from_zarr(group[str(level - 1)])
            level_arr = _downsample(prev, factors, method)
            cum = cum * np.asarray(factors)
        shape = tuple(int(s) for s in level_arr.shape)
        shapes.append(shape)
        zchunks = tuple(int(min(c, s)) for c, s in zip(chunks, shape, strict=True))
        zarr_arr = group.create_array(
            str(level), shape=shape, chunks=zchunks, dtype=level_arr.dtype,
            dimension_names=("z", "y", "x"), fill_value=0,
            # every chunk on disk: a missing one is then always damage (see check_chunks_complete)
            config={"write_empty_chunks": True},
        )
        # chunk-aligned source chunks: every zarr chunk is written by exactly one task
        da.store(level_arr.rechunk(zchunks), zarr_arr, lock=False)
        scale = (vox * cum).tolist()
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if level > 0:
            # a 2x mean voxel is centred between the two source voxels it averages
            transforms.append({"type": "translation", "translation": (vox * (cum - 1) / 2.0).tolist()})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
        if progress is not None:
            progress(level + 1, n_scales, f"write OME-Zarr {label}")
    multiscale = {
        "name": name or label,
        "axes": _AXES,
        "datasets": datasets,
        "type": "mean" if method == "mean" else "nearest",
        "metadata": {"description": "2x2x2 downsampling per level", "method": method},
    }
    group.attrs.update({
        "ome": {"version": NGFF_VERSION, "multiscales": [multiscale]},
        "litomo": {"metadata": _jsonable(volume.metadata), "voxel_size_um": list(volume.voxel_size_um)},
    })


def write_ome_zarr(
    path: str | os.PathLike,
    volume: Volume | Mapping[str, Volume],
    *,
    chunks: Sequence[int] = (64, 64, 64),
    n_scales: int = 1,
    name: str | None = None,
    downsample: str | Mapping[str, str] = "mean",
    progress: ProgressCallback | None = None,
) -> Path:
    """Write a volume (or several named volumes) as OME-Zarr (NGFF 0.5, zarr v3), atomically.

    Parameters
    ----------
    path : path-like
        Output directory, conventionally ``*.ome.zarr``. Written to a temporary sibling
        and renamed into place, so a crash never leaves a half-written store.
    volume : Volume or dict of str -> Volume
        One image, or named images (e.g. ``{"li": li_map, "labels": phases}``), each written
        as its own OME-Zarr image group ``path/<name>``.
    chunks : (z, y, x)
        Zarr chunk shape (clipped to the volume).
    n_scales : int
        Number of resolution levels; level k is downsampled by 2**k (per axis longer than 1).
    name : str, optional
        Name stored in the multiscales metadata (single volume).
    downsample : "mean" or "nearest", or a dict name -> method
        How levels > 0 are made: block mean (intensities) or nearest/striding (label
        images, where a mean would invent phases).
    progress : callable, optional
        ``progress(done, total, description)`` after each level.

    Returns
    -------
    Path

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.ome.zarr"
    >>> v = Volume(np.arange(512, dtype=np.float32).reshape(8, 8, 8), voxel_size_um=0.03)
    >>> _ = write_ome_zarr(p, v, chunks=(4, 4, 4), n_scales=2)
    >>> w = read_ome_zarr(p, level=1)
    >>> w.shape, w.voxel_size_um
    ((4, 4, 4), (0.06, 0.06, 0.06))
    """
    if n_scales < 1:
        raise InputFileError(f"n_scales must be >= 1, got {n_scales}")
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != 3 or min(chunks) < 1:
        raise InputFileError(f"chunks must be three positive ints (z, y, x), got {chunks}")
    path = Path(path)
    images = dict(volume) if isinstance(volume, Mapping) else None
    with atomic_path(path, directory=True) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        if images is None:
            vol = volume if isinstance(volume, Volume) else Volume(volume)
            method = downsample if isinstance(downsample, str) else "mean"
            _write_image(root, vol, chunks=chunks, n_scales=n_scales, name=name, method=method,
                         progress=progress, label=name or path.name)
        else:
            if not images:
                raise InputFileError("write_ome_zarr: empty dict of volumes")
            for key, vol in images.items():
                if "/" in key or key in ("", ".", ".."):
                    raise InputFileError(f"write_ome_zarr: invalid image name {key!r}")
                vol = vol if isinstance(vol, Volume) else Volume(vol)
                method = downsample.get(key, "mean") if isinstance(downsample, Mapping) else downsample
                _write_image(root.create_group(key), vol, chunks=chunks, n_scales=n_scales, name=key,
                             method=method, progress=progress, label=key)
            root.attrs.update({"litomo": {"images": list(images)}})
    return path


class _CheckedZarr:
    """Array-like over a zarr array whose reads fail as :class:`InputFileError` (for dask).

    A corrupt chunk shows only when dask reads it, deep inside a run; without this the user
    sees a codec's traceback (or, for some codecs, garbage) instead of the file's name.
    """

    def __init__(self, arr: zarr.Array, label: str):
        self.arr, self.label = arr, label
        self.shape, self.dtype, self.ndim = tuple(arr.shape), np.dtype(arr.dtype), arr.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.arr[key])
        except Exception as exc:  # codecs raise many types (ValueError, RuntimeError, zlib.error)
            raise InputFileError(f"{self.label}: a chunk is corrupt and cannot be decoded "
                                 f"({type(exc).__name__}: {exc})") from None


def check_chunks_complete(arr: zarr.Array, label: str) -> None:
    """Refuse a zarr array with chunks missing from its store.

    zarr reads a missing chunk as the fill value, so a store with a lost or never-written chunk
    reads as valid zeros (the trial: a state's mean x_Li moved 0.895 -> 0.855 with no warning).
    litomo writes every chunk (``write_empty_chunks``), so for its own stores a missing chunk is
    always damage; for foreign stores written with empty chunks skipped this is refused too,
    because a fill value is not data.

    Raises
    ------
    InputFileError
        Naming how many chunks of how many are missing.

    Examples
    --------
    >>> import tempfile
    >>> a = zarr.create_array(tempfile.mkdtemp() + "/a", shape=(4, 4), chunks=(2, 2), dtype="u1",
    ...                       fill_value=0)
    >>> a[:2, :] = 1  # two of the four chunks written
    >>> check_chunks_complete(a, "a")
    Traceback (most recent call last):
    ...
    litomo.errors.InputFileError: a: 2 of 4 chunks are missing from the store (a missing chunk would read as fill value, not data); copy the store again
    """
    n_total, n_found = int(arr.nchunks), int(arr.nchunks_initialized)
    if n_found < n_total:
        raise InputFileError(
            f"{label}: {n_total - n_found} of {n_total} chunks are missing from the store "
            "(a missing chunk would read as fill value, not data); copy the store again"
        )


def _dask_from_zarr(arr: zarr.Array, label: str) -> Any:
    import dask.array as da
    from dask.base import tokenize

    check_chunks_complete(arr, label)
    name = "zarr-" + tokenize(label, arr.shape, str(arr.dtype), arr.chunks, _store_mtime(label))
    return da.from_array(_CheckedZarr(arr, label), chunks=arr.chunks, name=name, asarray=True)


def _store_mtime(label: str) -> int:
    try:
        return Path(label).stat().st_mtime_ns
    except OSError:
        return 0


def _open_group(path: Path) -> zarr.Group | zarr.Array:
    if not path.exists():
        raise InputFileError(f"{path}: not found")
    try:
        return zarr.open(store=str(path), mode="r")
    except Exception as exc:  # zarr raises several types for missing/corrupt metadata
        raise InputFileError(f"{path}: not a readable zarr store ({exc})") from exc


def list_ome_images(path: str | os.PathLike) -> list[str]:
    """Names of the OME-Zarr image groups in a store ("" for an image at the root)."""
    g = _open_group(Path(path))
    if isinstance(g, zarr.Array):
        return []
    attrs = g.attrs.asdict()
    if "multiscales" in attrs.get("ome", attrs):
        return [""]
    names = []
    for key in sorted(g.group_keys()):
        sub = g[key].attrs.asdict()
        if "multiscales" in sub.get("ome", sub):
            names.append(key)
    return names


def read_ome_zarr(
    path: str | os.PathLike,
    level: int = 0,
    *,
    image: str | None = None,
    voxel_size_um: float | Sequence[float] | None = None,
) -> Volume:
    """Read one resolution level of an OME-Zarr image lazily (dask) with its voxel size.

    Reads NGFF 0.5 (zarr v3) and 0.4 (zarr v2) multiscale images; the voxel size comes from
    the level's ``scale`` transform and the axis units. A store holding several images
    (written from a dict) needs ``image=`` unless it holds only one.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` directory.
    level : int
        Resolution level (0 = full resolution).
    image : str, optional
        Image group name inside a multi-image store.
    voxel_size_um : optional
        Overrides the stored voxel size.

    Examples
    --------
    >>> v = read_ome_zarr("run/volumes/state1.ome.zarr")  # doctest: +SKIP
    >>> v.is_lazy  # doctest: +SKIP
    True
    """

    path = Path(path)
    g = _open_group(path)
    if isinstance(g, zarr.Array):
        if g.ndim != 3:
            raise InputFileError(f"{path}: zarr array of shape {g.shape}, expected 3D (z, y, x)")
        check_real_dtype(g.dtype, path)
        return Volume(_dask_from_zarr(g, str(path)), as_voxel_size(voxel_size_um),
                      {"source": str(path), "format": "zarr", "chunks": list(g.chunks),
                       VOXEL_SIZE_KNOWN: voxel_size_um is not None})
    attrs = g.attrs.asdict()
    ome = attrs.get("ome", attrs)
    if "multiscales" not in ome:
        names = list_ome_images(path)
        if image is None:
            if len(names) != 1:
                listing = ", ".join(names) if names else "none"
                raise InputFileError(f"{path}: holds several OME-Zarr images or none; pass image= one of: {listing}")
            image = names[0]
        if image not in names:
            raise InputFileError(f"{path}: no OME-Zarr image {image!r}; images: {', '.join(names) or 'none'}")
        g = g[image]
        attrs = g.attrs.asdict()
        ome = attrs.get("ome", attrs)
    ms = ome["multiscales"][0]
    datasets = ms["datasets"]
    if not 0 <= level < len(datasets):
        raise InputFileError(f"{path}: level {level} requested, the image has levels 0..{len(datasets) - 1}")
    axes = ms.get("axes", _AXES)
    axis_names = [a["name"] if isinstance(a, dict) else a for a in axes]
    ds = datasets[level]
    try:
        zarr_arr = g[ds["path"]]
    except KeyError as exc:
        raise InputFileError(f"{path}: level {level} array {ds['path']!r} is missing") from exc
    check_real_dtype(zarr_arr.dtype, path)
    arr = _dask_from_zarr(zarr_arr, f"{path}/{ds['path']}" if not image else f"{path}/{image}/{ds['path']}")
    scale = np.ones(arr.ndim)
    for t in [*ds.get("coordinateTransformations", []), *ms.get("coordinateTransformations", [])]:
        if t.get("type") == "scale":
            scale = scale * np.asarray(t["scale"], float)
    # drop leading non-spatial axes (t, c) of length 1
    spatial = [i for i, a in enumerate(axes) if not isinstance(a, dict) or a.get("type", "space") == "space"]
    if len(spatial) != 3:
        raise InputFileError(f"{path}: expected 3 spatial axes (z, y, x), found axes {axis_names}")
    other = [i for i in range(arr.ndim) if i not in spatial]
    if any(arr.shape[i] != 1 for i in other):
        raise InputFileError(f"{path}: non-spatial axes {[axis_names[i] for i in other]} longer than 1 are not supported")
    arr = arr[tuple(slice(None) if i in spatial else 0 for i in range(arr.ndim))]
    vox = []
    for i in spatial:
        unit = axes[i].get("unit") if isinstance(axes[i], dict) else None
        factor = unit_to_um(unit) if unit else 1.0
        if factor is None:
            raise InputFileError(f"{path}: unknown unit {unit!r} on axis {axis_names[i]}")
        vox.append(float(scale[i]) * factor)
    meta: dict[str, Any] = {}
    litomo_attrs = attrs.get("litomo", {})
    if isinstance(litomo_attrs.get("metadata"), dict):
        meta.update(json.loads(json.dumps(litomo_attrs["metadata"])))
    meta.update({
        "source": str(path), "format": "ome-zarr", "level": level, "n_levels": len(datasets),
        "chunks": list(zarr_arr.chunks), "image": image or ms.get("name"),
    })
    meta.setdefault("provenance", [])
    return Volume(arr, as_voxel_size(voxel_size_um) if voxel_size_um is not None else tuple(vox), meta)

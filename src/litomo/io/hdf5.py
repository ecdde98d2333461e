"""HDF5 volumes and tomography projections (h5py): plain volumes, DXchange, NeXus NXtomo.

Lazy reads open the file per chunk (a small picklable accessor) so dask graphs carry no open
h5py handles and work with any scheduler.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from litomo.errors import InputFileError
from litomo.io.atomic import atomic_path
from litomo.io.tiff import unit_to_um
from litomo.volume import Volume, as_voxel_size

logger = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi")
# where common writers put a reconstructed volume, tried in this order
COMMON_VOLUME_PATHS = ("/volume", "/exchange/data", "/entry/data/data", "/entry/instrument/detector/data", "/data")
_VOXEL_ATTRS = ("voxel_size_um", "element_size_um", "voxel_size", "pixel_size", "resolution")


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(f"{path}: not a readable HDF5 file, truncated or corrupt ({exc})") from exc


def _decode(value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.size == 1:
        return _decode(value.reshape(-1)[0])
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
                unit = _decode(attrs.get(f"{key}_units", attrs.get("units", attrs.get("unit"))))
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
        with h5py.File(self.path, "r") as f:
            return f[self.name][key]


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
    raise InputFileError(f"{path}: several 3D datasets, pass dataset= one of: {listing}")


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
    with _open(path) as f:
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
                meta.update(json.loads(_decode(dset.attrs["litomo_metadata"])))
            except (ValueError, TypeError):
                logger.warning("%s: ignoring unreadable litomo_metadata attribute", path)
            meta["source"], meta["format"], meta["dataset"] = str(path), "hdf5", dataset
        dtype = dset.dtype
        file_chunks = dset.chunks
        if not lazy:
            try:
                data = dset[()].reshape(shape)
            except OSError as exc:
                raise InputFileError(f"{path}: cannot read dataset {dataset!r} ({exc})") from exc
    if voxel_size_um is not None:
        vox = as_voxel_size(voxel_size_um)
    elif found is not None:
        vox = found
    else:
        logger.warning("%s records no voxel size; using 1 um (pass voxel_size_um to set it)", path)
        vox = (1.0, 1.0, 1.0)
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


# --------------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------------


@dataclass
class ProjectionData:
    """Raw tomography projections with their flat/dark fields and rotation angles.

    Attributes
    ----------
    data : ndarray, shape (angles, rows, cols)
        Projections (``image_key == 0``).
    flats : ndarray, shape (n_flats, rows, cols)
        Flat (white, open-beam) fields; may have zero length.
    darks : ndarray, shape (n_darks, rows, cols)
        Dark fields; may have zero length.
    theta_deg : ndarray, shape (angles,)
        Rotation angle of each projection in degrees.
    metadata : dict
        ``source``, the dataset paths used and anything else the reader found.
    """

    data: np.ndarray
    flats: np.ndarray
    darks: np.ndarray
    theta_deg: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_angles(self) -> int:
        return int(self.data.shape[0])


def _angles_to_deg(values: np.ndarray, units: Any) -> np.ndarray:
    u = str(_decode(units) or "").strip().lower()
    if u.startswith("rad"):
        return np.degrees(values)
    return values.astype(float)


def _read_ds(f: h5py.File, name: str, path: Path) -> np.ndarray:
    try:
        return f[name][()]
    except (KeyError, OSError) as exc:
        raise InputFileError(f"{path}: cannot read {name} ({exc})") from exc


def read_dxchange(path: str | os.PathLike) -> ProjectionData:
    """Read projections from an APS Data Exchange file.

    Reads ``/exchange/data``, ``/exchange/data_white`` (flats), ``/exchange/data_dark`` and
    ``/exchange/theta`` (degrees unless its ``units`` attribute says radians). Missing
    flats/darks give empty arrays; missing angles are taken as evenly spaced over 180 deg
    with a warning.

    Examples
    --------
    >>> pd = read_dxchange("tooth.h5")  # doctest: +SKIP
    >>> pd.data.shape, pd.flats.shape  # doctest: +SKIP
    ((181, 2, 640), (10, 2, 640))
    """
    path = Path(path)
    with _open(path) as f:
        if "exchange/data" not in f:
            raise InputFileError(f"{path}: not a Data Exchange file (no /exchange/data)")
        data = _read_ds(f, "exchange/data", path)
        if data.ndim != 3:
            raise InputFileError(f"{path}: /exchange/data has shape {data.shape}, expected (angles, rows, cols)")
        empty = np.empty((0, *data.shape[1:]), data.dtype)
        flats = _read_ds(f, "exchange/data_white", path) if "exchange/data_white" in f else empty
        darks = _read_ds(f, "exchange/data_dark", path) if "exchange/data_dark" in f else empty
        meta: dict[str, Any] = {"source": str(path), "format": "dxchange"}
        if "exchange/theta" in f:
            theta = _angles_to_deg(_read_ds(f, "exchange/theta", path), f["exchange/theta"].attrs.get("units"))
        else:
            logger.warning("%s has no /exchange/theta; assuming %d angles evenly over 180 deg", path, len(data))
            theta = np.linspace(0.0, 180.0, len(data), endpoint=False)
            meta["theta_assumed"] = True
        if "exchange/title" in f:
            meta["title"] = _decode(f["exchange/title"][()])
    if theta.shape != (data.shape[0],):
        raise InputFileError(f"{path}: {theta.size} angles for {data.shape[0]} projections")
    for name, arr in (("data_white", flats), ("data_dark", darks)):
        if arr.ndim != 3 or arr.shape[1:] != data.shape[1:]:
            raise InputFileError(f"{path}: /exchange/{name} shape {arr.shape} does not match projections {data.shape}")
    return ProjectionData(data, flats, darks, np.asarray(theta, float), meta)


_ANGLE_NAMES = ("rotation_angle", "theta", "angle", "rotation")


def _find_nxtomo_paths(f: h5py.File, path: Path) -> tuple[str, str, str | None]:
    """Locate (data, image_key, angles) dataset paths in a NeXus file."""
    # standard NXtomo application definition first
    for entry in f.values() if isinstance(f, h5py.Group) else []:
        try:
            definition = _decode(entry.get("definition")[()]) if isinstance(entry, h5py.Group) and "definition" in entry else None
        except (KeyError, OSError):
            definition = None
        if definition == "NXtomo":
            base = entry.name
            d, k, a = f"{base}/instrument/detector/data", f"{base}/instrument/detector/image_key", f"{base}/sample/rotation_angle"
            return d, k, a
    datasets, dangling = walk_datasets(f)
    keys = {p: d for p, d in datasets.items() if p.rsplit("/", 1)[-1] == "image_key" and d.ndim == 1}
    stacks = {p: d for p, d in datasets.items() if d.ndim == 3 and d.dtype.kind in "biuf"}
    pairs = [(dp, kp) for kp, k in keys.items() for dp, d in stacks.items() if d.shape[0] == k.shape[0]]
    if not pairs:
        missing = [f"{p}: {why}" for p, why in dangling.items() if p.rsplit("/", 1)[-1] in ("data", "image_key")]
        hint = f" Missing links: {'; '.join(missing)}." if missing else ""
        raise InputFileError(
            f"{path}: no 3D detector data with a matching image_key found.{hint} "
            "Pass data_path=/image_key_path= explicitly if the file uses other names."
        )

    # prefer the image_key next to the data (same detector group), then the shortest paths
    def score(pair: tuple[str, str]) -> tuple[int, int]:
        dp, kp = pair
        return (0 if dp.rsplit("/", 1)[0] == kp.rsplit("/", 1)[0] else 1, len(dp) + len(kp))

    data_path, key_path = min(pairs, key=score)
    n = stacks[data_path].shape[0]
    angle_cands = [
        p for p, d in datasets.items()
        if d.ndim == 1 and d.shape[0] == n and d.dtype.kind == "f"
        and any(s in p.rsplit("/", 1)[-1].lower() for s in _ANGLE_NAMES)
    ]
    angle_cands.sort(key=lambda p: (0 if "rotation_angle" in p else 1, len(p)))
    return data_path, key_path, angle_cands[0] if angle_cands else None


def _read_runs(dset: h5py.Dataset, index: np.ndarray) -> np.ndarray:
    """Read ``dset[index]`` as contiguous slices (h5py fancy indexing is very slow)."""
    out = np.empty((len(index), *dset.shape[1:]), dset.dtype)
    if len(index) == 0:
        return out
    breaks = np.nonzero(np.diff(index) != 1)[0] + 1
    pos = 0
    for run in np.split(index, breaks):
        out[pos:pos + len(run)] = dset[int(run[0]):int(run[-1]) + 1]
        pos += len(run)
    return out


def read_nxtomo(
    path: str | os.PathLike,
    *,
    data_path: str | None = None,
    image_key_path: str | None = None,
    angles_path: str | None = None,
) -> ProjectionData:
    """Read projections, flats and darks from a NeXus tomography file (NXtomo-like).

    Frames are split by ``image_key`` (0 projection, 1 flat, 2 dark; 3 "invalid" frames are
    dropped). Paths default to the NXtomo definition; files that are not strictly NXtomo
    (e.g. Diamond DIAD/K11 scans reaching their data through external links) are searched
    for a 3D stack and an ``image_key`` of the same length, and an angle dataset named like
    ``rotation_angle``/``*theta*``. Dangling external links elsewhere in the file are
    ignored; an error names them only if the needed data is behind one.

    Parameters
    ----------
    path : path-like
        ``.nxs``/``.h5`` file.
    data_path, image_key_path, angles_path : str, optional
        Override the detected dataset paths (angles in degrees unless ``units`` says rad).

    Examples
    --------
    >>> pd = read_nxtomo("k11-18014.nxs")  # doctest: +SKIP
    >>> pd.data.shape[0], len(pd.flats), len(pd.darks)  # doctest: +SKIP
    (3001, 100, 100)
    """
    path = Path(path)
    with _open(path) as f:
        if data_path is None or image_key_path is None:
            d, k, a = _find_nxtomo_paths(f, path)
            data_path = data_path or d
            image_key_path = image_key_path or k
            angles_path = angles_path or a
        handles = {}
        for label, p in (("data", data_path), ("image_key", image_key_path), ("angles", angles_path)):
            if p is None:
                continue
            try:
                handles[label] = f[p]
            except (KeyError, OSError) as exc:
                link = None
                try:
                    parent, name = p.rsplit("/", 1)
                    link = f[parent or "/"].get(name, getlink=True)
                except (KeyError, OSError, ValueError):
                    pass
                where = f" (external link to {link.filename}:{link.path}, whose target is missing)" if isinstance(link, h5py.ExternalLink) else ""
                raise InputFileError(f"{path}: {label} dataset {p} cannot be read{where}: {exc}") from exc
        dset = handles["data"]
        key = np.asarray(handles["image_key"][()]).astype(int).ravel()
        if dset.ndim != 3 or dset.shape[0] != key.size:
            raise InputFileError(f"{path}: data {data_path} {dset.shape} does not match image_key length {key.size}")
        proj_idx, flat_idx, dark_idx = (np.nonzero(key == c)[0] for c in (0, 1, 2))
        try:
            data = _read_runs(dset, proj_idx)
            flats = _read_runs(dset, flat_idx)
            darks = _read_runs(dset, dark_idx)
        except OSError as exc:
            raise InputFileError(f"{path}: cannot read {data_path} ({exc})") from exc
        meta: dict[str, Any] = {
            "source": str(path), "format": "nxtomo", "data_path": data_path,
            "image_key_path": image_key_path, "angles_path": angles_path,
        }
        if "angles" in handles:
            all_angles = _angles_to_deg(np.asarray(handles["angles"][()]).ravel(), handles["angles"].attrs.get("units"))
            if all_angles.size != key.size:
                raise InputFileError(f"{path}: {all_angles.size} angles in {angles_path} for {key.size} frames")
            theta = all_angles[proj_idx]
        else:
            logger.warning("%s: no rotation angles found; assuming %d angles evenly over 180 deg", path, len(proj_idx))
            theta = np.linspace(0.0, 180.0, len(proj_idx), endpoint=False)
            meta["theta_assumed"] = True
    if len(proj_idx) == 0:
        raise InputFileError(f"{path}: image_key {image_key_path} marks no projections (key 0)")
    return ProjectionData(data, flats, darks, theta, meta)

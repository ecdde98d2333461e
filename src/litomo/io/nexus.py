"""Tomography projections in HDF5 (h5py): DXchange and NeXus NXtomo readers.

Frames, flats, darks and angles into one :class:`ProjectionData`; plain 3-D volumes in HDF5
are :mod:`litomo.io.hdf5`'s.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from litomo.errors import InputFileError
from litomo.io.hdf5 import decode_attr, open_hdf5, walk_datasets

logger = logging.getLogger(__name__)


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
    u = str(decode_attr(units) or "").strip().lower()
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
    with open_hdf5(path) as f:
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
            meta["title"] = decode_attr(f["exchange/title"][()])
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
            definition = decode_attr(entry.get("definition")[()]) if isinstance(entry, h5py.Group) and "definition" in entry else None
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
    with open_hdf5(path) as f:
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


def projection_summary(path: str | os.PathLike) -> dict[str, Any] | None:
    """Shapes of the projection series in a DXchange or NeXus (NXtomo-like) file, or None.

    Reads only shapes, the angles and the ``image_key`` (never the frames), so a large scan is
    described at once. Returns ``format``, ``data_path``, ``n_angles``, ``rows``, ``cols``,
    ``n_flats``, ``n_darks``, ``dtype`` and ``theta_range_deg`` (None when absent).

    Examples
    --------
    >>> projection_summary("tooth.h5")["n_angles"]  # doctest: +SKIP
    181
    """
    path = Path(path)
    with open_hdf5(path) as f:
        d = f.get("exchange/data")
        if isinstance(d, h5py.Dataset) and d.ndim == 3 and any(
                k in f for k in ("exchange/data_white", "exchange/data_dark", "exchange/theta")):
            n = {k: (f[f"exchange/{k}"].shape[0] if f"exchange/{k}" in f else 0) for k in ("data_white", "data_dark")}
            theta = _angles_to_deg(f["exchange/theta"][()], f["exchange/theta"].attrs.get("units")) \
                if "exchange/theta" in f else None
            return {"format": "dxchange", "data_path": "/exchange/data", "n_angles": int(d.shape[0]),
                    "rows": int(d.shape[1]), "cols": int(d.shape[2]), "n_flats": n["data_white"],
                    "n_darks": n["data_dark"], "dtype": str(d.dtype),
                    "theta_range_deg": None if theta is None else [float(theta.min()), float(theta.max())]}
        try:
            data_path, key_path, angles_path = _find_nxtomo_paths(f, path)
            d, key = f[data_path], np.asarray(f[key_path][()]).astype(int).ravel()
        except (InputFileError, KeyError, OSError):
            return None
        theta = None
        if angles_path is not None:
            try:
                a = _angles_to_deg(np.asarray(f[angles_path][()]).ravel(), f[angles_path].attrs.get("units"))
                theta = a[key == 0] if a.size == key.size else None
            except (KeyError, OSError):
                theta = None
        return {"format": "nxtomo", "data_path": data_path, "n_angles": int((key == 0).sum()),
                "rows": int(d.shape[1]), "cols": int(d.shape[2]), "n_flats": int((key == 1).sum()),
                "n_darks": int((key == 2).sum()), "dtype": str(d.dtype),
                "theta_range_deg": None if theta is None or not theta.size else [float(theta.min()), float(theta.max())]}

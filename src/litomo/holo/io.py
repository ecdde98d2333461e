"""Reading holotomography scans: one HDF5 with a group per distance, or one NXtomo file per distance.

litomo's layout (written by :func:`write_holo_hdf5`, read by :func:`read_holo_hdf5`)::

    /angles_deg            (n_angles,)             rotation angles, degrees
    /d0/data               (n_angles, ny, nx)      projections at the first (closest) distance
    /d0/flats              (n_flats, ny, nx)       flat fields (required)
    /d0/darks              (n_darks, ny, nx)       dark fields (optional)
    /d1/..., /d2/...                               the other distances, in increasing z1
    root attributes (optional): energy_kev, z1_mm, z12_mm, pixel_um

ESRF scans converted to NeXus (nxtomomill, one NXtomo per distance) are read with
:func:`litomo.io.nexus.read_nxtomo` (``image_key`` splits projections, flats and darks).
Raw ESRF scans, one folder of EDF files per distance, are read by :func:`read_edf_distances`
(see there for the layout).
Projections stay on disk (h5py datasets) and are read one angle at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from litomo.errors import DataError, InputFileError
from litomo.io.atomic import atomic_path

GEOMETRY_ATTRS = ("energy_kev", "z1_mm", "z12_mm", "pixel_um")


@dataclass
class HoloScan:
    """Projections, flats and darks of every distance, with the rotation angles.

    Attributes
    ----------
    projections : list of array-like (n_angles, ny, nx)
        One per distance (h5py datasets or arrays; indexed one angle at a time).
    flats : list of ndarray (ny, nx)
        Median flat field per distance.
    darks : list of ndarray (ny, nx)
        Median dark field per distance (zeros when the file has none).
    angles_deg : ndarray (n_angles,)
    attrs : dict
        Geometry found in the file (keys of :data:`GEOMETRY_ATTRS`).
    """

    projections: list[Any]
    flats: list[np.ndarray]
    darks: list[np.ndarray]
    angles_deg: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.projections)
        if n == 0:
            raise DataError(f"{self.source or 'holograms'}: no distances found")
        shapes = [tuple(p.shape) for p in self.projections]
        if any(len(s) != 3 for s in shapes):
            raise DataError(f"{self.source}: projections must be (n_angles, ny, nx), got {shapes}")
        if len({s[1:] for s in shapes}) > 1:
            raise DataError(f"{self.source}: image sizes differ between distances: {[s[1:] for s in shapes]}")
        if len({s[0] for s in shapes}) > 1 or shapes[0][0] != self.angles_deg.size:
            raise DataError(f"{self.source}: projection counts {[s[0] for s in shapes]} do not all match "
                            f"the {self.angles_deg.size} angles")
        for j, (f, d) in enumerate(zip(self.flats, self.darks, strict=True)):
            if f.shape != shapes[0][1:] or d.shape != shapes[0][1:]:
                raise DataError(f"{self.source}: distance {j} flat {f.shape} / dark {d.shape} do not match "
                                f"the images {shapes[0][1:]}")
            if np.mean(f - d <= 0) > 0.5:
                raise DataError(f"{self.source}: distance {j} flat field is not brighter than its dark field")

    @property
    def n_distances(self) -> int:
        return len(self.projections)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.projections[0].shape[1:])  # type: ignore[return-value]

    def intensity(self, index: int, distance: int = 0) -> np.ndarray:
        """Flat/dark-corrected image of projection ``index`` at one distance (float32)."""
        f, d = self.flats[distance], self.darks[distance]
        den = f - d
        t = (np.asarray(self.projections[distance][index], dtype=np.float32) - d) / np.where(den > 0, den, np.nan)
        return np.where(np.isfinite(t), t, 1.0).astype(np.float32)

    def intensities(self, index: int) -> list[np.ndarray]:
        """Flat/dark-corrected images of projection ``index``, one per distance (float32)."""
        return [self.intensity(index, j) for j in range(self.n_distances)]


def _median_frames(ds: Any, name: str, path: Path, required: bool, shape: tuple[int, ...]) -> np.ndarray:
    if ds is None or ds.shape[0] == 0:
        if required:
            raise InputFileError(f"{path}: missing flats '{name}': flat fields are required for every distance")
        return np.zeros(shape, np.float32)
    a = np.asarray(ds, dtype=np.float32)
    return np.median(a, axis=0) if a.ndim == 3 else a


def read_holo_hdf5(path: str | os.PathLike) -> HoloScan:
    """Open a litomo holotomography HDF5 (see module docstring); projections stay on disk.

    The file is kept open by the returned datasets; close it with ``scan.projections[0].file.close()``
    or let it be garbage-collected.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"HOLOGRAMS: no such file: {p}")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise InputFileError(f"HOLOGRAMS: {p} is not a readable HDF5 file ({exc})") from None
    groups = sorted((k for k in f if k.startswith("d") and k[1:].isdigit() and isinstance(f[k], h5py.Group)),
                    key=lambda k: int(k[1:]))
    if not groups:
        raise InputFileError(f"HOLOGRAMS: {p} has no distance groups /d0, /d1, ... (litomo holotomography layout)")
    if "angles_deg" not in f:
        raise InputFileError(f"HOLOGRAMS: {p} has no /angles_deg dataset")
    projs, flats, darks = [], [], []
    for g in groups:
        if "data" not in f[g]:
            raise InputFileError(f"HOLOGRAMS: {p}: /{g}/data is missing")
        ds = f[g]["data"]
        projs.append(ds)
        flats.append(_median_frames(f[g].get("flats"), f"/{g}/flats", p, True, ds.shape[1:]))
        darks.append(_median_frames(f[g].get("darks"), f"/{g}/darks", p, False, ds.shape[1:]))
    attrs = {k: (np.asarray(f.attrs[k]).tolist()) for k in GEOMETRY_ATTRS if k in f.attrs}
    return HoloScan(projs, flats, darks, np.asarray(f["angles_deg"], dtype=float).ravel(), attrs, str(p))


def read_projection_distances(paths: Sequence[str | os.PathLike]) -> HoloScan:
    """One projection series per distance, in increasing z1, in any format ``litomo reconstruct`` reads.

    Each path goes through :func:`litomo.io.projections.read_projections` (DXchange or NXtomo
    HDF5, e.g. ESRF scans converted by nxtomomill; Xradia ``.txrm`` / ``.xrm`` folder; TIFF
    stacks with their angles in the file), so a scan ``litomo reconstruct`` takes is a
    distance of ``litomo phase``; the series are loaded into memory. The energy, when a file
    records it, is passed on (``energy_kev``).
    """
    from litomo.io.projections import read_projections

    series = []
    for q in paths:
        s = read_projections(q)
        if s.flats.shape[0] == 0:
            raise InputFileError(f"HOLOGRAMS: {q}: missing flats (no flat-field frames in the file)")
        series.append(s)
    shape = series[0].data.shape[1:]
    attrs = {"energy_kev": series[0].energy_ev / 1e3} if series[0].energy_ev else {}
    return HoloScan([s.data for s in series], [np.median(np.asarray(s.flats, np.float32), axis=0) for s in series],
                    [np.median(np.asarray(s.darks, np.float32), axis=0) if s.darks.shape[0]
                     else np.zeros(shape, np.float32) for s in series],
                    np.asarray(series[0].angles_deg, dtype=float), attrs, ",".join(map(str, paths)))


def read_nxtomo_distances(paths: Sequence[str | os.PathLike]) -> HoloScan:
    """One NXtomo file per distance (kept name; :func:`read_projection_distances` reads them)."""
    return read_projection_distances(paths)


def read_holo_input(paths: Sequence[str | os.PathLike]) -> HoloScan:
    """``litomo phase``'s HOLOGRAMS: the one reader choice for every input form.

    * folders of EDF files: :func:`read_edf_distances` (ESRF raw scans, one folder per distance);
    * one HDF5 file in litomo's layout (``/d0``, ``/d1``, ...): :func:`read_holo_hdf5`;
    * anything else, one path per distance: :func:`read_projection_distances` (the readers of
      ``litomo reconstruct``; a single path is a single-distance scan for ``--method paganin``).
    """
    ps = [Path(p) for p in paths]
    if not ps:
        raise InputFileError("HOLOGRAMS: no input given")
    if any(p.is_dir() and any(p.glob("*.edf")) for p in ps):
        return read_edf_distances(ps)
    if len(ps) == 1 and ps[0].is_file() and h5py.is_hdf5(ps[0]):
        with h5py.File(ps[0], "r") as f:
            holo_layout = "d0" in f and "exchange" not in f
        if holo_layout:
            return read_holo_hdf5(ps[0])
    return read_projection_distances(ps)


#: ESRF EDF scan folder: projections ``<prefix>NNNN.edf``, flats ``refHST*.edf``, darks ``dark*.edf``.
EDF_FLATS, EDF_DARKS = "refHST*.edf", "dark*.edf"


def _info_angles(folder: Path, n_files: int) -> np.ndarray:
    """Angles from the ``*.info`` file of an ESRF scan folder (``TOMO_N`` views over ``ScanRange``)."""
    infos = sorted(folder.glob("*.info"))
    if not infos:
        raise InputFileError(f"HOLOGRAMS: {folder} has no .info file (TOMO_N, ScanRange): the angles are unknown")
    keys = {}
    for line in infos[0].read_text(errors="replace").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            keys[k.strip()] = v.strip()
    try:
        n, span = int(keys["TOMO_N"]), float(keys["ScanRange"])
    except (KeyError, ValueError):
        raise InputFileError(f"HOLOGRAMS: {infos[0]} lacks TOMO_N or ScanRange") from None
    if n < 1 or n > n_files:
        raise InputFileError(f"HOLOGRAMS: {infos[0]} gives TOMO_N = {n} but {folder} holds {n_files} projections")
    return np.linspace(0.0, span, n, endpoint=False)


def read_edf_distances(folders: Sequence[str | os.PathLike]) -> HoloScan:
    """One ESRF EDF scan folder per distance, in increasing z1; projections stay on disk.

    Each folder holds the projections (every ``*.edf`` that is not a flat or dark, sorted by
    name; the first ``TOMO_N`` are used: ESRF scans append a few reference views after the
    scan), flats ``refHST*.edf`` (required; their median is used), darks ``dark*.edf``
    (optional) and a ``*.info`` file whose ``TOMO_N`` and ``ScanRange`` (degrees) give the
    angles (``TOMO_N`` views from 0, the end excluded).
    """
    from litomo.io.edf import EdfStack

    projs, flats, darks, angles = [], [], [], None
    for q in map(Path, folders):
        if not q.is_dir():
            raise InputFileError(f"HOLOGRAMS: {q} is not a folder of EDF files")
        ref, drk = sorted(q.glob(EDF_FLATS)), sorted(q.glob(EDF_DARKS))
        skip = set(ref) | set(drk)
        files = [f for f in sorted(q.glob("*.edf")) if f not in skip]
        if not files:
            raise InputFileError(f"HOLOGRAMS: {q} holds no EDF projections")
        if not ref:
            raise InputFileError(f"HOLOGRAMS: {q}: missing flats ({EDF_FLATS}): flat fields are required for every distance")
        th = _info_angles(q, len(files))
        angles = th if angles is None else angles
        stack = EdfStack(files[: th.size])
        projs.append(stack)
        flats.append(EdfStack(ref).median())
        darks.append(EdfStack(drk).median() if drk else np.zeros(stack.frame_shape, np.float32))
    return HoloScan(projs, flats, darks, np.asarray(angles), {}, ",".join(map(str, folders)))


def write_holo_hdf5(path: str | os.PathLike, projections: Sequence[np.ndarray], flats: Sequence[np.ndarray],
                    angles_deg: Any, *, darks: Sequence[np.ndarray] | None = None,
                    attrs: dict[str, Any] | None = None) -> Path:
    """Write a scan in litomo's holotomography layout (atomically).

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> p = write_holo_hdf5(d / "h.h5", [np.ones((2, 4, 4))] * 2, [np.full((1, 4, 4), 2.0)] * 2, [0, 90],
    ...                     attrs={"energy_kev": 29.6})
    >>> s = read_holo_hdf5(p); (s.n_distances, s.image_shape, float(s.intensities(0)[1][0, 0]))
    (2, (4, 4), 0.5)
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("angles_deg", data=np.asarray(angles_deg, dtype=float))
        for j, (p, fl) in enumerate(zip(projections, flats, strict=True)):
            g = f.create_group(f"d{j}")
            g.create_dataset("data", data=p, chunks=(1, *np.shape(p)[1:]))
            g.create_dataset("flats", data=fl)
            if darks is not None:
                g.create_dataset("darks", data=darks[j])
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return Path(path)

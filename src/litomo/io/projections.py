"""Projection series for tomography: one typed container and one reader for every format.

Formats (chosen by :func:`read_projections` from the path):

* DXchange HDF5 (``/exchange/data``, ``data_white``, ``data_dark``, ``theta``) and NeXus NXtomo
  (frames split by ``image_key``): :mod:`litomo.io.nexus`.
* Xradia ``.txrm`` stacks (angles from ``ImageInfo/Angles``, a reference frame from
  ``ReferenceData/Image`` when the file holds one) and a folder of ``.xrm`` frames (one angle per
  frame; frames whose name contains ``ref``/``flat``/``white``/``bkg`` are flats, ``dark`` darks):
  :mod:`litomo.io.xrm`.
* A TIFF stack (multi-page file or folder of pages) plus an angle list (text file, one angle in
  degrees per line, or ``start:stop:count``).

Angles are always read from the data (or the angle list); they are never assumed evenly spaced.
Separately stored reference frames (Xradia) are passed as ``flats=`` paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import InputFileError

logger = logging.getLogger(__name__)

_FLAT_TAGS = ("ref", "flat", "white", "bkg", "background")
_DARK_TAGS = ("dark",)


@dataclass
class ProjectionSeries:
    """Raw projections of one tomography scan, with their reference frames and geometry.

    Attributes
    ----------
    data : ndarray (n_angles, n_rows, n_columns)
        Raw projections (counts), in acquisition order.
    flats, darks : ndarray (k, n_rows, n_columns)
        Flat (open-beam, reference) and dark frames; ``k`` may be 0.
    angles_deg : ndarray (n_angles,)
        Rotation angle of each projection in degrees.
    pixel_size_um : float or None
        Detector pixel size at the sample (um); None when the file does not record it.
    energy_ev : float or None
        X-ray energy (eV); None when unknown.
    metadata : dict
        ``source``, ``format`` and what else the reader found.

    Examples
    --------
    >>> s = ProjectionSeries(np.ones((3, 2, 4)), np.ones((1, 2, 4)), np.zeros((0, 2, 4)), [0, 60, 120])
    >>> s.n_angles, s.shape
    (3, (3, 2, 4))
    """

    data: np.ndarray
    flats: np.ndarray
    darks: np.ndarray
    angles_deg: np.ndarray
    pixel_size_um: float | None = None
    energy_ev: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.angles_deg = np.asarray(self.angles_deg, dtype=np.float64).ravel()

    @property
    def n_angles(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.data.shape)  # type: ignore[return-value]


def read_angle_list(spec: str | os.PathLike) -> np.ndarray:
    """Angles in degrees from a text file (one per line, ``#`` comments) or ``start:stop:count``.

    ``start:stop:count`` includes both ends (``-120:120:721`` is the seed scan's 1/3-degree step).

    Examples
    --------
    >>> read_angle_list("-120:120:5")
    array([-120.,  -60.,    0.,   60.,  120.])
    """
    text = str(spec)
    parts = text.split(":")
    if len(parts) == 3 and not Path(text).exists():
        try:
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise InputFileError(f"--angles: expected a file or start:stop:count, got {text!r}") from None
        if count < 2:
            raise InputFileError(f"--angles: need at least two angles, got count {count}")
        return np.linspace(start, stop, count)
    path = Path(spec)
    if not path.is_file():
        raise InputFileError(f"--angles: angle list {path} not found")
    try:
        values = np.loadtxt(path, comments="#", ndmin=1, dtype=float)
    except ValueError as exc:
        raise InputFileError(f"--angles: {path} is not a list of numbers ({exc})") from None
    return np.asarray(values, float).ravel()


def _tagged(name: str, tags: Sequence[str]) -> bool:
    stem = Path(name).stem.lower().replace("-", "_")
    return any(t in stem.split("_") or stem.startswith(t) for t in tags)


def _xrm_stack(paths: Sequence[Path]) -> tuple[np.ndarray, list[Any]]:
    from litomo.io.xrm import read_xrm

    imgs = [read_xrm(p) for p in paths]
    shapes = {im.image.shape[-2:] for im in imgs}
    if len(shapes) > 1:
        raise InputFileError(f"{paths[0].parent}: .xrm frames differ in size {sorted(shapes)}")
    frames = np.concatenate([im.image.reshape(-1, *im.image.shape[-2:]) for im in imgs])
    return frames, imgs


def _read_refs(paths: Sequence[str | os.PathLike] | None, shape: tuple[int, int], what: str) -> np.ndarray:
    if not paths:
        return np.zeros((0, *shape), np.float32)
    from litomo.io.tiff import read_tiff

    frames = []
    for p in map(Path, paths):
        if p.suffix.lower() in (".xrm", ".txrm"):
            arr, _ = _xrm_stack([p])
        else:
            vol = read_tiff(p, voxel_size_um=1.0)
            arr = np.asarray(vol.data)
        frames.append(np.asarray(arr, np.float32).reshape(-1, *arr.shape[-2:]))
    out = np.concatenate(frames)
    if out.shape[1:] != shape:
        raise InputFileError(f"--{what}: frames of shape {out.shape[1:]} do not match projections {shape}")
    return out


def _read_xradia(path: Path) -> ProjectionSeries:
    """A ``.txrm`` stack or a folder of ``.xrm`` frames."""
    import olefile

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".xrm")
        proj_files = [p for p in files if not _tagged(p.name, _FLAT_TAGS + _DARK_TAGS)]
        flat_files = [p for p in files if _tagged(p.name, _FLAT_TAGS)]
        dark_files = [p for p in files if _tagged(p.name, _DARK_TAGS)]
        if not proj_files:
            raise InputFileError(f"{path}: no .xrm projection frames (reference/dark frames only?)")
        data, imgs = _xrm_stack(proj_files)
        angles = []
        for p in proj_files:
            with olefile.OleFileIO(str(p)) as ole:
                if not ole.exists("ImageInfo/Angles"):
                    raise InputFileError(f"{p}: no ImageInfo/Angles; give the angles with --angles")
                angles.append(float(np.frombuffer(ole.openstream("ImageInfo/Angles").read()[:4], "<f4")[0]))
        theta = np.asarray(angles)
        flats = _xrm_stack(flat_files)[0] if flat_files else np.zeros((0, *data.shape[1:]), data.dtype)
        darks = _xrm_stack(dark_files)[0] if dark_files else np.zeros((0, *data.shape[1:]), data.dtype)
        meta = {"source": str(path), "format": "xrm-folder", "files": [p.name for p in proj_files],
                "flat_files": [p.name for p in flat_files], "dark_files": [p.name for p in dark_files]}
        first = imgs[0]
    else:
        from litomo.io.xrm import read_xrm

        first = read_xrm(path)
        data = first.image.reshape(-1, *first.image.shape[-2:])
        if "angles_deg" not in first.metadata:
            raise InputFileError(f"{path}: no ImageInfo/Angles in the .txrm; give the angles with --angles")
        theta = np.asarray(first.metadata["angles_deg"], float)
        flats = _txrm_reference(path, data.shape[1:])
        darks = np.zeros((0, *data.shape[1:]), np.float32)
        meta = {"source": str(path), "format": "txrm"}
    energy = first.energy_ev
    if isinstance(energy, np.ndarray):
        meta["energies_ev"] = energy.tolist()
        energy = float(np.median(energy))
    return ProjectionSeries(data, flats, darks, theta, first.pixel_size_um, energy, meta)


def _txrm_reference(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The reference (flat) frame Xradia may store in ``ReferenceData/Image``; float32 or uint16."""
    import olefile

    with olefile.OleFileIO(str(path)) as ole:
        if not ole.exists("ReferenceData/Image"):
            return np.zeros((0, *shape), np.float32)
        raw = ole.openstream("ReferenceData/Image").read()
    n = shape[0] * shape[1]
    for dtype in ("<f4", "<u2"):
        if len(raw) == n * np.dtype(dtype).itemsize:
            return np.frombuffer(raw, dtype).astype(np.float32).reshape(1, *shape)
    raise InputFileError(f"{path}: ReferenceData/Image has {len(raw)} bytes for a {shape} frame (truncated?)")


def _read_hdf5(path: Path) -> ProjectionSeries:
    import h5py

    from litomo.io.nexus import read_dxchange, read_nxtomo

    try:
        with h5py.File(path, "r") as f:
            is_dx = "exchange/data" in f
            energy = _dxchange_energy_ev(f) if is_dx else None
    except OSError as exc:
        raise InputFileError(f"{path}: not a readable HDF5 file, truncated or corrupt ({exc})") from None
    pd = read_dxchange(path) if is_dx else read_nxtomo(path)
    if pd.metadata.get("theta_assumed"):
        raise InputFileError(f"{path}: the file records no rotation angles; give them with --angles")
    return ProjectionSeries(pd.data, pd.flats, pd.darks, pd.theta_deg, None, energy, dict(pd.metadata))


def _dxchange_energy_ev(f: Any) -> float | None:
    """The DXchange monochromator energy (``/measurement/instrument/monochromator/energy``) in eV, if any.

    DXchange writes it in keV (``units`` attribute; a value below 100 without units is keV too).
    """
    ds = f.get("measurement/instrument/monochromator/energy")
    if ds is None or not hasattr(ds, "shape"):
        return None
    try:
        value = float(np.median(np.asarray(ds[()], dtype=float)))
    except (TypeError, ValueError):
        return None
    units = ds.attrs.get("units", b"")
    units = (units.decode() if isinstance(units, bytes) else str(units)).strip().lower()
    if not np.isfinite(value) or value <= 0:
        return None
    return value * 1000.0 if units == "kev" or (units != "ev" and value < 100) else value


def _read_tiff_series(path: Path) -> ProjectionSeries:
    from litomo.io.tiff import read_tiff, read_tiff_folder

    vol = read_tiff_folder(path, voxel_size_um=1.0) if path.is_dir() else read_tiff(path, voxel_size_um=1.0)
    data = np.asarray(vol.array)
    return ProjectionSeries(data, np.zeros((0, *data.shape[1:]), np.float32), np.zeros((0, *data.shape[1:]), np.float32),
                            np.full(data.shape[0], np.nan), None, None, {"source": str(path), "format": "tiff"})


def read_projections(
    path: str | os.PathLike,
    *,
    angles: str | os.PathLike | Sequence[float] | None = None,
    fallback_angles: str | os.PathLike | Sequence[float] | None = None,
    flats: Sequence[str | os.PathLike] | None = None,
    darks: Sequence[str | os.PathLike] | None = None,
    pixel_size_um: float | None = None,
    energy_ev: float | None = None,
) -> ProjectionSeries:
    """Read a projection series from any supported format (see the module docstring).

    Parameters
    ----------
    path : path-like
        ``.h5``/``.hdf5``/``.nxs`` file, ``.txrm`` stack, folder of ``.xrm`` frames, TIFF stack or
        folder of TIFF pages.
    angles : path-like, str or sequence, optional
        Angle list (see :func:`read_angle_list`) or values in degrees. Required for TIFF; for other
        formats it replaces the angles in the file.
    fallback_angles : path-like, str or sequence, optional
        Used only when the data record no angles (TIFF); the manifest's ``reconstruction.angles``.
    flats, darks : sequence of path-like, optional
        Separately stored reference / dark frames (``.xrm``/``.txrm``/TIFF); added to those in the file.
    pixel_size_um, energy_ev : float, optional
        Override (or supply) the pixel size and energy.

    Returns
    -------
    ProjectionSeries, validated with :func:`check_series`.

    Examples
    --------
    >>> s = read_projections("tooth.h5")  # doctest: +SKIP
    >>> s.shape, s.flats.shape  # doctest: +SKIP
    ((181, 2, 640), (10, 2, 640))
    """
    from litomo.io.hdf5 import HDF5_SUFFIXES

    p = Path(path)
    if not p.exists():
        raise InputFileError(f"PROJECTIONS: {p} not found")
    suffix = p.suffix.lower()
    if p.is_dir():
        has_xrm = any(q.suffix.lower() == ".xrm" for q in p.iterdir())
        series = _read_xradia(p) if has_xrm else _read_tiff_series(p)
    elif suffix in HDF5_SUFFIXES:
        series = _read_hdf5(p)
    elif suffix in (".txrm", ".xrm"):
        series = _read_xradia(p)
    elif suffix in (".tif", ".tiff"):
        series = _read_tiff_series(p)
    else:
        raise InputFileError(f"PROJECTIONS: {p} has an unknown format (expected .h5/.nxs, .txrm, .xrm folder or TIFF)")
    if angles is None and np.isnan(series.angles_deg).any():
        angles = fallback_angles
    if angles is not None:
        theta = read_angle_list(angles) if isinstance(angles, str | os.PathLike) else np.asarray(angles, float).ravel()
        series = replace(series, angles_deg=theta)
    elif np.isnan(series.angles_deg).any():
        raise InputFileError(f"PROJECTIONS: {p} is a TIFF stack without angles; give them with --angles "
                             "(manifest: reconstruction.angles)")
    shape = series.data.shape[1:]
    extra_f = _read_refs(flats, shape, "flats")
    extra_d = _read_refs(darks, shape, "darks")
    if len(extra_f):
        series = replace(series, flats=np.concatenate([np.asarray(series.flats, np.float32), extra_f]))
    if len(extra_d):
        series = replace(series, darks=np.concatenate([np.asarray(series.darks, np.float32), extra_d]))
    if pixel_size_um is not None:
        series = replace(series, pixel_size_um=float(pixel_size_um))
    if energy_ev is not None:
        series = replace(series, energy_ev=float(energy_ev))
    return check_series(series)


def check_series(series: ProjectionSeries, *, expected_energy_ev: float | None = None,
                 energy_tolerance_ev: float = 2.0) -> ProjectionSeries:
    """Validate a projection series; raise a one-line :class:`InputFileError` on bad input.

    Checks: 3-D data, one angle per projection, finite strictly monotonic angles, flats brighter
    than darks (not swapped), no all-zero or saturated frames, and (optionally) the energy.

    Examples
    --------
    >>> s = ProjectionSeries(np.ones((3, 2, 4)), np.ones((0, 2, 4)), np.ones((0, 2, 4)), [0, 10, 5])
    >>> check_series(s)
    Traceback (most recent call last):
    ...
    litomo.errors.InputFileError: projection angles are not monotonic (first reversal at projection 2: 10 -> 5 deg)
    """
    d = series.data
    if d.ndim != 3 or min(d.shape) < 1:
        raise InputFileError(f"projections must be (n_angles, n_rows, n_columns), got shape {d.shape}")
    th = series.angles_deg
    if th.size != d.shape[0]:
        raise InputFileError(f"--angles: {th.size} angles for {d.shape[0]} projections")
    if not np.all(np.isfinite(th)):
        raise InputFileError("projection angles contain NaN or inf")
    step = np.diff(th)
    if th.size > 1 and not (np.all(step > 0) or np.all(step < 0)):
        sign = np.sign(np.median(step)) or 1.0
        i = int(np.nonzero(np.sign(step) != sign)[0][0]) + 1
        raise InputFileError(f"projection angles are not monotonic (first reversal at projection {i}: "
                             f"{th[i - 1]:g} -> {th[i]:g} deg)")
    _check_frames(series)
    if expected_energy_ev is not None and series.energy_ev is not None \
            and abs(series.energy_ev - expected_energy_ev) > energy_tolerance_ev:
        raise InputFileError(f"{series.metadata.get('source', 'projections')}: energy {series.energy_ev:g} eV does "
                             f"not match the manifest's {expected_energy_ev:g} eV")
    return series


def _check_frames(series: ProjectionSeries) -> None:
    d = series.data
    src = series.metadata.get("source", "projections")
    per_frame_max = np.asarray(d).reshape(d.shape[0], -1).max(axis=1)
    zero = np.nonzero(per_frame_max <= 0)[0]
    if zero.size:
        raise InputFileError(f"{src}: {zero.size} projection(s) are all zero (first: {zero[0]}); truncated acquisition?")
    if d.dtype.kind in "ui":
        full = np.iinfo(d.dtype).max
        frac = (np.asarray(d).reshape(d.shape[0], -1) >= full).mean(axis=1)
        sat = np.nonzero(frac > 0.5)[0]
        if sat.size:
            raise InputFileError(f"{src}: {sat.size} projection(s) are saturated (more than half the pixels at {full})")
    if len(series.flats) and len(series.darks):
        f = float(np.median(series.flats))
        k = float(np.median(series.darks))
        if f <= k:
            raise InputFileError(f"{src}: flat frames (median {f:g}) are not brighter than dark frames (median {k:g}); "
                                 "flats and darks swapped?")
    if len(series.flats) and float(np.median(series.flats)) <= 0:
        raise InputFileError(f"{src}: flat frames are zero (no beam)")

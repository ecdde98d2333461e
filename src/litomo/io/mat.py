"""MATLAB ``.mat`` files: numeric arrays as volumes or sinograms.

Version 5/7 files are read with :func:`scipy.io.loadmat`; version 7.3 files are HDF5 files
(with a 512-byte MATLAB header) and are read with h5py. MATLAB stores arrays column-major, so
h5py sees them transposed; they are transposed back, so both readers give the array with
MATLAB's own index order (``A(i, j)`` -> ``a[i, j]``). A ``.mat`` file records no voxel size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import InputFileError

MAT_SUFFIXES = (".mat",)


@dataclass(frozen=True)
class MatVariable:
    """One variable of a ``.mat`` file: name, shape (MATLAB order) and MATLAB class."""

    name: str
    shape: tuple[int, ...]
    matlab_class: str

    @property
    def is_numeric(self) -> bool:
        return self.matlab_class in ("double", "single", "int8", "uint8", "int16", "uint16", "int32",
                                     "uint32", "int64", "uint64", "logical")


def _is_v73(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(128)
    return len(head) == 128 and head[124:126] in (b"\x00\x02", b"\x02\x00")


def list_mat_variables(path: str | os.PathLike) -> list[MatVariable]:
    """The variables of a ``.mat`` file (v5/v7 via scipy, v7.3 via h5py), without loading them.

    Examples
    --------
    >>> [v.name for v in list_mat_variables("RealDataDend.mat")]  # doctest: +SKIP
    ['Detectors', 'anglesRad', 'sinoRD']
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    if _is_v73(path):
        import h5py

        out = []
        with h5py.File(path, "r") as f:
            for name, obj in f.items():
                if isinstance(obj, h5py.Dataset) and not name.startswith("#"):
                    cls = obj.attrs.get("MATLAB_class", b"unknown")
                    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
                    out.append(MatVariable(name, tuple(obj.shape[::-1]), cls))
        return out
    from scipy.io import whosmat

    try:
        return [MatVariable(n, tuple(s), c) for n, s, c in whosmat(path)]
    except Exception as exc:  # scipy raises ValueError/TypeError/... for broken files
        raise InputFileError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc


def read_mat_array(path: str | os.PathLike, variable: str | None = None) -> tuple[str, np.ndarray]:
    """``(name, array)`` of one numeric variable (default: the largest 2-D or 3-D one).

    Raises
    ------
    InputFileError
        No such variable, or no numeric 2-D/3-D array in the file (names the ``--dataset`` flag).
    """
    path = Path(path)
    variables = list_mat_variables(path)
    numeric = [v for v in variables if v.is_numeric and len(v.shape) in (2, 3)]
    if variable is None:
        if not numeric:
            listing = ", ".join(f"{v.name} {v.shape} {v.matlab_class}" for v in variables) or "none"
            raise InputFileError(f"{path}: no numeric 2-D or 3-D array (variables: {listing})")
        variable = max(numeric, key=lambda v: int(np.prod(v.shape))).name
    elif variable not in {v.name for v in variables}:
        names = ", ".join(v.name for v in variables)
        raise InputFileError(f"{path}: --dataset {variable!r} is not a variable of the file (variables: {names})")
    if _is_v73(path):
        import h5py

        with h5py.File(path, "r") as f:
            arr = np.asarray(f[variable][()]).T
    else:
        from scipy.io import loadmat

        arr = np.asarray(loadmat(path, variable_names=[variable])[variable])
    if arr.dtype.kind not in "biuf":
        raise InputFileError(f"{path}: variable {variable!r} is {arr.dtype}, not a numeric array")
    return variable, arr


def read_mat_volume(path: str | os.PathLike, variable: str | None = None, *,
                    voxel_size_um: Any = None) -> Any:
    """A numeric ``.mat`` variable as a :class:`litomo.volume.Volume` (2-D -> ``(1, y, x)``).

    The file records no voxel size: ``voxel_size_um`` (default 1) is used and
    ``metadata["voxel_size_known"]`` says whether it was given.
    """
    from litomo.volume import Volume, as_voxel_size

    name, arr = read_mat_array(path, variable)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputFileError(f"{path}: variable {name!r} has shape {arr.shape}; a volume needs 2 or 3 axes")
    meta = {"source": str(path), "format": "mat", "dataset": name, "voxel_size_known": voxel_size_um is not None}
    return Volume(arr, as_voxel_size(1.0 if voxel_size_um is None else voxel_size_um), meta)


def describe_mat(path: str | os.PathLike) -> dict[str, Any]:
    """Variables of a ``.mat`` file and, where one is recognisable, its sinogram.

    A 2-D array one of whose axes has the length of an angle vector (a variable named like
    ``angles``/``theta``) is reported as a sinogram: angles, detector pixels, which axis is
    which, and the angular range (radians are recognised when the span is below 2 pi + 0.1,
    or by a ``rad`` in the name).

    Examples
    --------
    >>> describe_mat("RealDataDend.mat")["sinogram"]["n_angles"]  # doctest: +SKIP
    360
    """
    variables = list_mat_variables(path)
    out: dict[str, Any] = {"variables": [{"name": v.name, "shape": list(v.shape), "class": v.matlab_class}
                                         for v in variables]}
    vectors = [v for v in variables if v.is_numeric and len(v.shape) <= 2 and max(v.shape, default=0) > 1
               and min(v.shape) == 1 and any(k in v.name.lower() for k in ("angle", "theta"))]
    images = [v for v in variables if v.is_numeric and len(v.shape) == 2 and min(v.shape) > 1]
    for vec in vectors:
        n = max(vec.shape)
        for img in images:
            if n in img.shape:
                _, ang = read_mat_array(path, vec.name) if len(vec.shape) == 2 else (None, None)
                a = np.asarray(ang, float).ravel() - float(np.ravel(ang)[0])
                radians = "rad" in vec.name.lower() or np.ptp(a) < 2 * np.pi + 0.1
                span = float(np.degrees(np.ptp(a)) if radians else np.ptp(a))
                axis = img.shape.index(n)
                out["sinogram"] = {"variable": img.name, "angles_variable": vec.name, "n_angles": n,
                                   "n_detector": img.shape[1 - axis], "angle_axis": axis,
                                   "angle_span_deg": span, "angle_unit": "rad" if radians else "deg"}
                return out
    return out

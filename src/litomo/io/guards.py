"""Checks every reader makes before it touches data: a real file, a real dtype, memory enough.

A FIFO or a character device given as a volume would block ``open()`` forever; a complex
array would lose its imaginary part in the first ``astype(float32)``; a 40-byte TIFF whose
header claims a 2000^3 image would make numpy try to allocate tens of GiB. Each is refused
here with a one-line :class:`~litomo.errors.InputFileError` before anything is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from litomo.errors import InputFileError

if TYPE_CHECKING:
    from litomo.volume import Volume

#: fraction of the available memory one array may take before a read is refused
MEMORY_FRACTION = 0.8


def check_input_path(path: str | os.PathLike, *, allow_dir: bool = True, flag: str | None = None) -> Path:
    """``path`` as a Path if it is an existing regular file (or a folder, with ``allow_dir``).

    Parameters
    ----------
    path : path-like
        The input the user named.
    allow_dir : bool
        Accept a directory (TIFF-slice folders, zarr stores).
    flag : str, optional
        The CLI flag or manifest field that named the file (for the message).

    Raises
    ------
    InputFileError
        Missing, or not a regular file: a FIFO, socket or device would block or never end.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.tif"
    >>> _ = p.write_bytes(b"x")
    >>> check_input_path(p) == p
    True
    """
    p = Path(path)
    where = f" ({flag})" if flag else ""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise InputFileError(f"{p}{where}: file not found") from None
    except OSError as exc:
        raise InputFileError(f"{p}{where}: cannot access ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        if allow_dir:
            return p
        raise InputFileError(f"{p}{where}: is a folder, expected a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "not a regular file")
        raise InputFileError(f"{p}{where}: is {kind}; give a regular file")
    return p


def check_real_dtype(dtype: np.dtype | str, path: str | os.PathLike) -> np.dtype:
    """Refuse complex (and other non-numeric) voxel types instead of dropping the imaginary part.

    Examples
    --------
    >>> check_real_dtype("uint16", "a.tif")
    dtype('uint16')
    >>> check_real_dtype("complex64", "a.tif")
    Traceback (most recent call last):
    ...
    litomo.errors.InputFileError: a.tif: complex voxel type complex64; litomo needs real values (take the magnitude or the real part first)
    """
    dt = np.dtype(dtype)
    if dt.kind == "c":
        raise InputFileError(f"{path}: complex voxel type {dt}; litomo needs real values "
                             "(take the magnitude or the real part first)")
    if dt.kind not in "biuf":
        raise InputFileError(f"{path}: voxel type {dt} is not numeric")
    return dt


def available_memory_bytes() -> int:
    """Memory available to this process now (psutil), in bytes."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits_in_memory(shape: tuple[int, ...], dtype: np.dtype | str, what: str, *,
                         copies: float = 1.0) -> int:
    """Refuse to allocate ``copies`` arrays of ``shape``/``dtype`` when memory cannot hold them.

    Parameters
    ----------
    shape, dtype
        The array about to be allocated (as the file's header announces it).
    what : str
        Names the file (and the flag) for the message.
    copies : float
        How many such arrays the step holds at once.

    Returns
    -------
    int
        The number of bytes (one copy).

    Raises
    ------
    InputFileError
        More than :data:`MEMORY_FRACTION` of the available memory would be needed.

    Examples
    --------
    >>> check_fits_in_memory((4, 4, 4), "uint8", "a.tif")
    64
    """
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * np.dtype(dtype).itemsize
    avail = available_memory_bytes()
    if nbytes * copies > MEMORY_FRACTION * avail:
        raise InputFileError(
            f"{what}: the image {tuple(int(s) for s in shape)} {np.dtype(dtype)} needs "
            f"{nbytes * copies / 2**30:.1f} GiB, more than the {avail / 2**30:.1f} GiB available "
            "(a damaged header, or a volume to read lazily / crop first)"
        )
    return nbytes


#: ``Volume.metadata`` key: False when neither the file nor the caller gave a voxel size
#: (the readers then put 1 um in its place)
VOXEL_SIZE_KNOWN = "voxel_size_known"


def require_voxel_size(volume: Volume, flag: str = "--voxel-size-um") -> Volume:
    """``volume`` if its voxel size is known; else one line asking for ``flag``.

    Lengths, areas and the report's scale bars all follow from the voxel size, so a command
    that reports them refuses a file without one rather than answer in units of 1 um.

    Examples
    --------
    >>> from litomo.volume import Volume
    >>> v = Volume(np.zeros((2, 2, 2)), 1.0, {"source": "a.tif", VOXEL_SIZE_KNOWN: False})
    >>> require_voxel_size(v)
    Traceback (most recent call last):
    ...
    litomo.errors.InputFileError: a.tif records no voxel size (no resolution tag, or a software default such as 72 dpi); pass --voxel-size-um
    """
    if volume.metadata.get(VOXEL_SIZE_KNOWN, True):
        return volume
    src = volume.metadata.get("source", "the volume")
    raise InputFileError(f"{src} records no voxel size (no resolution tag, or a software default "
                         f"such as 72 dpi); pass {flag}")

"""ESRF Data Format (EDF) images: one frame per file, an ASCII header of ``key = value ;`` pairs.

ESRF beamlines (ID16A/B nano-holotomography among them) write each projection, flat
(``refHST*.edf``) and dark (``dark*.edf``) as its own EDF file. Reading and writing go through
``fabio`` (the ESRF's maintained reader of detector image formats, MIT, already a dependency
of nabu); litomo adds one-line errors, a frame-size check, and a lazy stack that reads one
projection at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import DataError, InputFileError
from litomo.io.atomic import atomic_path

log = logging.getLogger(__name__)


def read_edf(path: str | os.PathLike, *, flag: str = "EDF") -> tuple[np.ndarray, dict[str, str]]:
    """First frame of an EDF file and its header.

    Parameters
    ----------
    path : path
    flag : str
        CLI argument or field named in error messages.

    Returns
    -------
    data : ndarray (ny, nx)
    header : dict of str

    Raises
    ------
    InputFileError
        Missing file, not an EDF, or data shorter than its header says.

    Examples
    --------
    >>> import tempfile
    >>> p = write_edf(Path(tempfile.mkdtemp()) / "a.edf", np.arange(6, dtype=np.uint16).reshape(2, 3),
    ...               {"SRCUR": "200"})
    >>> img, hdr = read_edf(p)
    >>> img.shape, img.dtype.name, hdr["SRCUR"]
    ((2, 3), 'uint16', '200')
    """
    import fabio

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{flag}: no such EDF file: {p}")
    quiet = logging.getLogger("fabio")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a truncated file is reported below, in one line
    try:
        with fabio.open(str(p)) as img:
            data, header = img.data, dict(img.header)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputFileError(f"{flag}: {p} is not a readable EDF file ({str(exc).splitlines()[0]})") from None
    finally:
        quiet.setLevel(level)
    if data is None or np.ndim(data) != 2 or min(np.shape(data)) == 0:
        raise InputFileError(f"{flag}: {p} holds no 2-D image (shape {np.shape(data)})")
    # fabio pads a truncated file with zeros (and only logs it): missing data must be an error
    size, head = header.get("EDF_BinarySize", header.get("Size", "")), header.get("EDF_HeaderSize", "")
    if size.strip().isdigit() and head.strip().isdigit() and p.stat().st_size < int(size) + int(head):
        raise InputFileError(f"{flag}: {p} is truncated ({p.stat().st_size} bytes, the header needs "
                             f"{int(size) + int(head)})")
    return np.asarray(data), header


def write_edf(path: str | os.PathLike, data: np.ndarray, header: dict[str, Any] | None = None) -> Path:
    """Write one 2-D image as an EDF file (atomically), e.g. for tests and converted scans.

    Examples
    --------
    >>> import tempfile
    >>> p = write_edf(Path(tempfile.mkdtemp()) / "b.edf", np.ones((4, 5), np.float32))
    >>> read_edf(p)[0].shape
    (4, 5)
    """
    from fabio.edfimage import EdfImage

    a = np.asarray(data)
    if a.ndim != 2:
        raise DataError(f"EDF images are 2-D, got shape {a.shape}")
    with atomic_path(path) as tmp:
        EdfImage(data=a, header={k: str(v) for k, v in (header or {}).items()}).write(str(tmp))
    return Path(path)


class EdfStack:
    """Projections in one EDF file each, read lazily: ``stack[i]`` is frame ``i`` (float32).

    Behaves like a read-only ``(n, ny, nx)`` array for :class:`litomo.holo.io.HoloScan`, which
    reads one angle at a time.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> files = [write_edf(d / f"p_{i:04d}.edf", np.full((3, 4), i, np.uint16)) for i in range(2)]
    >>> s = EdfStack(files)
    >>> s.shape, float(s[1][0, 0])
    ((2, 3, 4), 1.0)
    """

    def __init__(self, files: Sequence[str | os.PathLike], *, flag: str = "HOLOGRAMS") -> None:
        self.files = [Path(f) for f in files]
        self.flag = flag
        if not self.files:
            raise InputFileError(f"{flag}: no EDF projections found")
        first, _ = read_edf(self.files[0], flag=flag)
        self.frame_shape = tuple(first.shape)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.files), *self.frame_shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        data, _ = read_edf(self.files[index], flag=self.flag)
        if data.shape != self.frame_shape:
            raise DataError(f"{self.flag}: {self.files[index]} is {data.shape}, the first frame {self.frame_shape}")
        return data.astype(np.float32)

    def median(self) -> np.ndarray:
        """Median over the frames (for flats and darks), float32."""
        return np.median(np.stack([self[i] for i in range(len(self))]), axis=0).astype(np.float32)

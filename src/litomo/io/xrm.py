"""Xradia/Zeiss TXM frames: ``.xrm`` (one image) and ``.txrm`` (a stack), read with olefile.

The files are OLE2 compound documents. The layout (stream names, data-type codes, the
``ImageData{k}/Image{i}`` grouping of 100 images per storage) follows the readers in
xanespy (``xanespy/xradia.py``) and dxchange. SSRL 6-2c files store 0 in ``ImageInfo/Energy``;
their energy is in the file name (``..._08324.0_eV_...``), as xanespy does.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import olefile

from litomo.errors import InputFileError
from litomo.io.guards import check_input_path

logger = logging.getLogger(__name__)

XRM_SUFFIXES = (".xrm", ".txrm")
# ImageInfo/DataType codes used by Xradia
_DTYPES = {5: np.dtype("<u2"), 10: np.dtype("<f4")}
# "_08324.0_eV_", "_8353_0eV", "-8333.5eV": an energy in eV, with '.' or '_' as decimal mark
_ENERGY_RE = re.compile(r"(?:^|[_\-\s])(\d{3,6})(?:[._](\d+))?_?eV(?![a-zA-Z])", re.IGNORECASE)


@dataclass
class XrmImage:
    """One Xradia frame (``.xrm``) or stack (``.txrm``).

    Attributes
    ----------
    image : ndarray
        ``(y, x)`` for ``.xrm``; ``(n, y, x)`` for ``.txrm``.
    energy_ev : float, ndarray or None
        X-ray energy in eV (``(n,)`` array for a ``.txrm`` whose frames differ); None when
        neither the file nor its name records it.
    pixel_size_um : float or None
        Pixel edge length in micrometres.
    exposure_s : float or ndarray or None
        Exposure time(s) in seconds.
    metadata : dict
        ``source``, ``energy_source`` (``"file"``/``"filename"``/``None``), ``angles_deg``
        (txrm), ``n_images``, binning, positions where present.
    """

    image: np.ndarray
    energy_ev: float | np.ndarray | None
    pixel_size_um: float | None
    exposure_s: float | np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)


def energy_from_filename(name: str) -> float | None:
    """The energy in eV written in a file name, or None.

    Examples
    --------
    >>> energy_from_filename("rep01_ssrl-test-data_08324.0_eV_001of003.xrm")
    8324.0
    >>> energy_from_filename("fov07_xanessoc01_8353_0eV.xrm")
    8353.0
    >>> energy_from_filename("sample.xrm") is None
    True
    """
    for m in _ENERGY_RE.finditer(Path(name).name):
        value = float(f"{m.group(1)}.{m.group(2) or 0}")
        if value >= 100:  # energies below 100 eV are not hard X-rays: not an energy tag
            return value
    return None


def _values(ole: olefile.OleFileIO, stream: str, fmt: str) -> np.ndarray | None:
    if not ole.exists(stream):
        return None
    raw = ole.openstream(stream).read()
    size = struct.calcsize("<" + fmt)
    n = len(raw) // size
    if n == 0:
        return None
    return np.asarray(struct.unpack(f"<{n}{fmt}", raw[: n * size]))


def _first(values: np.ndarray | None) -> Any:
    return None if values is None else values[0].item()


def read_xrm(path: str | os.PathLike) -> XrmImage:
    """Read an Xradia ``.xrm`` frame or ``.txrm`` stack with its energy and pixel size.

    Parameters
    ----------
    path : path-like
        ``.xrm`` or ``.txrm`` file.

    Returns
    -------
    XrmImage

    Raises
    ------
    InputFileError
        Missing, truncated or not an Xradia file.

    Examples
    --------
    >>> img = read_xrm("fov07_xanessoc01_8353_0eV.xrm")  # doctest: +SKIP
    >>> img.image.shape, round(img.energy_ev, 1), round(img.pixel_size_um * 1000, 1)  # doctest: +SKIP
    ((1024, 1024), 8353.0, 38.9)
    """
    path = check_input_path(path, allow_dir=False)
    try:
        ole = olefile.OleFileIO(str(path))
    except Exception as exc:  # olefile raises OSError and others for broken containers
        raise InputFileError(f"{path}: not a readable Xradia .xrm/.txrm file ({exc})") from exc
    try:
        return _read(ole, path)
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(f"{path}: truncated or corrupt Xradia file ({exc})") from exc
    finally:
        ole.close()


def _read(ole: olefile.OleFileIO, path: Path) -> XrmImage:
    width = _first(_values(ole, "ImageInfo/ImageWidth", "I"))
    height = _first(_values(ole, "ImageInfo/ImageHeight", "I"))
    code = _first(_values(ole, "ImageInfo/DataType", "I"))
    if width is None or height is None:
        raise InputFileError(f"{path}: no ImageInfo/ImageWidth/ImageHeight streams; not an Xradia image file")
    if code not in _DTYPES:
        raise InputFileError(f"{path}: unsupported Xradia data type code {code} (known: 5 uint16, 10 float32)")
    dtype = _DTYPES[code]
    n_images = _first(_values(ole, "ImageInfo/NoOfImages", "I")) or 1
    frames = []
    for i in range(n_images):
        stream = f"ImageData{math.ceil((i + 1) / 100)}/Image{i + 1}"
        if not ole.exists(stream):
            raise InputFileError(f"{path}: image stream {stream} is missing ({n_images} images announced)")
        raw = ole.openstream(stream).read()
        expected = width * height * dtype.itemsize
        if len(raw) < expected:
            raise InputFileError(f"{path}: truncated image data in {stream} ({len(raw)} of {expected} bytes)")
        frames.append(np.frombuffer(raw[:expected], dtype=dtype).reshape(height, width))
    image = np.stack(frames).astype(dtype.newbyteorder("="))
    is_stack = path.suffix.lower() == ".txrm" or n_images > 1

    energies = _values(ole, "ImageInfo/Energy", "f")
    meta: dict[str, Any] = {"source": str(path), "format": "xradia", "n_images": int(n_images)}
    energy: float | np.ndarray | None
    if energies is not None and np.any(energies[:n_images] > 0):
        e = energies[:n_images].astype(float)
        energy = float(e[0]) if (not is_stack or np.allclose(e, e[0])) else e
        meta["energy_source"] = "file"
    else:
        energy = energy_from_filename(path.name)
        meta["energy_source"] = "filename" if energy is not None else None
        if energy is None:
            logger.warning("%s: no energy in ImageInfo/Energy nor in the file name; energy_ev=None", path)
    pixel = _first(_values(ole, "ImageInfo/PixelSize", "f"))
    pixel_size = float(pixel) if pixel is not None and pixel > 0 else None
    if pixel_size is None:
        logger.warning("%s: no pixel size recorded; pixel_size_um=None", path)
    exp = _values(ole, "ImageInfo/ExpTimes", "f")
    exposure: float | np.ndarray | None = None
    if exp is not None:
        exp = exp[:n_images].astype(float)
        exposure = float(exp[0]) if (not is_stack or np.allclose(exp, exp[0])) else exp
    angles = _values(ole, "ImageInfo/Angles", "f")
    if angles is not None and is_stack:
        meta["angles_deg"] = angles[:n_images].astype(float)
    for key, stream, fmt in (
        ("horizontal_bin", "ImageInfo/HorizontalBin", "I"),
        ("vertical_bin", "ImageInfo/VerticalalBin", "I"),  # sic: Xradia's spelling
        ("x_position_um", "ImageInfo/XPosition", "f"),
        ("y_position_um", "ImageInfo/YPosition", "f"),
        ("z_position_um", "ImageInfo/ZPosition", "f"),
    ):
        v = _first(_values(ole, stream, fmt))
        if v is not None:
            meta[key] = v
    return XrmImage(image if is_stack else image[0], energy, pixel_size, exposure, meta)

"""TIFF metadata and integrity checks (tifffile): voxel size and units, truncated or corrupt files.

Voxel sizes come from ImageJ ``spacing``/``unit`` and resolution tags, OME ``PhysicalSize*``
and TIFF resolution tags in cm/inch; software-default resolutions (72/96/300 dpi, 1 pixel per
unit) are not a scale. :mod:`litomo.io.tiff` reads and writes the volumes with these checks.
"""

from __future__ import annotations

import contextlib
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from litomo.errors import InputFileError
from litomo.io.guards import check_fits_in_memory
from litomo.volume import as_voxel_size

logger = logging.getLogger(__name__)

# length units found in ImageJ/OME metadata -> factor to micrometres
_UNIT_TO_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6, "pm": 1e-6, "angstrom": 1e-4, "å": 1e-4,
}


def unit_to_um(unit: str | None) -> float | None:
    """Factor converting a length unit name to micrometres, or None if unknown.

    Examples
    --------
    >>> unit_to_um("micron"), unit_to_um("nm"), unit_to_um("pixel")
    (1.0, 0.001, None)
    """
    if unit is None:
        return None
    return _UNIT_TO_UM.get(str(unit).strip().lower())


def natural_sort_key(name: str) -> list[Any]:
    """Sort key that orders ``im2`` before ``im10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------------------------
# opening and validation
# --------------------------------------------------------------------------------------------


class _CollectWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def open_checked_tiff(path: Path) -> Iterator[tifffile.TiffFile]:
    """Open a TIFF and fail with :class:`InputFileError` if it is truncated or corrupt.

    tifffile logs (rather than raises) when page offsets point past the end of the file and
    then returns partial data, so its warnings are collected and the strip/tile offsets are
    checked against the file size.
    """
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    handler = _CollectWarnings()
    tlog = logging.getLogger("tifffile")
    tlog.addHandler(handler)
    try:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile raises many types for broken headers
            raise InputFileError(f"{path}: not a readable TIFF file ({exc})") from exc
        try:
            try:
                if not tif.series:
                    raise InputFileError(f"{path}: TIFF file contains no images")
                _check_complete(path, tif, tif.series[0])
            except InputFileError:
                raise
            except Exception as exc:
                raise InputFileError(f"{path}: truncated or corrupt TIFF file ({exc})") from exc
            bad = [m for m in handler.messages if re.search(r"corrupt|invalid|truncat|incomplete", m, re.I)]
            if bad:
                raise InputFileError(f"{path}: truncated or corrupt TIFF file ({bad[0]})")
            yield tif
        finally:
            tif.close()
    finally:
        tlog.removeHandler(handler)


def _check_complete(path: Path, tif: tifffile.TiffFile, series: Any) -> None:
    size = path.stat().st_size
    # walk the whole IFD chain: a cut-off chain only shows up (as a tifffile log message) here
    _ = len(tif.pages)
    ij = tif.imagej_metadata or {}
    n_pages_expected = int(ij.get("images", 0) or 0)
    if n_pages_expected and int(np.prod(series.shape[:-2])) < n_pages_expected:
        raise InputFileError(
            f"{path}: truncated TIFF file (ImageJ metadata announces {n_pages_expected} images, "
            f"found {int(np.prod(series.shape[:-2]))})"
        )
    if series.dataoffset is not None and tif.pages[0].compression == 1:
        # contiguous uncompressed data (ImageJ > 4 GiB style): one range check suffices
        if series.dataoffset + series.nbytes > size:
            raise InputFileError(f"{path}: truncated TIFF file (image data runs past the end of the file)")
        return
    for page in series.pages:
        if page is None or not hasattr(page, "dataoffsets"):
            continue
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if ends and max(ends) > size:
            raise InputFileError(f"{path}: truncated TIFF file (image data runs past the end of the file)")


#: most a deflate stream expands (1032:1, zlib technical notes) and PackBits (64:1), rounded up
_MAX_RATIO = {8: 1100.0, 32946: 1100.0, 32773: 70.0}


def check_plausible_size(path: Path, tif: tifffile.TiffFile, series: Any, shape: tuple[int, int, int],
                          dtype: np.dtype) -> None:
    """Refuse a header that claims more image than the file can hold, before anything is decoded.

    A corrupt or hostile header (a 2 kB file claiming a 100000^2 float32 page) would otherwise
    make the decoder allocate tens of GiB. Deflate and PackBits have a known largest expansion;
    for every codec, one z slice (what a lazy read decodes at once) must fit in memory.
    """
    page = tif.pages[0]
    size = path.stat().st_size
    ratio = _MAX_RATIO.get(int(page.compression))
    if ratio is not None and series.nbytes > ratio * size:
        raise InputFileError(
            f"{path}: the header claims a {shape} {dtype} image ({series.nbytes / 2**30:.2f} GiB), "
            f"more than this {size}-byte file can hold; the file is corrupt"
        )
    check_fits_in_memory(shape[1:], dtype, f"{path} (one z slice)")


# --------------------------------------------------------------------------------------------
# voxel size from metadata
# --------------------------------------------------------------------------------------------


def _ome_voxel_size(xml: str) -> tuple[float, float, float] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    sizes = {}
    for ax in "ZYX":
        val = pixels.get(f"PhysicalSize{ax}")
        if val is None:
            continue
        factor = unit_to_um(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        if factor is None:
            continue
        sizes[ax] = float(val) * factor
    if "X" not in sizes:
        return None
    x = sizes["X"]
    y = sizes.get("Y", x)
    return (sizes.get("Z", x), y, x)


def _resolution_size(page: Any, factor: float) -> tuple[float, float] | None:
    """Pixel size (y, x) in um from the X/YResolution tags (pixels per unit)."""
    tags = page.tags
    if "XResolution" not in tags:
        return None
    xr = tags["XResolution"].value
    yr = tags["YResolution"].value if "YResolution" in tags else xr
    xres = xr[0] / xr[1] if xr[1] else 0.0
    yres = yr[0] / yr[1] if yr[1] else 0.0
    if xres <= 0 or yres <= 0:
        return None
    return (factor / yres, factor / xres)


def voxel_size_from_tiff(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """The voxel size ``(z, y, x)`` in um recorded in an open TIFF, or None if it has none."""
    page = tif.pages[0]
    if tif.is_ome and tif.ome_metadata:
        v = _ome_voxel_size(tif.ome_metadata)
        if v is not None:
            return v
    ij = tif.imagej_metadata
    if ij:
        factor = unit_to_um(ij.get("unit"))
        if factor is not None:
            yx = _resolution_size(page, factor)
            if yx is not None:
                z = float(ij["spacing"]) * factor if ij.get("spacing") else yx[1]
                return (z, yx[0], yx[1])
        return None
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    factor = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, cm; unit 1 (none) carries no scale
    if factor is None or _is_default_resolution(page, unit):
        return None
    yx = _resolution_size(page, factor)
    if yx is None:
        return None
    # anything coarser than 1 mm per pixel is no tomography voxel
    if max(yx) > 1000.0:
        return None
    return (yx[1], yx[0], yx[1])


#: pixels per inch that image editors and libraries write when they know no scale
DEFAULT_DPI = (72.0, 96.0, 300.0)


def _is_default_resolution(page: Any, unit: int) -> bool:
    """True for resolution tags that are software defaults, not a measured pixel size.

    72/96/300 dpi (Photoshop, Windows, print defaults; the NREL electrode TIFF carries 72 dpi,
    which read as a scale gives 352.78 um voxels) and 1 pixel per unit (libtiff's default).
    """
    tags = page.tags
    if "XResolution" not in tags:
        return True
    res = []
    for name in ("XResolution", "YResolution"):
        if name in tags:
            num, den = tags[name].value
            res.append(num / den if den else 0.0)
    if all(abs(r - 1.0) < 1e-9 for r in res):
        return True
    return unit == 2 and all(any(abs(r - d) < 1e-6 for d in DEFAULT_DPI) for r in res)


def resolve_voxel_size(found: Any, explicit: Any, path: Path) -> tuple[tuple[float, float, float], bool]:
    """The voxel size and whether it is known (given, or recorded in the file)."""
    if explicit is not None:
        return as_voxel_size(explicit), True
    if found is not None:
        return as_voxel_size(found), True
    logger.info("%s records no voxel size (no or a default resolution tag); 1 um stands in", path)
    return (1.0, 1.0, 1.0), False

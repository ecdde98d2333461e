"""Pre-processing: binning, cropping and denoising (numpy or dask arrays alike)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.volume import Volume

log = logging.getLogger(__name__)


def _bin_factors(factor: int | tuple[int, int, int]) -> tuple[int, int, int]:
    f = (int(factor),) * 3 if np.isscalar(factor) else tuple(int(x) for x in factor)
    if len(f) != 3 or any(x < 1 for x in f):
        raise DataError(f"bin factor must be a positive integer or three of them, got {factor!r}")
    return f  # type: ignore[return-value]


def crop_to_multiple(array: Any, factor: int | tuple[int, int, int]) -> Any:
    """Crop the high-index end of each axis so its length divides by ``factor``.

    Logs a warning naming the number of voxels dropped per axis when anything is cropped.
    """
    f = _bin_factors(factor)
    new = tuple((n // k) * k for n, k in zip(array.shape, f, strict=True))
    if any(n == 0 for n in new):
        raise DataError(f"volume of shape {tuple(array.shape)} is smaller than the bin factor {f}")
    if new != tuple(array.shape):
        dropped = tuple(n - m for n, m in zip(array.shape, new, strict=True))
        log.warning("binning by %s: cropping %s voxels (z, y, x) that do not fill a bin", f, dropped)
        array = array[: new[0], : new[1], : new[2]]
    return array


def bin_array(array: Any, factor: int | tuple[int, int, int] = 7) -> Any:
    """Block-mean binning of a 3D numpy or dask array (float32 output).

    Edges that do not fill a whole bin are cropped (with a logged warning). NaN voxels
    propagate into their bin. For dask input the result is a dask array; when the chunks
    are multiples of the factor no data moves between chunks.

    Examples
    --------
    >>> a = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> bin_array(a, 2).tolist()
    [[[3.5]]]
    """
    f = _bin_factors(factor)
    if f == (1, 1, 1):
        return array.astype(np.float32) if array.dtype != np.float32 else array
    array = crop_to_multiple(array, f)
    if isinstance(array, np.ndarray):
        nz, ny, nx = (n // k for n, k in zip(array.shape, f, strict=True))
        out = np.empty((nz, ny, nx), dtype=np.float32)
        # one z-slab at a time keeps the float64 temporary small for big volumes
        for i in range(nz):
            slab = array[i * f[0] : (i + 1) * f[0]].astype(np.float64)
            out[i] = slab.reshape(f[0], ny, f[1], nx, f[2]).mean(axis=(0, 2, 4))
        return out
    import dask.array as da

    # align chunks to bin boundaries so coarsen never needs to move data
    chunks = tuple(
        max(k, (c // k) * k) for c, k in zip((ch[0] for ch in array.chunks), f, strict=True)
    )
    array = array.rechunk(chunks)
    return da.coarsen(np.mean, array.astype(np.float32), dict(enumerate(f)), trim_excess=True).astype(
        np.float32
    )


def bin_volume(volume: Volume, factor: int | tuple[int, int, int] = 7) -> Volume:
    """Block-mean bin a :class:`Volume`; the voxel size grows by ``factor``.

    Examples
    --------
    >>> v = Volume(np.ones((14, 14, 15), np.uint16), voxel_size_um=0.03)
    >>> b = bin_volume(v, 7)
    >>> b.shape, tuple(round(s, 3) for s in b.voxel_size_um)
    ((2, 2, 2), (0.21, 0.21, 0.21))
    """
    f = _bin_factors(factor)
    binned = bin_array(volume.array, f)
    vs = tuple(s * k for s, k in zip(volume.voxel_size_um, f, strict=True))
    return volume.with_array(binned, voxel_size_um=vs, step="bin", factor=list(f))

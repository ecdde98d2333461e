"""Global thresholds: Otsu (two phases) and multi-Otsu (three phases -> canonical codes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.phases import PHASE_CODES


def _grey_values(grey: Any, max_samples: int, seed: int) -> np.ndarray:
    grey = np.asarray(grey)
    if grey.ndim != 3:
        raise DataError(f"greyscale volume must be 3D (z, y, x), got shape {grey.shape}")
    if grey.dtype.kind == "f" and not np.all(np.isfinite(grey)):
        raise DataError("greyscale volume holds NaN or inf voxels; fill or mask them first")
    values = grey.ravel()
    if values.size > max_samples:
        # thresholds come from the histogram, which a random subsample reproduces closely
        values = np.random.default_rng(seed).choice(values, max_samples, replace=False)
    if values.min() == values.max():
        raise DataError("greyscale volume is constant: nothing to threshold")
    return values


def otsu_mask(grey: Any, *, max_samples: int = 4_000_000, seed: int = 0) -> np.ndarray:
    """Boolean mask of voxels brighter than the Otsu threshold.

    Examples
    --------
    >>> g = np.zeros((4, 4, 4)); g[2:] = 10
    >>> int(otsu_mask(g).sum())
    32
    """
    from skimage.filters import threshold_otsu

    t = threshold_otsu(_grey_values(grey, max_samples, seed))
    return np.asarray(grey) > t


def multi_otsu_thresholds(grey: Any, classes: int = 3, *, nbins: int = 256,
                          max_samples: int = 4_000_000, seed: int = 0) -> np.ndarray:
    """The ``classes - 1`` multi-Otsu thresholds (grey units, increasing)."""
    from skimage.filters import threshold_multiotsu

    values = _grey_values(grey, max_samples, seed)
    try:
        return threshold_multiotsu(values, classes=classes, nbins=nbins)
    except ValueError as exc:
        raise DataError(f"multi-Otsu with {classes} classes failed: {exc}") from None


def multi_otsu_labels(
    grey: Any,
    classes: int = 3,
    order: tuple[str, ...] = ("pore", "cbd", "am"),
    *,
    nbins: int = 256,
    max_samples: int = 4_000_000,
    seed: int = 0,
) -> np.ndarray:
    """Segment by multi-Otsu thresholds into canonical phase codes (0 pore, 1 AM, 2 CBD).

    Parameters
    ----------
    grey : array, (z, y, x)
    classes : int
        Number of grey classes (2 or 3 for electrodes).
    order : tuple of phase names
        Which phase each class is, by increasing grey value. In X-ray absorption contrast
        pores are darkest, carbon-binder intermediate and the transition-metal oxide
        brightest, hence the default ``("pore", "cbd", "am")``.

    Returns
    -------
    uint8 array of canonical codes (:data:`litomo.phases.PHASE_CODES`).

    Examples
    --------
    >>> g = np.repeat([0.0, 5.0, 10.0], 8).reshape(2, 3, 4)  # dark, middle, bright thirds
    >>> [int(multi_otsu_labels(g).ravel()[i]) for i in (0, 8, 16)]  # pore, CBD, AM
    [0, 2, 1]
    """
    if len(order) != classes:
        raise DataError(f"order names {len(order)} phases but classes={classes}")
    unknown = [p for p in order if p not in PHASE_CODES]
    if unknown or len(set(order)) != len(order):
        raise DataError(f"order must name distinct phases from {sorted(PHASE_CODES)}, got {order}")
    thresholds = multi_otsu_thresholds(grey, classes, nbins=nbins, max_samples=max_samples, seed=seed)
    idx = np.digitize(np.asarray(grey), thresholds)
    lut = np.array([PHASE_CODES[p] for p in order], dtype=np.uint8)
    return lut[idx]

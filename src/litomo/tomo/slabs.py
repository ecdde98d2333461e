"""Reconstruction of a slab of detector rows about a given rotation centre (any angle list).

Each slab ``(n_angles, rows, n)`` is padded so the axis is the middle column
(:func:`litomo.tomo.center.center_sinogram`) and reconstructed row by row with
:func:`litomo.tomo.recon.reconstruct_volume` (FBP with angular redundancy weighting, SIRT or TV).
Slabs are independent, so the workflow runs them in parallel through dask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from litomo.tomo.center import center_sinogram
from litomo.tomo.recon import reconstruct_volume


def slice_width(n_columns: int, center_px: float) -> int:
    """Edge length of the reconstructed slices for a detector of ``n_columns`` and an axis at ``center_px``.

    Examples
    --------
    >>> slice_width(640, 295.0), slice_width(64, 31.5)
    (689, 65)
    """
    c = float(center_px)
    return 2 * int(np.ceil(max(c, n_columns - 1 - c) - 1e-9)) + 1


def field_of_view_mask(n_columns: int, center_px: float) -> np.ndarray:
    """Pixels of a ``slice_width`` slice that every view saw: within ``min(c, n - 1 - c) + 0.5`` of the axis.

    Outside that circle a parallel-beam ray misses the detector for some views, so FBP there
    is not an estimate of the object (it is the edge-extended sinogram smeared into the corners:
    on a 64-px synthetic TXM series ~half the sample's attenuation, enough to move the AM
    threshold of the Li map; see docs/science.md, "Li map from projections").

    Examples
    --------
    >>> m = field_of_view_mask(5, 2.0)
    >>> m.shape, int(m.sum()), bool(m[2, 0]), bool(m[0, 0])
    ((5, 5), 21, True, False)
    """
    c = float(center_px)
    w = slice_width(n_columns, c)
    radius = min(c, n_columns - 1 - c) + 0.5
    yy, xx = np.mgrid[:w, :w] - (w - 1) / 2.0
    return np.hypot(yy, xx) <= radius


def reconstruct_slab(
    proj: np.ndarray,
    theta_deg: Any,
    center_px: float,
    method: str = "fbp",
    **kwargs: Any,
) -> np.ndarray:
    """Reconstruct ``(n_angles, rows, n)`` -log projections into ``(rows, w, w)`` slices.

    ``w = slice_width(n, center_px)``; the rotation axis is the slice centre. Keyword arguments
    go to the method (``n_iter``, ``tv_weight``, ``filter_name``, ...).

    Examples
    --------
    >>> from litomo.tomo.project import project_volume
    >>> vol = np.zeros((2, 33, 33), np.float32); vol[:, 10:20, 12:18] = 1
    >>> th = np.linspace(-120, 120, 241)
    >>> rec = reconstruct_slab(project_volume(vol, th), th, 16.0)
    >>> rec.shape, bool(abs(rec[:, 12:18, 13:17].mean() - 1) < 0.05)
    ((2, 33, 33), True)
    """
    p = np.asarray(proj, np.float32)
    sinos = center_sinogram(np.moveaxis(p, 1, 0), center_px)  # (rows, angles, w)
    return reconstruct_volume(np.moveaxis(sinos, 0, 1), theta_deg, method, **kwargs)

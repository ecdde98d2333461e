"""Scribbles (sparse training labels) held as the labelled voxels only.

A napari Labels layer or a painted TIFF is mostly zeros: training needs the flat indices and
values of the painted voxels, not the volume. :func:`sparse_labels` reads a volume (numpy,
dask, zarr) z-slab by z-slab and keeps only those, so memory follows the number of painted
voxels, not the size of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.errors import DataError


@dataclass(frozen=True)
class SparseLabels:
    """The non-zero voxels of a label volume.

    Attributes
    ----------
    shape : (z, y, x)
        Shape of the full volume.
    index : ndarray of int64
        Flat (C-order) indices of the labelled voxels, increasing.
    values : ndarray of int64
        Their labels (never 0).
    """

    shape: tuple[int, int, int]
    index: np.ndarray
    values: np.ndarray

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.values)


def _labelled(slab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices and int64 values of the non-zero voxels of a slab (only those are checked
    and converted: NaN is non-zero, so it is caught)."""
    if slab.dtype.kind not in "biuf":
        raise DataError(f"--labels: scribbles have non-integer dtype {slab.dtype}")
    flat = slab.reshape(-1)
    nz = np.flatnonzero(flat)
    vals = flat[nz]
    if vals.dtype.kind == "f" and not (np.all(np.isfinite(vals)) and np.all(vals == np.round(vals))):
        raise DataError("--labels: scribbles must hold integer class values (0 = unlabelled)")
    return nz, vals.astype(np.int64)


def sparse_labels(volume: Any, depth: int | None = None) -> SparseLabels:
    """The labelled (non-zero) voxels of ``volume``, read ``depth`` z-slices at a time.

    Parameters
    ----------
    volume : ndarray, dask or zarr array, (z, y, x)
        Integer labels, 0 = unlabelled (float volumes must hold whole numbers).
    depth : int, optional
        z-slices per read (default: the dask chunk depth, else 16).

    Examples
    --------
    >>> v = np.zeros((4, 3, 2), np.uint8); v[1, 2, 0] = 2; v[3, 0, 1] = 1
    >>> s = sparse_labels(v, depth=1)
    >>> s.shape, s.index.tolist(), s.values.tolist()
    ((4, 3, 2), [10, 19], [2, 1])
    """
    if isinstance(volume, SparseLabels):
        return volume
    if getattr(volume, "ndim", None) != 3:
        raise DataError(f"--labels: scribbles must be 3D (z, y, x), got shape {tuple(np.shape(volume))}")
    shape = tuple(int(n) for n in volume.shape)
    if depth is None:
        chunks = getattr(volume, "chunks", None)
        depth = int(max(chunks[0])) if chunks and isinstance(chunks[0], tuple) else 16
    plane = shape[1] * shape[2]
    index, values = [], []
    for z0 in range(0, shape[0], max(int(depth), 1)):
        nz, vals = _labelled(np.asarray(volume[z0 : z0 + depth]))
        index.append(nz + z0 * plane)
        values.append(vals)
    return SparseLabels(shape, np.concatenate(index).astype(np.int64), np.concatenate(values))  # type: ignore[arg-type]


__all__ = ["SparseLabels", "sparse_labels"]

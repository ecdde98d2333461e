"""Where a full-resolution output slab sits on a coarse displacement field, and the moving rows it reads.

Shared by the samplers of :mod:`litomo.resample` (trilinear) and :mod:`litomo.resample.cubic`;
re-exported by :mod:`litomo.resample`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.errors import LitomoError
from litomo.resample.samplers import linear_weights


def block_array(block: Any) -> np.ndarray:
    """``block`` as a C-contiguous 3D uint16 or float32 array (other dtypes become float32)."""
    block = np.asarray(block)
    if block.ndim != 3 or 0 in block.shape:
        raise LitomoError(f"block must be a non-empty 3D array, got shape {block.shape}")
    if block.dtype not in (np.uint16, np.float32):
        block = block.astype(np.float32)
    return np.ascontiguousarray(block)


@dataclass(frozen=True)
class FieldGrid:
    """A coarse displacement field and where a full-resolution output slab sits on it.

    Built by :func:`field_grid`; ``centres`` are the physical output-voxel centres (um) along
    z (the slab's rows), y and x, ``weights`` their :func:`linear_weights` into the field grid.
    """

    field: np.ndarray
    voxel_size_um: np.ndarray
    centres: tuple[np.ndarray, np.ndarray, np.ndarray]
    weights: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]

    def z_bounds(self) -> tuple[float, float]:
        """Lowest and highest moving-volume z index (voxel centres at integers) the slab samples.

        The upsampled z displacement is a convex combination of the field planes the slab's
        rows interpolate between, so their min/max bound it without evaluating it.
        """
        iz0, iz1, _ = self.weights[0]
        cz = self.centres[0]
        planes = self.field[0, int(iz0.min()) : int(iz1.max()) + 1]
        vz = self.voxel_size_um[0]
        return (cz[0] + float(planes.min())) / vz - 0.5, (cz[-1] + float(planes.max())) / vz - 0.5

    def moving_rows(self, n_moving: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of the moving volume the slab can touch (clipped to the volume).

        The upsampled z displacement is a convex combination of the field planes the slab's
        rows interpolate between, so their min/max bound it without evaluating it.
        """
        if self.centres[0].size == 0:
            return 0, 1
        z_min, z_max = self.z_bounds()
        lo = int(math.floor(z_min)) - 1
        hi = int(math.ceil(z_max)) + 2
        lo_c, hi_c = max(lo, 0), min(hi, n_moving)
        if hi_c <= lo_c:  # the whole slab maps outside the volume: the edge row is all it needs
            lo_c, hi_c = (0, 1) if hi <= 0 else (n_moving - 1, n_moving)
        return lo_c, hi_c


def field_grid(field_um: np.ndarray, field_voxel_size_um: Any, voxel_size_um: Any,
               z_range: tuple[int, int], out_shape_yx: tuple[int, int]) -> FieldGrid:
    """Validate a displacement field and place output slices ``z_range`` on its grid.

    Examples
    --------
    >>> g = field_grid(np.zeros((3, 2, 2, 2)), (0.7,) * 3, (0.1,) * 3, (0, 7), (14, 14))
    >>> g.moving_rows(14)  # rows 0-6 and one neighbour on each side
    (0, 8)
    """
    field = np.ascontiguousarray(field_um, dtype=np.float32)
    if field.ndim != 4 or field.shape[0] != 3:
        raise LitomoError(f"field_um must have shape (3, z, y, x), got {field.shape}")
    vs = np.asarray(voxel_size_um, float)
    fvs = np.asarray(field_voxel_size_um, float)
    if vs.shape != (3,) or fvs.shape != (3,) or (vs <= 0).any() or (fvs <= 0).any():
        raise LitomoError("voxel sizes must be 3 positive numbers (um)")
    z0, z1 = (int(v) for v in z_range)
    ny, nx = (int(v) for v in out_shape_yx)
    # physical output-voxel centres and their fractional indices into the field grid, exactly
    # as warp_slab computes them
    centres = ((np.arange(z0, z1) + 0.5) * vs[0], (np.arange(ny) + 0.5) * vs[1],
               (np.arange(nx) + 0.5) * vs[2])
    weights = tuple(linear_weights(c / fvs[i] - 0.5, field.shape[1 + i])
                    for i, c in enumerate(centres))
    return FieldGrid(field, vs, centres, weights)


def read_rows(moving: Any, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of a volume (numpy, dask or anything sliceable) as :func:`block_array`."""
    block = moving[lo:hi]
    if hasattr(block, "compute"):  # dask: read in this thread, no nested distributed compute
        block = block.compute(scheduler="synchronous")
    return block_array(block)


@dataclass(frozen=True)
class MovingRows:
    """Rows ``first..`` of a moving volume of ``n_rows`` rows, already read (:func:`read_moving_rows`).

    Sliceable along z like the volume itself (only within the rows held), so it can stand for
    the volume in :func:`warp_bin_field`: the file reads of the next slab can run in a thread
    while the kernel warps the current one.
    """

    first: int
    block: np.ndarray
    n_rows: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_rows, *self.block.shape[1:])

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi = rows.start or 0, self.n_rows if rows.stop is None else rows.stop
        if lo < self.first or hi > self.first + self.block.shape[0]:
            raise LitomoError(f"rows {lo}-{hi} were not read (held: {self.first}-{self.first + self.block.shape[0]})")
        return self.block[lo - self.first : hi - self.first]


def read_moving_rows(moving: Any, field_um: np.ndarray, field_voxel_size_um: Any, voxel_size_um: Any,
                     z_range: tuple[int, int], out_shape_yx: tuple[int, int]) -> MovingRows:
    """The rows of ``moving`` that :func:`warp_bin_field` of this slab reads, read now.

    Examples
    --------
    >>> mov = np.zeros((14, 14, 14), np.uint16)
    >>> held = read_moving_rows(mov, np.zeros((3, 2, 2, 2)), (0.7,) * 3, (0.1,) * 3, (0, 7), (14, 14))
    >>> held.first, held.block.shape, held.shape
    (0, (8, 14, 14), (14, 14, 14))
    """
    g = field_grid(field_um, field_voxel_size_um, voxel_size_um, z_range, out_shape_yx)
    if len(getattr(moving, "shape", ())) != 3:
        raise LitomoError("moving must be a 3D array")
    lo, hi = g.moving_rows(int(moving.shape[0]))
    return MovingRows(lo, read_rows(moving, lo, hi), int(moving.shape[0]))

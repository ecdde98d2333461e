"""The particle core: label validation, ids, voxel counts, centroids, sizes, boundary flags.

A *particle label volume* is an integer array indexed ``(z, y, x)`` with 0 = no particle and
1..N = particles (ids need not be contiguous; ids without voxels are absent). Every per-particle
table in litomo starts from :func:`particle_table` (one row per id present, id column
``particle``) and the analysis modules add their own columns to it:

============================  ===============================================================
module                        columns it adds
============================  ===============================================================
:mod:`litomo.metrics.particles`  shape: mesh area, sphericity, surface split, TPB length
:mod:`litomo.statistics`         Li: ``mean_li``, ``std_li``, ``li_rich_fraction``, surface activity
:mod:`litomo.damage`             cracks: hull volume, crack fraction, gap, damage index and class
:mod:`litomo.tomo.deadangle`     orientation of the long axis to the missing wedge
:mod:`litomo.evolution`          per-state values of a tracked particle (by id, via matches)
============================  ===============================================================

Geometry convention (shared with :mod:`litomo.register` and :mod:`litomo.resample`): voxel ``i``
along an axis of spacing ``s`` has its centre at ``(i + 0.5) * s`` um from the volume corner, so a
centroid is the mean voxel-centre position of the particle's voxels in um.

Base columns (:data:`BASE_COLUMNS`):

- ``particle``: the label id;
- ``n_voxels``: voxel count;
- ``volume_um3``: ``n_voxels`` times the voxel volume;
- ``eq_diameter_um``: equivalent-sphere diameter ``(6 V / pi)^(1/3)``;
- ``centroid_z_um, centroid_y_um, centroid_x_um``: voxel-centre centroid;
- ``touches_boundary``: the particle has a voxel on one of the six faces of the volume (it is
  cut by the field of view, so its size and shape are lower bounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from litomo.errors import DataError
from litomo.volume import as_voxel_size

__all__ = ["BASE_COLUMNS", "ID_COLUMN", "boundary_touching", "centroids_um", "check_particle_labels",
           "coarsen_labels", "d50_um", "equivalent_diameters_um", "particle_table", "voxel_counts"]

#: the one id column of every per-particle table
ID_COLUMN = "particle"
#: the columns :func:`particle_table` produces, in order
BASE_COLUMNS = ("particle", "n_voxels", "volume_um3", "eq_diameter_um", "centroid_z_um",
                "centroid_y_um", "centroid_x_um", "touches_boundary")


def check_particle_labels(labels: Any, *, shape: Sequence[int] | None = None,
                          name: str = "particle labels") -> np.ndarray:
    """A validated 3-D integer label volume (0 = background, ids >= 1); raises :class:`DataError`.

    ``bool`` arrays are accepted (one particle, id 1). ``shape``, when given, must match.

    Examples
    --------
    >>> check_particle_labels(np.zeros((2, 2, 2), np.uint16)).dtype
    dtype('uint16')
    >>> check_particle_labels(np.zeros((2, 2), int))
    Traceback (most recent call last):
    litomo.errors.DataError: particle labels must be a 3D (z, y, x) array, got shape (2, 2)
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise DataError(f"{name} must be a 3D (z, y, x) array, got shape {lab.shape}")
    if lab.dtype == bool:
        lab = lab.astype(np.uint8)
    if not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"{name} must be integers (0 = background), got dtype {lab.dtype}; "
                        "is it a greyscale image?")
    if shape is not None and lab.shape != tuple(shape):
        raise DataError(f"{name} of shape {lab.shape} do not match the other volume's {tuple(shape)}")
    if lab.size and lab.min() < 0:
        raise DataError(f"{name} must be >= 0 (0 = background)")
    return lab


def voxel_counts(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ids present (> 0, ascending) and their voxel counts.

    Examples
    --------
    >>> lab = np.zeros((1, 2, 3), np.int32); lab[0, 0, :2] = 4; lab[0, 1, 0] = 2
    >>> [a.tolist() for a in voxel_counts(lab)]
    [[2, 4], [1, 2]]
    """
    lab = check_particle_labels(labels)
    counts = np.bincount(lab.ravel().astype(np.intp, copy=False)) if lab.size else np.zeros(1, np.intp)
    ids = np.flatnonzero(counts[1:]) + 1
    return ids, counts[ids]


def _slice_sums(lab: np.ndarray, n1: int) -> np.ndarray:
    """Per-label sums ``(n1, 4)`` of z, y, x voxel indices and of voxel counts.

    Slice by slice: bincounts on contiguous data, (y, x) weights at one slice's size, instead of
    three volume-sized coordinate arrays.
    """
    nz, ny, nx = lab.shape
    yy = np.repeat(np.arange(ny, dtype=np.float64), nx)
    xx = np.tile(np.arange(nx, dtype=np.float64), ny)
    sums = np.zeros((n1, 4))
    for z in range(nz):
        s = lab[z].ravel().astype(np.intp, copy=False)
        c = np.bincount(s, minlength=n1)
        sums[:, 3] += c
        sums[:, 0] += z * c
        sums[:, 1] += np.bincount(s, weights=yy, minlength=n1)
        sums[:, 2] += np.bincount(s, weights=xx, minlength=n1)
    return sums


def _centres(sums: np.ndarray, v: Sequence[float]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (sums[:, :3] / sums[:, 3:] + 0.5) * np.asarray(v)


def centroids_um(labels: Any, voxel_size_um: float | Sequence[float] = 1.0,
                 ids: np.ndarray | None = None) -> np.ndarray:
    """Voxel-centre centroids ``(len(ids), 3)`` in um, z-first; NaN for ids without voxels.

    Examples
    --------
    >>> lab = np.zeros((2, 2, 2), np.int32); lab[1, :, 1] = 1
    >>> centroids_um(lab, 0.5).tolist()
    [[0.75, 0.5, 0.75]]
    """
    lab = check_particle_labels(labels)
    v = as_voxel_size(voxel_size_um)
    if ids is None:
        ids, _ = voxel_counts(lab)
    ids = np.asarray(ids, dtype=np.intp)
    n1 = int(max(int(lab.max()) if lab.size else 0, int(ids.max()) if ids.size else 0)) + 1
    return _centres(_slice_sums(lab, n1)[ids], v)


def boundary_touching(labels: Any) -> np.ndarray:
    """Sorted ids (> 0) of the labels that touch any of the six faces of the volume.

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), np.int32); lab[0, 2, 2] = 1; lab[2, 2, 2] = 2
    >>> boundary_touching(lab).tolist()
    [1]
    """
    lab = check_particle_labels(labels, name="label volume")
    faces = [lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]]
    ids = np.unique(np.concatenate([f.ravel() for f in faces]))
    return ids[ids > 0]


def equivalent_diameters_um(labels: Any, voxel_size_um: float | Sequence[float] = 1.0,
                            *, exclude_boundary: bool = True) -> np.ndarray:
    """Equivalent-sphere diameters ``(6 V / pi)^(1/3)`` (um) of the labelled particles, by id.

    Examples
    --------
    >>> lab = np.zeros((6, 6, 6), np.int32); lab[1:3, 1:3, 1:3] = 1; lab[5, 5, 5] = 2
    >>> equivalent_diameters_um(lab, 1.0).round(3).tolist()  # id 2 touches the boundary
    [2.481]
    """
    lab = check_particle_labels(labels)
    ids, counts = voxel_counts(lab)
    keep = ~np.isin(ids, boundary_touching(lab)) if exclude_boundary else np.ones(ids.size, bool)
    vs = as_voxel_size(voxel_size_um)
    vol = counts[keep] * (vs[0] * vs[1] * vs[2])
    return (6.0 * vol / np.pi) ** (1.0 / 3.0)


def d50_um(labels: Any, voxel_size_um: float | Sequence[float] = 1.0, *, by: str = "volume") -> float:
    """Median equivalent diameter (um) of interior particles, weighted by ``"volume"`` or ``"number"``.

    Examples
    --------
    >>> lab = np.zeros((9, 9, 9), np.int32); lab[1:3, 1:3, 1:3] = 1; lab[4:8, 4:8, 4:8] = 2
    >>> round(d50_um(lab, 1.0, by="number"), 2)
    2.48
    """
    if by not in ("volume", "number"):
        raise DataError(f"by must be 'volume' or 'number', got {by!r}")
    d = np.sort(equivalent_diameters_um(labels, voxel_size_um))
    if d.size == 0:
        return float("nan")
    w = np.ones_like(d) if by == "number" else d**3
    cdf = np.cumsum(w) / w.sum()
    return float(np.interp(0.5, cdf, d))


def coarsen_labels(labels: Any, fine_factor: int | Sequence[int], coarse_factor: int | Sequence[int],
                   coarse_shape: Sequence[int]) -> np.ndarray:
    """Carry labels from a fine grid to a coarser grid of the same volume by majority vote.

    Both grids bin one full-resolution grid, by ``fine_factor`` and ``coarse_factor`` voxels
    (the ratio need not be an integer, e.g. 2 and 7); each fine voxel votes for the coarse
    bin holding its centre, and each bin takes the most frequent non-zero label (0 where no
    labelled fine voxel falls in it). Separating particles on a fine grid and carrying them
    to the coarse grid splits touching particles that the coarse grid cannot resolve.

    Examples
    --------
    >>> fine = np.zeros((4, 4, 4), np.int32); fine[:, :, :2] = 1; fine[:, :, 3] = 2
    >>> coarsen_labels(fine, 1, 2, (2, 2, 2))[0, 0].tolist()
    [1, 2]
    """
    lab = check_particle_labels(labels, name="label volume")
    ff = np.broadcast_to(np.asarray(fine_factor, float), 3)
    cf = np.broadcast_to(np.asarray(coarse_factor, float), 3)
    shape = tuple(int(n) for n in coarse_shape)
    # coarse bin of each fine voxel centre, per axis
    idx = [np.floor((np.arange(n) + 0.5) * ff[a] / cf[a]).astype(np.int64) for a, n in enumerate(lab.shape)]
    keep = [i < n for i, n in zip(idx, shape, strict=True)]
    sub = lab[np.ix_(*[np.flatnonzero(k) for k in keep])]
    iz, iy, ix = (i[k] for i, k in zip(idx, keep, strict=True))
    flat = ((iz[:, None, None] * shape[1] + iy[None, :, None]) * shape[2] + ix[None, None, :])
    sel = sub > 0
    if not sel.any():
        return np.zeros(shape, np.int32)
    n_lab = int(sub.max()) + 1
    key = flat[sel] * n_lab + sub[sel].astype(np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    bins, labs = uniq // n_lab, uniq % n_lab
    # the most voted label of each bin: sort by (bin, count) and take each bin's last entry
    order = np.lexsort((counts, bins))
    last = np.r_[bins[order][1:] != bins[order][:-1], True]
    out = np.zeros(int(np.prod(shape)), np.int32)
    out[bins[order][last]] = labs[order][last]
    return out.reshape(shape)


def particle_table(labels: Any, voxel_size_um: float | Sequence[float] = 1.0, *,
                   boundary_ids: Any = None) -> pd.DataFrame:
    """The base per-particle table: one row per id present, columns :data:`BASE_COLUMNS`.

    Parameters
    ----------
    labels : array_like of int, (z, y, x)
        Particle labels, 0 = background.
    voxel_size_um : float or (z, y, x)
    boundary_ids : array_like of int, optional
        Ids to flag as touching the boundary (default: :func:`boundary_touching` of ``labels``;
        pass the ids of a finer grid when ``labels`` were carried onto a coarser one).

    Returns
    -------
    pandas.DataFrame
        Sorted by ``particle``; the column meanings are in the module docstring.

    Examples
    --------
    >>> lab = np.zeros((4, 4, 4), np.int32); lab[:2] = 1; lab[2:, 1:3, 1:3] = 2
    >>> t = particle_table(lab, 0.5)
    >>> t[["particle", "n_voxels", "centroid_z_um", "touches_boundary"]].values.tolist()
    [[1, 32, 0.5, True], [2, 8, 1.5, True]]
    """
    lab = check_particle_labels(labels)
    vs = as_voxel_size(voxel_size_um)
    sums = _slice_sums(lab, (int(lab.max()) if lab.size else 0) + 1)  # one pass: counts and centroids
    ids = np.flatnonzero(sums[1:, 3]) + 1
    counts = sums[ids, 3].astype(np.int64)
    bids = boundary_touching(lab) if boundary_ids is None else np.asarray(boundary_ids, dtype=np.int64)
    volume = counts * (vs[0] * vs[1] * vs[2])
    cent = _centres(sums[ids], vs)
    return pd.DataFrame({
        "particle": ids.astype(np.int64),
        "n_voxels": counts.astype(np.int64),
        "volume_um3": volume.astype(np.float64),
        "eq_diameter_um": (6.0 * volume / np.pi) ** (1.0 / 3.0),
        "centroid_z_um": cent[:, 0],
        "centroid_y_um": cent[:, 1],
        "centroid_x_um": cent[:, 2],
        "touches_boundary": np.isin(ids, bids),
    })

"""Triple-phase boundary (SPEC 3): voxel edges where the four voxels around the edge hold all three phases."""

from __future__ import annotations

import numpy as np

from litomo.errors import DataError
from litomo.metrics.fractions import check_labels
from litomo.volume import as_voxel_size


def _window_views(arr: np.ndarray, axis: int) -> list[np.ndarray]:
    """The four voxels around each interior edge parallel to ``axis``."""
    a1, a2 = [a for a in range(3) if a != axis]
    views = []
    for o1 in (0, 1):
        for o2 in (0, 1):
            sl = [slice(None)] * 3
            sl[a1] = slice(o1, arr.shape[a1] - 1 + o1)
            sl[a2] = slice(o2, arr.shape[a2] - 1 + o2)
            views.append(arr[tuple(sl)])
    return views


def tpb_edges(labels: np.ndarray) -> list[np.ndarray]:
    """Boolean TPB masks of the interior edges parallel to z, y and x.

    Element ``[k][i, j, l]`` is the edge parallel to axis ``k`` bounded by voxel ``(i, j, l)``
    and its +1 neighbours in the two other axes. Shapes: ``(nz, ny-1, nx-1)``,
    ``(nz-1, ny, nx-1)``, ``(nz-1, ny-1, nx)``.

    Examples
    --------
    >>> lab = np.array([[[0, 1], [2, 2]]], np.uint8)
    >>> int(tpb_edges(lab)[0].sum())
    1
    """
    labels = check_labels(labels)
    # one bit per phase; OR over the four voxels == 0b111 means all three phases meet
    bits = np.left_shift(np.uint8(1), labels)
    out = []
    for ax in range(3):
        v = _window_views(bits, ax)
        out.append((v[0] | v[1] | v[2] | v[3]) == 7)
    return out


def tpb_stats(labels: np.ndarray, voxel_size_um: float | tuple[float, float, float] = 1.0) -> dict[str, float]:
    """TPB length (um), density (um^-2, length per control volume) and edge fraction.

    ``edge_fraction`` is the number of TPB edges over all interior edges (the quantity
    ``taufactor.metrics.triple_phase_boundary`` returns).

    Examples
    --------
    >>> lab = np.zeros((4, 2, 2), np.uint8); lab[:, 0, 1] = 1; lab[:, 1, :] = 2
    >>> tpb_stats(lab, 0.5)["length_um"]  # a straight line through 4 voxels of 0.5 um
    2.0
    """
    labels = check_labels(labels)
    v = as_voxel_size(voxel_size_um)
    edges = tpb_edges(labels)
    counts = [int(e.sum()) for e in edges]
    n_edges = sum(e.size for e in edges)
    length = float(sum(c * v[k] for k, c in enumerate(counts)))
    volume = labels.size * v[0] * v[1] * v[2]
    return {
        "length_um": length,
        "density_um-2": length / volume,
        "edge_fraction": sum(counts) / n_edges if n_edges else float("nan"),
        "n_edges": int(sum(counts)),
    }


def tpb_density(labels: np.ndarray, voxel_size_um: float | tuple[float, float, float] = 1.0) -> float:
    """TPB density = total TPB edge length / control volume (um^-2).

    Examples
    --------
    >>> lab = np.zeros((4, 2, 2), np.uint8); lab[:, 0, 1] = 1; lab[:, 1, :] = 2
    >>> tpb_density(lab)  # 4 um of line in 16 um^3
    0.25
    """
    return tpb_stats(labels, voxel_size_um)["density_um-2"]


def tpb_per_particle(
    labels: np.ndarray,
    particle_labels: np.ndarray,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
) -> np.ndarray:
    """TPB length (um) touching each particle; index = particle label (index 0 unused).

    An edge is attributed to every distinct particle among its four voxels (at most two,
    since the other two voxels are pore and CBD), so per-particle lengths can sum to
    slightly more than the total when two particles meet at a TPB.

    Examples
    --------
    >>> lab = np.zeros((4, 2, 2), np.uint8); lab[:, 0, 1] = 1; lab[:, 1, :] = 2
    >>> tpb_per_particle(lab, (lab == 1).astype(np.int32)).tolist()
    [0.0, 4.0]
    """
    labels = check_labels(labels)
    particle_labels = np.asarray(particle_labels)
    if particle_labels.shape != labels.shape:
        raise DataError(f"particle labels {particle_labels.shape} and phase labels {labels.shape} differ in shape")
    v = as_voxel_size(voxel_size_um)
    n = int(particle_labels.max()) if particle_labels.size else 0
    out = np.zeros(n + 1)
    for ax, edge in enumerate(tpb_edges(labels)):
        if not edge.any():
            continue
        p = np.sort(np.stack([w[edge] for w in _window_views(particle_labels, ax)], axis=1), axis=1)
        keep = p != 0
        keep[:, 1:] &= p[:, 1:] != p[:, :-1]
        out += np.bincount(p[keep].astype(np.intp), minlength=n + 1)[: n + 1] * v[ax]
    return out

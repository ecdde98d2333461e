"""Known misregistration and sample motion of the synthetic operando dataset.

The post-edge volume of each state is the fixed reference of that state; the other energies are
misregistered relative to it by a known rigid transform (translation of a few voxels, rotation
below 1 degree) plus a smooth B-spline deformation of about a voxel. The whole sample also moves
rigidly between states (for particle tracking tests). The convention, also written to
``truth/transforms.json``::

    volume_e(x) = post_edge(c + R^T (x - c - t) + u(x))        (same state)
    post_edge_k(x) = post_edge_I(c + R_k^T (x - c - t_k))       (state motion)

with ``c`` the volume centre, ``t`` = ``translation_vox`` (z, y, x), ``R`` the rotation by
``rotation_deg`` about ``rotation_axis`` and ``u`` the deformation field (voxels). For a pure
translation the content of the moving volume is shifted by ``+t``. The sampling itself is
:func:`litomo.resample.kernels.affine_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass
class Transform:
    """Rigid transform + optional smooth deformation; see the module docstring for the convention."""

    translation_vox: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: float = 0.0
    rotation_axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    control: np.ndarray | None = None  # (3, n, n, n) displacement (voxels) on a coarse grid
    deformation_max_vox: float = 0.0

    @property
    def matrix(self) -> np.ndarray:
        a = np.asarray(self.rotation_axis, float)
        a = a / np.linalg.norm(a)
        th = math.radians(self.rotation_deg)
        k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        return np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)

    @property
    def is_identity(self) -> bool:
        return not any(self.translation_vox) and self.rotation_deg == 0 and self.control is None

    def to_json(self) -> dict[str, Any]:
        return {
            "translation_vox": [float(v) for v in self.translation_vox],
            "rotation_deg": float(self.rotation_deg),
            "rotation_axis": [float(v) for v in self.rotation_axis],
            "deformation_max_vox": float(self.deformation_max_vox),
        }

    def _weights(self, n_out: int, n_coarse: int) -> np.ndarray:
        """(n_coarse, n_out) linear-interpolation weights from a coarse axis to the full axis."""
        pos = np.linspace(0, n_coarse - 1, n_out)
        i0 = np.clip(np.floor(pos).astype(int), 0, n_coarse - 2)
        w1 = pos - i0
        w = np.zeros((n_coarse, n_out), np.float32)
        w[i0, np.arange(n_out)] = 1 - w1
        w[i0 + 1, np.arange(n_out)] += w1
        return w

    def deformation_samples(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The coarse samples (3, mz, my, mx) the deformation is interpolated from; a dummy
        (3, 1, 1, 1) array (no deformation) for a rigid transform."""
        if self.control is None:
            return np.zeros((3, 1, 1, 1), np.float32)
        self.displacement(0, 1, shape)  # fills the cache
        return self._field_cache[1]

    def displacement(self, z0: int, z1: int, shape: Sequence[int]) -> np.ndarray:
        """The deformation field ``u`` (3, z1 - z0, ny, nx) in voxels on the regular output grid.

        The cubic B-spline through the control points is sampled on a coarse grid (at most 33
        points per axis; the field is smooth on the control-point scale) and interpolated
        linearly and separably with matrix products, far cheaper than a per-voxel spline.
        """
        if self.control is None:
            return np.zeros((3, z1 - z0, *shape[1:]), np.float32)
        key = tuple(int(s) for s in shape)
        cache = getattr(self, "_field_cache", None)
        if cache is None or cache[0] != key:
            n = self.control.shape[1]
            m = [min(33, max(2, int(s))) for s in key]
            grid = np.meshgrid(*[np.linspace(0, n - 1, mi) for mi in m], indexing="ij")
            f = np.stack([ndimage.map_coordinates(self.control[i], grid, order=3, mode="nearest")
                          for i in range(3)]).astype(np.float32)
            ws = [self._weights(s, mi) for s, mi in zip(key, m, strict=True)]
            self._field_cache = (key, f, ws)
        _, f, (wz, wy, wx) = self._field_cache
        out = np.empty((3, z1 - z0, *key[1:]), np.float32)
        for i in range(3):
            a = np.tensordot(wz[:, z0:z1].T, f[i], axes=1)  # (nz, my, mx)
            a = a @ wx  # (nz, my, nx)
            out[i] = np.einsum("zyx,yY->zYx", a, wy, optimize=True)
        return out

    def pull(self, pts: np.ndarray, center: np.ndarray, shape: Sequence[int],
             u: np.ndarray | None = None) -> np.ndarray:
        """Map points ``(3, ...)`` of this transform's output frame to its input frame.

        ``u`` is the deformation at ``pts`` (from :meth:`displacement` when ``pts`` is the
        regular grid); without it the deformation is ignored.
        """
        d = pts - (center + np.asarray(self.translation_vox))[(slice(None),) + (None,) * (pts.ndim - 1)]
        out = np.tensordot(self.matrix.T, d, axes=1) + center[(slice(None),) + (None,) * (pts.ndim - 1)]
        if u is not None:
            out += u
        return out


def random_axis(rng: np.random.Generator) -> tuple[float, float, float]:
    a = rng.normal(size=3)
    return tuple(float(v) for v in a / np.linalg.norm(a))  # type: ignore[return-value]


def random_deformation(rng: np.random.Generator, amplitude_vox: float, n: int = 5) -> tuple[np.ndarray, float]:
    c = rng.normal(size=(3, n, n, n))
    c *= amplitude_vox / np.abs(c).max()
    return c, float(amplitude_vox)


def chain_affine(size: int, chain: list[Transform]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chain's rigid parts as one affine map ``x -> M x + v`` and the linear map ``L`` that
    carries the first transform's deformation through the later rotations."""
    center = np.full(3, (size - 1) / 2.0)
    mat, vec, lin = np.eye(3), np.zeros(3), np.eye(3)
    for j, t in enumerate(chain):
        if j > 0 and t.control is not None:
            raise AssertionError("only the first transform of a chain may be deformable")
        rt = t.matrix.T
        mat, vec = rt @ mat, rt @ vec + center - rt @ (center + np.asarray(t.translation_vox))
        lin = lin if j == 0 else rt @ lin
    return mat, vec, lin


def slab_points(size: int, margin: int, z0: int, z1: int, chain: list[Transform]) -> np.ndarray:
    """Object-grid coordinates (3, z1 - z0, n, n) sampled by output slab ``z0:z1``.

    The chain's rigid parts are composed into one affine map ``M x + v`` (evaluated by
    broadcasting, no per-point matrix products); the first transform's deformation is
    carried through the later rotations as ``L u(x)``.
    """
    n = size
    mat, vec, lin = chain_affine(size, chain)
    axes = (np.arange(z0, z1, dtype=np.float64)[:, None, None], np.arange(n, dtype=np.float64)[None, :, None],
            np.arange(n, dtype=np.float64)[None, None, :])
    pts = np.empty((3, z1 - z0, n, n), np.float64)
    for i in range(3):
        pts[i] = mat[i, 0] * axes[0] + mat[i, 1] * axes[1] + mat[i, 2] * axes[2] + (vec[i] + margin)
    if chain and chain[0].control is not None:
        u = chain[0].displacement(z0, z1, (size,) * 3)
        for i in range(3):
            for j in range(3):
                if lin[i, j] != 0:
                    pts[i] += lin[i, j] * u[j]
    return pts

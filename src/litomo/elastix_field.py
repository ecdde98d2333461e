"""Evaluate elastix transform parameter maps with numpy/scipy, without loading itk.

The full-resolution warp needs the displacement ``T(p) - p`` of the stored registration on
the registration grid. transformix computes it, but calling it means loading itk-elastix
(~17 s of CPU, ~750 MiB resident) in the process that then warps and separates particles.
The transforms litomo's registration produces are few and simple: an Euler (rigid) or
translation transform, then a cubic B-spline transform composed onto it; each is evaluated
here from its parameter map exactly as ITK/elastix define it, in float64:

- ``EulerTransform`` (ITK ``Euler3DTransform``/``Euler2DTransform``):
  ``T(p) = R (p - c) + c + t`` with ``R = Rz Rx Ry`` (``Rz Ry Rx`` with ``ComputeZYX``);
- ``TranslationTransform``: ``T(p) = p + t``;
- ``BSplineTransform`` (order 3): ``T(p) = p + sum_k c_k beta3(u - k)`` with ``u`` the
  continuous index of ``p`` on the control grid; that sum is
  :func:`scipy.ndimage.map_coordinates` of the coefficients with ``prefilter=False``; a point
  whose support leaves the control grid is not moved (ITK's valid region);
- maps in a list are composed (``HowToCombineTransforms = Compose``): the first one is
  applied first, ``T = T_n o ... o T_0``.

Anything else (similarity, affine, ``Add`` combination, rotated grids) returns None and the
caller falls back to transformix. ``tests/test_register.py`` checks this against
transformix's deformation field.
"""

from __future__ import annotations

import numpy as np

from litomo.elastix import ParameterMaps

#: z-slices evaluated at a time (bounds the float64 temporaries to a few MB per slice)
_SLAB = 8


def _floats(m: dict, key: str, default: list[str] | None = None) -> np.ndarray:
    return np.asarray([float(v) for v in m.get(key, default or [])], dtype=np.float64)


def _identity(m: dict, key: str, ndim: int) -> bool:
    d = _floats(m, key, [str(float(i == j)) for j in range(ndim) for i in range(ndim)])
    return d.size == ndim * ndim and np.allclose(d.reshape(ndim, ndim), np.eye(ndim), atol=1e-12)


def _euler_matrix(angles: np.ndarray, zyx: bool) -> np.ndarray:
    """ITK's Euler rotation matrix (x-first coordinates) of angles in radians."""
    if angles.size == 1:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx if zyx else rz @ rx @ ry


def _supported(m: dict, ndim: int) -> bool:
    kind = m.get("Transform", [""])[0]
    if int(float(m.get("FixedImageDimension", [ndim])[0])) != ndim:
        return False
    if m.get("HowToCombineTransforms", ["Compose"])[0] != "Compose":
        return False
    if kind == "BSplineTransform":
        return (int(m.get("BSplineTransformSplineOrder", ["3"])[0]) == 3
                and m.get("UseCyclicTransform", ["false"])[0] == "false" and _identity(m, "GridDirection", ndim))
    return kind in ("EulerTransform", "TranslationTransform")


def _apply(m: dict, pts: np.ndarray) -> np.ndarray:
    """``T(p)`` of one map at points ``pts`` of shape ``(ndim, ...)``, x-first, physical."""
    from scipy import ndimage as ndi

    ndim = pts.shape[0]
    par = _floats(m, "TransformParameters")
    kind = m["Transform"][0]
    if kind == "TranslationTransform":
        return pts + par.reshape((ndim,) + (1,) * (pts.ndim - 1))
    if kind == "EulerTransform":
        n_ang = 1 if ndim == 2 else 3
        rot = _euler_matrix(par[:n_ang], m.get("ComputeZYX", ["false"])[0] == "true")
        centre = _floats(m, "CenterOfRotationPoint", ["0"] * ndim).reshape((ndim,) + (1,) * (pts.ndim - 1))
        shift = par[n_ang:].reshape(centre.shape)
        return np.tensordot(rot, pts - centre, axes=1) + centre + shift
    size = [int(v) for v in m["GridSize"]]
    origin, spacing = _floats(m, "GridOrigin"), _floats(m, "GridSpacing")
    index = _floats(m, "GridIndex", ["0"] * ndim)
    coef = par.reshape((ndim, *reversed(size)))  # x-first components, each grid z-first
    u = [(pts[d] - origin[d]) / spacing[d] - index[d] for d in range(ndim)]
    coords = np.stack(u[::-1])  # map_coordinates wants the grid's (z, y, x) order
    if ndim == 3:  # all components at once, in parallel (scipy: one core, weights per component)
        from litomo.resample import bspline_sum

        return pts + bspline_sum(coef, coords)  # 0 where the support leaves the grid, as below
    disp = np.stack([ndi.map_coordinates(coef[d], coords, order=3, prefilter=False, mode="grid-constant")
                     for d in range(ndim)])
    # ITK moves no point whose 4-point support is not wholly on the control grid
    inside = np.ones(pts.shape[1:], bool)
    for d in range(ndim):
        inside &= (u[d] >= 1) & (u[d] < size[d] - 2)
    return pts + disp * inside


def displacement(maps: ParameterMaps, shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray | None:
    """``T(p) - p`` (um, z-first components, float32) at the voxel centres of a grid; None if unsupported.

    Parameters
    ----------
    maps : list of dict
        elastix transform parameter maps, applied in order (as transformix does).
    shape, spacing : tuple
        The grid (z-first) and its voxel size in um; voxel ``i`` has its centre at ``(i + 0.5) * s``.

    Returns
    -------
    numpy.ndarray or None
        ``(ndim, *shape)`` float32 displacement, or None when a map is of a kind evaluated
        only by transformix.

    Examples
    --------
    >>> m = {"Transform": ["TranslationTransform"], "TransformParameters": ["0.5", "0", "-1"],
    ...      "FixedImageDimension": ["3"]}
    >>> d = displacement([m], (2, 2, 2), (1.0, 1.0, 1.0))
    >>> d[:, 0, 0, 0].tolist()  # z-first: (tz, ty, tx)
    [-1.0, 0.0, 0.5]
    """
    ndim = len(shape)
    if not maps or not all(_supported(m, ndim) for m in maps):
        return None
    out = np.empty((ndim, *shape), np.float32)
    axes = [(np.arange(n, dtype=np.float64) + 0.5) * s for n, s in zip(shape, spacing, strict=True)]
    for z0 in range(0, shape[0], _SLAB):
        sub = [axes[0][z0:z0 + _SLAB], *axes[1:]]
        grid = np.stack(np.meshgrid(*sub, indexing="ij")[::-1])  # x-first points of the slab
        pts = grid
        for m in maps:
            pts = _apply(m, pts)
        out[:, z0:z0 + _SLAB] = (pts - grid)[::-1]
    return out

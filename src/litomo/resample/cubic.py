"""Cubic B-spline coefficients of the rows a slab needs, equal to scipy's of the whole volume.

``scipy.ndimage.map_coordinates(volume, coords, order=3, mode="nearest")`` edge-pads the volume by
:data:`PAD` voxels on every side and filters it along z, y and x (gain, then a causal and an
anticausal recursion with the pole ``sqrt(3) - 2`` and scipy's ``reflect`` initial values). A warp
that works slab by slab cannot filter the whole volume along z at once, and filtering only the
rows a slab reads (what :func:`litomo.resample.warp_slab` does) puts a seam into the result at
every slab boundary (up to a few % of the data range). The recursion forgets its start at
``|pole|^k``, so the z pass here runs over the slab's rows plus :data:`HALO` rows on each side
(``0.268^28 < 1e-16``) and starts exactly as scipy does where the window reaches the volume's end;
the y and x passes see whole lines and are scipy's. The evaluation (:func:`sample_cubic` in
:mod:`litomo.resample.kernels`) then gives scipy's whole-volume values to ~1e-15.
Written here because no library filters a z-window of a volume (scipy's filter needs whole lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from litomo.errors import LitomoError
from litomo.resample.grid import field_grid, read_rows
from litomo.resample.kernels import sample_cubic

#: scipy's prepad for ``mode="nearest"`` (``_prepad_for_spline_filter``)
PAD = 12
#: the cubic B-spline's pole, as scipy's ``get_filter_poles`` spells it
POLE = -0.267949192431122706472553658494127633
#: scipy's gain of one axis pass: (1 - z)(1 - 1/z)
GAIN = (1.0 - POLE) * (1.0 - 1.0 / POLE)
#: rows beyond a window the z recursion runs over: it forgets its start by |POLE|^28 < 1e-16
HALO = 28
#: terms of scipy's causal initial sum that are not below 1e-30 of the first
_INIT_TERMS = 64


@njit(inline="always", cache=True)
def _causal_init(c, n_line, z):  # pragma: no cover - jitted
    # scipy's _init_causal_reflect for lines along axis 0 (columns side by side) of n_line
    # elements, of which c holds the first c.shape[0] (all: the z^n terms too). Its sum's
    # factors z^i are below 1e-30 after 64 terms: cut there
    whole = c.shape[0] == n_line
    zn = z ** n_line if whole else 0.0
    last = min(c.shape[0], _INIT_TERMS)
    for x in range(c.shape[1]):
        c0 = c[0, x]
        acc = c0 + (zn * c[n_line - 1, x] if whole else 0.0)
        zi = z
        for i in range(1, last):
            t = c[i, x]
            if whole:
                t += zn * c[n_line - 1 - i, x]
            acc += zi * t
            zi *= z
        acc *= z / (1.0 - zn * zn)
        c[0, x] = acc + c0


@njit(inline="always", cache=True)
def _recursions(c, z):  # pragma: no cover - jitted
    # causal pass, anticausal initial value (scipy's reflect one, also the steady state of a
    # window that ends inside the line) and anticausal pass, along axis 0
    n, nx = c.shape
    for i in range(1, n):
        for x in range(nx):
            c[i, x] += z * c[i - 1, x]
    f = z / (z - 1.0)
    for x in range(nx):
        c[n - 1, x] *= f
    for i in range(n - 2, -1, -1):
        for x in range(nx):
            c[i, x] = z * (c[i + 1, x] - c[i, x])


@njit(parallel=True, nogil=True, cache=True)
def z_pass_rows(raw, raw_first, nz, w0, w1, p0, z, gain, out):  # pragma: no cover - jitted
    # out[k, PAD:-PAD, PAD:-PAD] = the z-filtered padded row p0 + k of the volume (its rows
    # raw_first.. are ``raw``), from the window of padded rows [w0, w1) that holds
    # [p0, p0 + len(out)) with HALO rows each side (clipped to the padded volume, whose rows
    # are the volume's clamped). Columns in chunks of y, one buffer per chunk (an allocation
    # per column cost more than the filtering)
    n_pad = nz + 2 * 12
    _, ny, nx = raw.shape
    w = w1 - w0
    step = 8
    for t in prange((ny + step - 1) // step):
        c = np.empty((w, nx))
        for y in range(t * step, min(t * step + step, ny)):
            for i in range(w):
                r = min(max(w0 + i - 12, 0), nz - 1) - raw_first
                for x in range(nx):
                    c[i, x] = raw[r, y, x] * gain
            if w0 == 0:
                _causal_init(c, n_pad, z)
            else:  # the steady state of a constant signal; its error decays as z^HALO
                f = 1.0 / (1.0 - z)
                for x in range(nx):
                    c[0, x] *= f
            _recursions(c, z)
            for k in range(out.shape[0]):
                for x in range(nx):
                    out[k, 12 + y, 12 + x] = c[p0 + k - w0, x]


@njit(parallel=True, nogil=True, cache=True)
def yx_pass_rows(coef, ny, nx, z, gain):  # pragma: no cover - jitted
    # each z-filtered row (coef[r, PAD:PAD + ny, PAD:PAD + nx]) edge-padded by PAD in y and x,
    # then filtered along y and along x (scipy's order; whole lines, scipy's initial values);
    # in place
    n, my, mx = coef.shape
    for r in prange(n):
        c = coef[r]
        for j in range(12, 12 + ny):
            for i in range(12):
                c[j, i] = c[j, 12]
            for i in range(12 + nx, mx):
                c[j, i] = c[j, 11 + nx]
        for j in range(my):
            src = min(max(j, 12), 11 + ny)
            if src != j:
                for i in range(mx):
                    c[j, i] = c[src, i]
        for j in range(my):
            for i in range(mx):
                c[j, i] *= gain
        _causal_init(c, my, z)
        _recursions(c, z)
        # along x: 8 rows at a time through their transposed view, so that the 8 recursions
        # interleave instead of each waiting on its own previous element
        for j0 in range(0, my, 8):
            v = c[j0 : min(j0 + 8, my)].T
            for i in range(mx):
                for j in range(v.shape[1]):
                    v[i, j] *= gain
            _causal_init(v, mx, z)
            _recursions(v, z)


@njit(parallel=True, nogil=True, cache=True)
def sample_rows(coef, sz, sy, sx, out):  # pragma: no cover - jitted
    # sample_cubic at points given in coef's own index frame (flat arrays)
    for i in prange(sz.size):
        out[i] = sample_cubic(coef, sz[i], sy[i], sx[i])


@dataclass(frozen=True)
class SplineRows:
    """Cubic B-spline coefficients of rows of a volume's edge-padded frame (:func:`spline_rows`).

    ``coef[k]`` is padded row ``first + k`` (volume row ``first + k - PAD``), of shape
    ``(ny + 2 PAD, nx + 2 PAD)``: scipy's ``spline_filter(np.pad(volume, PAD, "edge"), 3,
    mode="nearest")`` of the whole volume, those rows (to ~1e-15). ``n_rows``: the volume's z size.
    """

    first: int
    coef: np.ndarray
    n_rows: int

    def sample(self, src: Any) -> np.ndarray:
        """``map_coordinates(volume, src, order=3, mode="nearest")`` in float64, for points whose
        4x4x4 stencils lie in the rows held (volume voxel indices, z first)."""
        sz, sy, sx = (np.ascontiguousarray(np.asarray(s, np.float64).ravel()) for s in src)
        out = np.empty(sz.size, np.float64)
        sample_rows(self.coef, sz + (PAD - self.first), sy + PAD, sx + PAD, out)
        return out.reshape(np.shape(src[0]))


def spline_rows(moving: Any, z_min: float, z_max: float) -> SplineRows | None:
    """The coefficient rows cubic samples at volume z positions ``z_min..z_max`` read.

    Reads the rows of ``moving`` (numpy, dask or anything sliceable along z; uint16 and float32
    used as they are, other dtypes as float32, as the warp kernels do) those need plus
    :data:`HALO`; ``None`` where they hold a non-finite value (the spline would spread it along
    whole lines: the caller falls back to trilinear sampling, as :func:`warp_slab` does).

    Examples
    --------
    >>> from scipy import ndimage
    >>> v = np.random.default_rng(0).random((40, 9, 10)).astype(np.float32)
    >>> s = spline_rows(v, 20.0, 23.0)
    >>> pts = [np.array([20.3, 22.9]), np.array([-1.0, 4.5]), np.array([3.2, 9.7])]
    >>> ref = ndimage.map_coordinates(v, pts, order=3, mode="nearest", output=np.float64)
    >>> bool(np.allclose(s.sample(pts), ref, rtol=1e-13, atol=0))
    True
    """
    shape = tuple(int(n) for n in getattr(moving, "shape", ()))
    if len(shape) != 3 or 0 in shape:
        raise LitomoError(f"moving must be a non-empty 3D array, got shape {shape}")
    nz = shape[0]
    n_pad = nz + 2 * PAD
    # the stencil of z reaches floor(z) - 1 .. floor(z) + 2 (padded: + PAD); one row more each
    # side for rounding in the caller's coordinates
    p0 = min(max(math.floor(z_min) + PAD - 2, 0), n_pad - 1)
    p1 = max(min(math.floor(z_max) + PAD + 4, n_pad), p0 + 1)
    w0, w1 = max(p0 - HALO, 0), min(p1 + HALO, n_pad)
    lo, hi = min(max(w0 - PAD, 0), nz - 1), max(min(w1 - PAD, nz), 1)
    lo = min(lo, hi - 1)
    block = read_rows(moving, lo, hi)
    if block.dtype == np.float32 and not np.isfinite(block).all():
        return None
    coef = np.empty((p1 - p0, shape[1] + 2 * PAD, shape[2] + 2 * PAD), np.float64)
    z_pass_rows(block, lo, nz, w0, w1, p0, POLE, GAIN, coef)
    yx_pass_rows(coef, shape[1], shape[2], POLE, GAIN)
    return SplineRows(p0, coef, nz)


def read_spline_rows(moving: Any, field_um: np.ndarray, field_voxel_size_um: Any, voxel_size_um: Any,
                     z_range: tuple[int, int], out_shape_yx: tuple[int, int]) -> SplineRows | None:
    """The :func:`spline_rows` the cubic warp of output slices ``z_range`` through a field samples.

    Same arguments as :func:`litomo.resample.read_moving_rows`; computed ahead of
    :func:`litomo.resample.warp_bin_field` (``order=3``) in a helper thread, as those rows are.
    """
    g = field_grid(field_um, field_voxel_size_um, voxel_size_um, z_range, out_shape_yx)
    if g.centres[0].size == 0:
        return spline_rows(moving, 0.0, 0.0)
    return spline_rows(moving, *g.z_bounds())

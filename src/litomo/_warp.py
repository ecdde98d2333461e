"""Fast trilinear warping of full-resolution slabs, optionally binned on the fly.

``scipy.ndimage.map_coordinates`` holds the GIL and runs at ~14 Mvox/s (linear) on one core,
so warping a 1024^3 volume through a registration transform takes minutes. These numba kernels
do the same trilinear interpolation (``order=1, mode="nearest"``: coordinates are clamped to
the volume, i.e. outside voxels take the edge value) in parallel, and can accumulate straight
into the binned output, so the full-resolution warped slab is never stored.

Two ways in:

* :func:`warp_slab_linear` / :func:`warp_bin_slab` take the source fractional indices as
  full arrays (what :func:`litomo.register.warp_slab` computes) - simple, and what the tests
  compare with scipy;
* :func:`warp_bin_field` takes the coarse displacement field itself and evaluates its
  trilinear upsampling inside the kernel (one field row per output row), which avoids three
  slab-sized float64 coordinate arrays (~1.7 GB for a 70x1024x1024 slab) and their numpy
  passes; this is the one that makes a 1024^3 warp+bin take tens of seconds.

Without numba, the same functions fall back to numpy + scipy (same results, slow).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from litomo.errors import LitomoError
from litomo.register import _linear_weights

try:  # numba is optional: the fallback gives the same numbers, only slower
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "observed_mask", "set_threads", "warp_bin_field", "warp_bin_slab", "warp_slab_linear"]


# ---------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------

if HAVE_NUMBA:

    @njit(inline="always", fastmath=False, cache=True)
    def _axis_weight(s: float, n: int) -> tuple[int, int, float]:
        # clamping the coordinate before interpolating equals scipy's mode="nearest" for
        # order 1 (the virtual edge-extended neighbours all hold the edge value)
        p = min(max(s, 0.0), n - 1.0)
        i0 = min(int(math.floor(p)), n - 1)
        i1 = min(i0 + 1, n - 1)
        return i0, i1, p - i0

    @njit(inline="always", fastmath=False, cache=True)
    def _sample(block: Any, sz: float, sy: float, sx: float) -> float:
        nz, ny, nx = block.shape
        z0, z1, wz = _axis_weight(sz, nz)
        y0, y1, wy = _axis_weight(sy, ny)
        x0, x1, wx = _axis_weight(sx, nx)
        # scipy's order-1 form: sum over the 8 corners of (product of weights) * value
        vz = 1.0 - wz
        vy = 1.0 - wy
        vx = 1.0 - wx
        return (
            vz * (vy * (vx * float(block[z0, y0, x0]) + wx * float(block[z0, y0, x1]))
                  + wy * (vx * float(block[z0, y1, x0]) + wx * float(block[z0, y1, x1])))
            + wz * (vy * (vx * float(block[z1, y0, x0]) + wx * float(block[z1, y0, x1]))
                    + wy * (vx * float(block[z1, y1, x0]) + wx * float(block[z1, y1, x1])))
        )

    @njit(parallel=True, fastmath=False, cache=True)
    def _warp_rows(block, z_offset, src_z, src_y, src_x, out):  # pragma: no cover - jitted
        nz, ny, nx = out.shape
        for t in prange(nz * ny):
            z = t // ny
            y = t - z * ny
            for x in range(nx):
                out[z, y, x] = _sample(block, src_z[z, y, x] - z_offset, src_y[z, y, x],
                                       src_x[z, y, x])

    @njit(parallel=True, fastmath=False, cache=True)
    def _warp_bin_rows(block, z_offset, src_z, src_y, src_x, fz, fy, fx, out):  # pragma: no cover
        nbz, nby, nbx = out.shape
        inv = 1.0 / (fz * fy * fx)
        # one task per output bin row (bz, by): it owns out[bz, by, :], so no races
        for t in prange(nbz * nby):
            bz = t // nby
            by = t - bz * nby
            acc = np.zeros(nbx, np.float64)
            for dz in range(fz):
                z = bz * fz + dz
                for dy in range(fy):
                    y = by * fy + dy
                    for bx in range(nbx):  # bins outermost: no integer division per voxel
                        s = 0.0
                        for x in range(bx * fx, bx * fx + fx):
                            s += _sample(block, src_z[z, y, x] - z_offset, src_y[z, y, x],
                                         src_x[z, y, x])
                        acc[bx] += s
            for bx in range(nbx):
                out[bz, by, bx] = acc[bx] * inv

    @njit(fastmath=False, cache=True)
    def _field_bin_row(block, z_offset, field, centres_z, centres_y, centres_x, vs,
                       iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx,
                       fz, fy, fx, bz, by, acc, g, mask, use_mask, acc_m):  # pragma: no cover - jitted
        # one output bin row; a plain function rather than the prange body, which numba
        # optimises much worse (measured 3x slower per voxel). With use_mask, acc sums only the
        # voxels whose mask has bit 1 and acc_m those with bit 2 (mask rows = the slab's rows).
        nfx = field.shape[3]
        # reciprocals: three divides per voxel were a large share of the time (<=1 ulp change)
        rz, ry, rx = 1.0 / vs[0], 1.0 / vs[1], 1.0 / vs[2]
        acc[:] = 0.0
        acc_m[:] = 0.0
        for dz in range(fz):
            z = bz * fz + dz
            a0, a1, w0 = iz0[z], iz1[z], wz[z]
            for dy in range(fy):
                y = by * fy + dy
                b0, b1, w1 = iy0[y], iy1[y], wy[y]
                # the field upsampled along z then y for this output row, in float32 and in
                # the same operation order as register._upsample_linear
                for c in range(3):
                    for j in range(nfx):
                        lo = field[c, a0, b0, j] + w0 * (field[c, a1, b0, j] - field[c, a0, b0, j])
                        hi = field[c, a0, b1, j] + w0 * (field[c, a1, b1, j] - field[c, a0, b1, j])
                        g[c, j] = lo + w1 * (hi - lo)
                cz = centres_z[z]
                cy = centres_y[y]
                for bx in range(acc.shape[0]):  # bins outermost: no integer division per voxel
                    s = 0.0
                    sm = 0.0
                    for x in range(bx * fx, bx * fx + fx):
                        j0, j1, w2 = ix0[x], ix1[x], wx[x]
                        uz = g[0, j0] + w2 * (g[0, j1] - g[0, j0])
                        uy = g[1, j0] + w2 * (g[1, j1] - g[1, j0])
                        ux = g[2, j0] + w2 * (g[2, j1] - g[2, j0])
                        sz = ((cz + uz) * rz - 0.5) - z_offset
                        sy = (cy + uy) * ry - 0.5
                        sx = (centres_x[x] + ux) * rx - 0.5
                        v = _sample(block, sz, sy, sx)
                        if use_mask:
                            mk = mask[z, y, x]
                            if mk & 1:
                                s += v
                            if mk & 2:
                                sm += v
                        else:
                            s += v
                    acc[bx] += s
                    acc_m[bx] += sm

    @njit(parallel=True, fastmath=False, cache=True)
    def _warp_bin_field_rows(block, z_offset, field, centres_z, centres_y, centres_x, vs,
                             iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx,
                             fz, fy, fx, out, mask, use_mask, out_m):  # pragma: no cover - jitted
        nbz, nby, nbx = out.shape
        inv = 1.0 / (fz * fy * fx)
        # one task per output bin row (bz, by): it owns out[bz, by, :], so no races
        for t in prange(nbz * nby):
            bz = t // nby
            by = t - bz * nby
            acc = np.empty(nbx, np.float64)
            acc_m = np.empty(nbx, np.float64)
            g = np.empty((3, field.shape[3]), np.float32)
            _field_bin_row(block, z_offset, field, centres_z, centres_y, centres_x, vs,
                           iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx, fz, fy, fx, bz, by, acc, g,
                           mask, use_mask, acc_m)
            for bx in range(nbx):
                if use_mask:  # sums: the caller divides by the selected counts
                    out[bz, by, bx] = acc[bx]
                    out_m[bz, by, bx] = acc_m[bx]
                else:
                    out[bz, by, bx] = acc[bx] * inv


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _factors(factor: int | tuple[int, int, int]) -> tuple[int, int, int]:
    f = (factor,) * 3 if np.isscalar(factor) else tuple(factor)
    if len(f) != 3 or any(int(k) < 1 for k in f):
        raise LitomoError(f"bin factor must be 1 or 3 positive integers, got {factor!r}")
    return tuple(int(k) for k in f)  # type: ignore[return-value]


def _block_array(block: Any) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim != 3 or 0 in block.shape:
        raise LitomoError(f"block must be a non-empty 3D array, got shape {block.shape}")
    if block.dtype not in (np.uint16, np.float32):
        block = block.astype(np.float32)
    return np.ascontiguousarray(block)


def _coords(src_z: Any, src_y: Any, src_x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = [np.asarray(s) for s in (src_z, src_y, src_x)]
    if src[0].ndim != 3 or any(s.shape != src[0].shape for s in src):
        raise LitomoError("src_z, src_y, src_x must be 3D arrays of one shape, "
                          f"got {[s.shape for s in src]}")
    # float32 and float64 each get their own compiled kernel; anything else becomes float64
    return tuple(s if s.dtype in (np.float32, np.float64) else s.astype(np.float64)
                 for s in src)  # type: ignore[return-value]


def _bin_mean(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    from litomo.preprocess import bin_array

    return bin_array(a, f)


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------

def warp_slab_linear(block: Any, z_offset: int, src_z: Any, src_y: Any, src_x: Any) -> np.ndarray:
    """Trilinear resampling of ``block`` at given fractional voxel indices.

    Identical (to float32 rounding) to ``scipy.ndimage.map_coordinates(block,
    [src_z - z_offset, src_y, src_x], order=1, mode="nearest")``, but parallel.

    Parameters
    ----------
    block : (bz, by, bx) array, uint16 or float32 (others are converted)
        Rows ``[z_offset, z_offset + bz)`` of the moving volume.
    z_offset : int
        Moving-volume z index of ``block[0]``; ``src_z`` is in moving-volume indices.
    src_z, src_y, src_x : (nz, ny, nx) float arrays
        Source fractional voxel indices (voxel centres at integers) of each output voxel.
        Out-of-range indices take the nearest edge value.

    Returns
    -------
    numpy.ndarray
        float32 ``(nz, ny, nx)``.

    Examples
    --------
    >>> b = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> z = np.full((1, 1, 1), 0.5)
    >>> float(warp_slab_linear(b, 0, z, z, z)[0, 0, 0])
    3.5
    """
    block = _block_array(block)
    sz, sy, sx = _coords(src_z, src_y, src_x)
    if not HAVE_NUMBA:
        from scipy import ndimage

        return ndimage.map_coordinates(block.astype(np.float32), [sz - z_offset, sy, sx],
                                       order=1, mode="nearest").astype(np.float32)
    out = np.empty(sz.shape, np.float32)
    _warp_rows(block, float(z_offset), sz, sy, sx, out)
    return out


def warp_bin_slab(block: Any, z_offset: int, src_z: Any, src_y: Any, src_x: Any,
                  factor: int | tuple[int, int, int] = 7) -> np.ndarray:
    """Trilinear resampling (as :func:`warp_slab_linear`) followed by block-mean binning.

    The warped values are accumulated straight into the bins (float64 sums), so the
    full-resolution slab is never stored. Output voxels beyond whole bins are dropped, as in
    :func:`litomo.preprocess.bin_array`; NaN in ``block`` propagates into its bins.

    Parameters
    ----------
    block, z_offset, src_z, src_y, src_x
        As :func:`warp_slab_linear`.
    factor : int or (fz, fy, fx)
        Bin size (voxels).

    Returns
    -------
    numpy.ndarray
        float32 ``(nz // fz, ny // fy, nx // fx)``.

    Examples
    --------
    >>> b = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> z, y, x = (a.astype(float) for a in np.indices((2, 2, 2)))
    >>> warp_bin_slab(b, 0, z, y, x, 2).tolist()
    [[[3.5]]]
    """
    f = _factors(factor)
    block = _block_array(block)
    sz, sy, sx = _coords(src_z, src_y, src_x)
    shape = tuple(n // k for n, k in zip(sz.shape, f, strict=True))
    if not HAVE_NUMBA:
        return _bin_mean(warp_slab_linear(block, z_offset, sz, sy, sx), f)
    out = np.empty(shape, np.float32)
    if 0 in shape:
        return out
    _warp_bin_rows(block, float(z_offset), sz, sy, sx, f[0], f[1], f[2], out)
    return out


def _field_setup(field_um: np.ndarray, field_voxel_size_um: Any, voxel_size_um: Any,
                 z_range: tuple[int, int], out_shape_yx: tuple[int, int]) -> dict[str, Any]:
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
    # as litomo.register.warp_slab computes them
    centres = [(np.arange(z0, z1) + 0.5) * vs[0], (np.arange(ny) + 0.5) * vs[1],
               (np.arange(nx) + 0.5) * vs[2]]
    weights = [_linear_weights(c / fvs[a] - 0.5, field.shape[1 + a])
               for a, c in enumerate(centres)]
    return {"field": field, "vs": vs, "centres": centres, "weights": weights}


def _field_z_rows(s: dict[str, Any], n_moving: int) -> tuple[int, int]:
    """Rows [lo, hi) of the moving volume a slab can touch (clipped to the volume).

    The upsampled z displacement is a convex combination of field values of the field planes
    the slab's rows interpolate between, so their min/max bound it without evaluating it.
    """
    iz0, iz1, _ = s["weights"][0]
    cz = s["centres"][0]
    if cz.size == 0:
        return 0, 1
    planes = s["field"][0, int(iz0.min()) : int(iz1.max()) + 1]
    vz = s["vs"][0]
    lo = int(math.floor((cz[0] + float(planes.min())) / vz - 0.5)) - 1
    hi = int(math.ceil((cz[-1] + float(planes.max())) / vz - 0.5)) + 2
    lo_c, hi_c = max(lo, 0), min(hi, n_moving)
    if hi_c <= lo_c:  # the whole slab maps outside the volume: the edge row is all it needs
        lo_c, hi_c = (0, 1) if hi <= 0 else (n_moving - 1, n_moving)
    return lo_c, hi_c


def warp_bin_field(moving: Any, field_um: np.ndarray, field_voxel_size_um: Any,
                   voxel_size_um: Any, z_range: tuple[int, int], out_shape_yx: tuple[int, int],
                   factor: int | tuple[int, int, int] = 7, *,
                   valid: np.ndarray | None = None, interior: np.ndarray | None = None,
                   bits: np.ndarray | None = None) -> Any:
    """Warp output slices ``z_range`` through a coarse displacement field and bin them.

    Same transform and conventions as :func:`litomo.register.warp_slab` with ``order=1``
    (the field is upsampled trilinearly to each output voxel, the moving volume sampled
    trilinearly with edge clamping), followed by :func:`litomo.preprocess.bin_array`, in one
    parallel pass that stores neither the coordinates nor the full-resolution slab.

    Parameters
    ----------
    moving : array-like (numpy, dask or anything sliceable), (z, y, x)
        The full-resolution moving volume; only the rows the slab needs are read (uint16 and
        float32 are used as they are, other dtypes converted to float32).
    field_um : (3, z, y, x) float
        :func:`litomo.register.displacement_field` on a coarser grid of the same frame (um).
    field_voxel_size_um, voxel_size_um : (z, y, x)
        Voxel sizes of the field grid and of the full-resolution grid (um).
    z_range : (z0, z1)
        Full-resolution output slices; ``z1 - z0`` should be a multiple of the z factor.
    out_shape_yx : (ny, nx)
        In-plane full-resolution output size.
    factor : int or (fz, fy, fx)
        Bin size (voxels).
    valid, interior : bool arrays, optional
        Selections of output voxels (shape: the slab's whole bins at full resolution, in the
        output frame). ``valid``: the bin means are taken over these voxels only (NaN in bins
        without any). ``interior``: the means over ``interior & valid`` are returned too, from
        the same pass, as :func:`litomo.preprocess.bin_masked` of the warped slab would give.
    bits : uint8 array, optional
        Both selections at once, from :func:`selection_bits` (to build them once for several
        volumes warped onto the same slab); the interior means are then returned too.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        float32 ``((z1 - z0) // fz, ny // fy, nx // fx)``: the bin means, and with
        ``interior`` the interior means.

    Examples
    --------
    >>> mov = np.random.default_rng(0).random((14, 14, 14)).astype(np.float32)
    >>> zero = np.zeros((3, 2, 2, 2), np.float32)
    >>> out = warp_bin_field(mov, zero, (0.7,) * 3, (0.1,) * 3, (0, 14), (14, 14), 7)
    >>> bool(np.allclose(out, mov.reshape(2, 7, 2, 7, 2, 7).mean(axis=(1, 3, 5)), atol=1e-6))
    True
    """
    f = _factors(factor)
    s = _field_setup(field_um, field_voxel_size_um, voxel_size_um, z_range, out_shape_yx)
    if len(getattr(moving, "shape", ())) != 3:
        raise LitomoError("moving must be a 3D array")
    lo, hi = _field_z_rows(s, int(moving.shape[0]))
    block = moving[lo:hi]
    if hasattr(block, "compute"):  # dask: read in this thread, no nested distributed compute
        block = block.compute(scheduler="synchronous")
    block = _block_array(block)
    (iz0, iz1, wz), (iy0, iy1, wy), (ix0, ix1, wx) = s["weights"]
    cz, cy, cx = s["centres"]
    shape = (cz.size // f[0], cy.size // f[1], cx.size // f[2])
    out = np.empty(shape, np.float32)
    full = tuple(n * k for n, k in zip(shape, f, strict=True))
    both = bits is not None or interior is not None  # return the interior means too
    if bits is None and (valid is not None or interior is not None):
        bits = selection_bits(full, valid, interior)
    if bits is not None and bits.shape != full:
        raise LitomoError(f"selection of shape {bits.shape} does not cover the slab's bins {full}")
    if 0 in shape:
        return (out, out.copy()) if both else out
    if not HAVE_NUMBA:
        means = _warp_bin_field_numpy(block, lo, s, f, bits)
    else:
        sums = np.zeros(shape if bits is not None else (1, 1, 1), np.float32)
        _warp_bin_field_rows(block, float(lo), s["field"], cz, cy, cx, s["vs"],
                             iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx, f[0], f[1], f[2], out,
                             bits if bits is not None else np.zeros((1, 1, 1), np.uint8),
                             bits is not None, sums)
        means = out if bits is None else (_masked_mean(out, bits & 1, f), _masked_mean(sums, bits >> 1, f))
    return means if bits is None or both else means[0]


def selection_bits(shape: tuple[int, int, int], valid: np.ndarray | None = None,
                   interior: np.ndarray | None = None) -> np.ndarray:
    """Pack two voxel selections into one uint8 array: bit 1 = valid, bit 2 = interior & valid.

    Examples
    --------
    >>> selection_bits((1, 1, 3), np.array([[[1, 1, 0]]], bool), np.array([[[0, 1, 1]]], bool)).tolist()
    [[[1, 3, 0]]]
    """
    out = []
    for name, sel in (("valid", valid), ("interior", interior)):
        if sel is None:
            out.append(None)
            continue
        sel = np.asarray(sel, dtype=bool)[: shape[0], : shape[1], : shape[2]]
        if sel.shape != tuple(shape):
            raise LitomoError(f"{name} mask of shape {sel.shape} does not cover the slab's bins {tuple(shape)}")
        out.append(sel)
    v, i = out
    if v is None:
        bits = np.ones(shape, np.uint8)
    else:
        bits = np.ascontiguousarray(v).view(np.uint8).copy()
    if i is not None:
        bits |= (i if v is None else i & v).view(np.uint8) << 1
    return bits


def _masked_mean(sums: np.ndarray, mask: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    count = np.rint(_bin_mean(mask.astype(np.uint8, copy=False), f) * np.float32(np.prod(f)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, sums / count, np.nan).astype(np.float32)


def _warp_bin_field_numpy(block: np.ndarray, lo: int, s: dict[str, Any],
                          f: tuple[int, int, int], bits: np.ndarray | None = None) -> Any:
    """The numpy/scipy path of :func:`warp_bin_field` (same numbers, a few Mvox/s)."""
    from litomo.preprocess import bin_masked

    field, vs = s["field"], s["vs"]
    nz = len(s["centres"][0]) // f[0] * f[0]
    out, out_m = [], []
    for k in range(0, nz, f[0]):  # one bin layer at a time keeps the coordinate arrays small
        src = []
        for axis in range(3):
            u = field[axis]
            for ax, (i0, i1, w) in enumerate(s["weights"]):
                if ax == 0:
                    i0, i1, w = i0[k : k + f[0]], i1[k : k + f[0]], w[k : k + f[0]]
                shape = [1, 1, 1]
                shape[ax] = -1
                a, b = np.take(u, i0, axis=ax), np.take(u, i1, axis=ax)
                u = a + w.reshape(shape) * (b - a)
            c = s["centres"][axis][k : k + f[0]] if axis == 0 else s["centres"][axis]
            shape = [1, 1, 1]
            shape[axis] = -1
            src.append((c.reshape(shape) + u) / vs[axis] - 0.5)
        warped = warp_slab_linear(block, lo, *src)
        if bits is None:
            out.append(_bin_mean(warped, f))
            continue
        ny, nx = (n // k * k for n, k in zip(warped.shape[1:], f[1:], strict=True))
        b = bits[k : k + f[0]]
        out.append(bin_masked(warped[:, :ny, :nx], (b & 1).astype(bool), f)[0])
        out_m.append(bin_masked(warped[:, :ny, :nx], (b & 2).astype(bool), f)[0])
    if bits is None:
        return np.concatenate(out, axis=0)
    return np.concatenate(out, axis=0), np.concatenate(out_m, axis=0)


def observed_mask(field_um: np.ndarray, field_voxel_size_um: Any, voxel_size_um: Any,
                  z_range: tuple[int, int], out_shape_yx: tuple[int, int],
                  moving_shape: tuple[int, int, int]) -> np.ndarray:
    """Output voxels of a slab whose transformed position lies inside the moving volume.

    Near the faces of the field of view a translation makes part of the output map to points
    the moving volume never saw; resampling with edge clamping (as every warp here does)
    fills them with copies of the edge plane, which are not a measurement of that place. This
    marks them (False) so they can be left out. Only layers within the largest displacement
    of a face are evaluated (the interior is inside by construction), with the same field
    upsampling as :func:`warp_bin_field`.

    Returns
    -------
    bool array ``(z1 - z0, ny, nx)``.

    Examples
    --------
    >>> field = np.zeros((3, 2, 2, 2), np.float32); field[2] = 0.25  # +2.5 voxels along x
    >>> m = observed_mask(field, (0.7,) * 3, (0.1,) * 3, (0, 2), (3, 14), (14, 14, 14))
    >>> m[0, 0].astype(int).tolist()
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    """
    from litomo.register import _upsample_linear

    s = _field_setup(field_um, field_voxel_size_um, voxel_size_um, z_range, out_shape_yx)
    field, vs, centres = s["field"], s["vs"], s["centres"]
    fvs = np.asarray(field_voxel_size_um, float)
    out = np.ones(tuple(c.size for c in centres), bool)
    for axis in range(3):
        n_in = int(moving_shape[axis])
        reach = int(math.ceil(float(np.abs(field[axis]).max()) / vs[axis])) + 1
        # output indices (along this axis) whose voxel centre is within `reach` of either face
        # of the moving volume
        idx = np.arange(centres[axis].size)
        pos_in = centres[axis] / vs[axis] - 0.5
        near = idx[(pos_in < reach) | (pos_in > n_in - 1 - reach)]
        if near.size == 0:
            continue
        cent = [c if a != axis else c[near] for a, c in enumerate(centres)]
        pos = [c / fvs[a] - 0.5 for a, c in enumerate(cent)]
        # the few near-face positions first: the intermediate arrays stay a thin layer
        order = [axis] + [a for a in range(3) if a != axis]
        u = np.moveaxis(_upsample_linear(np.moveaxis(field[axis], order, (0, 1, 2)),
                                         tuple(pos[a] for a in order)), (0, 1, 2), order)
        shape = [1, 1, 1]
        shape[axis] = -1
        src = (cent[axis].reshape(shape) + u) / vs[axis] - 0.5
        inside = (src >= -0.5) & (src <= n_in - 0.5)
        sub = [slice(None)] * 3
        sub[axis] = near
        out[tuple(sub)] &= inside
    return out


def set_threads(n: int) -> None:
    """Threads the numba kernels use (no-op without numba)."""
    if HAVE_NUMBA:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))

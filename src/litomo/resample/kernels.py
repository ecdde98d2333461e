"""numba kernels of :mod:`litomo.resample` (trilinear sampling, warp + bin, affine pull).

``scipy.ndimage.map_coordinates`` holds the GIL and runs at ~14 Mvox/s (linear) on one core,
so warping a 1024^3 volume through a registration transform takes minutes. These kernels do the
same trilinear interpolation (``order=1, mode="nearest"``: coordinates are clamped to the volume,
i.e. outside voxels take the edge value) in parallel, and can accumulate straight into the
binned output, so the full-resolution warped slab is never stored. They take flat arrays and
scalars (numba cannot take dataclasses), hence their long argument lists; call them through the
wrappers in :mod:`litomo.resample`, which validate the inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

__all__ = ["affine_rows", "axis_weight", "bin_bits_rows", "box_mean_rows", "bspline3_rows", "field_bin_row", "sample_cubic", "sample_trilinear", "warp_bin_field_rows",
           "warp_bin_rows", "warp_rows"]


@njit(inline="always", fastmath=False, cache=True)
def axis_weight(s: float, n: int) -> tuple[int, int, float]:
    # clamping the coordinate before interpolating equals scipy's mode="nearest" for
    # order 1 (the virtual edge-extended neighbours all hold the edge value)
    p = min(max(s, 0.0), n - 1.0)
    i0 = min(int(math.floor(p)), n - 1)
    i1 = min(i0 + 1, n - 1)
    return i0, i1, p - i0

@njit(inline="always", fastmath=False, cache=True)
def sample_trilinear(block: Any, sz: float, sy: float, sx: float) -> float:
    nz, ny, nx = block.shape
    z0, z1, wz = axis_weight(sz, nz)
    y0, y1, wy = axis_weight(sy, ny)
    x0, x1, wx = axis_weight(sx, nx)
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
def warp_rows(block, z_offset, src_z, src_y, src_x, out):  # pragma: no cover - jitted
    nz, ny, nx = out.shape
    for t in prange(nz * ny):
        z = t // ny
        y = t - z * ny
        for x in range(nx):
            out[z, y, x] = sample_trilinear(block, src_z[z, y, x] - z_offset, src_y[z, y, x],
                                   src_x[z, y, x])

@njit(parallel=True, fastmath=False, cache=True)
def warp_bin_rows(block, z_offset, src_z, src_y, src_x, fz, fy, fx, out):  # pragma: no cover
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
                        s += sample_trilinear(block, src_z[z, y, x] - z_offset, src_y[z, y, x],
                                     src_x[z, y, x])
                    acc[bx] += s
        for bx in range(nbx):
            out[bz, by, bx] = acc[bx] * inv

@njit(fastmath=False, cache=True)
def field_bin_row(block, z_offset, yx_offset, order, field, centres_z, centres_y, centres_x, vs,
                   iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx,
                   fz, fy, fx, bz, by, acc, g, mask, use_mask):  # pragma: no cover - jitted
    # one output bin row; a plain function rather than the prange body, which numba
    # optimises much worse (measured 3x slower per voxel). acc[0] sums the voxels of each bin;
    # with use_mask, only those whose mask has bit 1, and acc[1] those with bit 2, acc[2] and
    # acc[3] count them (mask rows = the slab's rows). order 1: ``block`` = moving rows from
    # z_offset, trilinear; order 3: ``block`` = cubic spline coefficients (litomo.resample.cubic),
    # whose index frame is the volume's shifted by z_offset and yx_offset
    nfx = field.shape[3]
    # reciprocals: three divides per voxel were a large share of the time (<=1 ulp change)
    rz, ry, rx = 1.0 / vs[0], 1.0 / vs[1], 1.0 / vs[2]
    acc[:] = 0.0
    for dz in range(fz):
        z = bz * fz + dz
        a0, a1, w0 = iz0[z], iz1[z], wz[z]
        for dy in range(fy):
            y = by * fy + dy
            b0, b1, w1 = iy0[y], iy1[y], wy[y]
            # the field upsampled along z then y for this output row, in float32 and in
            # the same operation order as litomo.resample.upsample_linear
            for c in range(3):
                for j in range(nfx):
                    lo = field[c, a0, b0, j] + w0 * (field[c, a1, b0, j] - field[c, a0, b0, j])
                    hi = field[c, a0, b1, j] + w0 * (field[c, a1, b1, j] - field[c, a0, b1, j])
                    g[c, j] = lo + w1 * (hi - lo)
            cz = centres_z[z]
            cy = centres_y[y]
            for bx in range(acc.shape[1]):  # bins outermost: no integer division per voxel
                s = 0.0
                sm = 0.0
                n1 = 0
                n2 = 0
                for x in range(bx * fx, bx * fx + fx):
                    mk = mask[z, y, x] if use_mask else 1
                    if mk == 0:  # in neither selection: not sampled
                        continue
                    j0, j1, w2 = ix0[x], ix1[x], wx[x]
                    uz = g[0, j0] + w2 * (g[0, j1] - g[0, j0])
                    uy = g[1, j0] + w2 * (g[1, j1] - g[1, j0])
                    ux = g[2, j0] + w2 * (g[2, j1] - g[2, j0])
                    sz = ((cz + uz) * rz - 0.5) - z_offset
                    sy = (cy + uy) * ry - 0.5 - yx_offset
                    sx = (centres_x[x] + ux) * rx - 0.5 - yx_offset
                    if order == 3:
                        v = sample_cubic(block, sz, sy, sx)
                    else:
                        v = sample_trilinear(block, sz, sy, sx)
                    if use_mask:
                        if mk & 1:
                            s += v
                            n1 += 1
                        if mk & 2:
                            sm += v
                            n2 += 1
                    else:
                        s += v
                acc[0, bx] += s
                acc[1, bx] += sm
                acc[2, bx] += n1
                acc[3, bx] += n2

@njit(inline="always", cache=True)
def _mean_or_nan(total: float, count: float) -> float:
    return total / count if count > 0 else np.nan

@njit(parallel=True, fastmath=False, nogil=True, cache=True)
def warp_bin_field_rows(block, z_offset, yx_offset, order, field, centres_z, centres_y, centres_x, vs,
                         iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx,
                         fz, fy, fx, out, mask, use_mask, out_m):  # pragma: no cover - jitted
    # out: bin means (with use_mask: over the voxels with mask bit 1, NaN where none); out_m:
    # with use_mask, the means over those with bit 2. nogil: the caller prepares the next
    # slab's selections in another thread meanwhile
    nbz, nby, nbx = out.shape
    inv = 1.0 / (fz * fy * fx)
    # one task per output bin row (bz, by): it owns out[bz, by, :], so no races
    for t in prange(nbz * nby):
        bz = t // nby
        by = t - bz * nby
        acc = np.empty((4, nbx), np.float64)
        g = np.empty((3, field.shape[3]), np.float32)
        field_bin_row(block, z_offset, yx_offset, order, field, centres_z, centres_y, centres_x, vs,
                       iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx, fz, fy, fx, bz, by, acc, g,
                       mask, use_mask)
        for bx in range(nbx):
            if use_mask:
                out[bz, by, bx] = _mean_or_nan(acc[0, bx], acc[2, bx])
                out_m[bz, by, bx] = _mean_or_nan(acc[1, bx], acc[3, bx])
            else:
                out[bz, by, bx] = acc[0, bx] * inv

@njit(parallel=True, fastmath=False, nogil=True, cache=True)
def bin_bits_rows(block, bits, fz, fy, fx, out, out_m, count_m):  # pragma: no cover - jitted
    # bin means of ``block`` over its voxels with bit 1 of ``bits`` (out) and with bit 2 (out_m,
    # and their number, count_m), NaN in bins without any: what litomo.preprocess.bin_masked
    # gives for the two selections, in one parallel pass without the temporaries. ``block`` and
    # ``bits`` may extend beyond the bins of ``out``: those voxels are not read
    nbz, nby, nbx = out.shape
    for t in prange(nbz * nby):
        bz = t // nby
        by = t - bz * nby
        for bx in range(nbx):
            s = 0.0
            sm = 0.0
            n1 = 0
            n2 = 0
            for z in range(bz * fz, bz * fz + fz):
                for y in range(by * fy, by * fy + fy):
                    for x in range(bx * fx, bx * fx + fx):
                        mk = bits[z, y, x]
                        v = float(block[z, y, x])
                        if mk & 1:
                            s += v
                            n1 += 1
                        if mk & 2:
                            sm += v
                            n2 += 1
            out[bz, by, bx] = _mean_or_nan(s, n1)
            out_m[bz, by, bx] = _mean_or_nan(sm, n2)
            count_m[bz, by, bx] = n2


def affine_rows(block: np.ndarray, a: int, z0: int, z1: int, n: int, margin: int, mat: np.ndarray,
                vec: np.ndarray, lin: np.ndarray, field: np.ndarray, order: int, out: np.ndarray) -> None:
    """Pull-resample a cubic ``n^3`` output through an affine map plus a smooth deformation.

    Output voxel ``x`` (rows ``z0:z1`` go to ``out``, whose row 0 is ``z0``) samples ``block``
    (source rows from ``a``) at ``M x + v + margin + L u(x)``, where ``u`` is the trilinear
    interpolation of the coarse samples ``field`` (3, mz, my, mx) spread evenly over the output
    grid (a (3, 1, 1, 1) field means no deformation). ``order`` 0: nearest, 1: trilinear; edges
    clamp. Used by the synthetic operando generator (rigid motion + B-spline misregistration).
    """
    # always a read-only view: the streamed generator's rows are read-only (ElectrodeStream.rows),
    # the in-memory generator's writable, and numba compiles each kind apart (~0.8 s per dtype
    # in a fresh checkout)
    view = block.view()
    view.flags.writeable = False
    _affine_rows(view, a, z0, z1, n, margin, mat, vec, lin, field, order, out)


@njit(nogil=True, cache=True)
def _affine_rows(block, a, z0, z1, n, margin, mat, vec, lin, field, order, out):  # pragma: no cover - jitted
    nb0, nb1, nb2 = block.shape
    has_def = field.shape[1] > 1
    mz, my, mx = field.shape[1], field.shape[2], field.shape[3]
    sz, sy, sx = (mz - 1) / (n - 1), (my - 1) / (n - 1), (mx - 1) / (n - 1)
    for z in range(z0, z1):
        for y in range(n):
            for x in range(n):
                p0 = mat[0, 0] * z + mat[0, 1] * y + mat[0, 2] * x + vec[0] + margin - a
                p1 = mat[1, 0] * z + mat[1, 1] * y + mat[1, 2] * x + vec[1] + margin
                p2 = mat[2, 0] * z + mat[2, 1] * y + mat[2, 2] * x + vec[2] + margin
                if has_def:  # trilinear interpolation of the coarse deformation samples
                    fz, fy, fx = z * sz, y * sy, x * sx
                    iz, iy, ix = min(int(fz), mz - 2), min(int(fy), my - 2), min(int(fx), mx - 2)
                    wz, wy, wx = fz - iz, fy - iy, fx - ix
                    for c in range(3):
                        u = ((field[c, iz, iy, ix] * (1 - wx) + field[c, iz, iy, ix + 1] * wx) * (1 - wy)
                             + (field[c, iz, iy + 1, ix] * (1 - wx) + field[c, iz, iy + 1, ix + 1] * wx) * wy) * (1 - wz) \
                            + ((field[c, iz + 1, iy, ix] * (1 - wx) + field[c, iz + 1, iy, ix + 1] * wx) * (1 - wy)
                               + (field[c, iz + 1, iy + 1, ix] * (1 - wx) + field[c, iz + 1, iy + 1, ix + 1] * wx) * wy) * wz
                        p0 += lin[0, c] * u
                        p1 += lin[1, c] * u
                        p2 += lin[2, c] * u
                if order == 0:
                    i = min(max(int(math.floor(p0 + 0.5)), 0), nb0 - 1)
                    j = min(max(int(math.floor(p1 + 0.5)), 0), nb1 - 1)
                    k = min(max(int(math.floor(p2 + 0.5)), 0), nb2 - 1)
                    out[z - z0, y, x] = block[i, j, k]
                else:
                    p0 = min(max(p0, 0.0), nb0 - 1.0)
                    p1 = min(max(p1, 0.0), nb1 - 1.0)
                    p2 = min(max(p2, 0.0), nb2 - 1.0)
                    i, j, k = min(int(p0), nb0 - 2), min(int(p1), nb1 - 2), min(int(p2), nb2 - 2)
                    w0, w1, w2 = p0 - i, p1 - j, p2 - k
                    v = ((block[i, j, k] * (1 - w2) + block[i, j, k + 1] * w2) * (1 - w1)
                         + (block[i, j + 1, k] * (1 - w2) + block[i, j + 1, k + 1] * w2) * w1) * (1 - w0) \
                        + ((block[i + 1, j, k] * (1 - w2) + block[i + 1, j, k + 1] * w2) * (1 - w1)
                           + (block[i + 1, j + 1, k] * (1 - w2) + block[i + 1, j + 1, k + 1] * w2) * w1) * w0
                    out[z - z0, y, x] = v


@njit(inline="always", fastmath=False, cache=True)
def _cubic_weights(c: float) -> tuple[int, float, float, float, float]:
    # scipy's get_spline_interpolation_weights for order 3 (ni_splines.c), same operations in
    # the same order so the sums below round exactly as map_coordinates' do
    start = int(math.floor(c)) - 1
    x = c - math.floor(c)
    y = x
    z = 1.0 - x
    w1 = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0
    w2 = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0
    w0 = z * z * z / 6.0
    w3 = 1.0
    w3 -= w0
    w3 -= w1
    w3 -= w2
    return start, w0, w1, w2, w3


@njit(inline="always", fastmath=False, cache=True)
def _cubic_weights_mul(c: float) -> tuple[int, float, float, float, float]:
    # _cubic_weights with the three divisions by 6 as products with 1/6 (<= 1 ulp each): the
    # divisions were a large share of a warp's time
    f = math.floor(c)
    x = c - f
    z = 1.0 - x
    s = 1.0 / 6.0
    w1 = (x * x * (x - 2.0) * 3.0 + 4.0) * s
    w2 = (z * z * (z - 2.0) * 3.0 + 4.0) * s
    w0 = z * z * z * s
    return int(f) - 1, w0, w1, w2, 1.0 - w0 - w1 - w2


@njit(inline="always", fastmath=False, cache=True)
def sample_cubic(coef: Any, sz: float, sy: float, sx: float) -> float:
    # the cubic B-spline of coefficients ``coef`` at a point in its own index frame (within
    # ~1e-16 of scipy's sum). The 16 rows of 4 taps are accumulated as four x columns, each
    # row weighted by its z and y weights, and the columns by the x weights last: the four
    # running sums are independent, so the compiler keeps them in one SIMD register (a row's 4
    # taps are contiguous). Taps beyond the array take its edge (scipy's mode="nearest" on
    # the padded coefficients); the interior, nearly every point, skips the clamping
    lz, ly, lx = coef.shape
    z0, a0, a1, a2, a3 = _cubic_weights_mul(sz)
    y0, b0, b1, b2, b3 = _cubic_weights_mul(sy)
    x0, c0, c1, c2, c3 = _cubic_weights_mul(sx)
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    if z0 >= 0 and z0 + 3 < lz and y0 >= 0 and y0 + 3 < ly and x0 >= 0 and x0 + 3 < lx:
        for a in range(4):
            wa = a0 if a == 0 else (a1 if a == 1 else (a2 if a == 2 else a3))
            for b in range(4):
                w = wa * (b0 if b == 0 else (b1 if b == 1 else (b2 if b == 2 else b3)))
                s0 += w * coef[z0 + a, y0 + b, x0]
                s1 += w * coef[z0 + a, y0 + b, x0 + 1]
                s2 += w * coef[z0 + a, y0 + b, x0 + 2]
                s3 += w * coef[z0 + a, y0 + b, x0 + 3]
        return c0 * s0 + c1 * s1 + c2 * s2 + c3 * s3
    x1, x2, x3 = min(max(x0 + 1, 0), lx - 1), min(max(x0 + 2, 0), lx - 1), min(max(x0 + 3, 0), lx - 1)
    x0 = min(max(x0, 0), lx - 1)
    for a in range(4):
        za = min(max(z0 + a, 0), lz - 1)
        wa = a0 if a == 0 else (a1 if a == 1 else (a2 if a == 2 else a3))
        for b in range(4):
            yb = min(max(y0 + b, 0), ly - 1)
            w = wa * (b0 if b == 0 else (b1 if b == 1 else (b2 if b == 2 else b3)))
            s0 += w * coef[za, yb, x0]
            s1 += w * coef[za, yb, x1]
            s2 += w * coef[za, yb, x2]
            s3 += w * coef[za, yb, x3]
    return c0 * s0 + c1 * s1 + c2 * s2 + c3 * s3


@njit(nogil=True, fastmath=False, cache=True)
def cubic_rows(coef, pad, z0, lz, src_z, src_y, src_x, out):  # pragma: no cover - jitted
    # scipy.ndimage.map_coordinates(order=3, mode="nearest") evaluated on its own prefiltered,
    # edge-padded coefficients (``coef``): scipy's loop gathers the 64 coefficients through
    # generic strided offsets and runs at ~2 Mvox/s; this one is the same arithmetic (z, y, x
    # order of the 64 terms, product of the three weights, float64 sum) without the
    # bookkeeping; nogil, so the slabs of warp_and_bin run on all cores. ``coef`` holds rows
    # z0.. of the padded coefficients (``lz`` rows in all): only those the stencils reach
    nz, ny, nx = out.shape
    _, ly, lx = coef.shape
    wz = np.empty(4)
    wy = np.empty(4)
    wx = np.empty(4)
    iz = np.empty(4, np.intp)
    iy = np.empty(4, np.intp)
    ix = np.empty(4, np.intp)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                s, wz[0], wz[1], wz[2], wz[3] = _cubic_weights(src_z[z, y, x] + pad)
                for k in range(4):
                    iz[k] = min(max(s + k, 0), lz - 1) - z0
                s, wy[0], wy[1], wy[2], wy[3] = _cubic_weights(src_y[z, y, x] + pad)
                for k in range(4):
                    iy[k] = min(max(s + k, 0), ly - 1)
                s, wx[0], wx[1], wx[2], wx[3] = _cubic_weights(src_x[z, y, x] + pad)
                for k in range(4):
                    ix[k] = min(max(s + k, 0), lx - 1)
                t = 0.0
                for a in range(4):
                    for b in range(4):
                        for c in range(4):
                            t += coef[iz[a], iy[b], ix[c]] * wz[a] * wy[b] * wx[c]
                out[z, y, x] = t


@njit(parallel=True, fastmath=False, cache=True)
def bspline3_rows(coef, uz, uy, ux, out):  # pragma: no cover - jitted
    # sum_k coef[:, k] beta3(u - k) of every component of ``coef`` (c, gz, gy, gx) at points
    # (uz, uy, ux) in control-grid index units: scipy's map_coordinates(order=3,
    # prefilter=False) of each component, with the weights computed once per point for all
    # components (scipy computes them per call: 3x the work for a 3D field) and in parallel
    # (scipy holds one core). A point whose 4-point support leaves the grid gets 0 (ITK's
    # B-spline transform does not move it), so no boundary mode is needed.
    nc, gz, gy, gx = coef.shape
    n = uz.size
    for i in prange(n):
        z = uz[i]
        y = uy[i]
        x = ux[i]
        if not (z >= 1.0 and z < gz - 2 and y >= 1.0 and y < gy - 2 and x >= 1.0 and x < gx - 2):
            for c in range(nc):
                out[c, i] = 0.0
            continue
        sz, az0, az1, az2, az3 = _cubic_weights(z)
        sy, ay0, ay1, ay2, ay3 = _cubic_weights(y)
        sx, ax0, ax1, ax2, ax3 = _cubic_weights(x)
        wz = (az0, az1, az2, az3)
        wy = (ay0, ay1, ay2, ay3)
        wx = (ax0, ax1, ax2, ax3)
        for c in range(nc):
            t = 0.0
            for a in range(4):
                for b in range(4):
                    r = 0.0
                    for k in range(4):
                        r += coef[c, sz + a, sy + b, sx + k] * wx[k]
                    t += r * wz[a] * wy[b]
            out[c, i] = t


@njit(inline="always", cache=True)
def _above(halo, z, y, x, thr) -> bool:
    # a neighbour beyond the array counts as inside (interior_mask's border value 1)
    nz, ny, nx = halo.shape
    if z < 0 or z >= nz or y < 0 or y >= ny or x < 0 or x >= nx:
        return True
    return float(halo[z, y, x]) > thr

@njit(parallel=True, nogil=True, cache=True)
def interior_bits_rows(halo, offset, thr, valid, use_valid, bits):  # pragma: no cover - jitted
    # bits of selection_bits(valid, interior_mask(halo, thr, 1)[offset:][crop]) in one pass:
    # bit 1 = valid, bit 2 = valid and the voxel and its 6 face neighbours above thr
    nz, ny, nx = bits.shape
    for t in prange(nz * ny):
        z = t // ny
        y = t - z * ny
        h = z + offset
        for x in range(nx):
            v = 1
            if use_valid:
                v = 1 if valid[z, y, x] else 0
            inside = (v == 1 and float(halo[h, y, x]) > thr
                      and _above(halo, h - 1, y, x, thr) and _above(halo, h + 1, y, x, thr)
                      and _above(halo, h, y - 1, x, thr) and _above(halo, h, y + 1, x, thr)
                      and _above(halo, h, y, x - 1, thr) and _above(halo, h, y, x + 1, thr))
            bits[z, y, x] = v | (2 if inside else 0)


@njit(parallel=True, nogil=True, cache=True)
def box_mean_rows(block, out):  # pragma: no cover - jitted
    # 3x3x3 box mean, mode="nearest" (indices clamped): per output row, the 9 rows above and
    # below summed first (float64), then 3 neighbours along x
    nz, ny, nx = block.shape
    for t in prange(nz * ny):
        z = t // ny
        y = t - z * ny
        col = np.zeros(nx, np.float64)
        for dz in range(-1, 2):
            zz = min(max(z + dz, 0), nz - 1)
            for dy in range(-1, 2):
                yy = min(max(y + dy, 0), ny - 1)
                for x in range(nx):
                    col[x] += block[zz, yy, x]
        for x in range(nx):
            out[z, y, x] = (col[max(x - 1, 0)] + col[x] + col[min(x + 1, nx - 1)]) / 27.0

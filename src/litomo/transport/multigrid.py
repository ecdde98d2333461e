"""Matrix-free aggregation multigrid for 7-point conductance stencils on a voxel grid.

Why our own solver: pyamg (smoothed aggregation) spends ~half of a 256^3 tortuosity solve in
its single-threaded setup, runs its V-cycles on one core and stores an assembled matrix
(~100 bytes per unknown with its hierarchy). Here the structure of the problem does the work:

* the unknowns live on the voxel grid, so every level is stored as face-conductance arrays
  (``wz, wy, wx``: the face between a cell and its + neighbour) plus a Dirichlet conductance
  per cell, each with a scalar scale (:class:`Faces`); no sparse matrix, no index tables, and
  no diagonal array (it is the sum of the six faces and the Dirichlet term, recomputed where
  it is needed at no extra memory traffic: the same faces are read for the off-diagonal sum);
* on the fine grid of a voxel image every face is either 0 or the axis conductance, so the
  fine faces are stored once as uint8 0/1 arrays (4 bytes per voxel for all four); coarse
  levels hold float32 sums;
* aggregating 2x2x2 blocks with piecewise-constant interpolation gives a Galerkin coarse
  operator ``P^T A P`` that is again a 7-point stencil, whose face conductances are the sums
  of the fine faces between two blocks - the setup is a few array sums;
* smoothing is red-black Gauss-Seidel, every kernel of the iterations is a numba ``prange`` over
  z-planes (both cores work), and the fine residual is restricted on the fly (no full-size
  temporary);
* unsmoothed aggregation needs more than a V-cycle to converge independently of the grid
  size; in 3D a W-cycle costs only ~1.33x a V-cycle (the coarse grids are 8x smaller), and
  it is a fixed symmetric operator, so the outer conjugate gradients stay plain CG.

Precision: the preconditioner (all levels, the preconditioned residual ``z`` and the search
direction ``p``) is float32; the iterate ``x``, the residual ``r`` and every dot product are
float64, and ``A p`` is recomputed from ``p`` in float64 instead of being stored, so ``r``
stays the residual of ``x`` to float64 rounding (measured: the same tau and iteration counts
as the all-float64 solver, see docs/science.md). Memory: ~30 bytes per voxel in all.

Compilation: each ``parallel=True`` signature costs ~1.5-4 s of numba compilation in a fresh
checkout (the test suite's largest fixed cost), so the kernels see as few dtype combinations as
the solver allows: the right-hand side never enters numba (:func:`_scaled_rhs`), the two
kernels run once per level or solve (:func:`_coarsen_faces`, :func:`_flux_magnitude`) are
serial.

Cells whose diagonal is zero (solid, or not connected to both Dirichlet faces) are not
unknowns: every kernel leaves them at zero. Periodic faces wrap (``w[-1]`` is the wrap face);
non-periodic grids have ``w[-1] = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numba import njit, prange

_COARSEST_CELLS = 4096


@dataclass
class Faces:
    """A 7-point stencil on a grid: face arrays times scalar conductances.

    The conductance of the face between cell ``c`` and its + neighbour along z is
    ``gz * wz[c]`` (likewise y, x) and the Dirichlet conductance of ``c`` is ``gd * dirichlet[c]``.

    Examples
    --------
    >>> f = Faces(*(np.ones((2, 2, 2), np.uint8) for _ in range(4)), g=(1.0, 1.0, 1.0, 2.0))
    >>> f.shape
    (2, 2, 2)
    """

    wz: np.ndarray
    wy: np.ndarray
    wx: np.ndarray
    dirichlet: np.ndarray
    g: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.dirichlet.shape

    @property
    def args(self) -> tuple:
        """The kernel arguments ``(wz, wy, wx, dirichlet, gz, gy, gx, gd)``."""
        return (self.wz, self.wy, self.wx, self.dirichlet, *(float(v) for v in self.g))


# ---------------------------------------------------------------------------
# kernels (S = wz, wy, wx, dirichlet, gz, gy, gx, gd: the stencil of one level)
# ---------------------------------------------------------------------------


# inline="always" (into numba's IR): as an ordinary numba call it compiled ~40 % faster in the
# kernels calling it, but the 256^3 solve took ~15 % more CPU (measured, session 9)
@njit(inline="always")
def _cell(x, wz, wy, wx, dr, gz, gy, gx, gd, k, j, i, km, kp, jm, jp, nx):  # pragma: no cover
    """``(diagonal, off-diagonal sum of x)`` of cell (k, j, i)."""
    im = i - 1 if i > 0 else nx - 1
    ip = i + 1 if i < nx - 1 else 0
    azp, azm = gz * wz[k, j, i], gz * wz[km, j, i]
    ayp, aym = gy * wy[k, j, i], gy * wy[k, jm, i]
    axp, axm = gx * wx[k, j, i], gx * wx[k, j, im]
    d = gd * dr[k, j, i] + azp + azm + ayp + aym + axp + axm
    off = (azp * x[kp, j, i] + azm * x[km, j, i] + ayp * x[k, jp, i] + aym * x[k, jm, i]
           + axp * x[k, j, ip] + axm * x[k, j, im])
    return d, off


@njit(parallel=True, cache=True)
def _residual(x, wz, wy, wx, dr, gz, gy, gx, gd, out):  # pragma: no cover - numba
    """``out -= A x`` on the unknowns, 0 elsewhere (``out`` holds the scaled right-hand side on
    entry, see :func:`_scaled_rhs`); returns ``||out||^2``."""
    nz, ny, nx = x.shape
    s = 0.0
    for k in prange(nz):
        km = k - 1 if k > 0 else nz - 1
        kp = k + 1 if k < nz - 1 else 0
        t = 0.0
        for j in range(ny):
            jm = j - 1 if j > 0 else ny - 1
            jp = j + 1 if j < ny - 1 else 0
            for i in range(nx):
                d, off = _cell(x, wz, wy, wx, dr, gz, gy, gx, gd, k, j, i, km, kp, jm, jp, nx)
                rv = out[k, j, i] - (d * x[k, j, i] - off) if d > 0 else 0.0
                out[k, j, i] = rv
                t += rv * rv
        s += t
    return s


def _scaled_rhs(b: np.ndarray, b_scale: float, out: np.ndarray) -> float:
    """``out = b_scale * b`` in float64, plane by plane; returns ``||out||^2``.

    In numpy rather than inside :func:`_residual`, so the numba kernels never see ``b``: its
    dtype (uint8 0/1 for the diffusion grid, float64 for the electrode, float32 for multiphase
    fields) would otherwise add one compiled signature each (~2-4 s of numba compilation per
    signature in a fresh checkout). One plane at a time: no full-size temporary.
    """
    s = 0.0
    for k in range(b.shape[0]):
        np.multiply(b[k], b_scale, out=out[k], dtype=np.float64)
        s += float(np.vdot(out[k], out[k]))
    return s


@njit(parallel=True, cache=True)
def _p_ap(p, wz, wy, wx, dr, gz, gy, gx, gd):  # pragma: no cover - numba
    """``p . A p`` without storing ``A p``."""
    nz, ny, nx = p.shape
    s = 0.0
    for k in prange(nz):
        km = k - 1 if k > 0 else nz - 1
        kp = k + 1 if k < nz - 1 else 0
        t = 0.0
        for j in range(ny):
            jm = j - 1 if j > 0 else ny - 1
            jp = j + 1 if j < ny - 1 else 0
            for i in range(nx):
                d, off = _cell(p, wz, wy, wx, dr, gz, gy, gx, gd, k, j, i, km, kp, jm, jp, nx)
                if d > 0:
                    pv = np.float64(p[k, j, i])
                    t += pv * (d * pv - off)
        s += t
    return s


@njit(parallel=True, cache=True)
def _cg_update(x, r, p, alpha, wz, wy, wx, dr, gz, gy, gx, gd):  # pragma: no cover - numba
    """``x += alpha p; r -= alpha A p`` (``A p`` recomputed); returns ``||r||^2``."""
    nz, ny, nx = x.shape
    s = 0.0
    for k in prange(nz):
        km = k - 1 if k > 0 else nz - 1
        kp = k + 1 if k < nz - 1 else 0
        t = 0.0
        for j in range(ny):
            jm = j - 1 if j > 0 else ny - 1
            jp = j + 1 if j < ny - 1 else 0
            for i in range(nx):
                d, off = _cell(p, wz, wy, wx, dr, gz, gy, gx, gd, k, j, i, km, kp, jm, jp, nx)
                if d > 0:
                    pv = np.float64(p[k, j, i])
                    x[k, j, i] += alpha * pv
                    rv = r[k, j, i] - alpha * (d * pv - off)
                    r[k, j, i] = rv
                    t += rv * rv
        s += t
    return s


@njit(inline="always")
def _gs_plane(x, b, wz, wy, wx, dr, gz, gy, gx, gd, k, color):  # pragma: no cover - numba
    nz, ny, nx = x.shape
    km = k - 1 if k > 0 else nz - 1
    kp = k + 1 if k < nz - 1 else 0
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        jp = j + 1 if j < ny - 1 else 0
        for i in range((color + k + j) & 1, nx, 2):
            d, off = _cell(x, wz, wy, wx, dr, gz, gy, gx, gd, k, j, i, km, kp, jm, jp, nx)
            if d > 0:
                x[k, j, i] = (b[k, j, i] + off) / d


@njit(parallel=True, cache=True)
def _gs_color(x, b, wz, wy, wx, dr, gz, gy, gx, gd, color):  # pragma: no cover - numba
    """One colour of a red-black Gauss-Seidel sweep (cells with ``(k + j + i) % 2 == color``).

    Same-colour cells are never face neighbours, except across a periodic wrap of odd length;
    the last plane is therefore done after the parallel loop, so no two threads ever update
    neighbours (deterministic results).
    """
    nz = x.shape[0]
    for k in prange(nz - 1):
        _gs_plane(x, b, wz, wy, wx, dr, gz, gy, gx, gd, k, color)
    _gs_plane(x, b, wz, wy, wx, dr, gz, gy, gx, gd, nz - 1, color)


@njit(parallel=True, cache=True)
def _residual_restrict(b, x, wz, wy, wx, dr, gz, gy, gx, gd, fz, fy, fx, out):  # pragma: no cover
    """``out = P^T (b - A x)`` for blocks of ``fz x fy x fx`` cells; the fine residual is never stored."""
    nz, ny, nx = x.shape
    cz, cy, cx = out.shape
    for kc in prange(cz):
        for jc in range(cy):
            for ic in range(cx):
                s = 0.0
                for k in range(kc * fz, min(kc * fz + fz, nz)):
                    km = k - 1 if k > 0 else nz - 1
                    kp = k + 1 if k < nz - 1 else 0
                    for j in range(jc * fy, min(jc * fy + fy, ny)):
                        jm = j - 1 if j > 0 else ny - 1
                        jp = j + 1 if j < ny - 1 else 0
                        for i in range(ic * fx, min(ic * fx + fx, nx)):
                            d, off = _cell(x, wz, wy, wx, dr, gz, gy, gx, gd, k, j, i, km, kp, jm, jp, nx)
                            if d > 0:
                                s += b[k, j, i] - (d * x[k, j, i] - off)
                out[kc, jc, ic] = s


@njit(parallel=True, cache=True)
def _prolong_add(e, fz, fy, fx, x, wz, wy, wx, dr):  # pragma: no cover - numba
    """``x += P e`` on the unknowns (cells with a non-zero face or Dirichlet term)."""
    nz, ny, nx = x.shape
    for k in prange(nz):
        kc = k // fz
        km = k - 1 if k > 0 else nz - 1
        for j in range(ny):
            jc = j // fy
            jm = j - 1 if j > 0 else ny - 1
            for i in range(nx):
                im = i - 1 if i > 0 else nx - 1
                if (dr[k, j, i] > 0 or wz[k, j, i] > 0 or wz[km, j, i] > 0 or wy[k, j, i] > 0
                        or wy[k, jm, i] > 0 or wx[k, j, i] > 0 or wx[k, j, im] > 0):
                    x[k, j, i] += e[kc, jc, i // fx]


@njit(cache=True)  # serial: once per level; parallel=True cost ~2 s more compilation per signature
def _coarsen_faces(wz, wy, wx, dr, gz, gy, gx, gd, fz, fy, fx, cwz, cwy, cwx, cdir):  # pragma: no cover
    """Galerkin coarse stencil: sums of the fine faces between blocks, and of Dirichlet terms."""
    nz, ny, nx = dr.shape
    cz, cy, cx = cdir.shape
    for kc in prange(cz):
        k0, k1 = kc * fz, min(kc * fz + fz, nz)
        for jc in range(cy):
            j0, j1 = jc * fy, min(jc * fy + fy, ny)
            for ic in range(cx):
                i0, i1 = ic * fx, min(ic * fx + fx, nx)
                sd = 0.0
                sz = 0.0
                sy = 0.0
                sx = 0.0
                for k in range(k0, k1):
                    for j in range(j0, j1):
                        for i in range(i0, i1):
                            sd += dr[k, j, i]
                        sx += wx[k, j, i1 - 1]
                    for i in range(i0, i1):
                        sy += wy[k, j1 - 1, i]
                for j in range(j0, j1):
                    for i in range(i0, i1):
                        sz += wz[k1 - 1, j, i]
                cdir[kc, jc, ic] = gd * sd
                cwz[kc, jc, ic] = gz * sz
                cwy[kc, jc, ic] = gy * sy
                cwx[kc, jc, ic] = gx * sx


@njit(parallel=True, cache=True)
def _dot(a, b):  # pragma: no cover - numba
    """``a . b`` accumulated in float64 (no temporary)."""
    nz, ny, nx = a.shape
    s = 0.0
    for k in prange(nz):
        t = 0.0
        for j in range(ny):
            for i in range(nx):
                t += np.float64(a[k, j, i]) * np.float64(b[k, j, i])
        s += t
    return s


@njit(parallel=True, cache=True)
def _xpby(z, beta, p):  # pragma: no cover - numba
    """``p = z + beta p``."""
    nz, ny, nx = z.shape
    for k in prange(nz):
        for j in range(ny):
            for i in range(nx):
                p[k, j, i] = z[k, j, i] + beta * p[k, j, i]


# ---------------------------------------------------------------------------
# hierarchy and cycle
# ---------------------------------------------------------------------------


@dataclass
class Level:
    """One multigrid level: its stencil, the block size towards the next level, work arrays."""

    faces: Faces
    factors: tuple[int, int, int] = (1, 1, 1)
    x: np.ndarray | None = None  # work arrays of the coarse levels (float32)
    b: np.ndarray | None = None
    lu: object | None = None  # coarsest level: factorised active block
    active: np.ndarray | None = None


def _factorise_coarsest(lev: Level) -> None:
    """Sparse LU (float64) of the active cells of the coarsest grid."""
    f = lev.faces
    gz, gy, gx, gd = f.g
    ws = [np.asarray(w, np.float64) * s for w, s in zip((f.wz, f.wy, f.wx), (gz, gy, gx), strict=True)]
    diag = np.asarray(f.dirichlet, np.float64) * gd
    for d, w in enumerate(ws):
        diag += w + np.roll(w, 1, axis=d)
    active = diag > 0
    n = int(active.sum())
    index = np.full(f.shape, -1, np.int64)
    index[active] = np.arange(n)
    rows, cols, vals = [index[active]], [index[active]], [diag[active]]
    for d, w in enumerate(ws):
        nb = np.roll(index, -1, axis=d)
        ok = (index >= 0) & (nb >= 0) & (w > 0)
        a, c, v = index[ok], nb[ok], w[ok]
        rows += [a, c]
        cols += [c, a]
        vals += [-v, -v]
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    lev.active = active
    lev.lu = spla.splu(A) if n else None


def build_hierarchy(faces: Faces) -> list[Level]:
    """Levels from the fine stencil down to <= 4096 cells (factorised there).

    Coarse levels are float32 (the preconditioner does not need more, measured).
    """
    levels = [Level(faces)]
    while True:
        lev = levels[-1]
        shape = lev.faces.shape
        if math.prod(shape) <= _COARSEST_CELLS or max(shape) < 2:
            break
        f = tuple(2 if s >= 2 else 1 for s in shape)
        lev.factors = f
        cshape = tuple(-(-s // fi) for s, fi in zip(shape, f, strict=True))
        cw = [np.empty(cshape, np.float32) for _ in range(4)]
        _coarsen_faces(*lev.faces.args, *f, *cw)
        nxt = Level(Faces(*cw), x=np.zeros(cshape, np.float32), b=np.zeros(cshape, np.float32))
        levels.append(nxt)
    _factorise_coarsest(levels[-1])
    return levels


def _smooth(lev: Level, x: np.ndarray, b: np.ndarray, first: int) -> None:
    _gs_color(x, b, *lev.faces.args, first)
    _gs_color(x, b, *lev.faces.args, 1 - first)


def _cycle(levels: list[Level], li: int, x: np.ndarray, b: np.ndarray, gamma: int) -> None:
    """Approximately solve ``A_li x = b`` starting from ``x`` (in place)."""
    lev = levels[li]
    if lev.lu is not None or li == len(levels) - 1:
        x[...] = 0.0
        if lev.lu is not None:
            x[lev.active] = lev.lu.solve(b[lev.active].astype(np.float64))
        return
    nxt = levels[li + 1]
    _smooth(lev, x, b, 0)
    _residual_restrict(b, x, *lev.faces.args, *lev.factors, nxt.b)
    nxt.x[...] = 0.0
    for _ in range(gamma if li + 2 < len(levels) else 1):  # the coarsest solve is exact: once
        _cycle(levels, li + 1, nxt.x, nxt.b, gamma)
    f = lev.faces
    _prolong_add(nxt.x, *lev.factors, x, f.wz, f.wy, f.wx, f.dirichlet)
    _smooth(lev, x, b, 1)  # reversed colour order keeps the cycle symmetric


def pcg(
    levels: list[Level],
    b: np.ndarray,
    x: np.ndarray,
    rtol: float,
    maxiter: int,
    callback: Callable[[int, float], None] | None = None,
    gamma: int = 2,
    b_scale: float = 1.0,
) -> tuple[np.ndarray, int, float]:
    """Conjugate gradients preconditioned by one multigrid cycle (W for ``gamma=2``).

    Solves ``A x = b_scale * b`` in place on ``x`` (float64 grid, zero outside the unknowns;
    ``b`` may be a 0/1 uint8 grid). ``callback(iteration, relative_residual)`` is called after
    every iteration. Returns ``(x, iterations, relative residual ||b - A x|| / ||b||)``.
    """
    fine = levels[0].faces.args
    r = np.empty(x.shape, np.float64)
    bnorm = math.sqrt(_scaled_rhs(b, float(b_scale), r)) or 1.0
    rr = _residual(x, *fine, r)
    z = np.zeros(x.shape, np.float32)
    p = np.zeros(x.shape, np.float32)
    rz_old = 1.0
    it = 0
    while math.sqrt(rr) / bnorm > rtol and it < maxiter:
        z[...] = 0.0
        _cycle(levels, 0, z, r, gamma)
        rz = _dot(r, z)
        beta = rz / rz_old if it > 0 else 0.0
        _xpby(z, beta, p)
        pq = _p_ap(p, *fine)
        if pq <= 0:  # exact solution reached (or breakdown): stop
            break
        alpha = rz / pq
        rr = _cg_update(x, r, p, alpha, *fine)
        rz_old = rz
        it += 1
        if callback is not None:
            callback(it, math.sqrt(rr) / bnorm)
    del z, p
    _scaled_rhs(b, float(b_scale), r)
    return x, it, math.sqrt(_residual(x, *fine, r)) / bnorm


# serial: once per solve (~0.2 s at 256^3); saves ~2 s of compilation per signature
@njit(cache=True)
def _flux_magnitude(c, wz, wy, wx, dr, gz, gy, gx, gd, axis, az, ay, ax, out):  # pragma: no cover
    nz, ny, nx = c.shape
    n_axis = c.shape[axis]
    for k in prange(nz):
        km = k - 1 if k > 0 else nz - 1
        kp = k + 1 if k < nz - 1 else 0
        for j in range(ny):
            jm = j - 1 if j > 0 else ny - 1
            jp = j + 1 if j < ny - 1 else 0
            for i in range(nx):
                im = i - 1 if i > 0 else nx - 1
                ip = i + 1 if i < nx - 1 else 0
                v = c[k, j, i]
                fz = gz * (wz[k, j, i] * (v - c[kp, j, i]) + wz[km, j, i] * (c[km, j, i] - v))
                fy = gy * (wy[k, j, i] * (v - c[k, jp, i]) + wy[k, jm, i] * (c[k, jm, i] - v))
                fx = gx * (wx[k, j, i] * (v - c[k, j, ip]) + wx[k, j, im] * (c[k, j, im] - v))
                q = gd * dr[k, j, i]
                if q > 0:  # the reservoir faces: c = 1 before index 0, c = 0 after the last
                    pos = k if axis == 0 else (j if axis == 1 else i)
                    extra = q * (1.0 - v) if pos == 0 else (q * v if pos == n_axis - 1 else 0.0)
                    if axis == 0:
                        fz += extra
                    elif axis == 1:
                        fy += extra
                    else:
                        fx += extra
                out[k, j, i] = 0.5 * math.sqrt((fz / az) ** 2 + (fy / ay) ** 2 + (fx / ax) ** 2)


def flux_magnitude(c: np.ndarray, faces: Faces, axis: int, areas_um2: tuple[float, float, float]) -> np.ndarray:
    """Local flux-density magnitude (float32) of the potential ``c`` on ``faces``.

    Per direction, the mean of the flux through the cell's two faces divided by the face area;
    a Dirichlet term along ``axis`` is a reservoir at 1 before index 0 and at 0 after the last
    index. Cells with no face are 0.

    Examples
    --------
    >>> one = np.ones((3, 1, 1), np.uint8); zero = np.zeros((3, 1, 1), np.uint8)
    >>> wz = one.copy(); wz[-1] = 0; dr = zero.copy(); dr[0] = dr[-1] = 1
    >>> c = np.array([5, 3, 1], float).reshape(3, 1, 1) / 6  # linear, flux 1/3 per cell
    >>> flux_magnitude(c, Faces(wz, zero, zero, dr, (1, 1, 1, 2)), 0, (1, 1, 1)).ravel().round(4)
    array([0.3333, 0.3333, 0.3333], dtype=float32)
    """
    out = np.empty(c.shape, np.float32)
    _flux_magnitude(c, *faces.args, int(axis), *(float(a) for a in areas_um2), out)
    return out

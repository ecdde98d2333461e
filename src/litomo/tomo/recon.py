"""Parallel-beam reconstruction from arbitrary angle lists, slice by slice on the CPU.

Methods
-------
* **FBP** (:func:`reconstruct_fbp`): ramp or Shepp-Logan filter. Each view is weighted by its
  angular quadrature weight (:func:`angular_weights`): the width of its cell among all view
  directions folded modulo 180 degrees, with gaps capped at the nominal step. For a complete
  180-degree scan all weights are equal (plain FBP); for scans over more than 180 degrees the
  views in the doubly covered band get half weight (SPEC 4b redundant-angle weighting); for a
  missing wedge the views at the wedge edges are *not* inflated.
* **SIRT** (:func:`reconstruct_sirt`): ``x <- max(0, x + C A^T R (b - A x))`` with ``R``, ``C`` the
  inverse row and column sums. Needs no redundancy weighting.
* **TV** (:func:`reconstruct_tv`): ``min 1/2 ||A x - b||^2 + lam TV(x)`` subject to ``x >= 0``
  by Chambolle-Pock (Sidky, Jorgensen & Pan 2012, isotropic TV), a few tens of iterations.

astra-toolbox is used for its 2D CPU projectors; its SIRT/FBP algorithm objects are not, so that
the weighting, the non-negativity and the fallback backend share one code path. FBP by default
back-projects whole slabs at once with :mod:`litomo.tomo.backproject` (numba, astra's geometry);
``backend="astra"``/``"skimage"`` selects the per-slice projectors instead.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from litomo.errors import DataError, LitomoError
from litomo.progress import ProgressCallback
from litomo.tomo.project import Projector2D, check_angles

log = logging.getLogger(__name__)

FILTERS = ("ramp", "shepp-logan")
METHODS = ("fbp", "sirt", "tv")


def angular_weights(theta_deg: Any, *, redundancy: bool = True) -> np.ndarray:
    """Quadrature weight (radians) of each view of a parallel-beam scan.

    Directions are folded modulo 180 degrees; each view gets half the distance to its two
    neighbouring directions, with every gap capped at the nominal angular step (the median
    gap of the sorted angles), so missing-wedge edges are not over-weighted. Views that
    duplicate a direction (360-degree scans, the overlap of a 240-degree scan) share its cell.

    Parameters
    ----------
    theta_deg : array-like
        Projection angles in degrees.
    redundancy : bool
        If False, every view gets the nominal step (plain FBP, double-weighting redundant views).

    Examples
    --------
    >>> w = angular_weights(np.arange(-120, 120, 1.0))
    >>> bool(np.isclose(w.sum(), np.pi)), bool(np.isclose(w[0], w[-1]))
    (True, True)
    """
    th = check_angles(theta_deg)
    srt = np.sort(th)
    gaps = np.diff(srt)
    step = float(np.median(gaps[gaps > 1e-9])) if np.any(gaps > 1e-9) else 1.0
    if not redundancy:
        return np.full(th.size, np.deg2rad(step))
    d = np.mod(th, 180.0)
    order = np.argsort(d, kind="stable")
    ds = d[order]
    nxt = np.roll(ds, -1) - ds
    nxt[-1] += 180.0
    nxt = np.minimum(nxt, step)
    prv = np.roll(nxt, 1)
    w = np.empty(th.size)
    w[order] = 0.5 * (nxt + prv)
    return np.deg2rad(w)


def _filter_sinogram(sino: np.ndarray, filter_name: str) -> np.ndarray:
    """Apply the ramp (or Shepp-Logan) filter along the detector axis, edge-extended."""
    if filter_name not in FILTERS:
        raise LitomoError(f"unknown FBP filter {filter_name!r}; use one of {FILTERS}")
    n = sino.shape[-1]
    size = max(64, int(2 ** np.ceil(np.log2(2 * n))))
    # Spatial-domain ramp (Kak & Slaney eq. 61) avoids the DC bias of a sampled |f| ramp.
    k = np.concatenate([np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)])
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1.0 / (np.pi * k) ** 2
    ramp = np.real(np.fft.fft(f))
    if filter_name == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        ramp[1:] *= np.sin(omega) / omega
    from scipy import fft as sfft

    # Edge extension to the FFT length (half on each side), as algotom's FBP does: on truncated
    # data (a sample wider than the field of view) zero padding makes a step at the detector edge
    # that the ramp turns into a bright rim and a cupped background; on untruncated data the
    # edges are ~0 and both paddings agree.
    left = (size - n) // 2
    pad = [(0, 0)] * (sino.ndim - 1) + [(left, size - n - left)]
    padded = np.pad(np.asarray(sino, np.float32), pad, mode="edge")
    # real FFTs in float32 (the ramp is real and even): ~3x cheaper than complex float64 FFTs
    spec = sfft.rfft(padded, axis=-1)
    spec *= ramp[: size // 2 + 1].astype(np.float32)
    return sfft.irfft(spec, n=size, axis=-1)[..., left : left + n]


def _check_sino(sino: Any, theta: np.ndarray) -> np.ndarray:
    s = np.asarray(sino, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != theta.size:
        raise DataError(f"sinogram must be (n_angles={theta.size}, n_detector), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise DataError("sinogram contains NaN or inf (flat/dark correction gone wrong?)")
    return s


def reconstruct_fbp(
    sino: np.ndarray,
    theta_deg: Any,
    *,
    filter_name: str = "ramp",
    redundancy_weighting: bool = True,
    backend: str | None = None,
) -> np.ndarray:
    """Filtered back-projection of one sinogram ``(n_angles, n)`` -> slice ``(n, n)``.

    Parameters
    ----------
    sino : ndarray (n_angles, n)
        Line integrals in pixel units (e.g. -log transmission).
    theta_deg : array-like
        Angle of each row in degrees.
    filter_name : {"ramp", "shepp-logan"}
    redundancy_weighting : bool
        Weight views by :func:`angular_weights` (default). False gives plain FBP, which
        double-weights the overlap of scans over more than 180 degrees.
    backend : str, optional
        Projector backend, see :class:`litomo.tomo.project.Projector2D`.

    Returns
    -------
    ndarray (n, n), float32: attenuation per pixel length.

    Examples
    --------
    >>> from litomo.tomo.project import Projector2D
    >>> th = np.linspace(0, 180, 90, endpoint=False)
    >>> img = np.zeros((32, 32)); img[12:20, 12:20] = 1
    >>> rec = reconstruct_fbp(Projector2D(32, th).forward(img), th)
    >>> bool(abs(rec[14:18, 14:18].mean() - 1) < 0.1)
    True
    """
    th = check_angles(theta_deg)
    s = _check_sino(sino, th)
    if backend is None:
        return _fbp_stack(s[None], th, filter_name, redundancy_weighting)[0]
    P = Projector2D(s.shape[1], th, backend, use_matrix=False)
    return _fbp(P, s, filter_name, redundancy_weighting)


def _fbp_stack(sinos: np.ndarray, theta_deg: np.ndarray, filter_name: str, redundancy_weighting: bool) -> np.ndarray:
    """FBP of ``(k, n_angles, n)`` sinograms sharing one geometry -> ``(k, n, n)`` (numba back-projection)."""
    from litomo.tomo.backproject import backproject_stack

    w = angular_weights(theta_deg, redundancy=redundancy_weighting).astype(np.float32)
    filt = _filter_sinogram(sinos, filter_name) * w[:, None]
    return backproject_stack(filt, theta_deg)


def _fbp(P: Projector2D, s: np.ndarray, filter_name: str, redundancy_weighting: bool) -> np.ndarray:
    w = angular_weights(P.theta_deg, redundancy=redundancy_weighting)
    filt = _filter_sinogram(s, filter_name) * w[:, None]
    bp = P.back(filt.astype(np.float32))
    if P.backend == "skimage":
        # skimage's iradon(filter_name=None) already multiplies by pi / (2 n_angles)
        bp = bp * (2 * P.theta_deg.size / np.pi)
    # Backprojection over [0, pi) of the ramp-filtered data; the 1/2 of the (0, 2pi) formula
    # is already in the weights summing to pi.
    return bp.astype(np.float32)


def _sirt_slice(P: Projector2D, b: np.ndarray, n_iter: int, nonneg: bool, x0: np.ndarray | None) -> np.ndarray:
    ones_img = np.ones((P.n, P.n), np.float32)
    rs = P.forward(ones_img)
    R = np.divide(1.0, rs, out=np.zeros_like(rs), where=rs > 1e-6)
    cs = P.back(np.ones(P.shape_sino, np.float32))
    C = np.divide(1.0, cs, out=np.zeros_like(cs), where=cs > 1e-6)
    x = np.zeros(b.shape[:-2] + (P.n, P.n), np.float32) if x0 is None else x0.astype(np.float32).copy()
    for _ in range(n_iter):
        x += C * P.back(R * (b - P.forward(x)))
        if nonneg:
            np.maximum(x, 0, out=x)
    return x


def reconstruct_sirt(
    sino: np.ndarray,
    theta_deg: Any,
    *,
    n_iter: int = 100,
    nonneg: bool = True,
    x0: np.ndarray | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """SIRT reconstruction of one sinogram with optional non-negativity.

    Parameters
    ----------
    sino : ndarray (n_angles, n)
    theta_deg : array-like
    n_iter : int
        Iterations (each one forward and one back projection).
    nonneg : bool
        Clip negative attenuation after every iteration.
    x0 : ndarray (n, n), optional
        Starting image (e.g. an FBP result).

    Examples
    --------
    >>> from litomo.tomo.project import Projector2D
    >>> th = np.linspace(0, 180, 60, endpoint=False)
    >>> img = np.zeros((32, 32)); img[12:20, 12:20] = 1
    >>> rec = reconstruct_sirt(Projector2D(32, th).forward(img), th, n_iter=200)
    >>> bool(abs(rec[14:18, 14:18].mean() - 1) < 0.1), bool(rec.min() >= 0)
    (True, True)
    """
    th = check_angles(theta_deg)
    s = _check_sino(sino, th).astype(np.float32)
    if n_iter < 1:
        raise LitomoError(f"n_iter must be >= 1, got {n_iter}")
    P = Projector2D(s.shape[1], th, backend, use_matrix=False)  # one slice: matrix not worth building
    return _sirt_slice(P, s, n_iter, nonneg, x0)


def _tv(P: Projector2D, b: np.ndarray, tv_weight: float, n_iter: int, nonneg: bool) -> np.ndarray:
    """Chambolle-Pock TV for one sinogram (n_angles, n) or a stack (k, n_angles, n)."""
    op = _Operator(P)
    scale = float(np.abs(b).max()) / P.n
    shape = b.shape[:-2] + (P.n, P.n)
    if scale <= 0:
        return np.zeros(shape, np.float32)
    b = (b / scale).astype(np.float32)
    lam = tv_weight * P.theta_deg.size
    L = float(np.sqrt(op.norm**2 + 8.0))  # ||grad||^2 <= 8 in 2D
    tau = sigma = 1.0 / L
    x = np.zeros(shape, np.float32)
    xbar = x.copy()
    p = np.zeros_like(b)
    q = np.zeros((2, *shape), np.float32)
    for _ in range(n_iter):
        p = (p + sigma * (op.fwd(xbar) - b)) / (1.0 + sigma)
        q += sigma * _grad(xbar)
        q /= np.maximum(np.sqrt((q**2).sum(0)) / max(lam, 1e-12), 1.0)
        x_new = x - tau * (op.adj(p) - _div(q))
        if nonneg:
            np.maximum(x_new, 0, out=x_new)
        xbar = 2 * x_new - x
        x = x_new
    return (x * scale).astype(np.float32)


def _grad(x: np.ndarray) -> np.ndarray:
    g = np.zeros((2, *x.shape), x.dtype)
    g[0, ..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    g[1, ..., :-1] = x[..., 1:] - x[..., :-1]
    return g


def _div(g: np.ndarray) -> np.ndarray:
    # negative adjoint of _grad
    d = np.zeros(g.shape[1:], g.dtype)
    d[..., :-1, :] += g[0, ..., :-1, :]
    d[..., 1:, :] -= g[0, ..., :-1, :]
    d[..., :-1] += g[1, ..., :-1]
    d[..., 1:] -= g[1, ..., :-1]
    return d


class _Operator:
    """The projector with an exactly scaled adjoint (skimage's back-projection is only proportional)."""

    def __init__(self, P: Projector2D, seed: int = 0):
        self.P = P
        rng = np.random.default_rng(seed)
        x = rng.random((P.n, P.n)).astype(np.float32)
        y = rng.random(P.shape_sino).astype(np.float32)
        self.scale = float(np.vdot(P.forward(x), y) / np.vdot(x, P.back(y)))
        b = rng.random((P.n, P.n)).astype(np.float32)
        for _ in range(15):  # power iteration for ||A||
            b = self.adj(P.forward(b))
            nb = float(np.linalg.norm(b))
            b /= nb
        self.norm = float(np.sqrt(nb))

    def fwd(self, x: np.ndarray) -> np.ndarray:
        return self.P.forward(x)

    def adj(self, y: np.ndarray) -> np.ndarray:
        return self.P.back(y) * self.scale


def reconstruct_tv(
    sino: np.ndarray,
    theta_deg: Any,
    *,
    tv_weight: float = 0.02,
    n_iter: int = 100,
    nonneg: bool = True,
    backend: str | None = None,
) -> np.ndarray:
    """TV-regularised reconstruction by Chambolle-Pock with non-negativity.

    Solves ``min_x 1/2 ||A x - b||^2 + lam ||grad x||_1`` (isotropic), ``x >= 0``, with
    ``lam = tv_weight * n_angles * s`` where ``s = max(b) / n`` is the attenuation scale of the
    data, so ``tv_weight`` is roughly independent of the number of views and of the units.

    Parameters
    ----------
    sino : ndarray (n_angles, n)
    theta_deg : array-like
    tv_weight : float
        Dimensionless regularisation strength (0.005-0.1 typical).
    n_iter : int
        Chambolle-Pock iterations.

    Examples
    --------
    >>> from litomo.tomo.project import Projector2D
    >>> th = np.linspace(-60, 60, 40, endpoint=False)
    >>> img = np.zeros((32, 32)); img[12:20, 12:20] = 1
    >>> rec = reconstruct_tv(Projector2D(32, th).forward(img), th, n_iter=100)
    >>> bool(abs(rec[14:18, 14:18].mean() - 1) < 0.15)
    True
    """
    th = check_angles(theta_deg)
    b = _check_sino(sino, th).astype(np.float32)
    if tv_weight < 0:
        raise LitomoError(f"tv_weight must be >= 0, got {tv_weight}")
    P = Projector2D(b.shape[1], th, backend, use_matrix=False)
    return _tv(P, b, tv_weight, n_iter, nonneg)


def reconstruct_slice(sino: np.ndarray, theta_deg: Any, method: str = "fbp", **kwargs: Any) -> np.ndarray:
    """Dispatch to :func:`reconstruct_fbp`, :func:`reconstruct_sirt` or :func:`reconstruct_tv`."""
    if method == "fbp":
        return reconstruct_fbp(sino, theta_deg, **kwargs)
    if method == "sirt":
        return reconstruct_sirt(sino, theta_deg, **kwargs)
    if method == "tv":
        return reconstruct_tv(sino, theta_deg, **kwargs)
    raise LitomoError(f"unknown reconstruction method {method!r}; use one of {METHODS}")


def _fbp_volume(proj: np.ndarray, th: np.ndarray, kwargs: dict[str, Any],
                progress: ProgressCallback | None) -> np.ndarray:
    """All slices of ``(n_angles, n_z, n)`` by :func:`_fbp_stack`, in chunks of ~64 MiB of output."""
    nz, n = proj.shape[1], proj.shape[2]
    out = np.empty((nz, n, n), np.float32)
    chunk = max(1, int(64 * 2**20 // (4 * n * n)))
    for k0 in range(0, nz, chunk):
        b = np.moveaxis(proj[:, k0 : k0 + chunk, :], 1, 0)
        out[k0 : k0 + b.shape[0]] = _fbp_stack(b, th, kwargs.get("filter_name", "ramp"),
                                              kwargs.get("redundancy_weighting", True))
        if progress is not None:
            progress(min(k0 + chunk, nz), nz, "reconstructing (fbp)")
    return out


def reconstruct_volume(
    projections: np.ndarray,
    theta_deg: Any,
    method: str = "fbp",
    *,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Reconstruct ``(n_angles, n_z, n)`` projections slice by slice into ``(n_z, n, n)``.

    Rotation is about z (see :mod:`litomo.tomo.project`). Keyword arguments go to the method.

    Examples
    --------
    >>> from litomo.tomo.project import project_volume
    >>> vol = np.zeros((2, 24, 24), np.float32); vol[:, 8:16, 8:16] = 1
    >>> th = np.linspace(0, 180, 60, endpoint=False)
    >>> reconstruct_volume(project_volume(vol, th), th).shape
    (2, 24, 24)
    """
    proj = np.asarray(projections)
    if proj.ndim != 3:
        raise DataError(f"projections must be (n_angles, n_z, n_detector), got shape {proj.shape}")
    if method not in METHODS:
        raise LitomoError(f"unknown reconstruction method {method!r}; use one of {METHODS}")
    th = check_angles(theta_deg)
    nz, n = proj.shape[1], proj.shape[2]
    if proj.shape[0] != th.size:
        raise DataError(f"projections have {proj.shape[0]} views but {th.size} angles were given")
    if not np.all(np.isfinite(proj)):
        raise DataError("projections contain NaN or inf (flat/dark correction gone wrong?)")
    backend = kwargs.pop("backend", None)
    if method == "fbp" and backend is None:
        return _fbp_volume(proj, th, kwargs, progress)
    P = Projector2D(n, th, backend, use_matrix=None if method != "fbp" else False)
    # Slices are independent; iterative methods process a chunk of slices at once (one
    # sparse-matrix product per iteration when astra's system matrix fits in memory).
    chunk = 1 if (method == "fbp" or P._W is None) else max(1, int(2e7 // (n * n + th.size * n)))
    out = np.empty((nz, n, n), np.float32)
    for k0 in range(0, nz, chunk):
        b = np.ascontiguousarray(np.moveaxis(proj[:, k0 : k0 + chunk, :], 1, 0), dtype=np.float32)
        if method == "fbp":
            rec = _fbp(P, b[0], kwargs.get("filter_name", "ramp"), kwargs.get("redundancy_weighting", True))[None]
        elif method == "sirt":
            if kwargs.get("n_iter", 100) < 1:
                raise LitomoError("n_iter must be >= 1")
            rec = _sirt_slice(P, b, kwargs.get("n_iter", 100), kwargs.get("nonneg", True), None)
        else:
            rec = _tv(P, b, kwargs.get("tv_weight", 0.02), kwargs.get("n_iter", 100), kwargs.get("nonneg", True))
        out[k0 : k0 + rec.shape[0]] = rec
        if progress is not None:
            progress(min(k0 + chunk, nz), nz, f"reconstructing ({method})")
    return out

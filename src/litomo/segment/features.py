"""Multi-scale 3D filter features for pixel classification (ilastik / Weka style).

``skimage.feature.multiscale_basic_features`` offers smoothed intensity, gradient
magnitude and Hessian eigenvalues, but only on a geometric sigma ladder, after rescaling
integer input with ``img_as_float`` (so features depend on the file's dtype), and without
difference-of-Gaussians or structure-tensor features. We therefore assemble the same kind
of stack from ``scipy.ndimage`` Gaussian (derivative) filters and a closed-form 3x3
eigenvalue solver, on explicit sigmas, in grey units, float32.

Every feature of a voxel depends only on voxels within :func:`feature_halo` of it, and the
whole-volume computation pads symmetrically by that halo exactly as a chunk-wise dask
``map_overlap(boundary="reflect")`` does; chunked and whole-volume features are therefore
bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit, prange

from litomo.errors import DataError

#: bump when the feature definitions change: models trained with another version are refused
FEATURES_VERSION = 2
#: sigma 6 is kept although the rendered-label benchmark does not need it (0.7/1.5/3 alone: equal
#: accuracy, ~40 % less feature CPU): on the real holotomography chain (tests/test_holo_chain.py)
#: dropping it moved the CBD fraction error from -1.35 to -1.51 pp (docs/benchmarks.md)
DEFAULT_SIGMAS: tuple[float, ...] = (0.7, 1.5, 3.0, 6.0)
_TRUNCATE = 4.0


def feature_params(
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    *,
    intensity: bool = True,
    edges: bool = True,
    hessian: bool = True,
    dog: bool = True,
    structure_tensor: bool = False,
) -> dict[str, Any]:
    """A validated, JSON-able record of the feature settings (stored with trained models)."""
    s = tuple(float(x) for x in sigmas)
    if not s or any(not np.isfinite(x) or x <= 0 for x in s):
        raise DataError(f"feature sigmas must be positive numbers of voxels, got {sigmas!r}")
    if len(set(s)) != len(s):
        raise DataError(f"feature sigmas must be distinct, got {sigmas!r}")
    if not (intensity or edges or hessian or dog or structure_tensor):
        raise DataError("at least one feature family must be enabled")
    return {
        "features_version": FEATURES_VERSION,
        "sigmas": sorted(s),
        "intensity": bool(intensity),
        "edges": bool(edges),
        "hessian": bool(hessian),
        "dog": bool(dog),
        "structure_tensor": bool(structure_tensor),
        "truncate": _TRUNCATE,
    }


def feature_set_hash(params: dict[str, Any]) -> str:
    """Short hash of a feature record: a saved model applies only to features with the same hash.

    Examples
    --------
    >>> feature_set_hash(feature_params()) == feature_set_hash(feature_params((6.0, 3.0, 1.5, 0.7)))
    True
    """
    import hashlib
    import json

    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _radius(sigma: float) -> int:
    return int(_TRUNCATE * sigma + 0.5)


def feature_halo(sigmas: Sequence[float] = DEFAULT_SIGMAS, *, structure_tensor: bool = False) -> int:
    """Halo (voxels) a chunk needs so its features equal the whole-volume ones.

    Examples
    --------
    >>> feature_halo((0.7, 1.5, 3.0, 6.0))
    26
    """
    # +2: the central differences of the Hessian reach two voxels beyond the Gaussian
    if structure_tensor:
        # gradient at sigma/2, then products smoothed at sigma: the supports add up
        return max(max(_radius(s / 2) + _radius(s), _radius(s) + 2) for s in sigmas)
    return max(_radius(s) for s in sigmas) + 2


def feature_names(params: dict[str, Any]) -> list[str]:
    """Names of the feature channels, in the order :func:`filter_features` returns them."""
    names = ["raw"]
    for s in params["sigmas"]:
        if params["intensity"]:
            names.append(f"gauss_{s:g}")
        if params["edges"]:
            names.append(f"gradmag_{s:g}")
        if params["hessian"]:
            names += [f"hessian_eig{i}_{s:g}" for i in range(3)]
        if params["structure_tensor"]:
            names += [f"struct_eig{i}_{s:g}" for i in range(3)]
    if params["dog"]:
        sig = params["sigmas"]
        names += [f"dog_{a:g}_{b:g}" for a, b in zip(sig[:-1], sig[1:], strict=True)]
    return names


def symmetric_eigvals3(elems: Sequence[np.ndarray]) -> np.ndarray:
    """Eigenvalues (increasing) of voxel-wise symmetric 3x3 matrices, closed form.

    ``elems`` are the six upper-triangle components ``(a00, a01, a02, a11, a12, a22)``.
    skimage's ``hessian_matrix_eigvals`` calls ``numpy.linalg.eigvalsh`` per voxel, which
    is ~30x slower and dominated feature time; the trigonometric solution of the
    characteristic cubic (Smith 1961) is exact up to rounding and purely voxel-wise. It runs
    as a numba loop in float64 registers (numpy array expressions of the same formula cost
    ~5x more: a dozen temporaries per voxel), whatever the input dtype.

    Examples
    --------
    >>> e = [np.array([2.0]), np.array([0.0]), np.array([0.0]), np.array([3.0]), np.array([0.0]), np.array([1.0])]
    >>> np.round(symmetric_eigvals3(e)[:, 0], 6).tolist()
    [1.0, 2.0, 3.0]
    """
    arrays = [np.asarray(e) for e in elems]
    shape = arrays[0].shape
    dtype = np.result_type(arrays[0].dtype, np.float32)
    flat = [np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in arrays]
    out = np.empty((3, flat[0].size), dtype=dtype)
    _eig3_kernel(*flat, out)
    return out.reshape((3, *shape))


def _cos_two_thirds_arccos_coeffs(degree: int = 12) -> np.ndarray:
    # cos(2/3 arccos(u)) is analytic on [0, 1] (a series in arccos(u)^2): a degree-12
    # Chebyshev interpolant is exact to ~2e-12, and numba evaluates it with no libm call
    from numpy.polynomial import chebyshev as C

    cheb = C.chebinterpolate(lambda t: np.cos(2.0 / 3.0 * np.arccos((t + 1.0) / 2.0)), degree)
    return np.ascontiguousarray(C.cheb2poly(cheb)[::-1])  # power basis in t = 2u - 1, Horner order


_COS23 = _cos_two_thirds_arccos_coeffs()


@njit(cache=True, fastmath=False, error_model="numpy", inline="always")
def _cos23(u):  # pragma: no cover (compiled)
    t = 2.0 * u - 1.0
    acc = 0.0
    for c in _COS23:
        acc = acc * t + c
    return acc


# inline="always" + error_model="numpy" (no ZeroDivisionError branch on det / (2 p^3), p > 0
# there): the eigenvalue loop of a row is then one vectorised loop (4 voxels per float64
# instruction) instead of a call per voxel; same IEEE operations, so bit-identical values.
# Derivative kernel 0.067-0.073 -> 0.032-0.034 us/voxel per sigma (docs/benchmarks.md, session 9)
@njit(cache=True, fastmath=False, error_model="numpy", inline="always")
def _eig3(x00, x01, x02, x11, x12, x22):  # pragma: no cover (compiled)
    # trigonometric solution of the characteristic cubic: with r = cos(3 phi), the largest
    # eigenvalue is q + 2p cos(phi) and the smallest q - 2p cos(phi') for -r (the largest of
    # -A); cos(arccos(r) / 3) = cos(2/3 arccos(sqrt((1 + r) / 2))) by a polynomial (_cos23):
    # arccos and two cos in float64 were 85 % of the derivative features' time
    q = (x00 + x11 + x22) / 3.0
    b00, b11, b22 = x00 - q, x11 - q, x22 - q
    p1 = x01 * x01 + x02 * x02 + x12 * x12
    p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1) / 6.0)
    safe = p if p > 0 else 1.0
    det = b00 * (b11 * b22 - x12 * x12) - x01 * (x01 * b22 - x12 * x02) + x02 * (x01 * x12 - b11 * x02)
    r = min(max(det / (2.0 * safe * safe * safe), -1.0), 1.0)
    e_max = q + 2.0 * p * _cos23(np.sqrt((1.0 + r) * 0.5))
    e_min = q - 2.0 * p * _cos23(np.sqrt((1.0 - r) * 0.5))
    return e_min, 3.0 * q - e_max - e_min, e_max


@njit(cache=True, fastmath=False, error_model="numpy")
def _eig3_kernel(a00, a01, a02, a11, a12, a22, out):  # pragma: no cover (compiled)
    for i in range(a00.size):
        e = _eig3(np.float64(a00[i]), np.float64(a01[i]), np.float64(a02[i]), np.float64(a11[i]),
                  np.float64(a12[i]), np.float64(a22[i]))
        out[0, i] = e[0]
        out[1, i] = e[1]
        out[2, i] = e[2]


@njit(cache=True, fastmath=False, parallel=True, error_model="numpy")
def _derivatives_kernel(g, c, edges, hessian, mag, eig):  # pragma: no cover (compiled)
    # One pass per row instead of ~10 full-block numpy passes and their temporaries. The
    # differences are numpy's, in float32 and in the same order (first differences of g, then
    # differences of those; x * 0.5 == x / 2.0 exactly). The Hessian of a row goes to a small
    # buffer first, so that the eigenvalue loop has no loads from g and LLVM vectorises it.
    h = np.float32(0.5)
    nz, ny, nx = g.shape[0] - 2 * c, g.shape[1] - 2 * c, g.shape[2] - 2 * c
    for z in prange(nz):
        hb = np.empty((6, nx), np.float64)
        for y in range(ny):
            k, j = z + c, y + c
            for x in range(nx):
                i = x + c
                if edges:
                    d0 = (g[k + 1, j, i] - g[k - 1, j, i]) * h
                    d1 = (g[k, j + 1, i] - g[k, j - 1, i]) * h
                    d2 = (g[k, j, i + 1] - g[k, j, i - 1]) * h
                    mag[z, y, x] = np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                if hessian:
                    # H_ab = difference along b of the first difference along a
                    hb[0, x] = ((g[k + 2, j, i] - g[k, j, i]) * h - (g[k, j, i] - g[k - 2, j, i]) * h) * h
                    hb[1, x] = ((g[k + 1, j + 1, i] - g[k - 1, j + 1, i]) * h
                                - (g[k + 1, j - 1, i] - g[k - 1, j - 1, i]) * h) * h
                    hb[2, x] = ((g[k + 1, j, i + 1] - g[k - 1, j, i + 1]) * h
                                - (g[k + 1, j, i - 1] - g[k - 1, j, i - 1]) * h) * h
                    hb[3, x] = ((g[k, j + 2, i] - g[k, j, i]) * h - (g[k, j, i] - g[k, j - 2, i]) * h) * h
                    hb[4, x] = ((g[k, j + 1, i + 1] - g[k, j - 1, i + 1]) * h
                                - (g[k, j + 1, i - 1] - g[k, j - 1, i - 1]) * h) * h
                    hb[5, x] = ((g[k, j, i + 2] - g[k, j, i]) * h - (g[k, j, i] - g[k, j, i - 2]) * h) * h
            if hessian:
                for x in range(nx):
                    e = _eig3(hb[0, x], hb[1, x], hb[2, x], hb[3, x], hb[4, x], hb[5, x])
                    eig[0, z, y, x] = e[0]
                    eig[1, z, y, x] = e[1]
                    eig[2, z, y, x] = e[2]


def _gaussian_weights(sigma: float) -> np.ndarray:
    """scipy.ndimage's Gaussian taps (``_gaussian_kernel1d``, order 0), float32."""
    r = _radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * x * x)
    return (w / w.sum()).astype(np.float32)


# Separable Gaussian of a block's interior ("valid" correlation: no boundary mode, the block
# already holds mirrored context). scipy's correlate1d walks one line at a time through a
# float64 buffer (0.175 us/voxel at sigma 6); these loops run the taps outermost over whole
# contiguous x-lines, in float32 SIMD (sums in another order than scipy: ~1e-7 relative).
@njit(cache=True, fastmath=False, parallel=True)
def _valid_z(x, w, out):  # pragma: no cover (compiled)
    r = (w.size - 1) // 2
    for z in prange(out.shape[0]):
        for y in range(out.shape[1]):
            for i in range(out.shape[2]):
                out[z, y, i] = w[r] * x[z + r, y, i]
            for k in range(r):
                wk = w[k]
                for i in range(out.shape[2]):
                    out[z, y, i] += wk * (x[z + k, y, i] + x[z + 2 * r - k, y, i])


@njit(cache=True, fastmath=False, parallel=True)
def _valid_y(x, w, out):  # pragma: no cover (compiled)
    r = (w.size - 1) // 2
    for z in prange(out.shape[0]):
        for y in range(out.shape[1]):
            for i in range(out.shape[2]):
                out[z, y, i] = w[r] * x[z, y + r, i]
            for k in range(r):
                wk = w[k]
                for i in range(out.shape[2]):
                    out[z, y, i] += wk * (x[z, y + k, i] + x[z, y + 2 * r - k, i])


@njit(cache=True, fastmath=False, parallel=True)
def _valid_x(x, w, out):  # pragma: no cover (compiled)
    r = (w.size - 1) // 2
    for z in prange(out.shape[0]):
        for y in range(out.shape[1]):
            for i in range(out.shape[2]):
                out[z, y, i] = w[r] * x[z, y, i + r]
            for k in range(r):
                wk = w[k]
                for i in range(out.shape[2]):
                    out[z, y, i] += wk * (x[z, y, i + k] + x[z, y, i + 2 * r - k])


def gaussian_valid(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian (scipy's taps, truncate 4) of ``x`` where its support lies inside ``x``.

    The result is ``x`` minus the kernel radius on every side, float32; equal to
    ``scipy.ndimage.gaussian_filter(x, sigma, truncate=4)`` there up to float32 rounding.

    Examples
    --------
    >>> from scipy import ndimage
    >>> x = np.random.default_rng(0).normal(size=(20, 21, 22)).astype(np.float32)
    >>> g = gaussian_valid(x, 2.0)
    >>> g.shape, bool(np.abs(g - ndimage.gaussian_filter(x, 2.0)[8:-8, 8:-8, 8:-8]).max() < 1e-6)
    ((4, 5, 6), True)
    """
    w = _gaussian_weights(sigma)
    r = (w.size - 1) // 2
    x = np.ascontiguousarray(x, dtype=np.float32)
    nz, ny, nx = x.shape
    a = np.empty((nz - 2 * r, ny, nx), np.float32)
    _valid_z(x, w, a)
    b = np.empty((nz - 2 * r, ny - 2 * r, nx), np.float32)
    _valid_y(a, w, b)
    del a
    out = np.empty((nz - 2 * r, ny - 2 * r, nx - 2 * r), np.float32)
    _valid_x(b, w, out)
    return out


def _interior(shape: tuple[int, ...], crop: int) -> tuple[slice, ...]:
    return tuple(slice(crop, n - crop) for n in shape)


def features_unpadded(block: np.ndarray, params: dict[str, Any], crop: int = 0) -> np.ndarray:
    """Features of ``block[crop:-crop, crop:-crop, crop:-crop]``, computed from the whole block.

    The block's rim supplies the filters' context; when ``crop`` is smaller than
    :func:`feature_halo`, the missing context is mirrored (numpy "symmetric"), as at a
    volume face. Each sigma filters only the context it needs and everything voxel-wise
    (derivatives, eigenvalues, differences of Gaussians) is evaluated on the interior only,
    so a block's halo costs little more than the Gaussians (the values are bit-identical to
    filtering the whole block).
    """
    x = np.asarray(block, dtype=np.float32)
    halo = feature_halo(params["sigmas"], structure_tensor=params["structure_tensor"])
    if crop < halo:
        x = np.pad(x, halo - crop, mode="symmetric")
        crop = halo
    inner = _interior(x.shape, crop)
    out = np.empty((len(feature_names(params)),) + x[inner].shape, dtype=np.float32)
    out[0] = x[inner]
    k = 1
    smoothed: list[Any] = []  # per sigma: its Gaussian channel of ``out`` (or a copy without one)
    for s in params["sigmas"]:
        # the Gaussian where the derivatives need it: the interior plus 2 voxels
        g = gaussian_valid(x[_interior(x.shape, crop - 2 - _radius(s))], s)
        inner = _interior(g.shape, 2)
        if params["intensity"]:
            out[k] = g[inner]
            smoothed.append(k)
            k += 1
        elif params["dog"]:
            smoothed.append(np.array(g[inner]))  # a copy: a view would keep the block alive
        k = _derivative_features(g, 2, params, out, k)
        if params["structure_tensor"]:
            out[k : k + 3] = _structure_eigvals(x, s, crop)
            k += 3
    if params["dog"]:
        for a, b in zip(smoothed[:-1], smoothed[1:], strict=True):
            np.subtract(out[a] if isinstance(a, int) else a, out[b] if isinstance(b, int) else b, out=out[k])
            k += 1
    return out


def _derivative_features(g: np.ndarray, crop: int, params: dict[str, Any], out: np.ndarray, k: int) -> int:
    """Gradient magnitude and Hessian eigenvalues of the smoothed ``g`` on its interior.

    Derivatives of the smoothed image by central differences (as skimage's
    ``hessian_matrix(use_gaussian_derivatives=False)``): one Gaussian per sigma instead of
    nine derivative-of-Gaussian passes, for 2 voxels of extra halo.
    """
    if not (params["edges"] or params["hessian"]):
        return k
    edges, hessian = bool(params["edges"]), bool(params["hessian"])
    mag = out[k] if edges else np.empty((1, 1, 1), np.float32)
    eig = out[k + edges : k + edges + 3] if hessian else np.empty((3, 1, 1, 1), np.float32)
    _derivatives_kernel(np.ascontiguousarray(g, dtype=np.float32), crop, edges, hessian, mag, eig)
    return k + edges + 3 * hessian


def _structure_eigvals(x: np.ndarray, s: float, crop: int) -> np.ndarray:
    """Structure-tensor eigenvalues (gradient at sigma/2, integration at sigma) on the interior."""
    from scipy import ndimage

    inner = _interior(x.shape, crop)
    grads = [ndimage.gaussian_filter(x, s / 2, order=[int(a == d) for a in range(3)], mode="reflect",
                                     truncate=_TRUNCATE) for d in range(3)]
    elems = [ndimage.gaussian_filter(grads[i] * grads[j], s, mode="reflect", truncate=_TRUNCATE)[inner]
             for i in range(3) for j in range(i, 3)]
    return symmetric_eigvals3(elems)


def check_grey(grey: Any, what: str = "greyscale volume") -> None:
    """Raise :class:`DataError` for non-3D, non-finite or label-like greyscale input."""
    if grey.ndim != 3:
        raise DataError(f"{what} must be 3D (z, y, x), got shape {tuple(grey.shape)}")
    sample = np.asarray(grey if isinstance(grey, np.ndarray) else grey[::4, ::4, ::4])
    if sample.dtype.kind not in "biuf":
        raise DataError(f"{what} has non-numeric dtype {sample.dtype}")
    if sample.dtype.kind == "f" and not np.all(np.isfinite(sample)):
        raise DataError(f"{what} holds NaN or inf voxels; fill or mask them first")
    flat = sample.ravel()
    if flat.size > 1_000_000:
        flat = flat[:: flat.size // 1_000_000]
    # more than 4 values among the first few thousand means more than 4 in all (the same
    # decision without sorting a million values on every prediction: 0.01 us/voxel at 128^3)
    values = np.unique(flat[:4096])
    if values.size <= 4:
        values = np.unique(flat)
    if values.size <= 4 and np.all(values == np.round(values)):
        raise DataError(
            f"{what} holds only the values {values.tolist()}: it looks like a label volume, "
            "not a greyscale image"
        )


def filter_features(
    grey: Any,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    *,
    intensity: bool = True,
    edges: bool = True,
    hessian: bool = True,
    dog: bool = True,
    structure_tensor: bool = False,
) -> np.ndarray:
    """Multi-scale filter features of a 3D greyscale volume, shape ``(F, z, y, x)``, float32.

    Channels (see :func:`feature_names`): the raw grey value; per sigma (voxels) the
    Gaussian-smoothed intensity, its gradient magnitude and the three eigenvalues of its
    Hessian (increasing; derivatives by central differences of the smoothed image) and optionally the three structure-tensor eigenvalues (gradient at
    sigma/2, integration at sigma); and differences of Gaussians between consecutive sigmas.
    Values are in grey units (no rescaling).

    Memory: ``F * 4`` bytes per voxel (about 24 channels with defaults); use
    :class:`litomo.segment.forest.SegmentationModel.predict` for chunk-wise work on big volumes.

    Examples
    --------
    >>> g = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    >>> filter_features(g, sigmas=(1.0, 2.0)).shape
    (12, 20, 20, 20)
    """
    params = feature_params(sigmas, intensity=intensity, edges=edges, hessian=hessian, dog=dog,
                            structure_tensor=structure_tensor)
    return features_from_params(grey, params)


def features_from_params(grey: Any, params: dict[str, Any]) -> np.ndarray:
    """:func:`filter_features` with a record from :func:`feature_params`."""
    grey = np.asarray(grey)
    if grey.ndim != 3:
        raise DataError(f"greyscale volume must be 3D (z, y, x), got shape {grey.shape}")
    h = feature_halo(params["sigmas"], structure_tensor=params["structure_tensor"])
    padded = np.pad(grey.astype(np.float32, copy=False), h, mode="symmetric")
    return features_unpadded(padded, params, crop=h)

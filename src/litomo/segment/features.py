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

from litomo.errors import DataError

#: bump when the feature definitions change: models trained with another version are refused
FEATURES_VERSION = 2
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
    characteristic cubic (Smith 1961) is exact up to rounding and purely voxel-wise.

    Examples
    --------
    >>> e = [np.array([2.0]), np.array([0.0]), np.array([0.0]), np.array([3.0]), np.array([0.0]), np.array([1.0])]
    >>> np.round(symmetric_eigvals3(e)[:, 0], 6).tolist()
    [1.0, 2.0, 3.0]
    """
    arrays = [np.asarray(e) for e in elems]
    shape = arrays[0].shape
    flat = [a.reshape(-1) for a in arrays]
    out = np.empty((3, flat[0].size), dtype=np.result_type(arrays[0].dtype, np.float32))
    step = 65536  # slabs that stay in cache: the float64 temporaries never touch main memory
    for i in range(0, flat[0].size, step):
        sl = slice(i, i + step)
        out[:, sl] = _eig3_slab(*(f[sl].astype(np.float64) for f in flat))
    return out.reshape((3, *shape))


def _eig3_slab(a00, a01, a02, a11, a12, a22):  # float64 1D slabs
    q = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1) / 6.0)
    safe = np.where(p > 0, p, 1.0)
    det = b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    r = np.clip(det / (2.0 * safe**3), -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    e_max = q + 2.0 * p * np.cos(phi)
    e_min = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e_mid = 3.0 * q - e_max - e_min
    return np.stack([e_min, e_mid, e_max])


def _features_unpadded(block: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Features of a block whose rim (the halo) is allowed to be wrong."""
    from scipy import ndimage

    x = np.asarray(block, dtype=np.float32)
    out = np.empty((len(feature_names(params)),) + x.shape, dtype=np.float32)
    k = 0
    out[k] = x
    k += 1
    smoothed = []
    axes_pairs = [(i, j) for i in range(3) for j in range(i, 3)]
    for s in params["sigmas"]:
        g = ndimage.gaussian_filter(x, s, mode="reflect", truncate=_TRUNCATE)
        smoothed.append(g)
        if params["intensity"]:
            out[k] = g
            k += 1
        if params["edges"] or params["hessian"]:
            # derivatives of the smoothed image by central differences (as skimage's
            # hessian_matrix(use_gaussian_derivatives=False)): one Gaussian per sigma instead
            # of nine derivative-of-Gaussian passes; costs 2 voxels of extra halo
            grads = np.gradient(g)
            if params["edges"]:
                out[k] = np.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2)
                k += 1
            if params["hessian"]:
                elems = [np.gradient(grads[i], axis=j) for i, j in axes_pairs]
                out[k : k + 3] = symmetric_eigvals3(elems)
                del elems
                k += 3
            del grads
        if params["structure_tensor"]:
            grads = [
                ndimage.gaussian_filter(x, s / 2, order=[int(a == d) for a in range(3)], mode="reflect",
                                        truncate=_TRUNCATE)
                for d in range(3)
            ]
            elems = [ndimage.gaussian_filter(grads[i] * grads[j], s, mode="reflect", truncate=_TRUNCATE)
                     for i, j in axes_pairs]
            out[k : k + 3] = symmetric_eigvals3(elems)
            del grads, elems
            k += 3
    if params["dog"]:
        for a, b in zip(smoothed[:-1], smoothed[1:], strict=True):
            out[k] = a - b
            k += 1
    return out


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
    f = _features_unpadded(padded, params)
    return f[:, h:-h, h:-h, h:-h]

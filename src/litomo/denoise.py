"""Denoising of greyscale volumes: non-local means, unsharp mask, median (numpy or dask arrays).

Chunk-wise with halos (``map_overlap`` depth from each filter's footprint), so a dask volume
denoises lazily and gives the same voxels as the in-memory array. Also importable from
:mod:`litomo.preprocess`, where these functions were first defined.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.volume import Volume

log = logging.getLogger(__name__)

_DENOISE_STEPS = ("nlm", "unsharp", "median")


def _check_finite_grey(array: Any, what: str = "greyscale volume") -> None:
    if array.ndim != 3:
        raise DataError(f"{what} must be 3D (z, y, x), got shape {tuple(array.shape)}")
    if isinstance(array, np.ndarray) and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise DataError(f"{what} holds NaN or inf voxels; mask or fill them before denoising")


def _gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    # the support scipy.ndimage uses for a Gaussian of this sigma
    return int(truncate * float(sigma) + 0.5)


def _padded_apply(func: Any, array: np.ndarray, depth: int, **kwargs: Any) -> np.ndarray:
    """Pad symmetrically by ``depth``, filter, crop.

    The whole-array result is then computed exactly as a dask ``map_overlap`` with
    ``boundary="reflect"`` (numpy "symmetric") computes each chunk, so chunking never
    changes the answer.
    """
    if depth > 0:
        padded = np.pad(array, depth, mode="symmetric")
        out = func(padded, **kwargs)
        sl = (slice(depth, -depth),) * array.ndim
        return out[sl]
    return func(array, **kwargs)


def _nlm_block(block: np.ndarray, *, h: float, sigma: float, patch_size: int, patch_distance: int) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    out = denoise_nl_means(
        block.astype(np.float64), patch_size=patch_size, patch_distance=patch_distance,
        h=h, sigma=sigma, fast_mode=True, preserve_range=True,
    )
    return out.astype(np.float32)


def _unsharp_block(block: np.ndarray, *, radius: float, amount: float) -> np.ndarray:
    from scipy import ndimage

    x = block.astype(np.float32)
    return x + np.float32(amount) * (x - ndimage.gaussian_filter(x, radius, mode="reflect"))


def _median_block(block: np.ndarray, *, size: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.median_filter(block, size=size, mode="reflect").astype(np.float32, copy=False)


def _estimate_sigma(array: Any) -> float:
    from skimage.restoration import estimate_sigma

    # a central crop of at most 96^3 keeps this cheap on big (or lazy) volumes
    sl = tuple(slice(max(0, n // 2 - 48), max(0, n // 2 - 48) + 96) for n in array.shape)
    crop = np.asarray(array[sl], dtype=np.float64)
    return float(estimate_sigma(crop))


def _nlm_params(array: Any, h: float | None, sigma: float | None, patch_size: int, patch_distance: int) -> dict:
    if patch_size < 1 or patch_distance < 1:
        raise DataError("patch_size and patch_distance must be positive integers (voxels)")
    if sigma is None:
        sigma = _estimate_sigma(array)
    if h is None:
        # skimage's recommendation for fast_mode with a known sigma
        h = 0.8 * sigma if sigma > 0 else 1e-6
    return {"h": float(h), "sigma": float(sigma), "patch_size": int(patch_size), "patch_distance": int(patch_distance)}


def _step_plan(array: Any, step: str, params: dict) -> tuple[Any, int, dict]:
    """The block function, its halo (voxels) and its fixed parameters for one step."""
    if step == "nlm":
        p = _nlm_params(array, params.get("h"), params.get("sigma"), params.get("patch_size", 5),
                        params.get("patch_distance", 6))
        return _nlm_block, p["patch_size"] // 2 + p["patch_distance"], p
    if step == "unsharp":
        radius = float(params.get("radius", 1.0))
        amount = float(params.get("amount", 1.0))
        if radius <= 0:
            raise DataError(f"unsharp radius must be positive (voxels), got {radius}")
        return _unsharp_block, _gaussian_radius(radius), {"radius": radius, "amount": amount}
    if step == "median":
        size = int(params.get("size", 3))
        if size < 1:
            raise DataError(f"median size must be a positive integer (voxels), got {size}")
        return _median_block, size // 2, {"size": size}
    raise DataError(f"unknown denoising step {step!r}; choose from {', '.join(_DENOISE_STEPS)}")


def _apply_step(array: Any, func: Any, depth: int, params: dict, chunks: Any) -> Any:
    import dask.array as da

    if isinstance(array, np.ndarray) and chunks is None:
        return _padded_apply(func, array, depth, **params)
    darr = array if isinstance(array, da.Array) else da.from_array(array, chunks=chunks)
    if chunks is not None:
        darr = darr.rechunk(chunks)
    # a halo deeper than the smallest chunk would need data from beyond the neighbour
    min_chunk = min(min(c) for c in darr.chunks)
    if depth > min_chunk:
        darr = darr.rechunk(tuple(max(depth, max(c)) for c in darr.chunks))
    out = da.map_overlap(func, darr, depth=depth, boundary="reflect", dtype=np.float32, **params)
    return out.compute() if isinstance(array, np.ndarray) else out


def denoise_nlm(
    array: Any,
    *,
    h: float | None = None,
    patch_size: int = 5,
    patch_distance: int = 6,
    sigma: float | None = None,
    chunks: Any = None,
) -> Any:
    """Non-local-means denoising (skimage ``denoise_nl_means``, fast mode), float32 output.

    Parameters
    ----------
    array : ndarray or dask array, (z, y, x)
        Greyscale volume (any real dtype; values are kept in their own units).
    h : float, optional
        Filter strength in grey units; default ``0.8 * sigma``.
    patch_size, patch_distance : int
        Patch edge length and search radius in voxels.
    sigma : float, optional
        Noise standard deviation in grey units; estimated with ``estimate_sigma`` on a
        central crop when None (once, so all chunks share it).
    chunks : optional
        Process chunk-wise (dask ``map_overlap``, halo ``patch_size // 2 + patch_distance``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(100, 10, (16, 16, 16)).astype(np.float32)
    >>> bool(denoise_nlm(a, sigma=10.0, patch_distance=2).std() < 0.2 * a.std())
    True
    """
    _check_finite_grey(array)
    func, depth, p = _step_plan(array, "nlm", {"h": h, "sigma": sigma, "patch_size": patch_size,
                                               "patch_distance": patch_distance})
    return _apply_step(array, func, depth, p, chunks)


def unsharp_mask(array: Any, *, radius: float, amount: float, chunks: Any = None) -> Any:
    """Unsharp masking ``x + amount * (x - gaussian(x, radius))`` (float32, no clipping).

    ``radius`` is the Gaussian sigma in voxels; the halo is the Gaussian support (4 sigma).

    Examples
    --------
    >>> a = np.zeros((8, 8, 8), np.float32); a[:, :, 4:] = 1
    >>> s = unsharp_mask(a, radius=1.0, amount=1.0)
    >>> bool(s.max() > 1 and s.min() < 0)
    True
    """
    _check_finite_grey(array)
    func, depth, p = _step_plan(array, "unsharp", {"radius": radius, "amount": amount})
    return _apply_step(array, func, depth, p, chunks)


def median_filter(array: Any, size: int = 3, *, chunks: Any = None) -> Any:
    """Median filter over a ``size^3`` cube (scipy ``median_filter``, reflecting edges), float32.

    Examples
    --------
    >>> a = np.zeros((5, 5, 5), np.float32); a[2, 2, 2] = 9
    >>> float(median_filter(a, 3).max())
    0.0
    """
    _check_finite_grey(array)
    func, depth, p = _step_plan(array, "median", {"size": size})
    return _apply_step(array, func, depth, p, chunks)


def denoise_pipeline(
    array: Any,
    steps: tuple[Any, ...] = ("nlm", "unsharp"),
    chunks: Any = None,
    *,
    params: dict[str, dict] | None = None,
    return_record: bool = False,
) -> Any:
    """Apply denoising steps in order, chunk-wise when ``chunks`` is given or input is dask.

    Each step uses the halo its filter needs, so the result does not depend on the chunking.
    Data-dependent parameters (the NLM noise sigma) are fixed once on the whole volume
    before chunking.

    Parameters
    ----------
    array : ndarray or dask array, (z, y, x)
    steps : sequence of str
        Any of ``"nlm"``, ``"unsharp"``, ``"median"``.
    chunks : optional
        Chunk shape for dask processing; None with numpy input = whole array at once.
    params : dict, optional
        Per-step keyword arguments, e.g. ``{"unsharp": {"radius": 1.0, "amount": 0.5}}``
        (defaults: nlm patch_size 5, patch_distance 6, sigma estimated, h = 0.8 sigma;
        unsharp radius 1 voxel, amount 1; median size 3).
    return_record : bool
        Also return the list of ``{"step": name, "halo_vox": .., **parameters}`` dicts
        actually used (for provenance), as ``(array, record)``.

    Returns
    -------
    The filtered array (float32; numpy for numpy input, lazy dask for dask input).

    Examples
    --------
    >>> a = np.random.default_rng(0).normal(0, 1, (12, 12, 12)).astype(np.float32)
    >>> out, rec = denoise_pipeline(a, ("median",), return_record=True)
    >>> rec[0]["step"], out.shape
    ('median', (12, 12, 12))
    """
    _check_finite_grey(array)
    params = params or {}
    unknown = set(params) - set(_DENOISE_STEPS)
    if unknown:
        raise DataError(f"parameters given for unknown denoising steps: {sorted(unknown)}")
    record: list[dict] = []
    out = array
    for step in steps:
        func, depth, p = _step_plan(out, step, dict(params.get(step, {})))
        log.info("denoise step %s %s (halo %d voxels)", step, p, depth)
        out = _apply_step(out, func, depth, p, chunks)
        record.append({"step": step, "halo_vox": depth, **p})
    return (out, record) if return_record else out


def otsu_interclass_variance(array: Any, *, max_samples: int = 2_000_000, seed: int = 0) -> float:
    """Between-class variance at the Otsu threshold divided by the total variance.

    A dimensionless separability figure in [0, 1] (1 = two perfectly separated grey
    levels); compare it before and after denoising. Large volumes are randomly
    subsampled (``max_samples`` voxels, reproducible with ``seed``).

    Examples
    --------
    >>> a = np.zeros((4, 4, 4)); a[2:] = 1.0
    >>> round(otsu_interclass_variance(a), 6)
    1.0
    """
    from skimage.filters import threshold_otsu

    values = np.asarray(array.ravel() if isinstance(array, np.ndarray) else np.asarray(array).ravel(),
                        dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError("greyscale volume holds NaN or inf voxels")
    if values.size > max_samples:
        values = np.random.default_rng(seed).choice(values, max_samples, replace=False)
    total = values.var()
    if total == 0:
        raise DataError("greyscale volume is constant: no contrast to threshold")
    t = threshold_otsu(values)
    lo = values <= t
    w0 = lo.mean()
    w1 = 1.0 - w0
    if w0 == 0 or w1 == 0:
        return 0.0
    between = w0 * w1 * (values[lo].mean() - values[~lo].mean()) ** 2
    return float(between / total)


def denoise_volume(
    volume: Volume,
    steps: tuple[str, ...] = ("nlm", "unsharp"),
    chunks: Any = None,
    *,
    params: dict[str, dict] | None = None,
) -> Volume:
    """:func:`denoise_pipeline` on a :class:`Volume`, recording each step in its provenance.

    Examples
    --------
    >>> v = Volume(np.random.default_rng(0).normal(size=(10, 10, 10)).astype(np.float32))
    >>> [p["step"] for p in denoise_volume(v, ("median",)).provenance]
    ['denoise']
    """
    out, record = denoise_pipeline(volume.array, steps, chunks, params=params, return_record=True)
    return volume.with_array(out, step="denoise", steps=record)

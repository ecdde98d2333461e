"""Image registration with itk-elastix: rigid, similarity and B-spline, plus QA metrics.

Images go to elastix *with their physical voxel size*, so every transform is stored in
micrometres and can be re-applied to another array on the same physical frame, at the
same or at another resolution (estimate on binned data, apply to full resolution).

Physical frame convention: the corner of voxel ``(0, 0, 0)`` is the origin, so voxel
``i`` along an axis of spacing ``s`` has its centre at ``(i + 0.5) * s``. Block-mean
binning (:func:`litomo.preprocess.bin_array`, which crops at the high end) keeps that
frame, so binned and full-resolution grids overlay exactly.

Transform direction (the elastix one): a transform maps a point ``p`` of the *fixed*
grid to the point ``T(p)`` of the *moving* image, and ``moved(p) = moving(T(p))``. If
the moving image's content is displaced by ``d`` with respect to the fixed one, then
``T(p) = p + d``; :attr:`RegistrationResult.translation_vox` reports that ``d``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from litomo import elastix, register_worker
from litomo.elastix import ParameterMaps
from litomo.errors import DataError, LitomoError
from litomo.register_types import MODES, RegistrationParams, RegistrationResult
from litomo.volume import as_voxel_size

__all__ = ["MODES", "RegistrationParams", "RegistrationResult", "apply_transform", "displacement_field", "ncc",
           "register_pair"]

log = logging.getLogger(__name__)

# float32 holds every integer up to 2**24 exactly; larger labels would be corrupted
_MAX_EXACT_LABEL = 2**24


# --------------------------------------------------------------------------- helpers


def _spacing(voxel_size_um: Any, ndim: int) -> tuple[float, ...]:
    if ndim == 3:
        return as_voxel_size(voxel_size_um)
    if np.isscalar(voxel_size_um):
        v = (float(voxel_size_um),) * ndim
    else:
        v = tuple(float(x) for x in voxel_size_um)
    if len(v) != ndim or not all(np.isfinite(x) and x > 0 for x in v):
        raise DataError(f"voxel_size_um must be one positive number or {ndim} of them, got {voxel_size_um!r}")
    return v


def _check_image(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim not in (2, 3):
        raise DataError(f"{name} must be a 2D or 3D array, got shape {a.shape}")
    if min(a.shape) < 4:
        raise DataError(f"{name} of shape {a.shape} is too small to register (need >= 4 voxels per axis)")
    if a.dtype == bool:
        a = a.astype(np.float32)
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} contains NaN or inf; fill them (e.g. with the median) before registering")
    return a


def _check_pair(fixed: Any, moving: Any, fixed_mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    fixed = _check_image(fixed, "fixed image")
    moving = _check_image(moving, "moving image")
    if fixed.shape != moving.shape:
        raise DataError(f"fixed and moving images differ in shape: {fixed.shape} vs {moving.shape}")
    if (name := next((n for n, a in (("fixed", fixed), ("moving", moving)) if float(np.ptp(a)) == 0.0), None)):
        raise DataError(f"the {name} image is constant; there is nothing to register")
    if fixed_mask is None:
        return fixed, moving, None
    mask = np.asarray(fixed_mask, dtype=bool)
    if mask.shape != fixed.shape:
        raise DataError(f"fixed_mask shape {mask.shape} differs from the fixed image's {fixed.shape}")
    if mask.sum() < 64:
        raise DataError("fixed_mask selects fewer than 64 voxels; too few to register on")
    return fixed, moving, mask


def ncc(a: Any, b: Any, mask: Any = None) -> float:
    """Normalised cross-correlation (Pearson r) of two arrays over ``mask`` and finite voxels.

    Two passes (means, then centred sums) over slabs of the leading axis with float64 sums:
    the whole-array float64 version held ~6 array-sized temporaries, 0.75 GiB at a 256^3
    registration grid and the elastix worker's peak (issue 22).

    Parameters
    ----------
    a, b : array_like
        Arrays of the same shape.
    mask : array_like of bool, optional
        Voxels to include (default: all). NaN/inf voxels in either array are always excluded.

    Returns
    -------
    float
        In [-1, 1]; NaN only if fewer than 2 voxels remain or either array is constant there.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(10.0)
    >>> round(ncc(a, 3 * a + 1), 6), round(ncc(a, -a), 6)
    (1.0, -1.0)
    """
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    if a.shape != b.shape:
        raise DataError(f"ncc needs arrays of the same shape, got {a.shape} and {b.shape}")
    if mask is not None:
        mask = np.atleast_1d(np.asarray(mask, dtype=bool))
        if mask.shape != a.shape:
            raise DataError(f"ncc mask shape {mask.shape} differs from the arrays' {a.shape}")
    step = max(1, (1 << 20) // max(1, a[:1].size))  # ~1 M voxels (8 MiB of float64) per slab

    def slabs():
        for i in range(0, a.shape[0], step):
            x = np.asarray(a[i:i + step], dtype=np.float64)
            y = np.asarray(b[i:i + step], dtype=np.float64)
            keep = np.isfinite(x) & np.isfinite(y)
            if mask is not None:
                keep &= mask[i:i + step]
            yield x[keep], y[keep]

    n, sa, sb = 0, 0.0, 0.0
    for x, y in slabs():
        n, sa, sb = n + x.size, sa + x.sum(), sb + y.sum()
    if n < 2:
        return float("nan")
    ma, mb = sa / n, sb / n
    sxy, sxx, syy = 0.0, 0.0, 0.0
    for x, y in slabs():
        x -= ma
        y -= mb
        sxy, sxx, syy = sxy + (x * y).sum(), sxx + (x * x).sum(), syy + (y * y).sum()
    den = np.sqrt(sxx * syy)
    return float(sxy / den) if den > 0 else float("nan")


def _describe_linear(a_mat: np.ndarray, b: np.ndarray, shape, spacing):
    ndim = len(shape)
    s = np.asarray(spacing, dtype=np.float64)
    centre = np.asarray(shape, dtype=np.float64) * s / 2
    translation_vox = tuple(float(v) for v in (a_mat @ centre + b - centre) / s)
    u, sv, vt = np.linalg.svd(a_mat)
    rot = u @ vt
    scale = float(np.prod(sv) ** (1.0 / ndim))
    if ndim == 3:
        from scipy.spatial.transform import Rotation

        rotvec = Rotation.from_matrix(rot).as_rotvec(degrees=True)
        rotation = tuple(float(v) for v in rotvec)
        angle = float(np.linalg.norm(rotvec))
    else:
        ang = float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0])))
        rotation, angle = (ang,), abs(ang)
    # voxel-index affine: i_m = S^-1 (A S (i_f + 0.5) + b) - 0.5
    sinv = np.diag(1.0 / s)
    lin = sinv @ a_mat @ np.diag(s)
    off = sinv @ (a_mat @ (0.5 * s) + b) - 0.5
    aff = np.eye(ndim + 1)
    aff[:ndim, :ndim] = lin
    aff[:ndim, ndim] = off
    return translation_vox, rotation, angle, scale, aff


# --------------------------------------------------------------------------- public API


def register_pair(
    fixed: Any,
    moving: Any,
    *,
    params: RegistrationParams | None = None,
    voxel_size_um: float | tuple[float, ...] = 1.0,
    fixed_mask: Any = None,
    resample: bool = True,
    initial_maps: ParameterMaps | None = None,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` with elastix (2D or 3D, physical units).

    Parameters
    ----------
    fixed, moving : array_like
        Images of the same shape, indexed ``(z, y, x)`` or ``(y, x)``; finite values.
        Their contrast may differ (use the default NCC or the MI metric).
    params : RegistrationParams, optional
        Transform model, metric and optimiser settings (defaults: rigid+bspline, NCC).
    voxel_size_um : float or tuple
        Voxel size in um, shared by both images.
    fixed_mask : array_like of bool, optional
        Only fixed-image voxels inside the mask drive the metric (and the NCC report).
    resample : bool
        Resample the moving image onto the fixed grid (``moved``, ``ncc_after``). Callers
        that apply the transform elsewhere (e.g. at full resolution) skip it: ``moved`` is
        then None and ``ncc_after`` NaN, saving a transformix pass over the whole grid.
    initial_maps : list of dict, optional
        Parameter maps of an earlier registration of the same pair to start from; the
        estimated stages are composed onto them, and the result's maps are both lists in order.

    Returns
    -------
    RegistrationResult

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> rng = np.random.default_rng(0)
    >>> fixed = ndi.gaussian_filter(rng.random((40, 40, 40)), 2).astype(np.float32)
    >>> moving = ndi.shift(fixed, (1.5, -2.0, 1.0), order=1)
    >>> res = register_pair(fixed, moving, params=RegistrationParams(mode="rigid"))  # doctest: +SKIP
    >>> np.round(res.translation_vox, 1)  # doctest: +SKIP
    array([ 1.5, -2. ,  1. ])
    """
    if (w := register_worker.active()) is not None:  # itk stays out of this process
        return w.call(register_pair, fixed, moving, params=params, voxel_size_um=voxel_size_um, fixed_mask=fixed_mask,
                      resample=resample, initial_maps=initial_maps)
    p = (params or RegistrationParams()).validated()
    fixed, moving, mask = _check_pair(fixed, moving, fixed_mask)
    spacing = _spacing(voxel_size_um, fixed.ndim)

    itk = elastix.load_itk()
    maps = elastix.stage_maps(p, spacing, fixed.shape)
    kwargs: dict[str, Any] = {
        "parameter_object": elastix.parameter_object(maps),
        "log_to_console": False,
    }
    if mask is not None:
        kwargs["fixed_mask"] = elastix.to_itk(mask, spacing, dtype=np.uint8)
    if p.threads is not None:
        kwargs["number_of_threads"] = int(p.threads)
    if initial_maps:
        kwargs["initial_transform_parameter_object"] = elastix.parameter_object(initial_maps)
    t0 = time.perf_counter()
    try:
        _, tpo = itk.elastix_registration_method(elastix.to_itk(fixed, spacing), elastix.to_itk(moving, spacing), **kwargs)
    except RuntimeError as exc:  # elastix reports e.g. too few samples in the mask this way
        raise DataError(f"elastix registration failed: {str(exc).strip().splitlines()[-1]}") from exc
    elapsed = time.perf_counter() - t0
    tmaps = elastix.maps_from_object(tpo)  # with initial maps: those first, then the new stages

    if resample:
        # resample with NaN outside the moving image so the NCC only sees real overlap
        moved, _ = elastix.transformix(
            moving, elastix.with_grid(tmaps, fixed.shape, spacing, **elastix.resample_entries(p.final_order)), spacing
        )
        region = np.isfinite(moved) if mask is None else np.isfinite(moved) & mask
        ncc_before = ncc(fixed, moving, region)
        ncc_after = ncc(fixed, moved, region)
        if not np.isnan(p.fill_value):
            moved = np.where(np.isfinite(moved), moved, np.float32(p.fill_value)).astype(np.float32)
    else:
        moved, ncc_before, ncc_after = None, ncc(fixed, moving, mask), float("nan")

    a_mat, b = elastix.linear_part(tmaps, fixed.shape, spacing)
    translation, rotation, angle, scale, aff = _describe_linear(a_mat, b, fixed.shape, spacing)
    log.info(
        "registered (%s): translation %s vox, rotation %.3f deg, NCC %.4f -> %.4f in %.2f s",
        p.mode, np.round(translation, 3).tolist(), angle, ncc_before, ncc_after, elapsed,
    )
    return RegistrationResult(
        moved=moved,
        parameter_maps=tmaps,
        mode=p.mode,
        translation_vox=translation,
        rotation_deg=rotation,
        rotation_angle_deg=angle,
        scale=scale,
        affine_vox=aff,
        ncc_before=ncc_before,
        ncc_after=ncc_after,
        elapsed_s=elapsed,
        voxel_size_um=spacing,
        params=asdict(p),
    )


def apply_transform(
    array: Any,
    result: RegistrationResult | ParameterMaps,
    *,
    voxel_size_um: float | tuple[float, ...] | None = None,
    order: int = 1,
    fill_value: float = 0.0,
) -> np.ndarray:
    """Apply a stored registration transform to another array.

    The array may live on the registration grid or on any other grid of the same physical
    frame (e.g. the full-resolution volume when the transform was estimated on binned
    data, or vice versa): the output grid is the array's own shape and ``voxel_size_um``.

    Parameters
    ----------
    array : array_like
        2D or 3D image, label or mask array (same ndim as the registration).
    result : RegistrationResult or list of dict
        The registration, or its ``parameter_maps`` (e.g. read back from ``run.json``).
    voxel_size_um : float or tuple, optional
        Voxel size of ``array`` in um (default: the registration's voxel size; required
        when ``result`` is a list of parameter maps).
    order : int
        0 (nearest neighbour: labels/masks keep their dtype), 1 (linear) or 3 (cubic B-spline).
        NaN voxels (masked Li maps) are allowed with orders 0 and 1; with order 1 a NaN
        spoils the output voxels whose interpolation footprint contains it.
    fill_value : float
        Output value where the transform maps outside ``array`` (NaN allowed for float output).

    Returns
    -------
    numpy.ndarray
        float32 for ``order`` 1/3; the input dtype for ``order=0``.

    Examples
    --------
    >>> moved_full = apply_transform(full_res, res, voxel_size_um=0.03)  # doctest: +SKIP
    """
    if (worker := register_worker.active()) is not None:
        return worker.call(apply_transform, array, result, voxel_size_um=voxel_size_um, order=order,
                           fill_value=fill_value)
    if isinstance(result, RegistrationResult):
        maps = result.parameter_maps
        default_vs = result.voxel_size_um
    else:
        maps = [dict(m) for m in result]
        default_vs = None
    if not maps:
        raise LitomoError("apply_transform got no transform parameter maps")
    if order not in (0, 1, 3):
        raise LitomoError(f"interpolation order must be 0, 1 or 3, got {order}")
    a = np.asarray(array)
    ndim_t = int(maps[0].get("FixedImageDimension", maps[0].get("MovingImageDimension", [a.ndim]))[0])
    if a.ndim != ndim_t:
        raise DataError(f"the transform is {ndim_t}D but the array has shape {a.shape}")
    if voxel_size_um is None:
        if default_vs is None:
            raise LitomoError("apply_transform needs voxel_size_um when given bare parameter maps")
        voxel_size_um = default_vs
    spacing = _spacing(voxel_size_um, a.ndim)
    in_dtype = a.dtype
    is_int = a.dtype == bool or np.issubdtype(a.dtype, np.integer)
    if is_int and order == 0 and a.size and (int(a.max()) > _MAX_EXACT_LABEL or int(a.min()) < -_MAX_EXACT_LABEL):
        raise DataError(f"labels beyond +-{_MAX_EXACT_LABEL} cannot be resampled exactly (float32 path)")
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise DataError(f"apply_transform needs a numeric array, got dtype {a.dtype}")
    if order == 0 and is_int and np.isnan(fill_value):
        raise LitomoError("fill_value cannot be NaN for an integer array resampled with order=0")
    if order == 3 and np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        # the cubic B-spline prefilter is recursive along whole lines: one NaN spoils them all
        raise DataError("cubic interpolation (order=3) cannot handle NaN voxels; use order=1 or 0")
    out, outside = elastix.transformix(
        a.astype(np.float32), elastix.with_grid(maps, a.shape, spacing, **elastix.resample_entries(order)), spacing
    )
    # NaN voxels of the input (e.g. masked Li maps) stay NaN; only outside voxels are filled
    out[outside] = np.float32(fill_value)
    if order == 0 and is_int:
        return np.rint(out).astype(in_dtype)
    return out


# --------------------------------------------------------------------------- full resolution


def displacement_field(
    result: RegistrationResult | ParameterMaps,
    shape: tuple[int, ...],
    *,
    voxel_size_um: float | tuple[float, ...] | None = None,
) -> np.ndarray:
    """Displacement ``T(p) - p`` (um, z-first components) of a transform at every voxel centre.

    ``shape``/``voxel_size_um`` define the grid (usually the registration grid). The field of a
    rigid or B-spline transform is smooth, so it can be interpolated linearly onto a finer grid
    of the same physical frame (see :mod:`litomo.resample`).

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(ndim, *shape)``; component 0 is the z displacement.
    """
    from litomo.elastix_field import displacement

    if isinstance(result, RegistrationResult):
        maps, vs = result.parameter_maps, voxel_size_um or result.voxel_size_um
    else:
        maps, vs = [dict(m) for m in result], voxel_size_um
    if vs is None:
        raise LitomoError("displacement_field needs voxel_size_um when given bare parameter maps")
    spacing = _spacing(vs, len(shape))
    # rigid and B-spline maps are evaluated with numpy: the caller need not load itk for them
    native = displacement(maps, tuple(int(n) for n in shape), spacing)
    if native is not None:
        return native
    if (worker := register_worker.active()) is not None:
        return worker.call(displacement_field, maps, shape, voxel_size_um=spacing)
    itk = elastix.load_itk()
    img = elastix.to_itk(np.zeros(shape, np.float32), spacing)
    field = elastix.deformation_field(img, elastix.parameter_object(elastix.with_grid(maps, tuple(shape), spacing)))
    arr = np.asarray(itk.array_from_image(field), dtype=np.float32)  # (..., ndim) x-first
    return np.moveaxis(arr[..., ::-1], -1, 0).copy()

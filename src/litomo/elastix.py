"""elastix/transformix plumbing for :mod:`litomo.register`: parameter maps, itk images, grids.

Everything here speaks elastix's language (x-first parameter maps of strings, itk images with
physical spacing and origin); :mod:`litomo.register` is the public wrapper in litomo's
``(z, y, x)``, micrometre terms. Frame convention: the corner of voxel ``(0, 0, 0)`` is the
origin, so an itk image's origin is half a voxel.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from typing import Any

import numpy as np

ParameterMaps = list[dict[str, list[str]]]
# elastix cannot parse "nan" as DefaultPixelValue: mark outside-the-image voxels with a
# float32 value no real image reaches, then turn it into NaN
OUTSIDE = -3.0e38


def load_itk():
    # itk takes ~10 s to import; keep `import litomo` cheap by importing on first use
    import itk

    return itk


def to_itk(a: np.ndarray, spacing: tuple[float, ...], dtype: Any = np.float32):
    itk = load_itk()
    # a view of the (contiguous) array, which the image keeps alive (itk's _SetBase), not a
    # copy: the fixed and moving copies were 128 MiB of the elastix worker's peak at a 256^3
    # registration grid (issue 22); elastix only reads its input images
    img = itk.image_view_from_array(np.ascontiguousarray(a, dtype=dtype))
    sp_xyz = tuple(float(s) for s in reversed(spacing))
    img.SetSpacing(sp_xyz)
    img.SetOrigin(tuple(0.5 * s for s in sp_xyz))  # voxel corner (0, 0, 0) at the origin
    return img


def deformation_field(img, parameter_object):
    """transformix's deformation field, without leaving deformationField.nii in the cwd.

    transformix writes that file into the current directory (it ignores output_directory),
    so run it from inside a temporary directory.
    """
    itk = load_itk()
    with tempfile.TemporaryDirectory(prefix="litomo-transformix-") as tmp, contextlib.chdir(tmp):
        return itk.transformix_deformation_field(img, parameter_object, log_to_console=False)


def fmt(x: float) -> str:
    return repr(float(x))


def grid_entries(shape: tuple[int, ...], spacing: tuple[float, ...]) -> dict[str, list[str]]:
    """elastix output-grid entries (x-first) for an array of ``shape`` (z-first) and spacing."""
    ndim = len(shape)
    return {
        "Size": [str(int(n)) for n in reversed(shape)],
        "Spacing": [fmt(s) for s in reversed(spacing)],
        "Origin": [fmt(0.5 * s) for s in reversed(spacing)],
        "Index": ["0"] * ndim,
        "Direction": [fmt(1.0 if i == j else 0.0) for j in range(ndim) for i in range(ndim)],
    }


def parameter_object(maps: ParameterMaps):
    itk = load_itk()
    po = itk.ParameterObject.New()
    for m in maps:
        po.AddParameterMap({k: [str(v) for v in vals] for k, vals in m.items()})
    return po


def maps_from_object(po) -> ParameterMaps:
    return [
        {str(k): [str(v) for v in vals] for k, vals in dict(po.GetParameterMap(i)).items()}
        for i in range(po.GetNumberOfParameterMaps())
    ]


def resample_entries(order: int) -> dict[str, list[str]]:
    out = {
        "DefaultPixelValue": [fmt(OUTSIDE)],
        "ResultImagePixelType": ["float"],
        "WriteResultImage": ["true"],
    }
    if order == 0:
        out["ResampleInterpolator"] = ["FinalNearestNeighborInterpolator"]
    elif order == 1:
        out["ResampleInterpolator"] = ["FinalLinearInterpolator"]
    else:
        out["ResampleInterpolator"] = ["FinalBSplineInterpolator"]
        out["FinalBSplineInterpolationOrder"] = [str(int(order))]
    return out


def stage_maps(p: Any, spacing: tuple[float, ...], shape: tuple[int, ...]) -> ParameterMaps:
    """elastix parameter maps of the stages of ``p`` (a validated :class:`litomo.register.RegistrationParams`)."""
    itk = load_itk()
    po = itk.ParameterObject.New()
    stages: list[str] = []
    if p.mode.startswith(("rigid", "similarity", "translation")):
        stages.append(p.mode.split("+")[0])
    if p.mode.endswith("bspline"):
        stages.append("bspline")
    common = {
        "ImageSampler": [p.sampler],
        "NumberOfSpatialSamples": [str(int(p.spatial_samples))],
        "NewSamplesEveryIteration": ["true" if p.sampler.startswith("Random") else "false"],
        "MaximumNumberOfIterations": [str(int(p.iterations))],
        "NumberOfResolutions": [str(int(p.resolutions))],
        "RandomSeed": [str(int(p.seed))],
        "WriteResultImage": ["false"],
        "ResultImagePixelType": ["float"],
        "ErodeMask": ["false"],
        "NumberOfHistogramBins": ["32"],
    }
    maps: ParameterMaps = []
    for stage in stages:
        if stage == "bspline":
            spacing_um = float(p.bspline_grid_spacing_vox) * float(np.mean(spacing))
            levels = int(p.bspline_resolutions or p.resolutions) if len(stages) > 1 else int(p.resolutions)
            m = dict(po.GetDefaultParameterMap("bspline", levels, spacing_um))
            if p.jacobian_measurements:
                # elastix's default is max(1000, number of parameters): cap it
                n_params = len(shape) * math.prod(math.ceil(n * s / spacing_um) + 3
                                                  for n, s in zip(shape, spacing, strict=True))
                m["NumberOfJacobianMeasurements"] = [str(max(1000, min(n_params, int(p.jacobian_measurements))))]
            if p.bending_weight > 0:
                m["Metric"] = [p.metric, "TransformBendingEnergyPenalty"]
                m["Metric0Weight"] = ["1.0"]
                m["Metric1Weight"] = [fmt(p.bending_weight)]
            else:
                m["Registration"] = ["MultiResolutionRegistration"]
                m["Metric"] = [p.metric]
                for k in ("Metric0Weight", "Metric1Weight"):
                    m.pop(k, None)
        else:
            m = dict(po.GetDefaultParameterMap("translation" if stage == "translation" else "rigid", int(p.resolutions)))
            m["Metric"] = [p.metric]
            if stage == "similarity":
                m["Transform"] = ["SimilarityTransform"]
            if stage != "translation":
                m["AutomaticScalesEstimation"] = ["true"]
        m = {str(k): [str(v) for v in vals] for k, vals in m.items()}
        m.update(common)
        if stage == "bspline" and len(stages) > 1:
            m["NumberOfResolutions"] = [str(int(p.bspline_resolutions or p.resolutions))]
            m["MaximumNumberOfIterations"] = [str(int(p.bspline_iterations or p.iterations))]
        m.update(pyramid_entries(int(m["NumberOfResolutions"][0]), spacing))
        maps.append(m)
    return maps


def pyramid_entries(levels: int, spacing: tuple[float, ...]) -> dict[str, list[str]]:
    """elastix's smoothing pyramid (full-size images, Gaussian sigma of half the level's factor
    2**(levels - 1 - level) in voxels), one level at a time.

    ``FixedSmoothingImagePyramid`` (elastix's default) computes every level's smoothed copy of
    both images before the first level starts; the generic pyramid with the same (unit) rescale
    and smoothing schedules, per resolution, holds one level's: same transforms (within 1e-9 on
    the 256^3 phantom grid), the worker's peak in a 2-level rigid registration +302 -> +174 MiB
    (issue 22). Schedules are x-first, sigmas physical.
    """
    sigmas = [fmt(0.5 * 2 ** (levels - 1 - lvl) * s) for lvl in range(levels) for s in reversed(spacing)]
    return {
        "FixedImagePyramid": ["FixedGenericImagePyramid"],
        "MovingImagePyramid": ["MovingGenericImagePyramid"],
        "ImagePyramidRescaleSchedule": ["1"] * (levels * len(spacing)),
        "ImagePyramidSmoothingSchedule": sigmas,
        "ComputePyramidImagesPerResolution": ["true"],
    }


def with_grid(maps: ParameterMaps, shape: tuple[int, ...], spacing: tuple[float, ...], **extra) -> ParameterMaps:
    grid = grid_entries(shape, spacing)
    return [{**m, **grid, **extra} for m in maps]


def linear_part(maps: ParameterMaps, shape: tuple[int, ...], spacing: tuple[float, ...]):
    """Fit ``T(p) = A p + b`` (physical, z-first) to the linear stages of ``maps``.

    Sampling the transform through transformix's deformation field on a coarse grid avoids
    re-deriving each elastix transform's parameterisation (Euler angle order, versors,
    centres of rotation); an affine map is recovered exactly from any non-degenerate grid.
    """
    ndim = len(shape)
    linear = [m for m in maps if m.get("Transform", [""])[0] != "BSplineTransform"]
    if not linear:
        return np.eye(ndim), np.zeros(ndim)
    itk = load_itk()
    coarse_shape = tuple(min(n, 9) for n in shape)
    coarse_spacing = tuple(n * s / c for n, s, c in zip(shape, spacing, coarse_shape, strict=True))
    sub = with_grid(linear, coarse_shape, coarse_spacing)
    ref = to_itk(np.zeros(coarse_shape, np.float32), coarse_spacing)
    dfield = itk.array_from_image(deformation_field(ref, parameter_object(sub)))
    disp = np.asarray(dfield, dtype=np.float64)[..., ::-1]  # itk gives (x, y, z) vectors
    idx = np.indices(coarse_shape, dtype=np.float64)
    pts = np.stack([(idx[i] + 0.5) * coarse_spacing[i] for i in range(ndim)], axis=-1).reshape(-1, ndim)
    tgt = pts + disp.reshape(-1, ndim)
    design = np.hstack([pts, np.ones((pts.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, tgt, rcond=None)
    return coef[:ndim].T, coef[ndim]


def transformix(
    array: np.ndarray, maps: ParameterMaps, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``array`` with ``maps``; returns the result (NaN outside) and the outside mask."""
    itk = load_itk()
    img = to_itk(array, spacing)
    out = itk.transformix_filter(img, parameter_object(maps), log_to_console=False)
    out = np.array(itk.array_from_image(out), dtype=np.float32)
    outside = out < 0.5 * OUTSIDE
    out[outside] = np.nan
    return out, outside

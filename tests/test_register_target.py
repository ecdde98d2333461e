"""The itk-free resampling of the predicted-edge target and the per-stage pyramid levels (issue 22).

Truth: transformix itself. :func:`litomo.workflows.limap.registration.warp_cubic` replaced
two transformix order-3 resamplings in the register stage; here both resample one smooth
image through rigid + B-spline maps set far from identity. The B-spline-only registration
started from a rigid one (``initial_maps``) must store the whole chain.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from litomo import elastix
from litomo.register import RegistrationParams, apply_transform, register_pair
from litomo.workflows.limap.registration import deformation_beyond_rigid, warp_cubic

pytestmark = pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(7)
    n, spacing = 40, (0.5, 0.4, 0.3)
    image = ndi.gaussian_filter(rng.random((n, n, n)), 2.5).astype(np.float32)
    image = (image - image.mean()) / image.std()
    params = RegistrationParams(mode="rigid+bspline", bspline_grid_spacing_vox=10, iterations=5, resolutions=1)
    res = register_pair(image, ndi.shift(image, (0.5, 0, 0), order=1), params=params, voxel_size_um=spacing,
                        resample=False)
    rigid, bspl = (dict(m) for m in res.parameter_maps)
    rigid["TransformParameters"] = [repr(v) for v in (0.03, -0.02, 0.04, 0.6, -0.5, 0.4)]  # rad, um (x-first)
    bspl["TransformParameters"] = [repr(float(v)) for v in rng.normal(0, 0.3, len(bspl["TransformParameters"]))]
    return image, [rigid, bspl], spacing


def test_warp_cubic_matches_transformix(case):
    image, maps, spacing = case
    ref = apply_transform(image, maps, voxel_size_um=spacing, order=3, fill_value=np.nan)
    inner = (slice(8, -8),) * 3  # boundary handling differs (transformix: mirror prefilter, fill outside)
    assert np.isfinite(ref[inner]).all()
    assert np.abs(ref[inner] - image[inner]).mean() > 0.3  # the transform really moves the content (std 1)
    # the field evaluated at every voxel: the same resampling (measured max 2.1e-5)
    exact = np.abs(warp_cubic(image, maps, spacing, field_step_vox=1)[inner] - ref[inner])
    assert exact.max() < 4e-5
    # the default 4-voxel field grid, upsampled linearly: on this rough field (random coefficients
    # 0.3 um on a 10-voxel control grid) measured max 0.044, mean 0.0054
    coarse = np.abs(warp_cubic(image, maps, spacing)[inner] - ref[inner])
    assert coarse.max() < 0.09 and coarse.mean() < 0.011


def test_bspline_stage_levels_apart_from_the_rigid_ones():
    p = RegistrationParams(mode="rigid+bspline", resolutions=2, bspline_resolutions=1, bspline_iterations=50).validated()
    rigid, bspl = elastix.stage_maps(p, (0.25,) * 3, (64,) * 3)
    assert rigid["NumberOfResolutions"] == ["2"] and rigid["MaximumNumberOfIterations"] == ["200"]
    assert bspl["NumberOfResolutions"] == ["1"] and bspl["MaximumNumberOfIterations"] == ["50"]
    assert len(bspl["GridSpacingSchedule"]) == 1  # the pyramid schedule follows the level count
    # a B-spline-only registration keeps the common settings
    (only,) = elastix.stage_maps(RegistrationParams(mode="bspline", resolutions=2, bspline_resolutions=1).validated(),
                                 (0.25,) * 3, (64,) * 3)
    assert only["NumberOfResolutions"] == ["2"]


def test_registration_from_initial_maps_keeps_them_first():
    """A B-spline-only registration started from a rigid one (the register stage's edge step)."""
    rng = np.random.default_rng(0)
    fixed = ndi.gaussian_filter(rng.random((32, 32, 32)), 2).astype(np.float32)
    moving = ndi.shift(fixed, (1.2, -0.8, 0.6), order=1, mode="nearest").astype(np.float32)
    rigid = register_pair(fixed, moving, params=RegistrationParams(mode="rigid", iterations=50, resolutions=2),
                          voxel_size_um=0.5, resample=False)
    params = RegistrationParams(mode="bspline", iterations=30, resolutions=1, bspline_grid_spacing_vox=10)
    res = register_pair(fixed, moving, params=params, voxel_size_um=0.5, initial_maps=rigid.parameter_maps)
    assert [m["Transform"][0] for m in res.parameter_maps] == ["EulerTransform", "BSplineTransform"]
    assert res.parameter_maps[0]["TransformParameters"] == rigid.parameter_maps[0]["TransformParameters"]
    # ``moved``/``ncc_after`` come from transformix applying the stored chain, so the chain is what
    # elastix registered (a stored chain without the rigid map would leave ~1.5 voxels of shift)
    np.testing.assert_allclose(res.translation_vox, (1.2, -0.8, 0.6), atol=0.04)
    assert res.ncc_after > 0.995 > res.ncc_before


def _transformix_field_vox(image, maps, spacing):
    """|T(p) - p| of ``maps`` in voxels, by transformix (x-first components)."""
    itk = elastix.load_itk()
    img = elastix.to_itk(np.zeros(image.shape, np.float32), spacing)
    field = elastix.deformation_field(img, elastix.parameter_object(elastix.with_grid(maps, image.shape, spacing)))
    return np.asarray(itk.array_from_image(field), np.float64) / np.asarray(spacing[::-1])


def test_deformation_beyond_rigid_matches_transformix(case):
    """The register stage's deformation test (issue 16): the B-spline's displacement beyond the
    rigid part, over the bright voxels, against transformix's fields of the two chains."""
    image, maps, spacing = case
    d = _transformix_field_vox(image, maps, spacing) - _transformix_field_vox(image, maps[:1], spacing)
    norm = np.sqrt((d**2).sum(-1))[image > 0.5]
    rms, big = float(np.sqrt(np.mean(norm**2))), float(norm.max())
    assert rms > 0.3  # the B-spline really deforms (coefficients 0.3 um on 0.3-0.5 um voxels)
    got_rms, got_max = deformation_beyond_rigid(maps, image, 0.5, spacing)
    # every second voxel, half a voxel off transformix's centres: measured rms 0.4469 vs 0.4505,
    # max 1.030 vs 1.060
    assert abs(got_rms - rms) < 0.008
    assert abs(got_max - big) < 0.06
    flat = {**maps[1], "TransformParameters": ["0"] * len(maps[1]["TransformParameters"])}
    assert deformation_beyond_rigid([maps[0], flat], image, 0.5, spacing) == (0.0, 0.0)  # rigid only: none

"""The numba warp kernels against scipy / litomo.resample.warp_slab (small volumes)."""

import numpy as np
import pytest
from scipy import ndimage

from litomo.errors import LitomoError
from litomo.preprocess import bin_array, bin_masked, interior_mask
from litomo.resample import (
    bin_selected,
    box_mean,
    bspline_sum,
    field_grid,
    interior_bits,
    read_moving_rows,
    selection_bits,
    warp_bin_field,
    warp_bin_slab,
    warp_slab,
    warp_slab_linear,
)


def _random_coords(rng, shape, block_shape, z_offset):
    # spread well beyond the block on every side so the edge clamping is exercised
    return [rng.uniform(-3.0, n + 2.0, shape) + (z_offset if a == 0 else 0)
            for a, n in enumerate(block_shape)]


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_linear_matches_scipy_map_coordinates(dtype):
    rng = np.random.default_rng(1)
    block = (rng.random((9, 11, 13)) * 60000).astype(dtype)
    sz, sy, sx = _random_coords(rng, (6, 7, 8), block.shape, z_offset=5)
    assert (sz < 5).any() and (sx > 12).any()  # out-of-range coordinates are present
    ref = ndimage.map_coordinates(block.astype(np.float32), [sz - 5, sy, sx], order=1,
                                  mode="nearest")
    got = warp_slab_linear(block, 5, sz, sy, sx)
    assert got.dtype == np.float32 and got.shape == (6, 7, 8)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6 * float(block.max()))


def test_linear_float32_coordinates_and_integer_points():
    rng = np.random.default_rng(2)
    block = rng.random((5, 6, 7)).astype(np.float32)
    z, y, x = (a.astype(np.float32) for a in np.indices(block.shape))
    np.testing.assert_array_equal(warp_slab_linear(block, 0, z, y, x), block)


def test_binned_equals_bin_of_unbinned():
    rng = np.random.default_rng(3)
    block = rng.random((20, 30, 26)).astype(np.float32)
    shape = (14, 21, 23)  # x not a multiple of the factor: the partial bin is dropped
    sz, sy, sx = _random_coords(rng, shape, block.shape, z_offset=2)
    full = warp_slab_linear(block, 2, sz, sy, sx)
    got = warp_bin_slab(block, 2, sz, sy, sx, (7, 7, 5))
    ref = bin_array(full, (7, 7, 5))
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_integer_shift_reproduces_roll_in_interior():
    rng = np.random.default_rng(4)
    vol = rng.random((16, 18, 20)).astype(np.float32)
    shift = (2, -3, 1)
    z, y, x = (a.astype(np.float64) + s for a, s in zip(np.indices(vol.shape), shift, strict=True))
    got = warp_slab_linear(vol, 0, z, y, x)
    ref = np.roll(vol, [-s for s in shift], axis=(0, 1, 2))
    inner = (slice(0, 16 - 2), slice(3, 18), slice(0, 20 - 1))
    np.testing.assert_array_equal(got[inner], ref[inner])
    # beyond the edge the nearest edge value is repeated
    np.testing.assert_array_equal(got[-1], vol[-1][np.clip(np.arange(18) - 3, 0, 17)][:, np.clip(
        np.arange(20) + 1, 0, 19)])


def _field(rng, shape):
    # smooth-ish field of a few tenths of a voxel up to a few voxels (um, voxel 0.1 um)
    return (rng.standard_normal((3, *shape)) * 0.15).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_field_kernel_matches_warp_slab_then_bin(dtype):
    rng = np.random.default_rng(5)
    moving = (rng.random((40, 35, 42)) * 4000).astype(dtype)
    field = _field(rng, (6, 5, 6))
    vs, fvs = (0.1, 0.1, 0.1), (0.7, 0.7, 0.7)
    factor = (7, 7, 7)
    for z_range in [(0, 14), (14, 28), (28, 42)]:  # the last slab runs past the volume
        ref = bin_array(warp_slab(moving, field, fvs, vs, z_range, (35, 42), order=1), factor)
        got = warp_bin_field(moving, field, fvs, vs, z_range, (35, 42), factor)
        assert got.shape == ref.shape == (2, 5, 6)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(moving.max()))


def test_field_kernel_anisotropic_and_moving_rows_suffice():
    rng = np.random.default_rng(6)
    moving = rng.random((30, 24, 27)).astype(np.float32)
    field = _field(rng, (4, 5, 4))
    vs, fvs = (0.1, 0.12, 0.09), (0.6, 0.48, 0.54)
    factor = (3, 4, 3)
    ref = bin_array(warp_slab(moving, field, fvs, vs, (6, 18), (24, 27), order=1), factor)
    got = warp_bin_field(moving, field, fvs, vs, (6, 18), (24, 27), factor)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # the rows moving_rows names are all the slab reads: NaN everywhere else changes nothing
    lo, hi = field_grid(field, fvs, vs, (6, 18), (24, 27)).moving_rows(moving.shape[0])
    assert 0 < hi - lo < moving.shape[0]
    poisoned = np.full_like(moving, np.nan)
    poisoned[lo:hi] = moving[lo:hi]
    np.testing.assert_allclose(warp_bin_field(poisoned, field, fvs, vs, (6, 18), (24, 27), factor), ref,
                               rtol=1e-5, atol=1e-6)


def test_field_kernel_slab_outside_volume_takes_edge_values():
    moving = np.random.default_rng(7).random((10, 14, 14)).astype(np.float32)
    field = np.zeros((3, 2, 2, 2), np.float32)
    field[0] = 50.0  # +50 um in z = 500 voxels: everything maps beyond the last row
    out = warp_bin_field(moving, field, (0.7,) * 3, (0.1,) * 3, (0, 7), (14, 14), 7)
    np.testing.assert_allclose(out[0], moving[-1].reshape(2, 7, 2, 7).mean(axis=(1, 3)),
                               rtol=1e-6)


def test_bad_input_raises_litomo_error():
    with pytest.raises(LitomoError):
        warp_slab_linear(np.zeros((2, 2)), 0, np.zeros((1, 1, 1)), np.zeros((1, 1, 1)),
                         np.zeros((1, 1, 1)))
    with pytest.raises(LitomoError):
        warp_bin_field(np.zeros((4, 4, 4)), np.zeros((2, 2, 2, 2)), (1, 1, 1), (1, 1, 1),
                       (0, 2), (4, 4), 2)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_field_kernel_valid_and_interior_means_match_bin_masked_of_the_warped_slab(dtype):
    rng = np.random.default_rng(8)
    moving = (rng.random((40, 35, 42)) * 4000).astype(dtype)
    field = _field(rng, (6, 5, 6))
    vs, fvs, factor = (0.1, 0.1, 0.1), (0.7, 0.7, 0.7), (7, 7, 7)
    z_range = (7, 21)
    valid = rng.random((14, 35, 42)) < 0.8
    interior = rng.random((14, 35, 42)) < 0.3
    interior[:7, :7, :7] = False  # a bin without any selected voxel gives NaN
    valid[7:, 7:14, 7:14] = False
    warped = warp_slab(moving, field, fvs, vs, z_range, (35, 42), order=1)
    ref_plain, _ = bin_masked(warped, valid, factor)
    ref_inner, _ = bin_masked(warped, valid & interior, factor)
    tol = {"rtol": 1e-5, "atol": 1e-5 * 4000}
    plain, inner = warp_bin_field(moving, field, fvs, vs, z_range, (35, 42), factor,
                                  valid=valid, interior=interior)
    assert np.isnan(inner[0, 0, 0]) and np.isnan(plain[1, 1, 1])
    np.testing.assert_allclose(plain, ref_plain, **tol)
    np.testing.assert_allclose(inner, ref_inner, **tol)
    # interior alone: plain means over every voxel
    plain_all, inner_all = warp_bin_field(moving, field, fvs, vs, z_range, (35, 42), factor,
                                          interior=interior)
    np.testing.assert_allclose(plain_all, bin_array(warped, factor), **tol)
    np.testing.assert_allclose(inner_all, bin_masked(warped, interior, factor)[0], **tol)
    # valid alone: just the plain means
    np.testing.assert_allclose(warp_bin_field(moving, field, fvs, vs, z_range, (35, 42), factor,
                                              valid=valid), ref_plain, **tol)
    bits = selection_bits((14, 35, 42), valid, interior)
    p_b, i_b = warp_bin_field(moving, field, fvs, vs, z_range, (35, 42), factor, bits=bits)
    np.testing.assert_allclose(p_b, ref_plain, **tol)
    np.testing.assert_allclose(i_b, ref_inner, **tol)
    with pytest.raises(LitomoError, match="does not cover"):
        warp_bin_field(moving, field, fvs, vs, z_range, (35, 42), factor, interior=interior[:7])


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_bin_selected_matches_bin_masked_of_each_selection(dtype):
    rng = np.random.default_rng(9)
    block = (rng.random((14, 21, 15)) * 4000).astype(dtype)
    valid = rng.random(block.shape) < 0.8
    interior = rng.random(block.shape) < 0.3
    interior[:7, :7, :7] = False  # no interior voxel: NaN mean, count 0
    plain, inner, count = bin_selected(block, selection_bits(block.shape, valid, interior), 7)
    ref_plain, _ = bin_masked(block, valid, 7)
    ref_inner, ref_count = bin_masked(block, valid & interior, 7)
    assert plain.shape == (2, 3, 2) and np.isnan(inner[0, 0, 0]) and count[0, 0, 0] == 0
    np.testing.assert_allclose(plain, ref_plain, rtol=1e-6)
    np.testing.assert_allclose(inner, ref_inner, rtol=1e-6)
    np.testing.assert_array_equal(count, ref_count)
    with pytest.raises(LitomoError, match="does not cover"):
        bin_selected(block, selection_bits((7, 21, 15), valid[:7]), 7)


def test_bspline_sum_matches_scipy_inside_the_grid_and_is_zero_outside():
    rng = np.random.default_rng(10)
    coef = rng.normal(size=(3, 7, 8, 9))
    u = np.stack([rng.uniform(-1.0, n + 1.0, (400,)) for n in coef.shape[1:]])
    inside = np.all([(u[d] >= 1) & (u[d] < n - 2) for d, n in enumerate(coef.shape[1:])], axis=0)
    assert 50 < inside.sum() < 350  # both kinds of points are present
    ref = np.stack([ndimage.map_coordinates(c, u, order=3, prefilter=False) for c in coef])
    got = bspline_sum(coef, u)
    np.testing.assert_allclose(got[:, inside], ref[:, inside], rtol=1e-12, atol=1e-12)
    assert (got[:, ~inside] == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_interior_bits_match_selection_bits_of_interior_mask(dtype):
    rng = np.random.default_rng(11)
    halo = (rng.random((12, 17, 16)) * 100).astype(dtype)  # rows 1..10 are the slab
    valid = rng.random((10, 15, 14)) < 0.9
    ref_inner = interior_mask(halo, 30.0, 1)[1:11, :15, :14]
    assert 0.05 < ref_inner.mean() < 0.5
    got = interior_bits(halo, 1, 30.0, (10, 15, 14), valid)
    np.testing.assert_array_equal(got, selection_bits((10, 15, 14), valid, ref_inner))
    np.testing.assert_array_equal(interior_bits(halo, 1, 30.0, (10, 15, 14)),
                                  selection_bits((10, 15, 14), None, ref_inner))
    with pytest.raises(LitomoError, match="does not cover"):
        interior_bits(halo, 3, 30.0, (10, 15, 14))


def test_rows_read_ahead_give_the_same_warp_and_refuse_rows_not_held():
    rng = np.random.default_rng(12)
    moving = (rng.random((42, 21, 21)) * 4000).astype(np.uint16)
    field = _field(rng, (6, 3, 3))
    args = (field, (0.7,) * 3, (0.1,) * 3, (14, 28), (21, 21))
    held = read_moving_rows(moving, *args)
    assert 0 < held.block.shape[0] < moving.shape[0] and held.shape == moving.shape
    np.testing.assert_array_equal(warp_bin_field(held, *args, 7), warp_bin_field(moving, *args, 7))
    with pytest.raises(LitomoError, match="were not read"):
        warp_bin_field(held, field, (0.7,) * 3, (0.1,) * 3, (28, 42), (21, 21), 7)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_box_mean_matches_scipy_uniform_filter(dtype):
    """The interior mask's 3x3x3 box mean (issue 16) against scipy's, faces included (nearest)."""
    rng = np.random.default_rng(12)
    block = (rng.random((5, 9, 11)) * 1000).astype(dtype)
    ref = ndimage.uniform_filter(block.astype(np.float64), 3, mode="nearest")
    got = box_mean(block)
    assert got.dtype == np.float32 and got.shape == block.shape
    np.testing.assert_allclose(got, ref, rtol=2e-7, atol=0)  # float32 rounding of the mean (measured 6e-8)
    with pytest.raises(LitomoError, match="3D"):
        box_mean(block[0])

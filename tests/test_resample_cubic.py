"""The numba cubic evaluation of the Li-mapping warp against scipy's map_coordinates (the peer)."""

import numpy as np
import pytest
from scipy import ndimage

from litomo.resample import map_coordinates_cubic, warp_slab


def test_cubic_matches_scipy_bit_for_bit_inside_and_outside_the_block():
    rng = np.random.default_rng(3)
    block = (rng.random((16, 21, 23)) * 60000).astype(np.float32)
    shape = (9, 21, 23)
    src = [np.indices(shape)[i] + rng.normal(0.0, 0.8, shape) + (3.0 if i == 0 else 0.0) for i in range(3)]
    # far outside the block on every side (beyond scipy's 12-voxel prepad too)
    src[2][0, 0, :6] = [-0.5, -3.0, -13.0, -40.0, 30.0, 80.0]
    src[0][1, 1, :3] = [-20.0, 15.4, 60.0]
    ref = ndimage.map_coordinates(block, src, order=3, mode="nearest")
    got = map_coordinates_cubic(block, src)
    assert got.dtype == np.float32
    assert np.array_equal(got, ref)


def test_warp_slab_cubic_equals_scipy_on_its_own_coordinates():
    # a smooth field: warp_slab's cubic path must give what map_coordinates gives on the same slab
    rng = np.random.default_rng(4)
    moving = rng.random((28, 30, 32)).astype(np.float32)
    field = rng.normal(0.0, 0.15, (3, 4, 5, 5)).astype(np.float32)
    fvs, vs = (0.7, 0.6, 0.64), (0.1, 0.1, 0.1)
    got = warp_slab(moving, field, fvs, vs, (7, 21), (30, 32))
    # the reference, built independently of warp_slab: scipy on the full moving volume
    # (linear field upsampling by scipy's order-1 map_coordinates of the field)
    zc, yc, xc = ((np.arange(a, b) + 0.5) * 0.1 for a, b in ((7, 21), (0, 30), (0, 32)))
    grid = np.meshgrid(zc / fvs[0] - 0.5, yc / fvs[1] - 0.5, xc / fvs[2] - 0.5, indexing="ij")
    centres = np.meshgrid(zc, yc, xc, indexing="ij")
    src = [(centres[a] + ndimage.map_coordinates(field[a], grid, order=1, mode="nearest")) / 0.1 - 0.5
           for a in range(3)]
    ref = ndimage.map_coordinates(moving, src, order=3, mode="nearest")
    # only the prefilter's extent differs (the slab's rows vs the whole volume; white noise is
    # its worst case, measured 0.03 of the data range), well below the cubic-vs-linear difference
    lin = ndimage.map_coordinates(moving, src, order=1, mode="nearest")
    err = np.abs(got - ref).max()
    assert err < 0.5 * np.abs(lin - ref).max()
    assert err < 0.06


# --- the fused cubic warp + bin (litomo.resample.cubic): scipy's whole-volume spline, slab by slab


def test_spline_rows_equal_scipys_whole_volume_coefficients():
    from litomo.resample.cubic import PAD, spline_rows

    rng = np.random.default_rng(0)
    for shape in [(40, 9, 10), (70, 33, 31), (5, 6, 7)]:
        v = (rng.random(shape) * 1000).astype(np.float32)
        # scipy's prefilter of map_coordinates(order=3, mode="nearest"): the whole padded volume
        ref = ndimage.spline_filter(np.pad(v.astype(np.float64), PAD, mode="edge"), 3,
                                    output=np.float64, mode="nearest")
        n = shape[0]
        # windows at the volume's start, inside, at its end, beyond both ends
        for z_lo, z_hi in [(0.0, 3.0), (20.2, 25.0), (n - 3.0, n - 1.0), (-5.0, n + 3.0), (10.0, 11.0)]:
            s = spline_rows(v, z_lo, z_hi)
            got = s.coef
            assert got.shape[1:] == ref.shape[1:] and s.n_rows == n
            # the z recursion over a window forgets its start by 0.268^28 (measured <= 4.5e-16)
            np.testing.assert_allclose(got, ref[s.first : s.first + got.shape[0]], rtol=0,
                                       atol=1e-12 * np.abs(ref).max())


def test_spline_rows_sample_scipys_map_coordinates_and_refuse_nan():
    from litomo.resample.cubic import spline_rows

    rng = np.random.default_rng(1)
    v = (rng.random((60, 20, 22)) * 4000).astype(np.uint16)
    pts = [rng.uniform(30.0, 37.0, 500), rng.uniform(-2.0, 21.0, 500), rng.uniform(-2.0, 23.0, 500)]
    ref = ndimage.map_coordinates(v.astype(np.float64), pts, order=3, mode="nearest", output=np.float64)
    got = spline_rows(v, 30.0, 37.0).sample(pts)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())  # measured 3.7e-15
    bad = v.astype(np.float32)
    bad[55, 4, 4] = np.nan
    assert spline_rows(bad, 50.0, 53.0) is None  # the caller samples such rows trilinearly
    assert spline_rows(bad, 5.0, 9.0) is not None  # the NaN row is beyond this window's halo


def _smooth_field(rng, shape):
    return (rng.standard_normal((3, *shape)) * 0.15).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_fused_cubic_warp_is_scipys_whole_volume_map_coordinates(dtype):
    from litomo.preprocess import bin_array
    from litomo.resample import read_spline_rows, source_coordinates, warp_bin_field

    rng = np.random.default_rng(5)
    moving = (rng.random((42, 35, 40)) * 4000).astype(dtype)
    field = _smooth_field(rng, (6, 5, 6))
    vs, fvs = (0.1, 0.1, 0.1), (0.7, 0.7, 0.7)
    for z_range in [(0, 14), (14, 28), (28, 42)]:
        spl = read_spline_rows(moving, field, fvs, vs, z_range, (35, 40))
        src = source_coordinates(field, fvs, vs, z_range, (35, 40))
        ref = ndimage.map_coordinates(moving.astype(np.float64), src, order=3, mode="nearest",
                                      output=np.float64)
        got = warp_bin_field(spl, field, fvs, vs, z_range, (35, 40), 1)  # bins of one voxel
        # the float32 result is scipy's value rounded (measured: 0 ulps from float32(ref))
        ulps = np.abs(got - ref.astype(np.float32)) / np.spacing(np.abs(ref).astype(np.float32))
        assert ulps.max() <= 1.0
        binned = warp_bin_field(spl, field, fvs, vs, z_range, (35, 40), (7, 5, 4))
        np.testing.assert_allclose(binned, bin_array(ref.astype(np.float32), (7, 5, 4)), rtol=2e-7, atol=0)


def test_cubic_slab_loop_equals_the_masked_bins_of_scipys_warped_volumes():
    """The <= 512^3 path of warp_and_bin (fused cubic kernel, coefficients prepared a slab ahead
    in a thread) against its definition: each moving volume warped by scipy's map_coordinates
    (order 3, the whole volume), then bin_masked over the observed voxels and the eroded
    interior of the post-edge volume's box mean. The old slab-wise prefilter (warp_slab) was
    off by up to 0.03 of the data range at every slab boundary."""
    from litomo.preprocess import bin_masked, interior_mask
    from litomo.register import displacement_field
    from litomo.resample import observed_mask, source_coordinates
    from litomo.workflows.limap.warp import warp_and_bin
    from pipeline_helpers import translated_energies

    shape = (56, 35, 35)
    z, y, x = np.indices(shape)
    occ = ((z - 20.2) ** 2 + (y - 14.1) ** 2 + (x - 16.7) ** 2 < 100) | ((z - 40.4) ** 2 + (y - 22.3) ** 2
                                                                         + (x - 20.1) ** 2 < 81)
    vols, maps, binned, fvs, vs = translated_energies(shape, occ)
    plain, inner = warp_and_bin(vols, {"post_edge": None, **maps}, binned, fvs, vs, (7, 7, 7),
                                interior=(1.0, 1), cubic=True)
    fields = {r: displacement_field(m, binned["post_edge"].shape, voxel_size_um=fvs) for r, m in maps.items()}
    valid = np.ones(shape, bool)
    for f in fields.values():
        valid &= observed_mask(f, fvs, vs, (0, 56), (35, 35), shape)
    assert 0.5 < valid.mean() < 1.0  # some voxels left the field of view
    box = ndimage.uniform_filter(vols["post_edge"].astype(np.float64), 3, mode="nearest")
    mask = interior_mask(box, 1.0, 1) & valid
    ref = {r: ndimage.map_coordinates(vols[r].astype(np.float64), source_coordinates(f, fvs, vs, (0, 56), (35, 35)),
                                      order=3, mode="nearest").astype(np.float32) for r, f in fields.items()}
    ref["post_edge"] = vols["post_edge"]
    for r, v in ref.items():
        np.testing.assert_allclose(plain[r], bin_masked(v, valid, 7)[0], rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(inner[r], bin_masked(v, mask, 7)[0], rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(inner["count"], bin_masked(vols["post_edge"], mask, 7)[1])

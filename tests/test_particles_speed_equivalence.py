"""The fast paths of particle separation and statistics give the reference libraries' results."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops_table
from skimage.morphology import h_maxima

from litomo.metrics.particles import shape_table
from litomo.particles import centroids_um, particle_table
from litomo.segment.flood import h_maxima_mask
from litomo.segment.particles import separate_particles


def _smoothed_distance(seed: int, shape=(36, 40, 44), voxel_um=0.4):
    rng = np.random.default_rng(seed)
    mask = ndi.gaussian_filter(rng.random(shape), 2.0) > 0.5
    dist = ndi.distance_transform_edt(mask, sampling=voxel_um)
    return ndi.gaussian_filter(dist, 0.4) * mask, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("h", [0.4, 1.0])
def test_h_maxima_mask_equals_skimage(seed, h):
    dist, _ = _smoothed_distance(seed)
    ref = h_maxima(dist.astype(np.float32), np.float32(h)).astype(bool)
    fast = h_maxima_mask(dist, h)
    assert ref.any()
    assert np.array_equal(fast, ref)


def test_h_maxima_mask_h_above_range_gives_nothing():
    dist, _ = _smoothed_distance(0)
    assert not h_maxima_mask(dist, float(np.ptp(dist)) + 1.0).any()


def test_separation_matches_skimage_h_maxima_pipeline():
    # the same pipeline written with skimage's h_maxima (float32) gives identical labels
    from skimage.segmentation import relabel_sequential, watershed

    dist, mask = _smoothed_distance(3, voxel_um=0.5)
    labels = separate_particles(mask, voxel_size_um=0.5, min_size_vox=0)
    d = ndi.gaussian_filter(ndi.distance_transform_edt(mask, sampling=0.5), 0.4) * mask
    markers, _ = ndi.label(h_maxima(d.astype(np.float32), np.float32(0.5)).astype(bool) & mask,
                           structure=np.ones((3, 3, 3)))
    # components without a maximum get one marker at their distance maximum (as in the library)
    comp, ncomp = ndi.label(mask)
    missing = sorted(set(range(1, ncomp + 1)) - set(np.unique(comp[markers > 0]).tolist()))
    start = markers.max() + 1
    for i, c in enumerate(ndi.maximum_position(d, comp, missing)):
        markers[c] = start + i
    ref, _, _ = relabel_sequential(watershed(-d, markers, mask=mask))
    assert labels.max() > 5
    assert np.array_equal(labels, ref)


def test_centroids_equal_regionprops():
    rng = np.random.default_rng(4)
    lab = ndi.label(ndi.gaussian_filter(rng.random((30, 34, 38)), 1.5) > 0.52)[0].astype(np.int32)
    v = (0.3, 0.5, 0.7)
    cen = centroids_um(lab, v)
    rp = regionprops_table(lab, properties=("label", "centroid"))
    assert lab.max() > 10
    for ax in range(3):
        np.testing.assert_allclose(cen[:, ax], (rp[f"centroid-{ax}"] + 0.5) * v[ax], rtol=1e-12)
    t = shape_table(lab, voxel_size_um=v, mesh=False)
    np.testing.assert_allclose(t["centroid_y_um"], cen[:, 1], rtol=1e-12)
    assert t["area_mc_um2"].isna().all()
    base = particle_table(lab, v)
    assert base["particle"].tolist() == rp["label"].tolist()
    np.testing.assert_array_equal(base["n_voxels"], np.bincount(lab.ravel())[1:])


@pytest.mark.parametrize("voxel_um", [(0.25, 0.25, 0.25), (0.5, 0.25, 0.125), (1.0, 1.0, 1.0), (0.4, 0.4, 0.4),
                                      (0.3, 0.5, 0.5)])
def test_distance_um_equals_scipy_bit_for_bit(voxel_um):
    # the edt package's path (binary-fraction voxels) and scipy's fallback (0.4, 0.3) alike
    from litomo.segment.particles import distance_um

    _, mask = _smoothed_distance(5, shape=(40, 37, 51))
    mask[:, :, :3] = True  # particles cut by the faces: the outside is not background
    ref = ndi.distance_transform_edt(mask, sampling=voxel_um)
    got = distance_um(mask, voxel_um)
    assert got.dtype == np.float64 and ref.max() > 3 * min(voxel_um)
    assert np.array_equal(got, ref)
    full = np.ones((6, 7, 8), bool)  # no background voxel: edt would answer inf
    assert np.array_equal(distance_um(full, voxel_um), ndi.distance_transform_edt(full, sampling=voxel_um))


def test_fill_voids_equals_scipy_fill_holes():
    # particles_from_finer_grid fills enclosed voids with fill_voids instead of scipy
    import fill_voids

    rng = np.random.default_rng(6)
    mask = ndi.gaussian_filter(rng.random((40, 44, 48)), 1.5) > 0.47
    ref = ndi.binary_fill_holes(mask)
    assert ref.sum() > mask.sum()  # there are enclosed voids to fill
    assert np.array_equal(fill_voids.fill(mask, in_place=False), ref)

"""litomo.segment.flood: the sorted-level watershed and the hybrid reconstruction against scikit-image (the peer)."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import watershed

from litomo.errors import DataError
from litomo.segment.flood import flood_from_markers


def _case(rng, t):
    shape = tuple(int(n) for n in rng.integers(1, 12, 3))
    img = rng.random(shape)
    mk = np.zeros(shape, np.int32)
    idx = rng.choice(img.size, size=min(int(rng.integers(1, 6)), img.size), replace=False)
    mk.ravel()[idx] = np.arange(1, idx.size + 1)
    if t % 3 == 0:
        # plateaus everywhere (many equal values: the first-in first-out order decides), markers
        # at distinct values (their order among equal values is the one thing left open)
        img = np.round(img * 4) / 4
        img.ravel()[idx] = -1.0 - 0.01 * np.arange(idx.size)
    mask = rng.random(shape) > 0.2 if t % 2 else None
    return img, mk, mask


def test_equals_scikit_image_on_random_images_with_plateaus_and_masks():
    rng = np.random.default_rng(0)
    for t in range(150):
        img, mk, mask = _case(rng, t)
        np.testing.assert_array_equal(flood_from_markers(img, mk, mask), watershed(img, mk, mask=mask))


def test_equals_scikit_image_on_a_distance_map_of_touching_spheres():
    z, y, x = np.ogrid[:30, :30, :50]
    balls = [((15, 15, 13), 9), ((15, 16, 30), 8), ((14, 15, 42), 6)]
    solid = np.zeros((30, 30, 50), bool)
    for (cz, cy, cx), r in balls:
        solid |= (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    dist = ndimage.gaussian_filter(ndimage.distance_transform_edt(solid), 0.4) * solid
    markers = np.zeros(solid.shape, np.int32)
    for k, (c, _) in enumerate(balls, 1):
        markers[c] = k
    ours = flood_from_markers(-dist, markers, solid)
    np.testing.assert_array_equal(ours, watershed(-dist, markers, mask=solid))
    assert set(np.unique(ours)) == {0, 1, 2, 3} and (ours[solid] > 0).all()


def test_equals_scikit_image_where_one_level_holds_tens_of_thousands_of_voxels():
    # an exact distance map of a box: every distance layer is one value shared by thousands of
    # voxels, all reached before their level is flooded (the case an insertion sort by age made
    # quadratic: minutes at a 256^3 grid); markers at distinct values
    solid = np.zeros((40, 70, 70), bool)
    solid[2:-2, 2:-2, 2:-2] = True
    dist = ndimage.distance_transform_edt(solid)
    markers = np.zeros(solid.shape, np.int32)
    for k, c in enumerate([(20, 20, 20), (20, 50, 50), (20, 20, 50)], 1):
        markers[c] = k
        dist[c] = 30.0 + k
    ours = flood_from_markers(-dist, markers, solid)
    np.testing.assert_array_equal(ours, watershed(-dist, markers, mask=solid))
    assert np.bincount(ours[solid])[1:].min() > 10_000


def test_markers_outside_the_mask_are_dropped_and_unreached_voxels_stay_zero():
    img = np.zeros((1, 1, 5))
    mask = np.array([[[True, True, False, True, True]]])
    mk = np.array([[[0, 0, 7, 0, 0]]], np.int32)
    mk2 = np.array([[[1, 0, 0, 0, 0]]], np.int32)
    assert flood_from_markers(img, mk, mask).tolist() == watershed(img, mk, mask=mask).tolist()
    assert flood_from_markers(img, mk2, mask)[0, 0].tolist() == [1, 1, 0, 0, 0]


def test_bad_input_is_a_one_line_error():
    with pytest.raises(DataError, match="3D image"):
        flood_from_markers(np.zeros((4, 4)), np.zeros((4, 4), np.int32))
    with pytest.raises(DataError, match="non-negative"):
        flood_from_markers(np.zeros((2, 2, 2)), -np.ones((2, 2, 2), np.int32))
    with pytest.raises(DataError, match="mask shape"):
        flood_from_markers(np.zeros((2, 2, 2)), np.zeros((2, 2, 2), np.int32), np.ones((2, 2), bool))


def test_reconstruction_by_dilation_equals_scikit_image():
    from skimage.morphology import reconstruction

    from litomo.segment.flood import reconstruct_by_dilation

    rng = np.random.default_rng(1)
    for t in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 10, 3))
        m = rng.random(shape).astype(np.float32)
        if t % 2:  # plateaus
            m = (np.round(m * 3) / 3).astype(np.float32)
        seed = m - (rng.random(shape) * 0.7).astype(np.float32)
        ref = reconstruction(seed, m, method="dilation").astype(np.float32)
        np.testing.assert_array_equal(reconstruct_by_dilation(seed, m), ref)
    with pytest.raises(DataError, match="seed <= mask"):
        reconstruct_by_dilation(np.ones((2, 2, 2)), np.zeros((2, 2, 2)))

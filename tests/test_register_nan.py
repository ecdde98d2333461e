"""Registration of reconstructions that hold NaN outside the field of view (issue 14).

A reconstruction's field-of-view mask writes NaN where not every view saw the slice; elastix
needs finite images. The register stage fills those bins (:func:`filled_grid`) and keeps the
metric on measured bins with a fixed mask. Truth: the shift applied to the moving volume.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from litomo.register import RegistrationParams
from litomo.workflows.limap.registration import estimate, filled_grid

pytestmark = pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")


def _outside_circle(n: int) -> np.ndarray:
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    return np.broadcast_to(np.hypot(y, x) > 0.45 * n, (n, n, n))


def test_shift_recovered_with_nan_outside_the_field_of_view():
    rng = np.random.default_rng(3)
    n, shift = 40, (0.0, 1.5, -1.0)  # z, y, x voxels
    image = ndi.gaussian_filter(rng.random((n, n, n)), 2.0).astype(np.float32)
    moving = ndi.shift(image, shift, order=3, mode="nearest").astype(np.float32)
    outside = _outside_circle(n)
    grid = {r: np.where(outside, np.float32(np.nan), v) for r, v in
            (("post_edge", image), ("pre_edge", moving), ("edge", moving))}
    filled, measured = filled_grid(grid)
    assert measured is not None and not measured[outside].any()
    assert 0.35 < measured.mean() < 0.45  # the measured disc less a 4-bin margin (0.40)
    assert all(np.isfinite(v).all() for v in filled.values())
    params = RegistrationParams(mode="rigid", iterations=200, resolutions=1, spatial_samples=4096)
    res = estimate(filled["post_edge"], filled["pre_edge"], params, (1.0, 1.0, 1.0), fixed_mask=measured)
    # measured error 0.0003 voxel (0.12 without the mask's margin, 0.23 without a mask)
    assert np.abs(np.asarray(res.translation_vox) - np.asarray(shift)).max() < 0.01


def test_a_grid_without_nan_is_returned_as_is():
    g = {"post_edge": np.ones((4, 4, 4), np.float32)}
    filled, mask = filled_grid(g)
    assert filled is g and mask is None

"""Local property maps on a constructed two-region volume, and face-area conservation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.metrics.local import local_property_maps, tile_map, tile_profile
from litomo.metrics.surface import face_area_matrix


def _two_regions() -> np.ndarray:
    """x < 16: pore/AM stripes (2 voxels each) along z and y; x >= 16: CBD with one 4x4 pore channel."""
    lab = np.full((32, 32, 32), 2, np.uint8)
    x = np.arange(16)
    lab[:, :, :16] = np.where(x % 4 < 2, 0, 1)[None, None, :]
    lab[:, 20:24, 20:24] = 0
    return lab


def test_two_region_tiles_exact():
    t = local_property_maps(_two_regions(), 1.0, 16.0)
    assert len(t) == 8
    stripes = t[t.ix == 0]
    assert (stripes["volume_fraction_pore"] == 0.5).all() and (stripes["volume_fraction_am"] == 0.5).all()
    # 7 pore/AM faces across x inside the tile, the AM/CBD face at x = 15|16 counts half
    assert np.allclose(stripes["specific_surface_pore_um-1"], 7 * 256 / 4096)
    assert np.allclose(stripes["specific_surface_am_um-1"], 7.5 * 256 / 4096)
    assert np.allclose(stripes["specific_surface_cbd_um-1"], 0.5 * 256 / 4096)
    assert np.allclose(stripes["tau_pore_z"], 1.0)
    channel = t[(t.ix == 1) & (t.iy == 1)]
    assert np.allclose(channel["volume_fraction_pore"], 16 / 256)
    assert np.allclose(channel["specific_surface_pore_um-1"], 256 / 4096)  # 4 sides x 4 x 16
    assert np.allclose(channel["specific_surface_cbd_um-1"], (256 + 128) / 4096)
    assert np.allclose(channel["tau_pore_z"], 1.0)
    closed = t[(t.ix == 1) & (t.iy == 0)]
    assert (closed["volume_fraction_pore"] == 0).all() and np.isinf(closed["tau_pore_z"]).all()
    prof = tile_profile(t, "z")
    assert len(prof) == 2 and prof["volume_fraction_pore_mean"].tolist() == pytest.approx([(0.5 * 2 + 1 / 16) / 4] * 2)
    assert prof["n_inf_tau_pore_z"].tolist() == [1, 1]
    assert prof["tau_pore_z_mean"].tolist() == pytest.approx([1.0, 1.0])
    assert tile_map(t, "volume_fraction_pore")[1, 1, 1] == pytest.approx(1 / 16)


def test_tile_areas_sum_to_the_whole_volume_face_counting():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (20, 18, 22)).astype(np.uint8)
    v = (0.5, 0.4, 0.3)
    t = local_property_maps(lab, v, (3.5, 2.0, 2.1), tortuosity_axis=None)
    vol = ((t.z1_um - t.z0_um) * (t.y1_um - t.y0_um) * (t.x1_um - t.x0_um)).to_numpy()
    fam = face_area_matrix(lab, v)
    for k, p in enumerate(("pore", "am", "cbd")):
        assert (t[f"specific_surface_{p}_um-1"] * vol).sum() == pytest.approx(fam[k].sum() - fam[k, k], rel=1e-9)
        assert (t[f"volume_fraction_{p}"] * vol).sum() == pytest.approx((lab == k).sum() * math.prod(v))
    with pytest.raises(DataError, match="--tile-um"):
        local_property_maps(lab, v, -1.0)

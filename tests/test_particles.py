"""The particle core (litomo.particles) and the tables built on it share one base."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops_table

from litomo.damage import damage_table
from litomo.errors import DataError
from litomo.metrics.particles import shape_table
from litomo.particles import (
    BASE_COLUMNS,
    boundary_touching,
    centroids_um,
    check_particle_labels,
    d50_um,
    equivalent_diameters_um,
    particle_table,
)
from litomo.statistics import li_particle_table
from litomo.tomo.deadangle import particle_orientation


def _labels(seed: int = 0, shape=(30, 34, 38)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = ndi.label(ndi.gaussian_filter(rng.random(shape), 1.5) > 0.53)[0].astype(np.int32)
    lab[lab == 3] = 0  # an id without voxels: absent from every table
    return lab


def test_base_table_matches_regionprops_and_the_definitions():
    lab = _labels()
    vs = (0.3, 0.5, 0.7)
    t = particle_table(lab, vs)
    rp = regionprops_table(lab, properties=("label", "area", "centroid", "bbox"))
    assert tuple(t.columns) == BASE_COLUMNS and len(t) > 10 and 3 not in t["particle"].tolist()
    assert t["particle"].tolist() == rp["label"].tolist()
    np.testing.assert_array_equal(t["n_voxels"], rp["area"])
    np.testing.assert_allclose(t["volume_um3"], rp["area"] * 0.3 * 0.5 * 0.7, rtol=1e-12)
    np.testing.assert_allclose(t["eq_diameter_um"], np.cbrt(6 * t["volume_um3"] / np.pi), rtol=1e-12)
    for ax, c in enumerate("zyx"):
        np.testing.assert_allclose(t[f"centroid_{c}_um"], (rp[f"centroid-{ax}"] + 0.5) * vs[ax], rtol=1e-12)
    # boundary: a bounding box reaching a face of the volume
    lo = np.stack([rp[f"bbox-{a}"] for a in range(3)], axis=1)
    hi = np.stack([rp[f"bbox-{a + 3}"] for a in range(3)], axis=1)
    touches = (lo == 0).any(axis=1) | (hi == np.array(lab.shape)).any(axis=1)
    np.testing.assert_array_equal(t["touches_boundary"], touches)
    assert set(boundary_touching(lab)) == set(t.loc[t["touches_boundary"], "particle"])


def test_sizes_of_a_known_ball_and_cube():
    z, y, x = np.ogrid[:41, :41, :41]
    lab = ((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 12**2).astype(np.int32)
    lab[1:5, 1:5, 1:5] = 2  # a 4^3 cube
    d = equivalent_diameters_um(lab, 0.5)
    assert d.tolist() == pytest.approx([0.5 * np.cbrt(6 * np.count_nonzero(lab == 1) / np.pi),
                                        0.5 * np.cbrt(6 * 64 / np.pi)], rel=1e-12)
    assert d[0] == pytest.approx(12.0, rel=0.01)  # digitised ball of radius 12 voxels
    # the cumulative distribution (sorted diameters) reaches 1/2 at the cube by number; by volume
    # the cube holds w = 0.5^3 * 64 / (ball + cube volume) and the median interpolates towards the ball
    assert d50_um(lab, 0.5, by="number") == pytest.approx(d[1], rel=1e-12)
    w = d[1] ** 3 / (d**3).sum()
    assert d50_um(lab, 0.5) == pytest.approx(d[1] + (0.5 - w) / (1 - w) * (d[0] - d[1]), rel=1e-12)
    np.testing.assert_allclose(centroids_um(lab, 0.5)[1], [1.5, 1.5, 1.5])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 3)), "3D"),
    (np.zeros((3, 3, 3), np.float32), "integers"),
    (-np.ones((3, 3, 3), np.int32), ">= 0"),
])
def test_bad_labels_are_refused(bad, match):
    with pytest.raises(DataError, match=match):
        check_particle_labels(bad)
    with pytest.raises(DataError, match=match):
        particle_table(bad)


def test_every_table_starts_with_the_same_base():
    lab = _labels(1, shape=(24, 26, 28))
    vs = 0.25
    base = particle_table(lab, vs)
    x = np.where(lab > 0, 0.8, np.nan)
    tables = {
        "shape": shape_table(lab, voxel_size_um=vs, mesh=False),
        "li": li_particle_table(x, lab, voxel_size_um=vs),
        "damage": damage_table(lab, vs),
        "orientation": particle_orientation(lab, vs),
    }
    for name, t in tables.items():
        assert tuple(t.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS, name
        pd.testing.assert_frame_equal(t[list(BASE_COLUMNS)].reset_index(drop=True), base, obj=name)

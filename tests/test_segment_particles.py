"""Particle separation by distance-transform watershed: analytic sphere configurations."""

from __future__ import annotations

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.particles import boundary_touching, d50_um
from litomo.segment.particles import separate_particles, tune_separation


def _spheres(shape, centres, radius):
    z, y, x = np.indices(shape)
    mask = np.zeros(shape, bool)
    for c in centres:
        mask |= (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius**2
    return mask


@pytest.mark.parametrize("kwargs", [{}, {"min_distance_um": 4.0}, {"h_maxima": 2.0, "compactness": 0.01}])
def test_two_touching_spheres_give_two(kwargs):
    # overlap of 2 voxels: one connected component, a clear neck
    mask = _spheres((24, 24, 40), [(12, 12, 11), (12, 12, 27)], 9)
    assert np.unique(__import__("scipy").ndimage.label(mask)[0]).size == 2  # one object + background
    labels = separate_particles(mask, **kwargs)
    assert labels.dtype == np.int32 and labels.max() == 2
    assert np.array_equal(labels > 0, mask)
    # the cut runs through the neck: each half holds one sphere
    assert labels[12, 12, 11] != labels[12, 12, 27]
    assert abs((labels == 1).sum() - (labels == 2).sum()) < 0.02 * mask.sum()


def test_monodisperse_pack_count_and_d50():
    rng = np.random.default_rng(0)
    shape, r, centres = (60, 60, 60), 6, []
    while len(centres) < 60:  # random pack, neighbours may overlap by up to 1 voxel
        c = rng.uniform(r, 60 - r, 3)
        if all(np.linalg.norm(c - d) >= 2 * r - 1 for d in centres):
            centres.append(c)
    mask = _spheres(shape, centres, r)
    labels = separate_particles(mask, voxel_size_um=0.5)
    assert labels.max() == len(centres)
    # equivalent diameter of a digitised sphere of radius 6 voxels (0.5 um each): ~6 um
    digitised = (6 * _spheres((15, 15, 15), [(7, 7, 7)], r).sum() / np.pi) ** (1 / 3) * 0.5
    assert d50_um(labels, 0.5) == pytest.approx(digitised, rel=0.03)
    touching = boundary_touching(labels)
    def touches(c):  # some face voxel lies inside the digitised sphere
        for ax in range(3):
            off = [(np.round(c[a]) - c[a]) ** 2 for a in range(3) if a != ax]
            if min(c[ax], 59 - c[ax]) ** 2 + sum(off) <= r**2:
                return True
        return False

    near_face = sum(touches(c) for c in centres)
    assert len(touching) == near_face


def test_tune_separation_recovers_reference_d50():
    # 4x4x4 touching spheres: over-segmentation (tiny h) or merging (huge h) changes D50
    centres = [(7 + 11 * i, 7 + 11 * j, 7 + 11 * k) for i in range(4) for j in range(4) for k in range(4)]
    mask = _spheres((48, 48, 48), centres, 6)
    target = (6 * _spheres((15, 15, 15), [(7, 7, 7)], 6).sum() / np.pi) ** (1 / 3)
    res = tune_separation(mask, target, values=[0.5, 2.0, 8.0])
    assert res["d50_um"] == pytest.approx(target, rel=0.03)
    assert res["labels"].max() == 64
    assert [s["n_particles"] for s in res["scan"]][-1] < 64  # the merging end of the scan


def test_boundary_touching_and_errors():
    lab = np.zeros((6, 6, 6), np.int32)
    lab[0, 1, 1], lab[3, 3, 3], lab[2, 2, 5] = 4, 2, 7
    assert boundary_touching(lab).tolist() == [4, 7]
    with pytest.raises(DataError, match="boolean"):
        separate_particles(np.full((4, 4, 4), 3))
    with pytest.raises(DataError, match="not both"):
        separate_particles(np.ones((4, 4, 4), bool), h_maxima=1.0, min_distance_um=2.0)
    assert separate_particles(np.zeros((5, 5, 5), bool)).max() == 0

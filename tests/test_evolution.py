"""Across-state particle matching, Li evolution and difference maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from litomo.errors import DataError
from litomo.evolution import difference_map, evolution_table, match_particles, match_summary
from litomo.statistics import li_particle_table


def _spheres(shape, centres, radii, ids) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    z, y, x = np.indices(shape)
    for c, r, i in zip(centres, radii, ids, strict=True):
        lab[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = i
    return lab


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    grid = np.array([(a, b, c) for a in range(3) for b in range(3) for c in range(3)])
    centres = 7 + grid * 12 + rng.uniform(-1, 1, grid.shape)
    radii = rng.uniform(3.5, 5.0, len(grid))
    radii[8] = 3.0  # particle 9 (index 8, at the high-y edge of the grid) will move
    ids_ref = np.arange(1, len(grid) + 1)
    ref = _spheres(shape, centres, radii, ids_ref)
    # other state: permuted labels, a 1-voxel shift in x, particle 5 gone, particle 9 moved
    # by 5 voxels (IoU ~0.02: only the distance fallback finds it), one new particle in a gap
    perm = rng.permutation(len(grid)) + 50
    keep = ids_ref != 5
    c_other = centres + np.array([0.0, 0.0, 1.0])
    c_other[8] += np.array([0.0, 5.0, 0.0])  # particle 9 (index 8)
    other = _spheres(shape, c_other[keep], radii[keep], perm[keep])
    new = _spheres(shape, [(13, 13, 13)], [2.0], [999])
    other = np.where(new > 0, new, other)
    truth = dict(zip(ids_ref.tolist(), perm.tolist(), strict=True))
    return ref, other, truth


def test_match_recovers_permutation_and_events(scene):
    ref, other, truth = scene
    m = match_particles(ref, other, voxel_size_um=0.5)
    tracked = m[m["status"].isin(["matched", "moved"])]
    got = dict(zip(tracked["particle_ref"].astype(int), tracked["particle_other"].astype(int), strict=True))
    expect = {k: v for k, v in truth.items() if k != 5}
    assert got == expect
    vanished = m[m["status"] == "vanished"]
    assert vanished["particle_ref"].tolist() == [5] and vanished["particle_other"].isna().all()
    appeared = m[m["status"] == "appeared"]
    assert appeared["particle_other"].tolist() == [999] and appeared["particle_ref"].isna().all()
    # the 1-voxel (0.5 um) shift is recovered; only particle 9 counts as moved
    assert m.set_index("particle_ref").loc[9, "status"] == "moved"
    normal = tracked[tracked["particle_ref"] != 9]
    assert (normal["status"] == "matched").all()
    np.testing.assert_allclose(normal["shift_x_um"], 0.5, atol=0.05)
    np.testing.assert_allclose(normal["shift_z_um"], 0.0, atol=0.05)
    assert m.set_index("particle_ref").loc[9, "shift_y_um"] == pytest.approx(2.5, abs=0.1)
    assert m.set_index("particle_ref").loc[9, "overlap_fraction"] < 0.1  # found by distance
    assert (normal["overlap_fraction"] > 0.5).all() and (normal["overlap_fraction"] <= 1).all()
    s = match_summary(m)
    assert (s["n_ref"], s["n_other"], s["n_vanished"], s["n_appeared"], s["n_moved"]) == (27, 27, 1, 1, 1)
    assert s["matched_fraction"] == pytest.approx(26 / 27)


def test_distance_fallback_respects_gate(scene):
    ref, other, _ = scene
    m = match_particles(ref, other, voxel_size_um=0.5, max_distance_um=1.0)  # the 2.5 um move is too far
    st = m.set_index("particle_ref", drop=False)
    assert st.loc[9, "status"] == "vanished"
    assert (m["status"] == "appeared").sum() == 2


def test_overlap_assignment_is_one_to_one():
    # one reference particle split in two in the other state: one half matches, other appears
    ref = np.zeros((10, 10, 20), np.int32)
    ref[2:8, 2:8, 2:18] = 1
    other = np.zeros_like(ref)
    other[2:8, 2:8, 2:12] = 4
    other[2:8, 2:8, 12:18] = 6
    m = match_particles(ref, other, voxel_size_um=1.0, min_iou=0.2)
    row = m[m["particle_ref"] == 1].iloc[0]
    assert int(row["particle_other"]) == 4
    assert row["overlap_fraction"] == pytest.approx(10 / 16)
    assert m.loc[m["status"] == "appeared", "particle_other"].tolist() == [6]


def test_match_rejects_unregistered_shapes():
    with pytest.raises(DataError, match="register"):
        match_particles(np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int), voxel_size_um=1.0)


def test_evolution_table_tracks_li(scene):
    ref, other, truth = scene
    x_ref = np.where(ref > 0, 1.0, np.nan)
    # in the other state particle p loses 0.01 * p of Li (p = reference id)
    inv = {v: k for k, v in truth.items()}
    x_other = np.full(other.shape, np.nan)
    for lab_o in np.unique(other[other > 0]):
        x_other[other == lab_o] = 1.0 - 0.01 * inv.get(int(lab_o), 0)
    tabs = {
        "pristine": li_particle_table(x_ref, ref, voxel_size_um=0.5),
        "charged": li_particle_table(x_other, other, voxel_size_um=0.5),
    }
    m = match_particles(ref, other, voxel_size_um=0.5)
    evo = evolution_table(tabs, {"charged": m})
    assert len(evo) == 2 * 27
    assert evo["state"].tolist()[:2] == ["pristine", "charged"]
    ch = evo[evo["state"] == "charged"].set_index("particle_ref")
    tracked = ch[ch["status"] != "vanished"]
    np.testing.assert_allclose(tracked["delta_mean_li"], -0.01 * tracked.index.to_numpy(dtype=float), atol=1e-12)
    assert np.isnan(ch.loc[5, "delta_mean_li"]) and pd.isna(ch.loc[5, "particle"])
    ref_rows = evo[evo["state"] == "pristine"]
    assert (ref_rows["status"] == "reference").all() and (ref_rows["delta_mean_li"] == 0).all()
    wide = evo.pivot(index="particle_ref", columns="state", values="mean_li")
    assert wide.shape == (27, 2)


def test_difference_map_nan_aware():
    a = np.array([[[0.5, np.nan], [0.9, 1.0]]])
    b = np.array([[[1.0, 1.0], [np.nan, 0.25]]])
    d = difference_map(a, b)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [[[-0.5, np.nan], [np.nan, 0.75]]])
    with pytest.raises(DataError):
        difference_map(a, b[..., :1])

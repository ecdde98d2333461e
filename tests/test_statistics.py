"""Per-state Li statistics (SPEC 2.4) against analytic ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.statistics import (
    DEFAULT_LI_BINS,
    li_histogram,
    li_particle_table,
    state_summary,
    surface_voxels,
    z_profile,
)
from litomo.statistics_core_shell import core_shell_profile, particle_surface_distance_um


def _ball(n: int, r: float, centre=None) -> np.ndarray:
    c = np.full(3, (n - 1) / 2) if centre is None else np.asarray(centre, float)
    z, y, x = np.indices((n, n, n))
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r


def test_state_summary_values_and_class_edges():
    x = np.full((4, 5, 6), np.nan)
    vals = np.array([0.6, 0.9, 0.3, 0.75, 1.0, 0.61, 0.89, 0.95])  # 0.6 is poor, 0.9 rich (SPEC 2.1)
    x.flat[: vals.size] = vals
    s = state_summary(x, voxel_size_um=(1.0, 0.5, 0.5), expected_li=0.7)
    assert s["n_voxels"] == 8
    assert s["mean_li"] == pytest.approx(vals.mean())
    assert s["std_li"] == pytest.approx(vals.std())
    assert s["frac_li_poor"] == pytest.approx(2 / 8)
    assert s["frac_li_rich"] == pytest.approx(3 / 8)
    assert s["frac_li_moderate"] == pytest.approx(3 / 8)
    assert s["total_li_um3"] == pytest.approx(vals.sum() * 0.25)
    assert s["am_volume_um3"] == pytest.approx(8 * 0.25)
    assert s["li_error_vs_expected"] == pytest.approx(vals.mean() - 0.7)
    s2 = state_summary(x, voxel_size_um=1.0, poor_max=0.3, rich_min=0.95)
    assert s2["frac_li_poor"] == pytest.approx(1 / 8) and s2["frac_li_rich"] == pytest.approx(2 / 8)
    assert s2["expected_li"] is None


def test_state_summary_rejects_empty_and_non_float():
    with pytest.raises(DataError, match="no active-material"):
        state_summary(np.full((2, 2, 2), np.nan), voxel_size_um=1.0)
    with pytest.raises(DataError, match="float"):
        state_summary(np.ones((2, 2, 2), int), voxel_size_um=1.0)


def test_histogram_shared_bins_and_out_of_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.1, 1.3, (10, 10, 10))
    x[x > 1.25] = np.nan
    h = li_histogram(x)
    np.testing.assert_array_equal(h.edges, DEFAULT_LI_BINS)
    assert h.counts.size == 60
    v = x[np.isfinite(x)]
    assert h.underflow == int((v < 0).sum()) > 0
    assert h.overflow == int((v > 1.2).sum()) > 0
    assert h.counts.sum() + h.underflow + h.overflow == v.size
    assert h.counts[0] == int(((v >= 0) & (v < 0.02)).sum())
    frame = h.to_frame()
    assert list(frame.columns) == ["bin_left", "bin_right", "bin_centre", "count", "fraction"]
    with pytest.raises(DataError):
        li_histogram(x, bins=[0.5, 0.2])


def test_z_profile_linear_gradient():
    rng = np.random.default_rng(1)
    nz = 12
    z = np.arange(nz)
    x = np.broadcast_to((0.3 + 0.06 * z)[:, None, None], (nz, 8, 9)).copy()
    am = rng.random(x.shape) < 0.7
    am[5] = False  # a slice without active material
    x[~am] = np.nan
    prof = z_profile(x, voxel_size_um=(0.2, 0.05, 0.05))
    expect = np.where(z == 5, np.nan, 0.3 + 0.06 * z)
    np.testing.assert_allclose(prof["mean_li"], expect, rtol=1e-12)
    np.testing.assert_allclose(prof["z_um"], (z + 0.5) * 0.2)
    np.testing.assert_allclose(prof["am_fraction"], am.mean(axis=(1, 2)))
    np.testing.assert_allclose(prof["std_li"].dropna(), 0.0, atol=1e-7)
    li = 0.3 + 0.06 * z
    ok = z != 5
    np.testing.assert_array_equal(prof["frac_li_rich"][ok], (li >= 0.9)[ok].astype(float))
    np.testing.assert_array_equal(prof["frac_li_poor"][ok], (li <= 0.6)[ok].astype(float))
    assert np.isnan(prof.loc[5, "frac_li_rich"])


def test_particle_table_ball_volume_and_half_rich():
    n, r = 40, 9.0
    ball = _ball(n, r)
    lab = ball.astype(np.int32) * 3  # label 3, not 1: ids need not be contiguous
    x = np.where(ball, 1.0, np.nan)
    x[: n // 2][ball[: n // 2]] = 0.5  # lower half (z < centre) Li-poor: exactly half (symmetric ball)
    t = li_particle_table(x, lab, voxel_size_um=0.1)
    assert t["particle"].tolist() == [3]
    row = t.iloc[0]
    vol_true = 4 / 3 * np.pi * (r * 0.1) ** 3
    assert row["volume_um3"] == pytest.approx(vol_true, rel=0.02)
    assert row["eq_diameter_um"] == pytest.approx(2 * r * 0.1, rel=0.01)
    assert row["li_rich_fraction"] == pytest.approx(0.5)
    assert row["mean_li"] == pytest.approx(0.75)
    assert row["std_li"] == pytest.approx(0.25)
    assert row["surface_activity"] == pytest.approx(0.5)
    c_um = (n - 1) / 2 * 0.1 + 0.05
    assert row[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].tolist() == pytest.approx([c_um] * 3)
    assert row["depth_um"] == pytest.approx(c_um)
    assert not row["touches_boundary"]


def test_particle_table_surface_activity_and_many_particles():
    # 3x3x3 cubes on a grid, Li-rich shell and poor core in some; ids scrambled
    rng = np.random.default_rng(2)
    k, size = 10, 4
    n = k * size
    lab = np.zeros((n, n, n), np.int32)
    ids = rng.permutation(k**3) + 100
    centres = {}
    for i, (a, b, c) in enumerate(np.ndindex(k, k, k)):
        sl = (slice(a * size, a * size + 3), slice(b * size, b * size + 3), slice(c * size, c * size + 3))
        lab[sl] = ids[i]
        centres[ids[i]] = (a * size + 1.5, b * size + 1.5, c * size + 1.5)
    surf = surface_voxels(lab)
    shell_rich = np.isin(lab, ids[::2])
    x = np.where(lab > 0, np.where(surf & shell_rich, 0.95, 0.4), np.nan)
    t = li_particle_table(x, lab, voxel_size_um=(0.5, 1.0, 1.0), depth_from="high").set_index("particle")
    assert len(t) == k**3
    # cubes start at index 0 on each axis: those touch the low faces
    first_layer = {ids[i] for i, (a, b, c) in enumerate(np.ndindex(k, k, k)) if 0 in (a, b, c)}
    assert set(t.index[t["touches_boundary"]]) == first_layer
    inner = ~t["touches_boundary"]
    assert (t.loc[inner, "n_surface_voxels"] == 26).all()
    assert (t.loc[~inner, "n_surface_voxels"] < 26).all()  # a cut face is no surface
    rich_ids = [i for i in ids[::2] if i not in first_layer]
    np.testing.assert_allclose(t.loc[rich_ids, "surface_activity"], 1.0)
    np.testing.assert_allclose(t.loc[rich_ids, "li_rich_fraction"], 26 / 27)
    np.testing.assert_allclose(t.loc[ids[1::2], "surface_activity"], 0.0)
    np.testing.assert_allclose(t["volume_um3"], 27 * 0.5)
    cz = np.array([centres[i][0] for i in t.index]) * 0.5
    np.testing.assert_allclose(t["centroid_z_um"], cz)
    np.testing.assert_allclose(t["depth_um"], n * 0.5 - cz)


def test_particle_table_mismatched_labels_raise():
    with pytest.raises(DataError, match="do not match"):
        li_particle_table(np.zeros((3, 3, 3)), np.zeros((3, 3, 4), int), voxel_size_um=1.0)
    with pytest.raises(DataError, match="integers"):
        li_particle_table(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), voxel_size_um=1.0)


def test_particle_table_weighted_mean_is_am_weighted():
    """A particle with a full core voxel (x=0.5) and surface voxels half AM (x=1.0): the
    AM-weighted mean is (n_core*0.5 + 0.5*n_surf*1.0) / (n_core + 0.5*n_surf)."""
    lab = np.zeros((6, 6, 6), np.int32)
    lab[1:5, 1:5, 1:5] = 1
    core = np.zeros_like(lab, bool)
    core[2:4, 2:4, 2:4] = True
    x = np.where(lab == 1, np.where(core, 0.5, 1.0), np.nan)
    w = np.where(core, 1.0, 0.5)
    w[0, 0, 0] = np.nan  # outside the particle: ignored
    n_core, n_surf = 8, 64 - 8
    t = li_particle_table(x, lab, voxel_size_um=1.0, weights=w)
    mean = (n_core * 0.5 + 0.5 * n_surf) / (n_core + 0.5 * n_surf)
    assert t["mean_li"].iloc[0] == pytest.approx(mean)
    var = (n_core * 0.25 + 0.5 * n_surf) / (n_core + 0.5 * n_surf) - mean**2
    assert t["std_li"].iloc[0] == pytest.approx(np.sqrt(var))
    assert li_particle_table(x, lab, voxel_size_um=1.0)["mean_li"].iloc[0] == pytest.approx((4 + 56) / 64)
    with pytest.raises(DataError, match="weights shape"):
        li_particle_table(x, lab, voxel_size_um=1.0, weights=w[:-1])


def test_surface_distance_of_box_and_touching_particles():
    lab = np.zeros((8, 10, 12), np.int32)
    lab[1:7, 1:9, 1:6] = 1
    lab[1:7, 1:9, 6:11] = 2  # touching particle 1 along x: their contact face is a surface
    d = particle_surface_distance_um(lab, voxel_size_um=1.0)
    z, y, x = np.indices(lab.shape)

    def box_dist(lo, hi):  # distance of voxel centres to the faces of the box [lo, hi)
        return np.minimum.reduce([z - lo[0], hi[0] - 1 - z, y - lo[1], hi[1] - 1 - y, x - lo[2], hi[2] - 1 - x]) + 0.5

    np.testing.assert_allclose(d[lab == 1], box_dist((1, 1, 1), (7, 9, 6))[lab == 1])
    np.testing.assert_allclose(d[lab == 2], box_dist((1, 1, 6), (7, 9, 11))[lab == 2])
    assert np.isnan(d[lab == 0]).all()


def test_core_shell_profile_exact_for_known_radial_law():
    n = 30
    lab = np.zeros((n, n, n), np.int32)
    lab[_ball(n, 7.0, (8, 14.5, 14.5))] = 1
    lab[_ball(n, 6.0, (21, 14.5, 14.5))] = 2
    vs = 0.2
    d = particle_surface_distance_um(lab, voxel_size_um=vs)
    # Li falls from 1.0 at the surface by 0.1 per 0.2-um shell: constant within each bin
    law = lambda dist: 1.0 - 0.1 * np.floor(dist / vs)  # noqa: E731
    x = np.where(lab > 0, law(np.nan_to_num(d)), np.nan)
    x[lab == 2] -= 0.05  # particle 2 is uniformly 0.05 lower
    prof = core_shell_profile(x, lab, voxel_size_um=vs, per_particle=True)
    allp = prof[prof["particle"] == "all"]
    kbin = np.floor(d[lab > 0] / vs).astype(int)
    assert allp["n_voxels"].sum() == (lab > 0).sum()
    for _, row in allp.iterrows():
        k = int(round(row["distance_um"] / vs - 0.5))
        sel = kbin == k
        w2 = (lab[lab > 0][sel] == 2).mean()
        assert row["mean_li"] == pytest.approx(1.0 - 0.1 * k - 0.05 * w2)
        assert row["n_voxels"] == sel.sum()
    p2 = prof[prof["particle"] == 2]
    np.testing.assert_allclose(p2["mean_li"], 0.95 - 0.1 * np.round(p2["distance_um"] / vs - 0.5), atol=1e-12)
    np.testing.assert_allclose(p2["std_li"], 0.0, atol=1e-6)
    # outermost shell first, surface voxels at half a voxel
    assert allp["distance_um"].iloc[0] == pytest.approx(0.5 * vs)
    wide = core_shell_profile(x, lab, voxel_size_um=vs, bin_width_um=1.0)
    assert wide["n_voxels"].sum() == (lab > 0).sum()


def test_stage_stats_total_li_counts_slivers_at_their_neighbours_li():
    """Unmapped AM slivers (partial surface voxels below the mapping threshold) carry the x_Li
    of the nearest mapped voxel into the total Li and the particle's mean, not the mean x_Li."""
    from types import SimpleNamespace

    from litomo.manifest import ProcessingSpec
    from litomo.workflows.limap.li import LiMap
    from litomo.workflows.limap.mapping import Mapped
    from litomo.workflows.limap.particles import Particles
    from litomo.workflows.limap.stats import state_statistics

    shape = (6, 6, 10)
    x = np.full(shape, np.nan, np.float32)
    particles = np.zeros(shape, np.int32)
    x[1:5, 1:5, 1:4] = 1.0  # particle core: Li-rich
    x[1:5, 1:5, 4] = 0.4  # its Li-poor surface layer
    particles[1:5, 1:5, 1:5] = 1
    frac = np.where(np.isfinite(x), 1.0, 0.0).astype(np.float32)
    frac[1:5, 1:5, 5] = 0.3  # unmapped sliver beyond the Li-poor layer
    mapped = Mapped(li_plain=x, li_interior=None, interior_count=None, am=np.isfinite(x), am_fraction=frac,
                    jump_threshold=1.0)
    state = SimpleNamespace(name="s", label="", expected_li=None)
    out = state_statistics(state, LiMap(x, 0.0, []), mapped, Particles(particles, np.array([], int)),
                           ProcessingSpec(li_poor_max=0.6, li_rich_min=0.9), (1.0, 1.0, 1.0),
                           np.linspace(0, 1.2, 13))
    n_core, n_layer, n_sliver = 48, 16, 16
    total = n_core * 1.0 + n_layer * 0.4 + 0.3 * n_sliver * 0.4
    row = out["states"].iloc[0]
    assert row["am_volume_um3"] == pytest.approx(n_core + n_layer + 0.3 * n_sliver)
    assert row["total_li_um3"] == pytest.approx(total, rel=1e-6)
    mean = total / (n_core + n_layer + 0.3 * n_sliver)
    assert out["particles"]["mean_li"].iloc[0] == pytest.approx(mean, rel=1e-6)

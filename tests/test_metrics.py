"""Analytic checks of litomo.metrics (SPEC 3) on small phantoms with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.metrics.fractions import am_fraction_bracket, volume_fractions, z_profile_fractions
from litomo.metrics.particles import shape_table, size_statistics, weighted_quantile
from litomo.metrics.percolation import percolation
from litomo.metrics.rev import rev_curve, two_point_correlation
from litomo.metrics.summary import microstructure_report, seed_table
from litomo.metrics.surface import face_area_matrix, mesh_area, surface_areas
from litomo.metrics.tpb import tpb_per_particle, tpb_stats

PSI_CUBE = np.pi ** (1 / 3) * 6 ** (2 / 3) / 6  # 0.806


def ball(n: int, r: float, centre: float | None = None) -> np.ndarray:
    c = (n - 1) / 2 if centre is None else centre
    z, y, x = np.ogrid[:n, :n, :n]
    return (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= r * r


def test_volume_fractions_and_bracket():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    lab[0] = 2
    vf = volume_fractions(lab)
    assert vf == pytest.approx({"pore": 1 - 0.216 - 0.1, "am": 0.216, "cbd": 0.1})
    b = am_fraction_bracket(lab)
    assert b["eroded"] == pytest.approx(4**3 / 1000)
    # 6-connected dilation of a 6^3 cube adds 6 faces of 36 voxels
    assert b["dilated"] == pytest.approx((216 + 6 * 36) / 1000)
    prof = z_profile_fractions(lab, (0.5, 1, 1))
    assert prof["cbd"].iloc[0] == 1.0 and prof["am"].iloc[5] == pytest.approx(0.36)
    assert prof["z_um"].iloc[1] == pytest.approx(0.75)


def test_bad_labels_rejected():
    with pytest.raises(DataError):
        volume_fractions(np.full((3, 3, 3), 7, np.uint8))
    with pytest.raises(DataError):
        volume_fractions(np.zeros((3, 3, 3), np.float32))


def test_percolation_channel_branch_blob():
    m = np.zeros((20, 20, 20), bool)
    m[:, 2, 2] = True  # channel through z
    m[10, 3:8, 2] = True  # side branch of the channel: part of the through cluster
    m[0:6, 10, 10] = True  # dead end on the z=0 face
    m[8:10, 15:17, 15:17] = True  # isolated blob
    total = 20 + 5 + 6 + 8
    r = percolation(m, "z")
    assert r["through"] == 25 / total
    assert r["dead_end"] == 6 / total
    assert r["isolated"] == 8 / total
    assert r["n_clusters"] == 3
    # along x nothing touches the x faces
    assert percolation(m, "x")["isolated"] == 1.0
    # a diagonal step joins only with 18/26-connectivity
    d = np.zeros((4, 4, 4), bool)
    d[0:2, 1, 1] = True
    d[2:4, 2, 2] = True
    assert percolation(d, 0)["through"] == 0.0
    assert percolation(d, 0, connectivity=26)["through"] == 1.0
    assert percolation(d, 0, connectivity=18)["through"] == 0.0  # corner neighbours only
    nan = percolation(np.zeros((3, 3, 3), np.uint8), "z", phase="cbd")
    assert np.isnan(nan["through"]) and nan["reason"]


def test_face_counting_anisotropic_plane():
    lab = np.zeros((6, 5, 4), np.uint8)
    lab[:, :, 2:] = 1  # one interface plane normal to x
    v = (0.5, 0.7, 0.3)
    a = face_area_matrix(lab, v)
    assert a[0, 1] == pytest.approx(6 * 0.5 * 5 * 0.7)
    s = surface_areas(lab, v)
    vol = 6 * 5 * 4 * 0.5 * 0.7 * 0.3
    assert s["specific"]["am"] == pytest.approx(6 * 0.5 * 5 * 0.7 / vol)
    assert s["interfacial"]["pore/am"] == s["specific"]["pore"]
    assert s["interfacial"]["am/cbd"] == 0


def test_sphere_area_marching_cubes():
    r = 12
    s = ball(32, r, 15.3)
    assert mesh_area(s, closed=True) == pytest.approx(4 * np.pi * r**2, rel=0.02)
    # in physical units, through the phase-level function (sphere well inside the box)
    lab = s.astype(np.uint8)
    vs = 0.25
    a = surface_areas(lab, vs, method="mc")["specific"]["am"] * lab.size * vs**3
    assert a == pytest.approx(4 * np.pi * (r * vs) ** 2, rel=0.02)
    # face counting overestimates a sphere by ~1.5x (SPEC: 1.2-1.5)
    af = surface_areas(lab, vs)["specific"]["am"] * lab.size * vs**3
    assert 1.3 < af / a < 1.6


def test_sphericity_sphere_and_cube():
    t = shape_table(ball(34, 13, 16.4).astype(np.int32), voxel_size_um=0.1)
    assert t["sphericity"].iloc[0] == pytest.approx(1.0, abs=0.03)
    assert t["eq_diameter_um"].iloc[0] == pytest.approx(2.6, rel=0.01)
    # a large cube: edge rounding biases psi by O(1/L)
    cube = np.zeros((132, 132, 132), np.int32)
    cube[2:130, 2:130, 2:130] = 1
    t = shape_table(cube)
    assert PSI_CUBE == pytest.approx(0.806, abs=5e-4)
    assert t["sphericity"].iloc[0] == pytest.approx(PSI_CUBE, abs=0.01)


def test_straight_line_tpb():
    lab = np.zeros((10, 10, 7), np.uint8)  # pore for z >= 5
    lab[:5, :5] = 1
    lab[:5, 5:] = 2
    v = (0.5, 0.7, 0.3)
    st = tpb_stats(lab, v)
    assert st["length_um"] == pytest.approx(7 * 0.3)
    assert st["density_um-2"] == pytest.approx(7 * 0.3 / (lab.size * 0.5 * 0.7 * 0.3))
    assert tpb_per_particle(lab, (lab == 1).astype(np.int32), v)[1] == pytest.approx(7 * 0.3)


def test_particle_coverage_and_tpb():
    lab = np.full((12, 12, 12), 2, np.uint8)
    lab[:, :, 6:] = 0  # CBD for x < 6, pore for x >= 6
    lab[3:9, 3:9, 3:9] = 1
    p = (lab == 1).astype(np.int32)
    v = (0.5, 0.7, 0.3)
    t = shape_table(p, lab, v).iloc[0]
    assert t["coverage_cbd"] == pytest.approx(0.5)
    assert t["coverage_pore"] == pytest.approx(0.5)
    assert t["coverage_am"] == 0
    area_x = 36 * 0.5 * 0.7  # one face normal to x
    assert t["area_cbd_face_um2"] == pytest.approx(area_x + 2 * 18 * 0.7 * 0.3 + 2 * 18 * 0.5 * 0.3)
    assert t["a_cbd_per_volume_um-1"] == pytest.approx(t["area_cbd_face_um2"] / (216 * 0.5 * 0.7 * 0.3))
    # CBD/pore plane meets the cube on +-z faces (edges along y) and +-y faces (edges along z)
    assert t["tpb_length_um"] == pytest.approx(12 * 0.7 + 12 * 0.5)
    assert tpb_stats(lab, v)["length_um"] == pytest.approx(12 * 0.7 + 12 * 0.5)
    assert t["centroid_x_um"] == pytest.approx(6 * 0.3)
    assert not t["touches_boundary"]


def test_two_touching_particles_share_faces():
    p = np.zeros((6, 6, 10), np.int32)
    p[2:4, 2:4, 1:5] = 1
    p[2:4, 2:4, 5:9] = 2
    lab = (p > 0).astype(np.uint8)
    t = shape_table(p, lab)
    assert t["area_am_face_um2"].tolist() == [4.0, 4.0]
    assert t["coverage_am"].iloc[0] == pytest.approx(4 / (4 + 4 + 4 * 8))  # ends 2x4, sides 4x8


def test_d50_monodisperse_pack():
    n, r = 64, 5
    p = np.zeros((n, n, n), np.int32)
    z, y, x = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
    kernel = x * x + y * y + z * z <= r * r
    k = 0
    for cz in range(8, n - 8, 12):
        for cy in range(8, n - 8, 12):
            for cx in range(8, n - 8, 12):
                k += 1
                p[cz - r:cz + r + 1, cy - r:cy + r + 1, cx - r:cx + r + 1][kernel] = k
    p[0:3, 0:3, 0:3] = k + 1  # a cut particle on the boundary
    t = shape_table(p, voxel_size_um=0.2)
    s = size_statistics(t)
    assert s["n_particles"] == k + 1 and s["n_boundary_particles"] == 1
    for key in ("d10_number_um", "d50_number_um", "d90_number_um", "d50_volume_um"):
        assert abs(s[key] - 2 * r * 0.2) <= 0.2
    assert s["sphericity_mean"] == pytest.approx(1.0, abs=0.05)


def test_weighted_quantile_matches_hazen():
    x = np.random.default_rng(1).random(101)
    assert weighted_quantile(x, 0.3) == pytest.approx(np.percentile(x, 30, method="hazen"))


def test_two_point_correlation_limits():
    rng = np.random.default_rng(3)
    m = rng.random((40, 40, 64)) < 0.3
    s2 = two_point_correlation(m, "x", 0.5)
    phi = m.mean()
    assert s2["s2"].iloc[0] == pytest.approx(phi, rel=1e-6)
    assert np.allclose(s2["s2"].iloc[1:], phi**2, atol=0.006)
    assert s2["r_um"].iloc[2] == 1.0
    # exact non-periodic estimator on a correlated field
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(rng.random((30, 30, 30)), 2) > 0.5
    s = two_point_correlation(f, "z")["s2"].to_numpy()
    for r in (1, 4, 9):
        assert s[r] == pytest.approx((f[:-r] & f[r:]).mean(), rel=1e-5)
    # S2 decays from phi towards phi^2 over the correlation length
    assert s[0] > s[4] > s[12] and abs(s[14] - f.mean() ** 2) < 0.03


def test_rev_curve_is_seeded():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (24, 24, 24)).astype(np.uint8)
    a = rev_curve(lab, 0.5, edge_lengths_vox=[6, 12, 24], n_samples=4, seed=7)
    b = rev_curve(lab, 0.5, edge_lengths_vox=[6, 12, 24], n_samples=4, seed=7)
    assert a.equals(b)
    full = a[(a.edge_vox == 24) & (a.quantity == "vf_am")].iloc[0]
    assert full["mean"] == pytest.approx(volume_fractions(lab)["am"]) and full["std"] == 0
    small = a[(a.edge_vox == 6) & (a.quantity == "vf_am")].iloc[0]
    assert small["std"] > 0


def test_report_keys_and_absent_phase():
    lab = np.zeros((16, 16, 16), np.uint8)
    lab[:, :, 8:] = 1
    p = np.zeros(lab.shape, np.int32)
    rep, table = microstructure_report(lab, 0.5, particles=p, transport=False, expected={"am": 0.5})
    for key in ("volume_fraction", "through_fraction", "dead_end_cluster_fraction", "isolated_fraction",
                "surface_area_face_um-1", "surface_area_mc_smoothed_um-1", "surface_area_mc_unsmoothed_um-1",
                "interfacial_area_face_um-1", "interfacial_area_mc_smoothed_um-1",
                "interfacial_area_mc_unsmoothed_um-1", "tpb_density_um-2", "d50_um", "sphericity_mean",
                "sphericity_median", "n_particles", "n_boundary_particles"):
        assert key in rep
    assert "dead_end_fraction" not in rep  # one name, one meaning (issue #21 item 3)
    assert rep["through_fraction"]["am"]["z"] == 1.0
    assert rep["dead_end_cluster_fraction"]["am"]["x"] == 1.0
    assert np.isnan(rep["through_fraction"]["cbd"]["z"])
    assert any("cbd" in n for n in rep["notes"])
    assert rep["tpb_density_um-2"] == 0
    t = seed_table(rep)
    row = t[(t.metric == "Volume fraction") & (t.phase == "am")].iloc[0]
    assert row["sample Expected"] == 0.5 and row["sample Data"] == 0.5

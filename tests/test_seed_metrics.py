"""Issue 19 items 1, 2, 6, 11 against constructed or analytic truths: internal pores of particles,
constrictivity / pore sizes, S2 characteristic length, REV size, Li distribution widths,
segmentation agreement with a reference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from litomo.cli import main
from litomo.errors import DataError
from litomo.metrics.agreement import reference_agreement
from litomo.metrics.constrictivity import constrictivity, pore_radius_maps, widest_path_radius
from litomo.metrics.internal_pores import internal_pore_table
from litomo.metrics.rev import characteristic_length_um, rev_size, two_point_correlation
from litomo.statistics import distribution_widths, state_summary
from litomo.workflows.micro import MicroSettings, analyse_microstructure


def _ball(shape, centre, r):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r


# --- item 1: internal pores -------------------------------------------------------------------
def _hollow_particle():
    """A ball of radius 9 with a spherical void of radius 4; the void's lower half is CBD."""
    shape = (24, 24, 24)
    c = (11.5, 11.5, 11.5)
    outer, void = _ball(shape, c, 9), _ball(shape, c, 4)
    lab = np.zeros(shape, np.uint8)
    lab[outer & ~void] = 1
    lab[void & (np.arange(24)[:, None, None] < 11.5)] = 2
    return lab, int(void.sum()), int((lab == 2).sum())


def test_internal_pores_of_a_hollow_particle():
    lab, n_void, n_cbd = _hollow_particle()
    lab2 = lab.copy()
    lab2[:, :, :2] = 1  # a second particle (a slab) touching the volume boundary, no void
    plab = ndimage.label(lab2 == 1)[0]
    t = internal_pore_table(plab, lab2, 0.5).set_index("particle")
    hollow = plab[11, 11, 3]
    assert t.loc[hollow, "internal_pore_volume_um3"] == pytest.approx(n_void * 0.125)
    assert t.loc[hollow, "internal_pore_cbd_volume_um3"] == pytest.approx(n_cbd * 0.125)
    assert t.loc[hollow, "internal_pore_empty_volume_um3"] == pytest.approx((n_void - n_cbd) * 0.125)
    assert 0 < n_cbd < n_void
    assert t.loc[plab[0, 0, 0], "internal_pore_volume_um3"] == 0.0


def test_void_cut_by_the_volume_boundary_is_not_internal():
    lab, _, _ = _hollow_particle()
    cut = lab[:12]  # the crop opens the void
    t = internal_pore_table((cut == 1).astype(np.int32), cut)
    assert t["internal_pore_volume_um3"].sum() == 0.0


def test_micro_json_reports_internal_pores():
    lab, n_void, n_cbd = _hollow_particle()
    r = analyse_microstructure(lab, MicroSettings(1.0, transport=False, figures=False, pore_sizes=False))
    assert r.summary["internal_pore_volume_um3"] == pytest.approx(n_void)
    assert r.summary["internal_pore_cbd_volume_um3"] == pytest.approx(n_cbd)
    assert r.particles["internal_pore_volume_um3"].sum() == pytest.approx(n_void)


# --- item 2: constrictivity, S2 length, REV size --------------------------------------------------
def _two_chambers(R=8, r_neck=2, l1=24, l_neck=4, l2=40):
    """Pore = a cylinder of radius R along z, then a neck of radius r_neck, then a longer one."""
    n = 2 * R + 5
    nz = l1 + l_neck + l2
    yy, xx = np.ogrid[:n, :n]
    rr = (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2
    pore = np.zeros((nz, n, n), bool)
    pore[:l1] = rr <= R * R
    pore[l1:l1 + l_neck] = rr <= r_neck * r_neck
    pore[l1 + l_neck:] = rr <= R * R
    return pore


def test_constrictivity_of_a_known_neck():
    R, rn = 8, 2
    pore = _two_chambers(R, rn)
    c = constrictivity(pore, 0.5)
    # the distance map resolves radii to +-1 voxel: r_max in [R, R+1], r_min in [rn, rn+1] (x 0.5 um)
    assert R * 0.5 <= c.r_max_um <= (R + 1) * 0.5
    assert rn * 0.5 <= c.r_min_um <= (rn + 1) * 0.5
    assert c.beta == pytest.approx((c.r_min_um / c.r_max_um) ** 2)
    assert c.beta < 0.15  # analytic (2/8)^2 = 0.0625; without the neck beta = 1 (below)
    assert c.intruded_fraction == 1.0
    straight = constrictivity(_two_chambers(R, R), 0.5)
    assert straight.beta == 1.0
    # intruding from the other side, the long chamber is first: r_min is then R's
    assert constrictivity(pore[::-1], 0.5).beta > 0.8


def test_radius_maps_behind_the_neck():
    pore = _two_chambers(8, 2)
    local, mip = pore_radius_maps(pore, 1.0)
    centre = pore.shape[1] // 2
    assert 8 <= local[50, centre, centre] <= 9 and 8 <= local[10, centre, centre] <= 9
    assert 2 <= mip[50, centre, centre] <= 3  # behind the neck only the neck's balls arrive
    assert 8 <= mip[10, centre, centre] <= 9
    assert (mip <= local + 1e-6).all() and not mip[~pore].any()


def test_widest_path_matches_a_brute_force_threshold_sweep():
    rng = np.random.default_rng(1)
    r = ndimage.gaussian_filter(rng.random((12, 14, 10)), 1.5).astype(np.float32)
    r = np.where(r > np.median(r) * 0.98, r, 0).astype(np.float32)
    inlet = np.zeros(r.shape, bool)
    inlet[0] = True
    fast = widest_path_radius(r, inlet)
    brute = np.zeros_like(r)
    for t in np.unique(r[r > 0]):
        lab, _ = ndimage.label(r >= t)  # 6-connected
        ok = np.isin(lab, np.unique(lab[0][lab[0] > 0]))
        brute[ok] = np.maximum(brute[ok], t)
    np.testing.assert_array_equal(fast, brute)


def test_s2_and_characteristic_length_of_a_thresholded_gaussian_field():
    # Gaussian field with correlation rho(r) = exp(-r^2 / (4 s^2)) cut at its median: analytic
    # indicator S2(r) = 1/4 + arcsin(rho) / (2 pi); f(r) = 1/e at rho = sin(pi / (2 e)).
    s = 3.0
    rng = np.random.default_rng(0)
    g = ndimage.gaussian_filter(rng.normal(size=(16, 16, 4096)), s, mode="wrap")
    mask = g > np.median(g)
    df = two_point_correlation(mask, "x", max_lag_vox=20)
    rho = np.exp(-df["r_vox"] ** 2 / (4 * s * s))
    np.testing.assert_allclose(df["s2"], 0.25 + np.arcsin(rho) / (2 * np.pi), atol=0.01)
    l_true = 2 * s * np.sqrt(-np.log(np.sin(np.pi / (2 * np.e))))
    assert characteristic_length_um(df) == pytest.approx(l_true, rel=0.05)


def test_rev_size_criterion():
    rev = pd.DataFrame({"edge_vox": [8, 16, 32, 64] * 2, "edge_um": [4.0, 8, 16, 32] * 2,
                        "quantity": ["a"] * 4 + ["b"] * 4,
                        "mean": [0.3, 0.52, 0.49, 0.5, 1.0, 2.0, 1.0, 2.0],
                        "std": [0.1, 0.01, 0.01, 0.0, 0, 0, 0, 0]})
    out = rev_size(rev, 0.05).set_index("quantity")
    assert out.loc["a", "rev_edge_um"] == 8.0 and out.loc["a", "converged"]
    assert np.isnan(out.loc["b", "rev_edge_um"]) and not out.loc["b", "converged"]


# --- item 11: Li distribution widths ----------------------------------------------------------
def test_fwhm_and_iqr_of_known_distributions():
    rng = np.random.default_rng(3)
    sigma = 0.04
    x = np.full((40, 50, 50), np.nan)
    x[:30] = rng.normal(0.65, sigma, (30, 50, 50))
    s = state_summary(x, voxel_size_um=1.0)
    assert s["fwhm_li"] == pytest.approx(2 * np.sqrt(2 * np.log(2)) * sigma, rel=0.03)
    assert s["iqr_li"] == pytest.approx(1.3490 * sigma, rel=0.02)
    u = distribution_widths(rng.uniform(0.2, 0.6, 200_000))
    assert u["iqr_li"] == pytest.approx(0.2, rel=0.02)
    assert u["fwhm_li"] == pytest.approx(0.4, rel=0.05)


# --- item 6: segmentation agreement ------------------------------------------------------------
def test_reference_agreement_counts():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[:, :, 5:] = 1
    ref[:, :2] = 2
    lab = ref.copy()
    lab[:, 5:, 5] = 0  # 50 AM voxels wrongly pore
    r = reference_agreement(lab, ref)
    n_am = int((ref == 1).sum())
    assert r["dice"]["am"] == pytest.approx(2 * (n_am - 50) / (2 * n_am - 50))
    assert r["iou"]["am"] == pytest.approx((n_am - 50) / n_am)
    assert r["volume_fraction_difference"]["am"] == pytest.approx(-0.05)
    assert r["volume_fraction_difference"]["pore"] == pytest.approx(0.05)
    assert r["dice"]["cbd"] == 1.0 and r["accuracy"] == pytest.approx(0.95)
    # a hand-labelled sub-volume: 255 = unlabelled, only the labelled voxels are compared
    part = np.full_like(ref, 255)
    part[:5] = ref[:5] + 1
    r2 = reference_agreement(lab, part, {"pore": 1, "am": 2, "cbd": 3})
    assert r2["compared_fraction"] == 0.5 and r2["accuracy"] == pytest.approx(0.95)
    with pytest.raises(DataError, match="--reference"):
        reference_agreement(lab, ref[:5])


def test_segment_cli_reference(tmp_path, capsys):
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[:, :, 6:] = 1
    rng = np.random.default_rng(0)
    grey = np.where(truth == 1, 200.0, 40.0) + rng.normal(0, 5, truth.shape)
    tifffile.imwrite(tmp_path / "grey.tif", grey.astype(np.uint8))
    ref = truth.copy()
    ref[0] = 1 - ref[0]  # the reference disagrees on one slice: Dice < 1 by a known amount
    tifffile.imwrite(tmp_path / "ref.tif", ref)
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(tmp_path / "grey.tif"), "--out", str(tmp_path / "out"), "--method", "multi-otsu",
              "--phase-order", "pore,am", "--reference", str(tmp_path / "ref.tif"), "-q"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    agree = json.loads((tmp_path / "out" / "segmentation.json").read_text())["reference_agreement"]
    lab = tifffile.imread(tmp_path / "out" / "labels.tif")
    assert abs((lab != truth).mean()) < 0.002  # the segmentation itself is (nearly) the truth
    assert agree["accuracy"] == pytest.approx((lab == ref).mean())
    inter = ((lab == 1) & (ref == 1)).sum()
    assert agree["dice"]["am"] == pytest.approx(2 * inter / ((lab == 1).sum() + (ref == 1).sum()))
    assert agree["dice"]["am"] == pytest.approx(11 / 12, abs=0.002)


def test_run_micro_writes_pore_size_tables_and_maps(tmp_path):
    from litomo.workflows.micro import run_micro

    lab, n_void, _ = _hollow_particle()
    path = tmp_path / "hollow.tif"
    tifffile.imwrite(path, lab)
    r = run_micro(path, tmp_path / "out", MicroSettings(0.5, transport=False, figures=False))
    out = tmp_path / "out"
    summary = json.loads((out / "tables" / "microstructure.json").read_text())
    assert summary["internal_pore_volume_um3"] == pytest.approx(n_void * 0.125)
    assert 0 < summary["constrictivity"]["pore"]["z"] <= 1
    assert set(summary["characteristic_length_um"]) == {"pore", "am", "cbd"}
    psd = pd.read_csv(out / "tables" / "pore_size_distribution.csv")
    assert psd["cpsd_fraction"].iloc[0] == 1.0 and psd["cpsd_fraction"].is_monotonic_decreasing
    assert set(pd.read_csv(out / "tables" / "rev_size.csv")["quantity"]) == set(r.rev["quantity"])
    local = tifffile.imread(out / "volumes" / "pore_radius_local_um.tif")
    assert local.shape == lab.shape and not local[lab != 0].any() and local[lab == 0].all()
    assert (out / "volumes" / "pore_radius_mip_z_um.tif").exists()


def test_segment_cli_reference_of_wrong_shape_exits_2(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((8, 8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "ref.tif", np.zeros((6, 8, 8), np.uint8))
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(tmp_path / "grey.tif"), "--out", str(tmp_path / "out"), "--method", "multi-otsu",
              "--reference", str(tmp_path / "ref.tif"), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--reference" in err and "Traceback" not in err

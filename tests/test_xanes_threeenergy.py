"""Three-energy R, calibration, classes, masks (SPEC 2.1) and the energy advisor (SPEC 2.3)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.xanes.advisor import advise_edge_energy, check_edge_sensitivity, edge_sensitivity
from litomo.xanes.spectra import Spectrum, read_spectrum
from litomo.xanes.threeenergy import (
    am_mask_from_jump,
    calibrate_li,
    classify_li,
    edge_ratio,
    jump_threshold,
    reference_ratios,
)

ENERGIES = (8300.0, 8345.0, 8400.0)


@pytest.fixture(scope="module")
def refs():
    from importlib.resources import files

    d = files("litomo.xanes") / "data"
    return read_spectrum(d / "ni_kedge_NiO.csv"), read_spectrum(d / "ni_kedge_LiNiO2.csv")


def test_r_of_references_calibrates_to_their_li(refs):
    pristine, charged = refs
    rp, rc = reference_ratios(pristine, charged, ENERGIES)
    # build "volumes" whose voxels are the references themselves, scaled by thickness
    thick = np.array([0.5, 1.0, 2.0])
    vols = [np.concatenate([s.at(e) * thick for s in refs]) for e in ENERGIES]
    r = edge_ratio(*vols, jump_threshold=0.01)
    np.testing.assert_allclose(r[:3], rp, rtol=1e-12)
    np.testing.assert_allclose(r[3:], rc, rtol=1e-12)
    x, frac = calibrate_li(r, rp, rc, li_pristine=1.0, li_charged=0.38)
    np.testing.assert_allclose(x, [1.0] * 3 + [0.38] * 3, atol=1e-12)
    assert frac == 0.0
    # a 30/70 mixture of the two spectra gives x = 0.3 * 1 + 0.7 * 0.38 only if R is linear in the
    # mixture; it is (same jump weighting) when both references share the edge step
    assert 0.38 < float(calibrate_li(np.array([(rp + rc) / 2]), rp, rc)[0][0]) < 1.0


def test_edge_ratio_formula_mask_and_printed_sign():
    pre = np.array([0.1, 0.1, 0.1, 0.1])
    edge = np.array([0.6, 0.3, 0.11, 0.5])
    post = np.array([1.1, 0.9, 0.12, 0.1])
    r = edge_ratio(pre, edge, post, jump_threshold=0.05)
    np.testing.assert_allclose(r[:2], [0.5, 0.25])
    assert np.isnan(r[2]) and np.isnan(r[3])  # small and negative jumps are masked, not divided
    printed = edge_ratio(pre, edge, post, jump_threshold=0.05, sign_convention="printed")
    np.testing.assert_allclose(printed[:2], -r[:2])
    assert np.isnan(printed[2])
    with pytest.raises(DataError, match="sign_convention"):
        edge_ratio(pre, edge, post, jump_threshold=0.05, sign_convention="paper")
    with pytest.raises(DataError, match="positive"):
        edge_ratio(pre, edge, post, jump_threshold=0.0)


def test_dask_inputs_stay_lazy():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(0)
    pre = rng.random((8, 8))
    post = pre + np.where(rng.random((8, 8)) > 0.5, 1.0, 0.0)
    edge = pre + 0.4 * (post - pre)
    lazy = [da.from_array(a, chunks=4) for a in (pre, edge, post)]
    r = edge_ratio(*lazy, jump_threshold=0.5)
    assert isinstance(r, da.Array)
    np.testing.assert_allclose(r.compute(), edge_ratio(pre, edge, post, jump_threshold=0.5))
    x, frac = calibrate_li(r, 0.5, 0.3)
    assert isinstance(x, da.Array)
    assert float(frac) == pytest.approx(0.0)
    cls = classify_li(x)
    assert cls.dtype == np.int8 and isinstance(cls, da.Array)
    mask = am_mask_from_jump(*lazy[::2], threshold=0.5)
    np.testing.assert_array_equal(mask.compute(), np.isfinite(r.compute()))


def test_calibration_clipping_and_identical_references():
    x, frac = calibrate_li(np.array([0.5, 0.3, 0.7, 0.0, np.nan]), 0.5, 0.3)
    # slope (0.38 - 1) / (0.3 - 0.5) = 3.1: R=0.7 -> 1.62 -> clipped to 1.2; R=0 -> -0.55 -> 0
    np.testing.assert_allclose(x[:4], [1.0, 0.38, 1.2, 0.0])
    assert np.isnan(x[4])
    assert frac == pytest.approx(2 / 4)
    x_unclipped, _ = calibrate_li(np.array([0.7]), 0.5, 0.3, clip=None)
    assert x_unclipped[0] == pytest.approx(1.62)
    with pytest.raises(DataError, match="same edge ratio"):
        calibrate_li(np.array([0.5]), 0.4, 0.4)


def test_classes_do_not_overlap():
    x = np.array([0.0, 0.6, 0.600001, 0.8999, 0.9, 1.2, np.nan])
    np.testing.assert_array_equal(classify_li(x), [0, 0, 1, 1, 2, 2, -1])
    np.testing.assert_array_equal(
        classify_li(x, poor_max=0.5, rich_min=0.8), [0, 1, 1, 2, 2, 2, -1]
    )
    with pytest.raises(DataError):
        classify_li(x, poor_max=0.9, rich_min=0.6)


def test_jump_threshold_sits_above_background_noise():
    rng = np.random.default_rng(1)
    n = 20000
    is_am = rng.random(n) < 0.4
    sigma = 0.02
    pre = 0.3 + rng.normal(0, sigma, n)
    post = pre + np.where(is_am, 0.8, 0.0) + rng.normal(0, sigma, n)
    t = jump_threshold(pre, post)
    jump_sigma = sigma * np.sqrt(1)  # the post noise alone; pre cancels in the jump
    assert 3 * jump_sigma < t < 0.4  # well above noise, below the material
    mask = am_mask_from_jump(pre, post, threshold=t)
    assert (mask == is_am).mean() > 0.999
    assert 0.05 < jump_threshold(pre, post, "otsu") < 0.75  # somewhere in the gap
    # very noisy data: the threshold is capped between the classes, not at 5 sigma
    noisy = post + np.where(is_am, 0.0, 0.0) + rng.normal(0, 0.1, n)
    t_noisy = jump_threshold(pre, noisy)
    assert 0.3 < t_noisy <= 0.5
    with pytest.raises(DataError, match="constant"):
        jump_threshold(np.ones(100), np.ones(100))
    # exact zeros at both energies are padding, not measurements (issue 14)
    with pytest.raises(DataError, match="fewer than 10 finite"):
        jump_threshold(np.zeros(100), np.zeros(100))


def test_reference_ratios_need_coverage(refs):
    with pytest.raises(DataError, match="covers 8200.00-9000.00 eV"):
        reference_ratios(*refs, (8100.0, 8345.0, 8400.0))
    shifted = reference_ratios(*refs, ENERGIES, energy_shift_ev=2.0)
    direct = reference_ratios(*refs, tuple(e + 2.0 for e in ENERGIES))
    assert shifted == pytest.approx(direct)


def test_advisor_matches_brute_force_and_spec_energies(refs):
    pristine, charged = refs
    adv = advise_edge_energy(pristine, charged, 8300.0, 8400.0, edge_ev=8348.0)
    table = adv["table"]
    assert len(table) == 61  # 8330..8360 eV in 0.5 eV steps
    best = max(table, key=lambda r: abs(r["dr_dx"]))
    assert adv["best_edge_ev"] == best["edge_ev"]
    # independent check of one row: finite difference of calibrated Li in R
    s = edge_sensitivity(pristine, charged, 8300.0, 8344.0, 8400.0)
    rp, rc = reference_ratios(pristine, charged, (8300.0, 8344.0, 8400.0))
    assert s == pytest.approx((rc - rp) / (0.38 - 1.0))
    # SPEC 2.3 on these references: near the white-line peaks (8347.5-8349.5 eV) the spectra
    # cross and R barely depends on Li; the rising edge (8340-8347 eV) is several times more
    # sensitive
    rising = max(
        abs(edge_sensitivity(pristine, charged, 8300, e, 8400))
        for e in np.arange(8340, 8347.5, 0.5)
    )
    assert rising / abs(adv["configured_sensitivity"]) > 4
    assert adv["ratio"] > 4


def test_insensitive_energy_warns_and_names_better_energy(refs, caplog):
    pristine, charged = refs
    energies = (8300.0, 8348.5, 8400.0)
    rp, rc = reference_ratios(pristine, charged, energies)
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="insensitive"):
        msg = check_edge_sensitivity(
            rp, rc, 0.05, pristine=pristine, charged=charged, energies_ev=energies
        )
    assert "would be" in msg and "eV" in msg
    assert check_edge_sensitivity(0.4, 0.9, 0.05) is None


def test_advisor_synthetic_edge_shift():
    # two logistic edges 2 eV apart: dR/dx is largest half-way between the two edge positions
    e = np.linspace(8250, 8450, 2001)
    p = Spectrum(e, 1 / (1 + np.exp(-(e - 8340) / 1.5)), "p")
    c = Spectrum(e, 1 / (1 + np.exp(-(e - 8342) / 1.5)), "c")
    adv = advise_edge_energy(p, c, 8260, 8440, search=(8330, 8352), step_ev=0.1)
    assert adv["best_edge_ev"] == pytest.approx(8341.0, abs=0.2)
    assert adv["configured_sensitivity"] is None

"""Tabulated background law (issue 16) and the noise-matched shrinkage of the Li map."""

from __future__ import annotations

import numpy as np
import pytest

import forward_models as fm
from litomo.errors import DataError
from litomo.xanes import threeenergy as te
from litomo.xanes.background import background_law, parse_composition
from litomo.xanes.noise import (
    class_fraction_shift,
    class_uncertainty,
    constrained_bayes,
    image_noise_variances,
)

E = np.array(fm.ENERGIES_EV)
NMC = "LiNi0.8Mn0.1Co0.1O2"


def test_tabulated_law_agrees_with_another_table():
    """Elam (litomo) against Chantler (the test's forward model, another tabulation)."""
    law = background_law(E, composition=NMC)
    chantler = fm.background_shape("tabulated", E)
    chantler = chantler / chantler[0]
    # measured: f_post 0.9689 (Elam) vs 0.9703 (Chantler), exponents 2.65 vs 2.53
    assert abs(law.factors[2] - chantler[2]) < 0.003
    assert abs(law.factors[1] - chantler[1]) < 0.0005  # measured 0.0002
    assert law.law == "tabulated" and law.composition == NMC


def _voxels(li, background):
    spectra = fm.end_members("bundled")
    n_p = np.array([np.interp(e, *spectra["pristine"]) for e in E])
    n_c = np.array([np.interp(e, *spectra["charged"]) for e in E])
    w = (li - fm.LI_CHARGED) / (fm.LI_PRISTINE - fm.LI_CHARGED)
    b = fm.background_shape(background, E)
    return [fm.J_PER_UM * (n_c[k] + w * (n_p[k] - n_c[k])) + fm.B_PER_UM * b[k] for k in range(3)]


def test_law_removes_the_background_bias():
    li = np.linspace(0.4, 1.0, 13)
    pre, edge, post = _voxels(li, "tabulated")
    spectra = fm.end_members("bundled")
    from litomo.xanes.spectra import Spectrum

    sp = Spectrum(*spectra["pristine"], "p")
    sc = Spectrum(*spectra["charged"], "c")
    rp, rc = te.reference_ratios(sp, sc, tuple(E))
    levels = te.reference_levels(sp, sc, E[0], E[2])
    law = background_law(E, composition=NMC)
    r = te.background_corrected_ratio(pre, edge, post, energies_ev=tuple(E), background_exponent=0.0,
                                      background_factors=law.factors[1:], reference_levels=levels,
                                      jump_threshold=1e-3)
    x = te.calibrate_li(r, rp, rc, clip=None)[0]
    x_plain = te.calibrate_li(te.edge_ratio(pre, edge, post, jump_threshold=1e-3), rp, rc, clip=None)[0]
    # measured: max error 0.0028 with the law (table difference + the ratio's nonlinearity), 0.024-0.039 without
    assert np.abs(x - li).max() < 0.006
    assert np.abs(x_plain - li).min() > 0.02


def test_law_choice_and_bad_formulas():
    assert background_law(E, composition=NMC, exponent=2.8).law == "power"
    assert background_law(E, composition=NMC, exponent=0.0).law == "none"
    assert background_law(E).law == "none"
    with pytest.raises(DataError, match="not an element"):
        parse_composition("LiQq2")
    with pytest.raises(DataError, match="no Ni"):
        parse_composition("LiFePO4")


def test_image_noise_from_background_differences():
    rng = np.random.default_rng(3)
    structure = rng.uniform(0, 0.01, 50000)  # carbon binder / pores: the same at every energy
    pre, edge, post = (structure + rng.normal(0, s, structure.size) for s in (0.001, 0.002, 0.0015))
    v = image_noise_variances(pre, edge, post, np.ones(structure.size, bool))
    np.testing.assert_allclose(np.sqrt(v), [0.001, 0.002, 0.0015], rtol=0.05)


def test_constrained_bayes_keeps_the_spread_plain_shrinkage_narrows():
    rng = np.random.default_rng(4)
    n_part, n_bins = 40, 60
    truth = np.concatenate([rng.uniform(0.4, 1.0) + rng.normal(0, 0.05, n_bins) for _ in range(n_part)])
    lab = np.repeat(np.arange(1, n_part + 1), n_bins)
    sigma = 0.04
    obs = truth + rng.normal(0, sigma, truth.size)
    cb = constrained_bayes(obs, lab, np.full(truth.size, sigma**2))
    # within-particle spread: truth 0.05, noisy 0.064, constrained Bayes back to ~0.05
    def within(a):
        return np.mean([a[lab == k].std() for k in range(1, n_part + 1)])
    assert abs(within(cb) - within(truth)) < 0.005
    assert within(obs) - within(truth) > 0.01
    assert np.sqrt(np.mean((cb - truth) ** 2)) < np.sqrt(np.mean((obs - truth) ** 2))


def test_class_uncertainty_counts_bins_near_thresholds():
    x = np.array([0.3, 0.6, 0.75, 0.9, 1.0])
    assert class_uncertainty(x, np.full(5, 1e-6)) == pytest.approx(0.2, abs=1e-3)  # two of five at 0.5
    assert class_uncertainty(x, np.full(5, 0.1**2)) > 0.2


def test_class_fraction_shift_predicts_the_net_change_monte_carlo():
    """Truth by simulation: draw x_Li, add Gaussian noise, count the class fractions before and after;
    the estimate from the *noisy* values must be within the measured factor (0.42-1.16, bounds 0.35-1.4)."""
    rng = np.random.default_rng(0)

    def fractions(x):
        return np.array([(x <= 0.6).mean(), ((x > 0.6) & (x < 0.9)).mean(), (x >= 0.9).mean()])

    for plateau_sd in (0.0, 0.02, 0.04):
        for sigma in (0.02, 0.03):
            truth = np.concatenate([rng.uniform(0.3, 1.0, 50000), rng.normal(0.63, plateau_sd, 50000)])
            noisy = truth + rng.normal(0, sigma, truth.size)
            actual = np.max(np.abs(fractions(noisy) - fractions(truth)))
            est = class_fraction_shift(noisy, np.full(noisy.size, sigma**2))
            assert 0.35 * actual < est < 1.4 * actual, (plateau_sd, sigma, est, actual)
    # a smooth distribution: large gross flow, no net change, and the estimate says so
    truth = rng.uniform(0.3, 1.0, 100000)
    noisy = truth + rng.normal(0, 0.03, truth.size)
    assert class_uncertainty(noisy, np.full(noisy.size, 0.03**2)) > 0.03
    assert class_fraction_shift(noisy, np.full(noisy.size, 0.03**2)) < 0.005

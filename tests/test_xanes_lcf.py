"""Linear-combination fitting and PCA/NMF on mixtures of the real LiNiO2 and NiO references."""

from __future__ import annotations

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.xanes.decompose import nmf_spectra, pca_spectra
from litomo.xanes.lcf import lcf_fit
from litomo.xanes.spectra import read_spectrum


@pytest.fixture(scope="module")
def refs(shared_data):
    d = shared_data / "xanes/pyxas"
    return (
        read_spectrum(d / "ref_LiNiO2.txt", energy_unit="keV"),
        read_spectrum(d / "ref_NiO.txt", energy_unit="keV"),
    )


def _mixtures(refs, n=2000, noise=0.005, seed=0):
    e = np.arange(8300.0, 8420.0, 1.0)
    rng = np.random.default_rng(seed)
    w = rng.random(n)
    mu = np.outer(refs[0].at(e), w) + np.outer(refs[1].at(e), 1 - w)
    return e, w, mu + rng.normal(0, noise, mu.shape)


def test_recovers_weights_and_honest_uncertainty(refs):
    e, w, mu = _mixtures(refs)
    r = lcf_fit(e, mu.reshape(e.size, 40, 50), list(refs))
    assert r.weights.shape == (2, 40, 50) and r.names == ["ref_LiNiO2", "ref_NiO"]
    err = r.weights[0].ravel() - w
    assert np.abs(err).max() < 0.02
    np.testing.assert_allclose(r.weights.sum(axis=0), 1.0, atol=1e-12)
    # the reported 1-sigma uncertainty matches the actual scatter of the estimates
    assert np.median(r.uncertainty[0]) == pytest.approx(err.std(), rel=0.2)
    assert np.all(r.r_factor < 1e-3)


def test_matches_larch_lincombo(refs):
    lmath = pytest.importorskip("larch.math")
    from larch import Group

    e, w, mu = _mixtures(refs, n=3, noise=0.01, seed=5)
    ours = lcf_fit(e, mu, list(refs))
    groups = [Group(energy=e, norm=r.at(e), label=r.name) for r in refs]
    for i in range(3):
        res = lmath.lincombo_fit(Group(energy=e, norm=mu[:, i]), groups, sum_to_one=True)
        fit = res.result.params
        np.testing.assert_allclose(
            ours.weights[:, i], [fit["c0"].value, fit["c1"].value], atol=1e-5
        )
        assert ours.uncertainty[0, i] == pytest.approx(fit["c0"].stderr, rel=0.02)
        assert ours.r_factor[i] == pytest.approx(res.rfactor, rel=1e-3)


def test_nonneg_and_unconstrained(refs):
    e = np.arange(8300.0, 8420.0, 1.0)
    a, b = refs[0].at(e), refs[1].at(e)
    mu = np.stack([1.2 * a - 0.2 * b, 0.5 * a + 0.5 * b], axis=1)
    free = lcf_fit(e, mu, np.stack([a, b]))
    np.testing.assert_allclose(free.weights[:, 0], [1.2, -0.2], atol=1e-9)
    nn = lcf_fit(e, mu, np.stack([a, b]), nonneg=True)
    np.testing.assert_allclose(nn.weights[:, 0], [1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(nn.weights[:, 1], [0.5, 0.5], atol=1e-9)
    scaled = lcf_fit(e, 0.8 * mu, np.stack([a, b]), sum_to_one=False)
    np.testing.assert_allclose(scaled.weights[:, 1], [0.4, 0.4], atol=1e-9)


def test_bad_references(refs):
    e = np.arange(8300.0, 8420.0, 1.0)
    with pytest.raises(DataError, match="linearly dependent"):
        lcf_fit(e, np.zeros((e.size, 2)), np.stack([refs[0].at(e), refs[0].at(e)]))
    with pytest.raises(DataError, match="covers"):
        lcf_fit(np.arange(8100.0, 8200.0), np.zeros((100, 2)), list(refs))


def test_pca_finds_two_components_and_nmf_recovers_endmembers(refs):
    e, w, mu = _mixtures(refs, n=500, noise=0.002, seed=2)
    p = pca_spectra(mu, 4)
    assert p.explained_variance_ratio[0] > 0.9
    assert p.explained_variance_ratio[2:].sum() < 0.01  # only one mixing direction beyond the mean
    n = nmf_spectra(mu, 2, seed=0)
    again = nmf_spectra(mu, 2, seed=0)
    np.testing.assert_array_equal(n.components, again.components)  # seeded -> identical
    # each NMF component is close (up to scale) to a mixture dominated by one reference
    truth = np.stack([refs[0].at(e), refs[1].at(e)])
    coef = np.linalg.lstsq(truth.T, n.components.T, rcond=None)[0]
    resid = n.components.T - truth.T @ coef
    assert np.abs(resid).max() < 0.05 * n.components.max()

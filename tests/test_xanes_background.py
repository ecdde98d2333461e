"""Background-corrected edge ratio (litomo.xanes.threeenergy.background_corrected_ratio)."""

import dask.array as da
import numpy as np
import pytest

from litomo.errors import DataError
from litomo.xanes import threeenergy as te
from litomo.xanes.spectra import read_spectrum

E = (8330.0, 8345.0, 8430.0)


@pytest.fixture(scope="module")
def refs(shared_data):
    d = shared_data / "xanes" / "pyxas"
    return (read_spectrum(d / "ref_NiO.txt", energy_unit="keV"),
            read_spectrum(d / "ref_LiNiO2.txt", energy_unit="keV"))


def _voxels(ref, p, b, j):
    """mu(E) = b (E/E_pre)^-p + j n(E) for one reference spectrum n."""
    n = ref.at(E)
    return [np.array([b * (e / E[0]) ** -p + j * ni]) for e, ni in zip(E, n, strict=True)]


def test_corrected_ratio_recovers_reference_ratio_exactly(refs):
    pristine, charged = refs
    levels = te.reference_levels(pristine, charged, E[0], E[2])
    rp, rc = te.reference_ratios(pristine, charged, E)
    for ref, r_true in ((pristine, rp), (charged, rc)):
        # a strong background (comparable to the jump) falling as E^-2.8
        pre, edge, post = _voxels(ref, 2.8, b=0.05, j=0.06)
        plain = te.edge_ratio(pre, edge, post, jump_threshold=1e-4)[0]
        corr = te.background_corrected_ratio(pre, edge, post, energies_ev=E, background_exponent=2.8,
                                             reference_levels=(ref.at(E[0]), ref.at(E[2])),
                                             jump_threshold=1e-4)[0]
        assert corr == pytest.approx(r_true, abs=1e-9)
        # the plain ratio is biased by the background slope: that is what the correction removes
        assert abs(plain - r_true) > 0.02
        # with the mean levels of both references the error stays far below the plain bias
        mean_lv = te.background_corrected_ratio(pre, edge, post, energies_ev=E, background_exponent=2.8,
                                                reference_levels=levels, jump_threshold=1e-4)[0]
        assert abs(mean_lv - r_true) < abs(plain - r_true) / 5


def test_zero_exponent_is_the_plain_ratio_and_dask_works():
    rng = np.random.default_rng(0)
    pre = rng.uniform(0.04, 0.05, (4, 5, 6))
    post = pre + rng.uniform(0.03, 0.07, pre.shape)
    edge = pre + rng.uniform(0.0, 0.08, pre.shape)
    post[0, 0, 0] = pre[0, 0, 0]  # no jump: masked
    plain = te.edge_ratio(pre, edge, post, jump_threshold=0.01)
    corr = te.background_corrected_ratio(pre, edge, post, energies_ev=E, background_exponent=0.0,
                                         reference_levels=(0.03, 0.98), jump_threshold=0.01)
    np.testing.assert_allclose(corr, plain, rtol=1e-12)
    assert np.isnan(corr[0, 0, 0])
    lazy = te.background_corrected_ratio(*(da.from_array(a, chunks=2) for a in (pre, edge, post)),
                                         energies_ev=E, background_exponent=2.8,
                                         reference_levels=(0.03, 0.98), jump_threshold=0.01)
    assert isinstance(lazy, da.Array)
    eager = te.background_corrected_ratio(pre, edge, post, energies_ev=E, background_exponent=2.8,
                                          reference_levels=(0.03, 0.98), jump_threshold=0.01)
    np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)


def test_bad_levels_and_threshold_are_errors():
    a = np.ones(3)
    with pytest.raises(DataError):
        te.background_corrected_ratio(a, a, a, energies_ev=E, background_exponent=2.8,
                                      reference_levels=(0.5, 0.5), jump_threshold=0.1)
    with pytest.raises(DataError):
        te.background_corrected_ratio(a, a, a, energies_ev=E, background_exponent=2.8,
                                      reference_levels=(0.0, 1.0), jump_threshold=0.0)

"""Normalisation, E0, half-jump energy and white line against xraylarch on real Ni K-edge data."""

from __future__ import annotations

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.xanes.normalize import edge_energy_half, find_e0, normalize_spectra, white_line
from litomo.xanes.spectra import read_spectrum

# Recorded with xraylarch 2026.3.1 on 2026-11-22 (litomo's defaults passed explicitly):
#   find_e0(energy, mu); pre_edge(g, pre1=-150, pre2=-30, norm1=50, norm2=300, nnorm=2);
#   half-jump energy = linear interpolation of the first upward crossing of g.norm = 0.5.
LARCH = [
    # (file, read kwargs, e0_ev, edge_step, half_jump_ev)
    ("xraylarch/ni_metal_rt.xdi", {}, 8331.5000, 2.450229, 8338.7764),
    ("xraylarch/NiO.prj", {"column": "NiO.000"}, 8343.7482, 0.826507, 8341.1641),
    ("xraylarch/NiO_merged_and_Ni_foil_ref.csv", {}, 8345.0002, 0.822992, 8342.4324),
    ("pyxas/ref_NiO.txt", {"energy_unit": "keV"}, 8342.5000, 1.132862, 8340.6538),
    ("pyxas/ref_LiNiO2.txt", {"energy_unit": "keV"}, 8347.0000, 1.079709, 8342.2704),
]


@pytest.mark.parametrize("name, kw, e0, step, half", LARCH, ids=[r[0] for r in LARCH])
def test_matches_recorded_larch(shared_data, name, kw, e0, step, half):
    s = read_spectrum(shared_data / "xanes" / name, **kw)
    r = normalize_spectra(s.energy_ev, s.mu)
    assert float(r.e0_ev) == pytest.approx(e0, abs=0.5)
    assert float(r.edge_step) == pytest.approx(step, rel=0.01)
    assert edge_energy_half(s.energy_ev, r.norm) == pytest.approx(half, abs=0.5)


def test_readme_values_nickel_foil(shared_data):
    # README (larch defaults): e0 = 8331.5 eV; nominal Ni K edge 8333 eV
    s = read_spectrum(shared_data / "xanes/xraylarch/ni_metal_rt.xdi")
    assert float(find_e0(s.energy_ev, s.mu)) == pytest.approx(8331.5, abs=0.5)


def test_against_live_larch(shared_data):
    larch_xafs = pytest.importorskip("larch.xafs")
    from larch import Group

    for name, kw, *_ in LARCH:
        s = read_spectrum(shared_data / "xanes" / name, **kw)
        for order in (1, 2):
            g = Group(energy=s.energy_ev, mu=s.mu)
            larch_xafs.pre_edge(g, pre1=-150, pre2=-30, norm1=50, norm2=300, nnorm=order)
            ours = normalize_spectra(s.energy_ev, s.mu, post_order=order)
            assert float(ours.e0_ev) == pytest.approx(g.e0, abs=0.5)
            assert float(ours.edge_step) == pytest.approx(g.edge_step, rel=0.01)
            # with larch's own E0 the fits are the same least-squares problems
            same = normalize_spectra(s.energy_ev, s.mu, e0=g.e0, post_order=order)
            np.testing.assert_allclose(same.norm, g.norm, atol=1e-8)
            np.testing.assert_allclose(same.pre_line, g.pre_edge, atol=1e-8)
            np.testing.assert_allclose(same.post_curve, g.post_edge, atol=1e-8)


def test_vectorised_equals_per_spectrum_and_dask(shared_data):
    da = pytest.importorskip("dask.array")
    a = read_spectrum(shared_data / "xanes/pyxas/ref_NiO.txt", energy_unit="keV")
    b = read_spectrum(shared_data / "xanes/pyxas/ref_LiNiO2.txt", energy_unit="keV")
    e = np.arange(8250.0, 8640.0, 6.5)  # a TXM-like 61-energy grid
    rng = np.random.default_rng(3)
    w = rng.random((4, 5))
    scale = 0.5 + rng.random((4, 5))
    mu = (np.multiply.outer(a.at(e), w) + np.multiply.outer(b.at(e), 1 - w)) * scale + 0.2
    mu += rng.normal(0, 0.003, mu.shape)
    r = normalize_spectra(e, mu)
    one = normalize_spectra(e, mu[:, 2, 3])
    assert float(one.edge_step) == pytest.approx(r.edge_step[2, 3], rel=1e-10)
    # with a common E0 the fits are linear in mu: the step of a mixture is the mixture of steps
    fixed = normalize_spectra(e, mu, e0=8345.0)
    sa = float(normalize_spectra(e, a.at(e), e0=8345.0).edge_step)
    sb = float(normalize_spectra(e, b.at(e), e0=8345.0).edge_step)
    np.testing.assert_allclose(fixed.edge_step, scale * (w * sa + (1 - w) * sb), rtol=0.01)
    lazy = normalize_spectra(e, da.from_array(mu, chunks=(10, 2, 5)))
    np.testing.assert_allclose(lazy.norm.compute(), r.norm, atol=1e-12)
    np.testing.assert_allclose(lazy.e0_ev.compute(), r.e0_ev)
    half = edge_energy_half(e, lazy.norm)
    np.testing.assert_allclose(half.compute(), edge_energy_half(e, r.norm))
    # a per-voxel E0 given as a dask array follows the spatial chunks
    e0 = np.full((4, 5), 8345.0)
    lazy_e0 = normalize_spectra(
        e, da.from_array(mu, chunks=(10, 2, 5)), e0=da.from_array(e0, chunks=(2, 5))
    )
    np.testing.assert_allclose(lazy_e0.norm.compute(), fixed.norm, atol=1e-12)


def test_analytic_step_and_edge():
    e = np.linspace(8150, 8700, 551)
    pre = 0.3 - 1e-4 * (e - 8150)
    edge = 1.7 / (1 + np.exp(-(e - 8341.2) / 1.0))
    r = normalize_spectra(e, pre + edge, post_order=1)
    assert float(r.e0_ev) == pytest.approx(8341.2, abs=0.5)
    # the step is post - pre evaluated at E0; for a logistic edge the post line at E0 is 1.7
    assert float(r.edge_step) == pytest.approx(1.7, rel=0.01)
    assert edge_energy_half(e, r.norm) == pytest.approx(8341.2, abs=0.05)


def test_masked_voxels_are_nan_not_garbage():
    e = np.linspace(8200, 8700, 101)
    edge = 1 / (1 + np.exp(-(e - 8340) / 2))
    mu = np.stack([edge, np.zeros_like(e), np.zeros_like(e) + 0.1], axis=1)  # edge, empty, flat
    r = normalize_spectra(e, mu)
    assert np.isfinite(r.edge_step[0])
    assert np.isnan(r.edge_step[1]) and np.isnan(r.edge_step[2])
    assert np.all(np.isnan(r.norm[:, 1:]))


def test_white_line_on_reference(shared_data):
    # README: LiNiO2 white line at 8349.5 eV; NiO at 8347.5 eV (1 eV grid)
    for name, wl in (("ref_LiNiO2.txt", 8349.5), ("ref_NiO.txt", 8347.5)):
        s = read_spectrum(shared_data / "xanes/pyxas" / name, energy_unit="keV")
        pos, height = white_line(s.energy_ev, s.mu, search_ev=(8330, 8380))
        assert pos == pytest.approx(wl, abs=0.6)
        assert height == pytest.approx(s.mu.max(), abs=0.02)


def test_bad_input():
    with pytest.raises(DataError, match="keV"):
        normalize_spectra(np.linspace(8.2, 8.6, 50), np.ones((50, 2)))
    with pytest.raises(DataError, match="NaN"):
        normalize_spectra(np.linspace(8200, 8600, 50), np.full((50, 2), np.nan))
    with pytest.raises(DataError, match="at least 4"):
        normalize_spectra(np.array([8300.0, 8350.0, 8400.0]), np.ones(3))


def test_foil_reference_removes_monochromator_drift(shared_data):
    # NiO.prj: 10 repeated NiO scans, each with a Ni-foil reference channel measured at the same
    # time. The monochromator drifts by several eV across the repeats; the foil moves with it,
    # so NiO minus foil edge energies must be stable to a fraction of an eV.
    prj = shared_data / "xanes/xraylarch/NiO.prj"
    sample, foil = [], []
    for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10):  # NiO.005 is missing upstream
        for label, out in ((f"NiO.{i:03d}", sample), (f"Ref NiO.{i:03d}", foil)):
            s = read_spectrum(prj, column=label)
            out.append(edge_energy_half(s.energy_ev, normalize_spectra(s.energy_ev, s.mu).norm))
    sample, foil = np.array(sample), np.array(foil)
    assert np.ptp(sample) > 3.0  # the raw drift is real
    calibrated = sample - foil
    assert np.std(calibrated) < 0.25
    assert np.std(calibrated) < np.std(sample) / 5

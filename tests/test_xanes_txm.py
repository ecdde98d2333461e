"""Optical density, edge-jump contrast and noise on real TXM frames (xanespy test data)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from litomo.errors import DataError
from litomo.io import read_xrm
from litomo.xanes.txm import (
    contrast_to_noise,
    edge_jump_map,
    expected_od_noise,
    noise_from_repeats,
    optical_density,
    photon_transfer,
)


def test_optical_density_analytic():
    od = optical_density(
        np.array([[50.0, 0.0, 120.0]]), np.array([[500.0, 500.0, 1010.0]]), dark=10.0
    )
    assert od[0, 0] == pytest.approx(-np.log(40 / 490))
    assert np.isfinite(od[0, 1])  # zero counts: saturated, not inf
    assert od[0, 2] == pytest.approx(-np.log(110 / 1000))
    nan_od = optical_density(np.array([0.0, 10.0]), np.array([100.0, 100.0]), floor_counts=None)
    assert np.isnan(nan_od[0]) and nan_od[1] == pytest.approx(np.log(10))
    scaled = optical_density(
        np.array([100.0]), np.array([100.0]), sample_exposure_s=2.0, flat_exposure_s=1.0
    )
    assert scaled[0] == pytest.approx(-np.log(0.5))
    with pytest.raises(DataError):
        optical_density(np.ones((2, 2)), np.ones((3, 3)))


def test_aps_edge_jump_shows_particles(shared_data):
    d = shared_data / "xanes/xanespy/txm-data-aps"
    od = {}
    for e in ("8250", "8353"):
        s = read_xrm(d / f"fov07_xanessoc01_{e}_0eV.xrm")
        f = read_xrm(d / f"ref_xanessoc01_{e}_0eV.xrm")
        od[e] = optical_density(s.image, f.image)
    jump = edge_jump_map(od["8250"], od["8353"])
    mask = jump > threshold_otsu(jump)
    cnr = contrast_to_noise(jump, mask)
    # measured 7.3 on this frame pair; Rose criterion: CNR >= 5 is reliably detectable
    assert cnr > 5
    # README: "the difference shows about 8 particles clearly"
    lab, n = ndi.label(ndi.binary_opening(mask, iterations=2))
    sizes = np.bincount(lab.ravel())[1:]
    assert 4 <= (sizes > 1000).sum() <= 20
    # the Ni jump of a particle must be positive; the background is centred on zero
    assert np.median(jump[~mask]) == pytest.approx(0.0, abs=0.05)
    assert np.median(jump[mask]) > 0.3


def test_ssrl_repeats_are_shot_noise_limited(shared_data):
    d = shared_data / "xanes/xanespy/txm-data-ssrl"
    reps = np.stack(
        [
            read_xrm(d / f"rep01_20161456_ssrl-test-data_08324.0_eV_00{i}of003.xrm").image
            for i in (1, 2, 3)
        ]
    ).astype(float)
    sigma = noise_from_repeats(reps)
    assert sigma.shape == reps.shape[1:] and np.all(sigma >= 0)
    ptc = photon_transfer(reps)
    # Poisson: variance grows linearly with the mean (measured gain 0.27 ADU/photon, r2 0.99)
    assert ptc["r2"] > 0.97
    ratios = np.array([b[2] for b in ptc["bins"][1:]])  # lowest decile carries read noise
    assert ratios.max() / ratios.min() < 1.3
    # OD scatter between repeats (common flat) agrees with the shot-noise prediction
    flat = read_xrm(d / "rep01_000051_ref_20161456_ssrl-test-data_08324.0_eV_001of010.xrm").image
    od = optical_density(reps, flat[None])
    bright = reps.mean(axis=0) > np.percentile(reps.mean(axis=0), 50)
    measured = np.sqrt(np.mean(noise_from_repeats(od)[bright] ** 2))
    predicted = np.sqrt(
        np.mean(
            expected_od_noise(
                reps.mean(axis=0)[bright], gain_adu_per_photon=ptc["gain_adu_per_photon"]
            )
            ** 2
        )
    )
    assert measured == pytest.approx(predicted, rel=0.15)

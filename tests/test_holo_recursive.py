"""Recursive Paganin against an analytic sphere propagated with the exact Fresnel integral; option checks."""

from __future__ import annotations

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.holo.recursive import RecursivePaganin, build_retriever
from litomo.holo.retrieve import PhaseRetriever, RetrievalSettings
from test_holo import HC_KEV_UM, _sphere_hologram


def _thickness_rms(dist_mm: float, iterations: int) -> float:
    n, pix, e = 128, 0.4, 29.6
    delta, beta = 1.08e-6, 1.08e-6 / 122.0
    img, thick = _sphere_hologram(n, 40, pix, e, dist_mm, delta, beta)
    phi = build_retriever((n, n), [dist_mm], e, pix, RetrievalSettings("paganin", delta / beta,
                                                                         iterations=iterations))(img[None])
    t = -phi / (2 * np.pi * e / HC_KEV_UM * delta)
    return float(np.sqrt(np.mean((t - thick) ** 2) / np.mean(thick**2)))


@pytest.mark.parametrize(("dist_mm", "single", "recursive"), [(10.0, 0.0101, 0.0017), (30.0, 0.0274, 0.0144)])
def test_recursive_paganin_reduces_sphere_error(dist_mm, single, recursive):
    # Fresnel numbers 0.38 / 0.13 at the pixel: the TIE behind single-pass Paganin is off there
    e0, e3 = _thickness_rms(dist_mm, 0), _thickness_rms(dist_mm, 3)
    assert e0 == pytest.approx(single, rel=0.1)  # the single pass really errs here
    assert e3 < 2 * recursive  # measured 0.0017 / 0.0144 (6x / 1.9x smaller)
    assert e3 < 0.6 * e0


def test_recursive_fixed_point_is_consistent_with_the_fresnel_model():
    # at the answer, the filtered residual of the exact Fresnel model is about zero
    n, pix, e, d = 96, 0.4, 29.6, 10.0
    img, _ = _sphere_hologram(n, 30, pix, e, d, 1.08e-6, 1.08e-6 / 122)
    base = PhaseRetriever((n, n), [d], e, pix, RetrievalSettings("paganin", 122.0))
    rp = RecursivePaganin(base, [d], e, pix, 3)
    phi = rp(img[None])
    x = np.exp(2 * phi / 122.0)
    sim = rp.forward(np.pad(x, 48, mode="reflect"))[0, 48:-48, 48:-48]
    phi0 = base(img[None])
    sim0 = rp.forward(np.pad(np.exp(2 * phi0 / 122.0), 48, mode="reflect"))[0, 48:-48, 48:-48]
    assert np.abs(sim - img).mean() < 0.3 * np.abs(sim0 - img).mean()  # measured 0.0011 vs 0.0058


@pytest.mark.parametrize(("kwargs", "needle"), [({"method": "ctf", "iterations": 3}, "not ctf"),
                                                ({"method": "paganin", "iterations": -1}, "--iterations"),
                                                ({"method": "paganin", "iterations": 1.5}, "--iterations")])
def test_iterations_option_checked(kwargs, needle):
    with pytest.raises(DataError, match=needle):
        RetrievalSettings(delta_beta=137.0, **kwargs)

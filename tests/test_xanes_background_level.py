"""The active material's non-resonant level over its edge jump: measured vs the composition's (issue 16).

Truth from the independent forward model (``tests/forward_models.py``: ``B = 0.047 /um`` under a
``J = 0.064 /um`` jump, a power law ``(E/E0)^-2.8``, or no background at all).
"""

from __future__ import annotations

import numpy as np
import pytest

import forward_models as fm
from litomo.xanes import background as bg
from litomo.xanes.spectra import Spectrum
from litomo.xanes.threeenergy import reference_levels

NMC811 = "LiNi0.8Mn0.1Co0.1O2"


def _bins(kind: str, offset_per_um: float = 0.0) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Pre- and post-edge attenuation of 200 full-AM voxels of mixed Li content, noise sd J/50."""
    case = fm.Case("level", ("uniform",), background=kind)
    spectra = fm.end_members("bundled")
    rng = np.random.default_rng(3)
    f_am = np.ones(200)
    f_li = rng.uniform(0.4, 1.0, 200)
    mu = [fm.attenuation(case, e, f_am, f_li, np.zeros(200), spectra).astype(float) + offset_per_um
          + rng.normal(0, fm.J_PER_UM / 50, 200) for e in (fm.ENERGIES_EV[0], fm.ENERGIES_EV[2])]
    ref = [Spectrum(*spectra[k], name=k) for k in ("pristine", "charged")]
    return mu[0], mu[1], reference_levels(ref[0], ref[1], fm.ENERGIES_EV[0], fm.ENERGIES_EV[2])


def test_measured_level_is_the_forward_models_b_over_j() -> None:
    f_post = bg.background_law(fm.ENERGIES_EV, composition=NMC811).factors[-1]
    pre, post, levels = _bins("power")
    truth = fm.B_PER_UM * (fm.ENERGIES_EV[0] / fm.E0_EV) ** -2.8 / fm.J_PER_UM  # 0.735
    measured = bg.measured_level_ratio(pre, post, np.ones(pre.size, bool), f_post, levels)
    assert measured == pytest.approx(truth, abs=0.002)  # measured 0.0004 off (noise; tabulated vs E^-2.8 shape)
    pre0, post0, _ = _bins("none")
    assert abs(bg.measured_level_ratio(pre0, post0, np.ones(pre.size, bool), f_post, levels)) < 0.002  # 0.0007


def test_level_warning_names_the_regime() -> None:
    predicted = bg.predicted_level_ratio(NMC811, fm.ENERGIES_EV[0])
    assert predicted == pytest.approx(0.41, abs=0.01)  # Elam tables, NMC811 (density cancels)
    f_post = bg.background_law(fm.ENERGIES_EV, composition=NMC811).factors[-1]
    full = np.ones(200, bool)
    msgs = {}
    for name, kind, off in (("power", "power", 0.0), ("none", "none", 0.0), ("offset", "power", 0.05)):
        pre, post, levels = _bins(kind, off)
        msgs[name] = bg.level_warning(bg.measured_level_ratio(pre, post, full, f_post, levels), predicted,
                                      NMC811, "state I")
    # the forward model's level is 1.8x the tables' (inside the band): no warning
    assert msgs["power"] is None
    assert "no non-resonant absorption" in msgs["none"] and "\n" not in msgs["none"]
    assert "offset" in msgs["offset"]

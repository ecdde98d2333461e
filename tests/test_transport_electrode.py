"""Tests of litomo.transport.electrode (electrode tortuosity factor, Nguyen et al. 2020)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from litomo.transport.electrode import _homogeneous_impedance, electrode_tortuosity


def test_one_voxel_through_pores_give_exactly_one():
    """1-voxel-wide straight pores with AM walls are discrete homogeneous transmission lines."""
    img = np.ones((30, 7, 7), np.uint8)  # 1 = AM
    img[:, 1, 1] = 0
    img[:, 4, 2] = 0
    img[:, 3, 5] = 0
    r = electrode_tortuosity(img, "z", voxel_size_um=0.4)
    assert r.tau_e == pytest.approx(1.0, abs=1e-7)
    assert r.eps == pytest.approx(3 / 49)
    assert r.connected_fraction == 1.0 and r.converged


def test_wide_straight_pore_tends_to_one():
    """A w-wide pore with capacitive walls only at its sides adds a lateral (in-slice) resistance
    of relative size ~ (w / L)^2, so tau_e -> 1 as the pore gets long: within 0.3 % at w/L = 0.1
    and 4x closer at w/L = 0.05."""
    short = np.zeros((100, 100))
    short[:, 45:55] = 1
    long = np.zeros((200, 100))
    long[:, 45:55] = 1
    t1 = electrode_tortuosity(short, "z", conductive=1, reactive=0).tau_e
    t2 = electrode_tortuosity(long, "z", conductive=1, reactive=0).tau_e
    assert 1.0 < t1 < 1.003
    assert (t2 - 1) == pytest.approx((t1 - 1) / 4, rel=0.05)


def test_taufactor_2d_cases():
    """TauFactor's 2D test images (100 x 100, conductive 1, reactive 0).

    Dead-end pore img[:75, 45:55]: a transmission line of length 75 instead of 100 at 3/4 of the
    porosity; the 1D estimate is (75/3)/(10) / ((100/3)/(0.075*100)) = 0.5625 and the capacitive
    pore end adds a little. TauFactor's own tests expect 0.601 (1.2.x) / 0.594 (later); its
    boundary convention differs (box sides and current collector also capacitive), so we check
    the physics (between the 1D estimate and 0.62) and the through pore (1 here; 1.046/0.986
    in TauFactor with capacitive box walls)."""
    dead = np.zeros((100, 100))
    dead[:75, 45:55] = 1
    r = electrode_tortuosity(dead, "z", conductive=1, reactive=0)
    assert 0.5625 < r.tau_e < 0.62
    thru = np.zeros((100, 100))
    thru[:, 45:55] = 1
    assert electrode_tortuosity(thru, "z", conductive=1, reactive=0).tau_e == pytest.approx(1.0, abs=3e-3)


def test_low_frequency_impedance_matches_limit_and_homogeneous_line():
    img = np.zeros((40, 1, 12), np.uint8)
    img[:, :, 4:5] = 1
    img[10:30, :, 5:8] = 1  # side pockets make the line inhomogeneous
    w = np.array([1e-7, 1e-2])
    r = electrode_tortuosity(img, "z", conductive=1, reactive=0, frequencies=w)
    # Re Z(w -> 0) from the complex solve equals the exact limit from the real solve
    assert r.impedance[0].real == pytest.approx(r.resistance, rel=1e-4)
    # capacitive branch: Im Z ~ -1 / (w C)
    c_total = r.specific_area_per_um * img.size
    assert r.impedance[0].imag == pytest.approx(-1 / (w[0] * c_total), rel=1e-4)
    assert r.tau_e > 1.0
    # ladder recursion of the homogeneous line agrees with the closed-form limit
    z = _homogeneous_impedance(50, 0.2, 3.0, np.array([1e-8]))[0]
    assert z.real == pytest.approx(0.2 * (50 / 3 + 1 / 300), rel=1e-6)


def test_no_path_and_no_interface():
    img = np.ones((10, 5, 5), np.uint8)
    img[3:, 2, 2] = 0  # pore not touching the separator face
    r = electrode_tortuosity(img, "z")
    assert math.isinf(r.tau_e) and "separator" in r.reason
    pores_only = np.zeros((10, 5, 5), np.uint8)
    r2 = electrode_tortuosity(pores_only, "z")
    assert math.isinf(r2.tau_e) and "capacitive" in r2.reason


def test_masks_input_and_real_crop(shared_data):
    """Two-mask input equals label input; on a crop of the real electrode tau_e is finite and of
    the order of the diffusion tortuosity (both ~1.5-3 for this NMC electrode)."""
    import tifffile

    img = tifffile.imread(shared_data / "micro" / "taufactor_electrode_polaron_nmc_256.tiff")[:48, :48, :48]
    mapping = {"pore": 0, "am": 85, "cbd": 170}
    r = electrode_tortuosity(img, "z", mapping=mapping)
    r2 = electrode_tortuosity((img == 0, img == 85), "z")
    assert r.tau_e == pytest.approx(r2.tau_e, rel=1e-9)
    assert 1.0 < r.tau_e < 4.0
    assert r.converged

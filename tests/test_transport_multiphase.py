"""Multiphase diffusion (porous CBD) against exact layered media, and transport classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.transport.diffusion import tortuosity
from litomo.transport.electrode import electrode_tortuosity
from litomo.transport.multiphase import (
    DEAD_END,
    FLOWING,
    ISOLATED,
    STAGNANT,
    cbd_relative_diffusivity,
    diffusivity_map,
    multiphase_tortuosity,
    transport_classes,
)


def test_series_layers_exact_harmonic_mean():
    """Layers normal to the axis: resistances in series, D_eff = L / sum(l_i / D_i) (exact)."""
    voxel = (0.5, 0.3, 0.4)
    thickness = [3, 5, 2, 4]
    values = [1.0, 0.2, 0.05, 0.7]
    d = np.concatenate([np.full((t, 5, 6), v, np.float32) for t, v in zip(thickness, values, strict=True)])
    r = multiphase_tortuosity(d, "z", voxel_size_um=voxel, rtol=1e-10)
    deff = sum(thickness) / sum(t / v for t, v in zip(thickness, values, strict=True))
    d_mean = sum(t * v for t, v in zip(thickness, values, strict=True)) / sum(thickness)
    assert r.converged
    assert r.deff == pytest.approx(deff, rel=1e-6)
    assert r.d_mean == pytest.approx(d_mean, rel=1e-6)
    assert r.tau == pytest.approx(d_mean / deff, rel=1e-6)  # = mean(D) mean(1/D) > 1
    assert r.mcmullin == pytest.approx(1.0 / deff, rel=1e-6)


def test_parallel_layers_arithmetic_mean_tau_one():
    """Layers along the axis: conductances in parallel, D_eff = mean(D), tau = 1 (exact)."""
    d = np.zeros((10, 6, 8), np.float32)
    d[:, :, :3] = 1.0
    d[:, :, 3:5] = 0.3  # porous CBD columns next to the pores
    r = multiphase_tortuosity(d, "z", voxel_size_um=(1.0, 0.5, 0.5), rtol=1e-10)
    assert r.deff == pytest.approx((3 * 1.0 + 2 * 0.3) / 8, rel=1e-6)
    assert r.tau == pytest.approx(1.0, abs=1e-6)
    assert r.eps == pytest.approx(5 / 8)


def test_binary_field_equals_binary_solver_and_straight_channel_mcmullin():
    rng = np.random.default_rng(3)
    m = rng.random((16, 14, 14)) < 0.55
    binary = tortuosity(m, "z", rtol=1e-9)
    multi = multiphase_tortuosity(m.astype(np.float32), "z", rtol=1e-9)
    assert math.isfinite(binary.tau) and binary.tau > 1.2
    assert multi.tau == pytest.approx(binary.tau, rel=1e-6)
    assert multi.mcmullin == pytest.approx(binary.mcmullin, rel=1e-6)
    assert multi.d_mean == pytest.approx(binary.eps)
    # straight channel: tau = 1 (geometric tortuosity 1, tau = its square), N_M = tau / eps = 1 / eps
    ch = np.zeros((9, 5, 5), np.float32)
    ch[:, 1:3, 2] = 1.0
    r = multiphase_tortuosity(ch, "z")
    assert r.tau == pytest.approx(1.0, abs=1e-9)
    assert r.mcmullin == pytest.approx(25 / 2, rel=1e-9)


def test_porous_cbd_plug_opens_a_blocked_channel():
    """A pore channel plugged by CBD: tau = inf without CBD diffusion, series value with it."""
    lab = np.ones((12, 4, 4), np.uint8)  # AM
    lab[:, 1, 1] = 0
    lab[5:8, 1, 1] = 2  # 3-voxel CBD plug
    dc = cbd_relative_diffusivity(0.47)
    blocked = multiphase_tortuosity(diffusivity_map(lab, {"pore": 1.0}), "z")
    assert blocked.tau == math.inf and blocked.deff == 0.0 and blocked.reason
    r = multiphase_tortuosity(diffusivity_map(lab, {"pore": 1.0, "cbd": dc}), "z", rtol=1e-10)
    deff = (12 / (9 / 1.0 + 3 / dc)) / 16
    assert r.deff == pytest.approx(deff, rel=1e-6)
    assert r.d_mean == pytest.approx((9 + 3 * dc) / 192, rel=1e-6)


def test_bad_inputs_raise():
    with pytest.raises(DataError, match="finite"):
        multiphase_tortuosity(np.full((4, 2, 2), np.nan, np.float32))
    with pytest.raises(DataError, match="cbd-porosity"):
        cbd_relative_diffusivity(1.5)
    with pytest.raises(DataError, match="unknown phase"):
        diffusivity_map(np.zeros((2, 2, 2), np.uint8), {"electrolyte": 1.0})


def test_transport_classes_side_branch_is_stagnant():
    """A side branch off a straight channel carries exactly no flux."""
    m = np.zeros((10, 7, 7), bool)
    m[:, 3, 3] = True  # through channel
    m[5, 3, 4:7] = True  # closed side branch (3 voxels)
    m[:4, 0, 0] = True  # dead end from the inlet
    m[6, 6, 0] = True  # isolated voxel
    r = multiphase_tortuosity(m.astype(np.float32), "z", return_flux=True, rtol=1e-10)
    cls = transport_classes(m, "z", r.flux)
    counts = np.bincount(cls.ravel(), minlength=5)
    assert counts[FLOWING] == 10 and counts[STAGNANT] == 3
    assert counts[DEAD_END] == 4 and counts[ISOLATED] == 1
    assert (cls[5, 3, 4:7] == STAGNANT).all()
    # without a flux map the whole through cluster is one class
    assert np.count_nonzero(transport_classes(m, "z") == FLOWING) == 13


def test_electrode_mcmullin_straight_pores():
    lab = np.ones((10, 6, 6), np.uint8)
    lab[:, 2, 2] = 0
    lab[:, 4, 1] = 0
    e = electrode_tortuosity(lab, "z")
    assert e.tau_e == pytest.approx(1.0, abs=1e-3)
    assert e.mcmullin == pytest.approx(e.tau_e / (2 / 36))
    assert e.as_dict()["mcmullin"] == e.mcmullin


def test_cli_cbd_porosity_and_class_labels(tmp_path, capsys):
    import json

    import tifffile

    from litomo.cli import main

    def cli(*args: str) -> int:
        try:
            main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    lab = np.full((12, 4, 4), 85, np.uint8)
    lab[:, 1, 1] = 0
    lab[5:8, 1, 1] = 170  # CBD plug in the only channel
    lab[:3, 3, 3] = 0  # dead-end pore from the inlet
    path = tmp_path / "plug.tif"
    tifffile.imwrite(path, lab)
    classes = tmp_path / "classes.tif"
    assert cli("tortuosity", str(path), "--labels", "pore=0,am=85,cbd=170", "--voxel-size-um", "1", "--json",
               "--cbd-porosity", "0.47", "--classes", str(classes)) == 0
    out = json.loads(capsys.readouterr().out)
    dc = 0.47 ** 1.5
    assert out["deff"]["z"] == pytest.approx((12 / (9 + 3 / dc)) / 16, rel=1e-5)
    assert out["d_mean"] == pytest.approx((12 + 3 * dc) / 192, rel=1e-5)
    cls = tifffile.imread(classes)
    assert np.bincount(cls.ravel(), minlength=5).tolist() == [177, 12, 0, 3, 0]
    assert cli("tortuosity", str(path), "--voxel-size-um", "1", "--cbd-diffusivity", "3") == 2
    assert "--cbd-diffusivity must lie in [0, 1]" in capsys.readouterr().err
    assert cli("tortuosity", str(path), "--voxel-size-um", "1", "--phase", "cbd", "--cbd-porosity", "0.4") == 2
    assert "need --phase pore" in capsys.readouterr().err


def test_micro_reports_the_multiphase_tortuosity_of_layers():
    """`litomo micro --cbd-porosity`: pore and CBD layers normal to z, exact series value."""
    from litomo.transport.multiphase import cbd_relative_diffusivity
    from litomo.workflows.micro import MicroSettings, analyse_microstructure

    lab = np.zeros((16, 12, 12), np.uint8)
    lab[8:] = 2  # half pore, half CBD along z
    r = analyse_microstructure(lab, MicroSettings(0.5, cbd_porosity=0.47, pore_sizes=False))
    mp = r.summary["multiphase_tortuosity_z"]
    d = cbd_relative_diffusivity(0.47)
    # series layers: D_eff = 1 / mean(1/D); tau = mean(D) * mean(1/D)
    assert mp["tau"] == pytest.approx(0.5 * (1 + d) * 0.5 * (1 + 1 / d), rel=1e-5)
    assert mp["deff"] == pytest.approx(1 / (0.5 * (1 + 1 / d)), rel=1e-5)
    with pytest.raises(DataError, match="--cbd-porosity"):
        MicroSettings(0.5, cbd_porosity=1.5)

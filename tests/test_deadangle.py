"""Dead-angle (missing-wedge) study of three-energy Li maps (litomo.tomo.deadangle)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from litomo.phantom.operando import operando_state
from litomo.tomo.deadangle import (
    DeadAngleSettings,
    angles_for_range,
    deadangle_study,
    li_map,
    particle_orientation,
)


@pytest.fixture(scope="module")
def state():
    return operando_state(28, seed=2)


def test_li_maths_exact_without_reconstruction(state):
    x = li_map(*state.mu, state.r_pristine, state.r_charged, jump_threshold=0.02)
    am = np.isfinite(state.li)
    assert np.nanmax(np.abs(x[am] - state.li[am])) < 0.01


def test_missing_wedge_increases_li_error(state):
    res = deadangle_study(state.mu, state.li, state.particles, voxel_size_um=state.voxel_size_um,
                          r_pristine=state.r_pristine, r_charged=state.r_charged,
                          settings=DeadAngleSettings(ranges_deg=(180, 120)))
    s = res.summary.set_index("range_deg")
    assert s.loc[180, "rmse_li"] < 0.02
    assert s.loc[120, "rmse_li"] > 2 * s.loc[180, "rmse_li"]
    assert s.loc[120, "particle_mean_li_abs_error"] > s.loc[180, "particle_mean_li_abs_error"]
    js = res.to_json()
    assert set(js["rmse_by_range"]) == {"180", "120"}
    assert set(js["class_fraction_bias_by_range"]["120"]) == {"poor", "moderate", "rich"}
    # class-fraction biases sum to zero (fractions of the same voxels)
    assert abs(sum(js["class_fraction_bias_by_range"]["120"].values())) < 1e-6
    json.dumps(js)


def test_orientation_and_angles():
    p = np.zeros((3, 30, 30), np.int32)
    p[:, 14:16, 3:27] = 1  # long along x (the missing ray direction)
    p[:, 3:27, 5:7] = 2    # long along y
    o = particle_orientation(p).set_index("particle")
    assert o.loc[1, "angle_to_missing_deg"] < 1 and o.loc[2, "angle_to_missing_deg"] > 89
    assert o.loc[1, "elongation"] > 5
    a = angles_for_range(150, 90)
    assert a.size == 75 and a.min() == -75


def test_cli_deadangle_json(capsys):
    from litomo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["deadangle", "--size", "24", "--ranges", "180,120", "--json", "--seed", "1"])
    assert exc.value.code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("rmse_by_range", "class_fraction_bias_by_range", "particle_mean_li_bias_by_range"):
        assert set(out[key]) == {"180", "120"}
    assert out["rmse_by_range"]["120"] > out["rmse_by_range"]["180"]

"""The stage cache gives back what it stored (non-finite floats included)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from litomo.workflows.limap.cache import load_output, save_output


@dataclasses.dataclass
class _Out:
    a: np.ndarray
    nan_value: float
    inf_value: float
    shape: tuple[int, ...]


def test_non_finite_floats_survive_the_json_record(tmp_path):
    out = _Out(np.arange(4.0), math.nan, -math.inf, (2, 3))
    save_output(out, tmp_path)
    back = load_output(_Out, tmp_path)
    assert math.isnan(back.nan_value) and back.inf_value == -math.inf and back.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(back.a), out.a)

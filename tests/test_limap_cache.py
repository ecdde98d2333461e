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


# --- the stage runner's on_finished hook (run_state ends the elastix worker with it) ------------

@dataclasses.dataclass
class _Val:
    value: float
    warnings: list


def _stage(name, needs=(), body=None, persist=True):
    """A toy stage: ``body(inputs)`` gives its value (see litomo.workflows.limap.stage.StateStage)."""
    from litomo.workflows.limap.stage import StateStage

    cls = type(f"S_{name}", (StateStage,), {"name": name, "needs": tuple(needs), "persist": persist,
                                           "output": _Val})
    stage = cls()
    stage.run = lambda ctx, state, **inputs: _Val(body(inputs), [f"w-{name}"])
    return stage


def _runner(work, stages, resume=False, **kw):
    from types import SimpleNamespace

    from litomo.workflows.limap.cache import StageCache
    from litomo.workflows.limap.stage import StateRunner

    return StateRunner(stages, SimpleNamespace(), SimpleNamespace(name="I"), StageCache(work, resume=resume), [], **kw)


def test_on_finished_once_per_stage_fresh_or_reused(tmp_path):
    """The hook sees each stage once, in the order outputs become current (a stage loaded from
    the cache for a later one, or reused without loading, counts too); warnings keep stage order."""
    stages = [_stage("read", (), lambda i: 2.0, persist=False), _stage("sep", ("read",), lambda i: 3.0),
              _stage("reg", ("read",), lambda i: i["read"].value + 1),
              _stage("warp", ("reg",), lambda i: i["reg"].value * 10)]
    seen: list = []
    r = _runner(tmp_path, stages, on_finished=seen.append)
    assert r.needs_run("reg") and not r.needs_run("nothing")
    r.run_all()
    assert seen == ["read", "sep", "reg", "warp"]
    assert r.cache.load("I", "warp", _Val).value == 30.0
    assert r.warnings == ["w-read", "w-sep", "w-reg", "w-warp"]  # read's with the next stored stage

    seen.clear()
    again = _runner(tmp_path, stages, resume=True, on_finished=seen.append)
    assert not again.needs_run("reg")
    again.run_all()
    assert seen == ["sep", "reg", "warp"]  # reused, nothing recomputed or read again

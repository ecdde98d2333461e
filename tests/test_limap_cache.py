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
    pair: tuple[float, float]


def test_non_finite_floats_survive_the_json_record(tmp_path):
    out = _Out(np.arange(4.0), math.nan, -math.inf, (2, 3), (math.nan, 0.5))
    save_output(out, tmp_path)
    back = load_output(_Out, tmp_path)
    assert math.isnan(back.nan_value) and back.inf_value == -math.inf and back.shape == (2, 3)
    # a tuple of floats too (the registration's deformation (rms, max), NaN when not tested)
    assert math.isnan(back.pair[0]) and back.pair[1] == 0.5
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


# --- what the runner holds between stages (issue 22: memory) ------------------------------------

@dataclasses.dataclass
class _Grids:
    small: dict
    big: dict
    warnings: list


def test_runner_releases_what_later_stages_do_not_read(tmp_path):
    """After each stage the runner holds only what later stages read: the unstored ``read`` output
    loses the array field no later stage reads (declared with ``reads``), a stored output the
    next stage does not need is dropped and loaded again from the cache, identical, when a later
    stage needs it; what each stage saw is what it would have seen with everything held."""
    from litomo.workflows.limap.stage import StateStage

    seen: dict = {}
    held: dict = {}
    runner: list = []

    def stage(name, needs, body, output=_Val, persist=True, reads=None):
        cls = type(f"S_{name}", (StateStage,), {"name": name, "needs": needs, "persist": persist,
                                               "output": output, "reads": reads or {}})
        s = cls()

        def run(ctx, state, **inputs):
            seen[name] = {k: (v.big.get("b", np.empty(0)).size if isinstance(v, _Grids) else v.value)
                          for k, v in inputs.items()}
            held[name] = sorted(runner[0]._outputs)
            return body(inputs)
        s.run = run
        return s

    grids = _Grids({"m": np.ones(3)}, {"b": np.arange(1000.0)}, [])
    stages = [stage("read", (), lambda i: grids, output=_Grids, persist=False),
              stage("sep", ("read",), lambda i: _Val(float(i["read"].big["b"].sum()), []),
                    reads={"read": ("big",)}),
              stage("reg", ("read",), lambda i: _Val(float(i["read"].big["b"][-1]), []),
                    reads={"read": ("big",)}),
              stage("warp", ("read", "reg"), lambda i: _Val(i["read"].small["m"].sum() + i["reg"].value, []),
                    reads={"read": ("small",)}),
              stage("map", ("warp",), lambda i: _Val(i["warp"].value * 2, [])),
              stage("parts", ("sep", "map"), lambda i: _Val(i["sep"].value + i["map"].value, []))]
    r = _runner(tmp_path, stages)
    runner.append(r)
    r.run_all()
    assert held["reg"] == ["read"] and held["warp"] == ["read", "reg"]  # sep not held meanwhile
    assert held["parts"] == ["map", "sep"]  # sep back from the cache for the stage that needs it
    assert seen["reg"]["read"] == 1000  # still whole for the registration
    assert seen["warp"] == {"read": 0, "reg": 999.0}  # the big field released once reg was done
    assert r.cache.load("I", "parts", _Val).value == 499500.0 + 2 * (3.0 + 999.0)  # sep loaded back
    assert not r._outputs  # nothing held after the last stage
    assert grids.big["b"].size == 1000  # released from the runner's copy, not from the stage's object


def test_output_stored_without_a_field_is_redone(tmp_path):
    """A stored output lacking a field of the stage's output class (stored by an older litomo) is
    recomputed on --resume instead of failing to load (seen: a session-7 ``map`` without
    ``non_am_level_per_um`` loaded for ``particles``)."""
    import json

    stages = [_stage("read", (), lambda i: 2.0, persist=False), _stage("reg", ("read",), lambda i: i["read"].value + 1),
              _stage("warp", ("reg",), lambda i: i["reg"].value * 10)]
    _runner(tmp_path, stages).run_all()
    meta = tmp_path / "I" / "reg" / "meta.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "value"}))
    again = _runner(tmp_path, stages, resume=True)
    assert again.needs_run("reg") and not again.needs_run("warp")
    again.run_all()
    assert again.cache.load("I", "reg", _Val).value == 3.0

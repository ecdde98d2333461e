"""Stages started early (issue 22): the registration begins in the elastix worker while the run
process separates the particles.

Truth: the order of events the runner produces (a stage begun only when its needs exist and
its output is not stored), and the same register stage run without an early start; elastix is
replaced by a stub (the real estimates are deterministic: bit-identical in the worker and in
process, docs/scale.md), so these tests cost no itk import.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

from litomo import register_worker
from litomo.workflows.limap import registration
from litomo.workflows.limap.cache import StageCache
from litomo.workflows.limap.read import Binned
from litomo.workflows.limap.registration import RegisterStage, misfit_gain
from litomo.workflows.limap.stage import StateRunner, StateStage


@dataclass
class _Out:
    value: np.ndarray


def _stages(events: list) -> list[StateStage]:
    class Read(StateStage):
        name, persist, output = "read", False, _Out

        def run(self, ctx, state, **inputs):
            events.append("read")
            return _Out(np.arange(3.0))

    class Separate(StateStage):
        name, needs, output = "separate", ("read",), _Out

        def run(self, ctx, state, *, read):
            events.append("separate")
            time.sleep(0.05)
            return _Out(read.value + 1)

    class Register(StateStage):
        name, needs, output = "register", ("read",), _Out

        def start(self, ctx, state, *, read):
            events.append("start")
            return "handle"

        def run(self, ctx, state, *, read, started=None):
            events.append(("register", started))
            return _Out(read.value * 2)

    return [Read(), Separate(), Register()]


def test_a_stage_starts_as_soon_as_its_needs_exist_and_never_when_stored(tmp_path):
    events: list = []
    timings: list = []
    state = SimpleNamespace(name="I")
    StateRunner(_stages(events), None, state, StageCache(tmp_path, resume=False), timings).run_all()
    # begun right after `read`, before `separate`; its run() gets the handle
    assert events == ["read", "start", "separate", ("register", "handle")]
    t = {x.stage: x for x in timings}
    assert t["register"].started_early_s >= 0.05  # it began before `separate` (0.05 s) ran
    assert t["separate"].started_early_s == 0.0
    # resumed: the stored register output is reused, nothing is started again
    events.clear()
    StateRunner(_stages(events), None, state, StageCache(tmp_path, resume=True), []).run_all()
    assert "start" not in events and not any(isinstance(e, tuple) for e in events)


def _translation(*zyx: float) -> dict:
    return {"Transform": ["TranslationTransform"], "TransformParameters": [repr(v) for v in zyx[::-1]],
            "FixedImageDimension": ["3"]}


class _StubElastix:
    """Deterministic stand-in for elastix: translation maps by moving image and mode; records threads."""

    def __init__(self, grid):
        self.grid, self.calls = grid, []

    def __call__(self, fixed, moving, params, reg_vs, initial_maps=None, fixed_mask=None):
        role = "pre_edge" if moving is self.grid["pre_edge"] else "edge"
        self.calls.append((role, params.mode, threading.current_thread().name))
        rigid = _translation(0.25, 0.0, 0.0) if role == "pre_edge" else _translation(0.0, 0.5, 0.0)
        maps = {"rigid": [rigid], "rigid+bspline": [rigid, _translation(0.0, 0.0, 0.4)],
                "bspline": [*(initial_maps or []), _translation(0.1, 0.0, 0.0)]}[params.mode]
        return SimpleNamespace(parameter_maps=maps, translation_vox=(0.0, 0.0, 0.0), rotation_deg=(0.0, 0.0, 0.0),
                               elapsed_s=1.0)


class _FakeWorker:
    def __init__(self):
        self.ready_waits = 0

    def wait_ready(self):
        self.ready_waits += 1


def test_register_stage_started_early_gives_the_sequential_result(monkeypatch):
    rng = np.random.default_rng(3)
    post = ndi.gaussian_filter(rng.random((24, 24, 24)), 2).astype(np.float32)
    # the pre-edge content displaced by the stub's whole pre-edge transform (1, 0, 1.6) voxels: its
    # "B-spline" part (1.6 voxels in x) removes misfit, so the stage keeps it (deformed)
    grid = {"post_edge": post, "pre_edge": ndi.shift(0.5 * post, (1.0, 0.0, 1.6), order=3, mode="nearest"),
            "edge": 0.8 * post}
    read = Binned({}, grid, (2, 2, 2), (48, 48, 48), (0.125,) * 3, [])
    proc = SimpleNamespace(bspline=True, bin=7, bspline_spacing_um=2.0)
    ctx = SimpleNamespace(manifest=SimpleNamespace(processing=proc), do_register=True, report=lambda *a: None)
    stub = _StubElastix(grid)
    monkeypatch.setattr(registration, "estimate", stub)
    state = SimpleNamespace(name="I")

    sequential = RegisterStage().run(ctx, state, read=read)  # no worker: nothing starts early
    assert RegisterStage().start(ctx, state, read=read) is None
    in_process = list(stub.calls)
    stub.calls.clear()
    worker = _FakeWorker()
    monkeypatch.setattr(register_worker, "active", lambda: worker)
    started = RegisterStage().start(ctx, state, read=read)
    early = RegisterStage().run(ctx, state, read=read, started=started)

    # the two estimates that need no other ran in the helper thread, after the worker was ready
    assert [c[:2] for c in stub.calls[:2]] == [("pre_edge", "rigid+bspline"), ("edge", "rigid")]
    assert all(c[2].startswith("litomo-register") for c in stub.calls[:2]) and worker.ready_waits == 2
    assert [c[:2] for c in stub.calls] == [c[:2] for c in in_process]  # nothing estimated twice or left out
    for f in ("mode", "maps", "translation_vox", "role_mode", "elapsed_s", "threshold"):
        assert getattr(early, f) == getattr(sequential, f), f
    assert early.deformation_vox == pytest.approx(sequential.deformation_vox, abs=0)
    assert early.role_mode == {"pre_edge": "rigid+bspline", "edge": "rigid+bspline"}  # deformed: B-spline kept
    # the misfit gain from the reused pre-edge warp equals the one computed from scratch
    gain = misfit_gain(grid, early.maps["pre_edge"], (0.25,) * 3)
    assert early.misfit_gain == gain and gain > registration.MISFIT_GAIN_LEVEL


def test_an_early_registration_whose_worker_closed_runs_no_elastix_here(monkeypatch):
    """A run that stops (an error in `separate`) closes the worker: the queued estimates must not
    fall back to elastix in the run process (itk import, ~1 GiB) while the error is reported."""
    from litomo.errors import LitomoError

    post = np.ones((8, 8, 8), np.float32)
    grid = {"post_edge": post, "pre_edge": post.copy(), "edge": post.copy()}
    read = Binned({}, grid, (2, 2, 2), (16, 16, 16), (0.125,) * 3, [])
    ctx = SimpleNamespace(manifest=SimpleNamespace(processing=SimpleNamespace(bspline=False, bin=7, bspline_spacing_um=2.0)),
                          do_register=True, report=lambda *a: None)
    stub = _StubElastix(grid)
    monkeypatch.setattr(registration, "estimate", stub)
    worker, current = _FakeWorker(), {}
    current["w"] = worker
    monkeypatch.setattr(register_worker, "active", lambda: current.get("w"))
    closed = SimpleNamespace(wait_ready=lambda: current.clear())  # the session ends while itk loads
    monkeypatch.setattr(worker, "wait_ready", closed.wait_ready)
    started = RegisterStage().start(ctx, SimpleNamespace(name="I"), read=read)
    with pytest.raises(LitomoError, match="cancelled"):
        started.get("pre_edge")
    with pytest.raises(LitomoError, match="cancelled"):
        started.get("edge_rigid")
    assert stub.calls == []

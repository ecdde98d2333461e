"""The stage protocol of the Li-mapping run and the runner that resolves stages per state.

A stage is a small object with a ``name``, the names of the stages whose outputs it reads
(``needs``), its parameters (:meth:`StateStage.params`) and :meth:`StateStage.run`, which takes
those outputs as keyword arguments and returns a dataclass. Its *resume key* is a hash of its
parameters, the litomo version and the keys of the stages it needs, so a stage reruns exactly
when something it depends on changed. The stage sequence lives in one place
(:data:`litomo.workflows.limap.run.STATE_STAGES`); a new stage (a reconstruction before the
binning, an N-energy map) is a new class added there, without editing the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from litomo import __version__
from litomo.manifest import StateSpec
from litomo.workflows.limap.cache import StageCache, params_key
from litomo.workflows.limap.options import RunContext, StageTiming
from litomo.workflows.stage import stage as stage_log

log = logging.getLogger(__name__)


class StateStage:
    """One step of the per-state pipeline (subclass it; see the module docstring)."""

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    #: stored under work/ and reused by --resume (False: recomputed whenever it is needed)
    persist: ClassVar[bool] = True
    output: ClassVar[type] = object
    #: which runs have this stage: ``"three"`` (three-energy states), ``"spectral"`` (N-energy
    #: states) or None (every run); one class of each kind shares a name and a resume key
    energies: ClassVar[str | None] = None
    #: the fields it reads of the outputs it needs, ``{stage: (field, ...)}``; a needed stage not
    #: listed is read whole. Array fields that no later stage reads are released (issue 22: the
    #: registration-grid volumes are not held through the full-resolution warp)
    reads: ClassVar[dict[str, tuple[str, ...]]] = {}

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        """Everything besides the needed stages' outputs that the result depends on."""
        return {}

    def active(self, ctx: RunContext) -> bool:
        """Whether the run has this stage (an inactive stage is left out; stages needing it get no input)."""
        if self.energies is None:
            return True
        return ctx.manifest.three_energy == (self.energies == "three")

    def start(self, ctx: RunContext, state: StateSpec, **inputs: Any) -> Any:
        """Begin work that needs only the outputs of :attr:`needs`, before the stages ahead of this one run.

        Called once the needed outputs exist, and only when this stage's output is not stored
        (a resumed run starts nothing it has). What it returns reaches :meth:`run` as the keyword
        ``started`` (None: nothing was started, and :meth:`run` gets no ``started``). For work
        handed to another process (issue 22: the elastix worker registers while this process
        separates the particles); it must not change the stage's output.
        """
        return None

    def run(self, ctx: RunContext, state: StateSpec, **inputs: Any) -> Any:
        raise NotImplementedError


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_children_mib() -> float:
    """The largest peak resident memory of the child processes that ended so far (MiB), e.g. the
    elastix worker's (:mod:`litomo.register_worker`); 0 when none."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


@contextlib.contextmanager
def measured(stage: str, state: str, ran: bool, sink: list[StageTiming], started_early_s: float = 0.0) -> Iterator[None]:
    """Append the wall time, CPU time (all threads of this process) and peak RSS of the block."""
    w0, c0 = time.perf_counter(), time.process_time()
    yield
    sink.append(StageTiming(stage, state, ran, time.perf_counter() - w0, time.process_time() - c0,
                            peak_rss_mib(), started_early_s))


class StateRunner:
    """Brings every persisted stage of one state up to date, reusing what ``--resume`` allows."""

    def __init__(self, stages: Sequence[StateStage], ctx: RunContext, state: StateSpec,
                 cache: StageCache, timings: list[StageTiming],
                 on_stored: Callable[[], None] | None = None, warnings: list[str] | None = None,
                 on_finished: Callable[[str], None] | None = None):
        self.order = list(stages)
        #: called once with a stage's name when its output is current (computed, loaded or reused)
        self.on_finished = on_finished
        self._reported: set[str] = set()
        self.stages = {s.name: s for s in stages}
        self.ctx, self.state, self.cache, self.timings = ctx, state, cache, timings
        self.on_stored = on_stored
        #: warnings of the stages, in order (kept in the stage records, so --resume repeats them)
        self.warnings = warnings if warnings is not None else []
        self._pending: list[str] = []  # warnings of unstored stages, kept with the next stored one
        self._keys: dict[str, str] = {}
        self._outputs: dict[str, Any] = {}
        self._timed: set[str] = set()
        #: stages begun early (:meth:`StateStage.start`): their handle and when they began
        self._started: dict[str, tuple[Any, float]] = {}

    def key(self, name: str) -> str:
        """The resume key of stage ``name`` (hash of its parameters and its inputs' keys)."""
        if name not in self._keys:
            s = self.stages[name]
            self._keys[name] = params_key({"stage": name, "version": __version__,
                                           "params": s.params(self.ctx, self.state),
                                           "needs": [self.key(n) for n in s.needs if n in self.stages]})
        return self._keys[name]

    def _done(self, name: str) -> bool:
        s = self.stages[name]
        fields = [f.name for f in dataclasses.fields(s.output)] if dataclasses.is_dataclass(s.output) else []
        return s.persist and self.cache.is_done(self.state.name, name, self.key(name), fields)

    def needs_run(self, name: str) -> bool:
        """Whether stage ``name`` is in the run and has no current stored output."""
        return name in self.stages and not self._done(name)

    def get(self, name: str) -> Any:
        """The output of stage ``name``: from memory, from the cache, or computed now."""
        if name in self._outputs:
            return self._outputs[name]
        s, st = self.stages[name], self.state.name
        if self._done(name):
            sink = self.timings if name not in self._timed else []
            with measured(name, st, False, sink):
                out = self.cache.load(st, name, s.output)
        else:
            inputs = {n: self.get(n) for n in s.needs if n in self.stages}
            out, self._pending = self._compute(name, inputs, self._pending)
        self._timed.add(name)
        self._outputs[name] = out
        self._finished(name)
        self._start_ready()
        return out

    def _start_ready(self) -> None:
        """Begin every stage that can start early (:meth:`StateStage.start`) and whose needs now exist."""
        for s in self.order:
            if (s.name in self._started or s.name in self._outputs or type(s).start is StateStage.start
                    or not all(n in self._outputs for n in s.needs if n in self.stages)
                    or not self.needs_run(s.name)):
                continue
            handle = s.start(self.ctx, self.state, **{n: self._outputs[n] for n in s.needs if n in self.stages})
            self._started[s.name] = (handle, time.perf_counter())

    def _compute(self, name: str, inputs: dict[str, Any], pending: list[str]) -> tuple[Any, list[str]]:
        """Run stage ``name`` (and store it if persisted); returns its output and the unstored warnings."""
        s, st = self.stages[name], self.state.name
        handle, began = self._started.get(name, (None, None))
        early = {} if handle is None else {"started": handle}
        early_s = 0.0 if handle is None else time.perf_counter() - began
        # -v logs each stage and, when one fails, which one (litomo.workflows.stage)
        with stage_log(log, "run", f"state {st}: {name}"), measured(name, st, True, self.timings, early_s):
            out = s.run(self.ctx, self.state, **inputs, **early)
            if handle is not None:
                self._started[name] = (None, began)  # the handle and what it holds can go
            msgs = [*pending, *getattr(out, "warnings", [])]
            if s.persist:
                self.cache.store(st, name, self.key(name), out, {"warnings": msgs})
                msgs = []
        if s.persist and self.on_stored is not None:
            self.on_stored()
        return out, msgs

    def _finished(self, name: str) -> None:
        if self.on_finished is not None and name not in self._reported:
            self._reported.add(name)
            self.on_finished(name)

    def run_all(self) -> None:
        """Make every persisted stage's stored output current; free outputs no later stage needs."""
        for i, s in enumerate(self.order):
            if not s.persist:
                continue
            if not self._done(s.name):
                self.get(s.name)
            elif s.name not in self._timed:  # reused as it is: not even loaded
                self.timings.append(StageTiming(s.name, self.state.name, False, 0.0, 0.0, peak_rss_mib()))
                self._timed.add(s.name)
                self._finished(s.name)
            self.warnings += self.cache.warnings(self.state.name, s.name)
            self._release(i)

    def _release(self, i: int) -> None:
        """Free, after stage ``i``, what the stages after it do not read (issue 22: memory).

        Outputs no later stage needs; stored outputs the next stage does not need (a later stage
        loads them again from the cache); array fields of the others that no later stage
        :attr:`~StateStage.reads`.
        """
        later = self.order[i + 1:]
        following = set(later[0].needs) if later else set()
        for held in list(self._outputs):
            users = [t for t in later if held in t.needs]
            if not users or (held not in following and self._done(held)):
                del self._outputs[held]
            elif all(held in t.reads for t in users):
                self._outputs[held] = _without(self._outputs[held], {f for t in users for f in t.reads[held]})


def _without(output: Any, keep: set[str]) -> Any:
    """``output`` (a dataclass) with its array fields outside ``keep`` emptied."""

    def is_array(v: Any) -> bool:
        return isinstance(v, np.ndarray) or (isinstance(v, dict) and bool(v)
                                             and all(isinstance(a, np.ndarray) for a in v.values()))

    drop = {f.name: {} if isinstance(getattr(output, f.name), dict) else np.empty((0,))
            for f in dataclasses.fields(output) if f.name not in keep and is_array(getattr(output, f.name))}
    return dataclasses.replace(output, **drop) if drop else output

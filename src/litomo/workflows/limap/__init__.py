"""The operando Li-mapping workflow (``litomo run``): one module per stage.

``run_experiment(manifest, out_dir, options)`` takes every charge state of an experiment
through the stages of :data:`~litomo.workflows.limap.run.STATE_STAGES` (read/bin, register,
warp+bin, map, particles, li, statistics), each with its own resume key, then tracks
particles across states and writes tables, volumes, ``report.html`` and, last, ``run.json``
into a :class:`litomo.io.rundir.RunDir`.

Modules: :mod:`~.options` (RunOptions, RunContext, RunResult), :mod:`~.stage` (the stage
protocol and runner), :mod:`~.cache` (resume keys, stored stage outputs), one module per stage
(:mod:`~.read`, :mod:`~.registration`, :mod:`~.warp`, :mod:`~.mapping`, :mod:`~.particles`, :mod:`~.li`,
:mod:`~.stats`, :mod:`~.tracking`, :mod:`~.outputs`), :mod:`~.calibration` and :mod:`~.run`.
"""

from litomo.workflows.limap.options import RunContext, RunOptions, RunResult, StageTiming
from litomo.workflows.limap.run import STATE_STAGES, run_experiment

__all__ = ["STATE_STAGES", "RunContext", "RunOptions", "RunResult", "StageTiming", "run_experiment"]

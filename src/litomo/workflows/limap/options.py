"""What every stage of a Li-mapping run sees: the options, the run context and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from litomo.progress import ProgressCallback

if TYPE_CHECKING:
    from litomo.manifest import Manifest
    from litomo.workflows.limap.calibration import Calibration


@dataclass
class RunOptions:
    """Options of one pipeline run that are not part of the manifest."""

    force: bool = False
    resume: bool = False
    tiff: bool = False
    register: bool | None = None  # None: the manifest's [processing] register
    scheduler: str | None = None  # None: local dask.distributed cluster; "synchronous"; or an address
    memory_limit: str | None = None
    n_workers: int | None = None
    chunk_mb: float = 128.0  # slab size of reads and binning (measured: fewer dask tasks, +10 %)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """The validated experiment and everything derived from it before the first stage runs."""

    manifest: Manifest
    options: RunOptions
    calibration: Calibration
    do_register: bool
    #: raw (full-resolution) shape and voxel size (um) of each state's volumes
    raw_shapes: dict[str, tuple[int, ...]]
    raw_voxel_size_um: dict[str, tuple[float, float, float]]
    #: SHA-256 of every input file (volumes and reference spectra), by path
    checksums: dict[str, str]
    progress: ProgressCallback | None = None

    def map_voxel_size_um(self, state: str) -> tuple[float, float, float]:
        """Voxel size of the map grid (um): the volumes' voxel size times ``processing.bin``."""
        from litomo.preprocess import bin_factors

        factor = bin_factors(self.manifest.processing.bin)
        return tuple(float(s * f) for s, f in zip(self.raw_voxel_size_um[state], factor, strict=True))

    def report(self, done: int, total: int, desc: str) -> None:
        if self.progress is not None:
            self.progress(done, total, desc)


@dataclass(frozen=True)
class StageTiming:
    """Cost of one stage of one state (``state`` empty for the stages over all states)."""

    stage: str
    state: str
    #: False: reused from an earlier run (``--resume``); the times are then those of loading it
    ran: bool
    wall_s: float
    cpu_s: float
    #: the process's peak resident memory so far (high-water mark, MiB)
    peak_rss_mib: float
    #: wall seconds the stage's work had been running before the stage itself began (started
    #: early in another process beside the stages before it: :meth:`StateStage.start`); its
    #: ``wall_s`` is then what was left, mostly the wait for that work
    started_early_s: float = 0.0


@dataclass
class RunResult:
    """What :func:`~litomo.workflows.limap.run_experiment` returns."""

    out_dir: Path
    tables: dict[str, pd.DataFrame]
    warnings: list[str]
    timings_s: dict[str, float]
    stages: list[StageTiming] = field(default_factory=list)

    def ran(self, stage: str) -> list[str]:
        """The states in which ``stage`` was computed (not reused) in this run."""
        return [t.state for t in self.stages if t.stage == stage and t.ran]

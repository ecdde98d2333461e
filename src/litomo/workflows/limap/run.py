"""``run_experiment``: every charge state through the stage sequence, then tracking and outputs.

The per-state stages, in order (each a :class:`~litomo.workflows.limap.stage.StateStage` with
its own resume key):

==============  =====================================================================
``reconstruct`` only with a ``[reconstruction]`` section: the state's projection series
                reconstructed with one geometry (the volumes then feed ``read``)
``read``        read each energy volume lazily (dask), bin it for the map and for the
                registration (not stored: redone only when a stage after it reruns)
``separate``    particles separated on the registration grid (needs no transform: it runs
                while the elastix worker starts, :func:`run_state`)
``register``    pre-edge and edge onto post-edge on the registration grid (itk-elastix)
``warp``        the transforms applied at full resolution, slab by slab, then binned
``map``         edge ratio -> x_Li (reference calibration), AM mask and AM fraction
``particles``   the separated particles carried to the map grid, inside its AM mask
``li``          the final x_Li map (surface layer per particle, clipping)
``statistics``  the per-state tables
==============  =====================================================================

then, over all states, ``tracking`` (every state registered onto the first, particles
matched), ``outputs`` (tables, OME-Zarr volumes), ``report`` and the completion record
``run.json``, written last. Wall time, CPU time and peak RSS of every stage go into
``run.json`` (``stages``) and the report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from litomo import __version__
from litomo.errors import DataError, LitomoError
from litomo.io.rundir import RunDir, to_jsonable
from litomo.manifest import Manifest
from litomo.progress import ProgressCallback
from litomo.workflows.limap.cache import StageCache, file_sha256
from litomo.workflows.limap.context import (
    CONTEXT_TABLES,
    ContextStage,
    LiContext,
    projection_record,
    write_projection_map,
)
from litomo.workflows.limap.li import LiMap, LiStage
from litomo.workflows.limap.mapping import MapStage
from litomo.workflows.limap.options import RunContext, RunOptions, RunResult, StageTiming
from litomo.workflows.limap.particles import Particles, ParticlesStage, SeparateStage
from litomo.workflows.limap.read import BinStage, check_input_volumes
from litomo.workflows.limap.reconstruct import ReconstructStage, check_input_projections
from litomo.workflows.limap.registration import RegisterStage
from litomo.workflows.limap.spectral import (
    SpectralLiStage,
    SpectralMapStage,
    SpectralRegisterStage,
    SpectralStatisticsStage,
    SpectralWarpStage,
    check_spectral_manifest,
    fixed_role,
)
from litomo.workflows.limap.stage import (
    StateRunner,
    StateStage,
    measured,
    peak_rss_children_mib,
    peak_rss_mib,
)
from litomo.workflows.limap.stats import StateTables, StatisticsStage
from litomo.workflows.limap.tracking import StateMaps, track_states
from litomo.workflows.limap.warp import Warped, WarpStage

log = logging.getLogger(__name__)

#: the per-state stages in the order they run: the one place a new stage is added
#: (a Spectral* stage is active instead of the three-energy stage of its name when the states
#: list N energies: litomo.workflows.limap.spectral)
STATE_STAGES: tuple[StateStage, ...] = (
    ReconstructStage(), BinStage(), SeparateStage(), RegisterStage(), SpectralRegisterStage(), WarpStage(),
    SpectralWarpStage(),
    MapStage(), SpectralMapStage(), ParticlesStage(), LiStage(), SpectralLiStage(), StatisticsStage(),
    SpectralStatisticsStage(), ContextStage())
STATE_TABLES = tuple(f.name for f in dataclasses.fields(StateTables))


def prepare_context(manifest: Manifest, opts: RunOptions, progress: ProgressCallback | None,
                    warn: list[str]) -> RunContext:
    """Validate the experiment before anything is written; checksums and calibration."""
    from litomo.workflows.limap.calibration import calibration_for, check_reference_coverage

    if opts.force and opts.resume:
        raise LitomoError("--force and --resume exclude each other")
    if not manifest.three_energy:  # N-energy states (issue 16): the spectral stages map them
        cal = check_spectral_manifest(manifest)
        heads = check_input_volumes(manifest)
        shapes = {n: tuple(v.shape) for n, v in heads.items()}
        voxels = {n: tuple(v.voxel_size_um) for n, v in heads.items()}
        return _context(manifest, opts, cal, shapes, voxels, progress)
    if manifest.reconstruction is not None:  # the states name projection series
        shapes, voxels = check_input_projections(manifest, warn)
    else:
        heads = check_input_volumes(manifest)
        shapes = {n: tuple(v.shape) for n, v in heads.items()}
        voxels = {n: tuple(v.voxel_size_um) for n, v in heads.items()}
    check_reference_coverage(manifest)
    cal = calibration_for(manifest)
    _warn_calibration(manifest, cal, warn)
    return _context(manifest, opts, cal, shapes, voxels, progress)


def check_sample_labels(manifest: Manifest, shapes: dict[str, Any]) -> None:
    """``[sample] labels`` (CBD phase for the context stage): readable, integer, every state's shape.

    Checked from the file's header before the output folder is touched, so a wrong file is a
    one-line error, not a failure after the registration.
    """
    from litomo.io import read_volume

    s = manifest.sample
    if s.labels is None:
        return
    lab = read_volume(s.labels, voxel_size_um=s.voxel_size_um, lazy=True).array
    bad = sorted(n for n, shape in shapes.items() if tuple(shape) != tuple(lab.shape))
    if bad or not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"sample.labels ({s.labels}) must be an integer volume of the states' volume shape "
                        f"{tuple(shapes[bad[0]]) if bad else tuple(lab.shape)}, got {lab.dtype} {tuple(lab.shape)}")


def _context(manifest: Manifest, opts: RunOptions, cal: Any, shapes: dict[str, Any], voxels: dict[str, Any],
             progress: ProgressCallback | None) -> RunContext:
    x = manifest.xanes
    check_sample_labels(manifest, shapes)
    files = [*(p for st in manifest.states for p in st.volumes), x.reference_pristine, x.reference_charged]
    if manifest.sample.labels is not None:  # in the checksums: a changed label file is a changed input
        files.append(manifest.sample.labels)
    do_register = manifest.processing.register if opts.register is None else opts.register
    return RunContext(manifest, opts, cal, bool(do_register), shapes, voxels, _checksums(files), progress)


def _checksums(files: list[Any]) -> dict[str, str]:
    """SHA-256 of each input file, the files hashed concurrently (hashlib releases the GIL:
    3 x 1024^3 uint16 inputs, 6 GiB, took ~8 s of the run's start-up one after the other)."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(dict.fromkeys(str(p) for p in files))
    with ThreadPoolExecutor(max(1, min(len(names), os.cpu_count() or 1))) as pool:
        return dict(zip(names, pool.map(file_sha256, names), strict=True))


def _warn_calibration(manifest: Manifest, cal: Any, warn: list[str]) -> None:
    """Warnings about the three energies' calibration (insensitive edge energy, no background law)."""
    adv = cal.advice
    if adv.get("ratio", 1.0) and adv.get("ratio", 1.0) > 2.0:
        msg = (f"the edge energy {manifest.xanes.edge_ev:g} eV is insensitive to Li: "
               f"dR/dx_Li = {cal.sensitivity:.3g}; {adv['best_edge_ev']:g} eV would be "
               f"{adv['ratio']:.1f}x more sensitive (see `litomo advise-energies`)")
        log.warning(msg)
        warn.append(msg)
    if cal.background.law == "none" and manifest.processing.background_exponent is None:
        msg = ("no background law: the edge ratio assumes the matrix absorbs equally at the three "
               "energies (biases x_Li by ~0.03-0.04 for NMC); give [sample] composition, e.g. "
               "\"LiNi0.8Mn0.1Co0.1O2\", for the tabulated law")
        log.warning(msg)
        warn.append(msg)


def run_parameters(ctx: RunContext) -> dict[str, Any]:
    """The processing parameters recorded in run.json."""
    p, x, cal = ctx.manifest.processing, ctx.manifest.xanes, ctx.calibration
    # an N-energy run records its (foil-corrected) energy list, not the three of the calibration
    energies = cal.energies_ev if ctx.manifest.three_energy else list(x.calibrated_ev(ctx.manifest.states[0].energies_ev))
    return {"bin": p.bin, "register": ctx.do_register, "bspline": p.bspline,
            "register_bin": p.register_bin, "bspline_spacing_um": p.bspline_spacing_um,
            "denoise": p.denoise, "map_binning": p.map_binning, "li_shrinkage": p.li_shrinkage,
            "surface_erosion_vox": p.surface_erosion_vox,
            "jump_threshold": p.jump_threshold, "sign_convention": p.sign_convention,
            "li_poor_max": p.li_poor_max, "li_rich_min": p.li_rich_min,
            "clip_li": p.clip_li, "background_exponent": p.background_exponent,
            "background_law": list(cal.background.factors), "composition": ctx.manifest.sample.composition,
            "li_pristine": x.li_pristine, "li_charged": x.li_charged, "energies_ev": energies,
            "r_pristine": cal.r_pristine, "r_charged": cal.r_charged,
            "voxel_size_um": ctx.manifest.sample.voxel_size_um,
            "separator_side": ctx.manifest.sample.separator_side}


def _drop_old_states(rd: RunDir, names: list[str]) -> None:
    """A resumed run with fewer states keeps no stage cache of the states it no longer has."""
    import shutil

    for d in rd.work.iterdir():
        if d.is_dir() and d.name not in names and not d.name.startswith("."):
            log.info("removing the cached stages of state %s (no longer in the manifest)", d.name)
            shutil.rmtree(d)


def run_states(ctx: RunContext, cache: StageCache, rd: RunDir, timings: list[StageTiming],
               warn: list[str]) -> dict[str, pd.DataFrame]:
    """Bring every state's stages up to date; returns the per-state tables, concatenated."""
    from litomo.workflows.execution import dask_client

    opts, states = ctx.options, ctx.manifest.states
    stages = [s for s in STATE_STAGES if s.active(ctx)]
    with dask_client(opts.scheduler, memory_limit=opts.memory_limit, n_workers=opts.n_workers):
        for k, st in enumerate(states, start=1):
            run_state(ctx, stages, st, cache, rd, timings, warn)
            ctx.report(k, len(states), "states")
    # read back from the cache, fresh or reused alike: the tables of a resumed run are
    # identical to those of an uninterrupted one
    per_state = [cache.load(st.name, "statistics", StateTables) for st in states]
    per_ctx = [cache.load(st.name, "context", LiContext) for st in states]
    return {**{n: pd.concat([getattr(t, n) for t in per_state], ignore_index=True) for n in STATE_TABLES},
            **{n: pd.concat([getattr(t, n) for t in per_ctx], ignore_index=True) for n in CONTEXT_TABLES}}


def run_state(ctx: RunContext, stages: list[StateStage], state: Any, cache: StageCache, rd: RunDir,
              timings: list[StageTiming], warn: list[str]) -> None:
    """One state's stages; the elastix worker (if used) lives from before ``read`` to the end of ``register``.

    Started first, the worker's ~17 s itk import (one core) overlaps the reading and the
    particle separation (stage ``separate``, which needs no transform and runs before
    ``register``, mostly on the other core); it ends once the registration is done, so its
    ~1.7 GiB go before the warp. The separation is not run *during* the registration: that
    added its ~0.7 GiB to elastix's peak (512^3: process tree 2.46 -> 3.15 GiB, docs/scale.md).
    """
    import contextlib

    from litomo import register_worker

    with contextlib.ExitStack() as worker:
        runner = StateRunner(stages, ctx, state, cache, timings, on_stored=rd.keep, warnings=warn,
                             on_finished=lambda name: worker.close() if name == "register" else None)
        if ctx.do_register and register_worker.enabled() and runner.needs_run("register"):
            worker.enter_context(register_worker.session())
        runner.run_all()


def _state_maps(cache: StageCache, name: str, fixed: str = "post_edge") -> StateMaps:
    return StateMaps(cache.field(name, "warp", Warped, "plain")[fixed],
                     cache.field(name, "particles", Particles, "labels"),
                     cache.field(name, "li", LiMap, "li"),
                     cache.field(name, "statistics", StateTables, "particles"))


def write_outputs(ctx: RunContext, cache: StageCache, rd: RunDir, tables: dict[str, pd.DataFrame],
                  timings: list[StageTiming]) -> dict[str, pd.DataFrame]:
    """Tracking, then the run's tables and volumes; returns every table of the run."""
    import dask

    from litomo.workflows.limap.outputs import write_tables, write_volumes
    from litomo.workflows.limap.spectral import write_spectral_volumes

    names = [s.name for s in ctx.manifest.states]
    vs = ctx.map_voxel_size_um(names[0])
    with measured("tracking", "", True, timings):
        roles = {s.name: fixed_role(s) for s in ctx.manifest.states}
        tr = track_states(names, lambda n: _state_maps(cache, n, roles[n]), vs, ctx.do_register)
    tables = {**{n: t for n, t in tables.items() if n != "registration"},
              "matching": tr.matching, "evolution": tr.evolution,
              "registration": pd.concat([tables["registration"], tr.registration], ignore_index=True)}
    # outputs are small binned volumes written after the cluster is gone: local threads
    with measured("outputs", "", True, timings), dask.config.set(scheduler="threads"):
        write_tables(rd, tables)
        for n in names:
            m = _state_maps(cache, n, roles[n])
            write_volumes(rd, n, m.li, m.labels, tr.differences.get(n), vs, tiff=ctx.options.tiff)
            write_projection_map(rd, cache, n, vs)
            if not ctx.manifest.three_energy:
                write_spectral_volumes(rd, n, cache, vs, tiff=ctx.options.tiff)
    return tables


def background_record(ctx: RunContext, states: pd.DataFrame) -> dict[str, Any]:
    """The background law of the map and how much it moved each state's mean x_Li (run.json)."""
    law = ctx.calibration.background
    col = states["background_li_shift"] if "background_li_shift" in states else pd.Series(0.0, index=states.index)
    return {"law": law.law, "composition": law.composition, "factors": list(law.factors),
            "effective_exponent": law.effective_exponent,
            "mean_li_shift": dict(zip(states["state"].astype(str), col.astype(float), strict=True))}


def regime_record(states: pd.DataFrame, *, limit: float = 0.02,
                  near_limit: float = 0.12) -> tuple[dict[str, Any], str | None]:
    """Per state, whether the map leaves class fractions reliable to ~2 pp, and a warning.

    The class fractions are deconvolved from the map's noise (litomo.xanes.classes), which
    removes the net flow across the thresholds (``class_shift_pct``,
    litomo.xanes.noise.class_fraction_shift) that counting the bins would carry; what is left is
    their uncertainty: "noise-limited" when twice the largest class-fraction standard deviation
    (``frac_li_<class>_sd``: the estimator's rms error by a parametric bootstrap, session 13)
    exceeds ``limit``.
    Without those columns (older tables) the net flow itself decides. Otherwise
    "threshold-limited" when at least ``near_limit`` of the deconvolved distribution lies within
    0.02 of a threshold (``frac_li_near_threshold``): systematic map errors (not noise, so not in
    the sd) of 0.01-0.02 then move a class fraction by 2-3 points (issue 16's forward models:
    every suite state that missed 2 pp had >= 12.6 % there, 4 of 11 that did not are flagged
    too; on new seeds 2 of 3 misses were flagged, and 3 of 5 passes: a screen, not a guarantee).
    Session 13, three draws of the suite: at 98^3 4 of the 5 misses flagged (29 of 54 states); at
    196^3 both misses flagged (threshold-limited), 52 of 54 states within 2 pp.
    ``class_uncertainty_pct`` is the gross share of bins near a threshold
    (litomo.xanes.noise.class_uncertainty), whose flows partly cancel.
    """
    out: dict[str, Any] = {}
    for row in states.itertuples():
        u = float(getattr(row, "li_class_uncertainty", float("nan")))
        shift = float(getattr(row, "li_class_shift", float("nan")))
        sd = max(float(getattr(row, f"frac_li_{c}_sd", float("nan"))) for c in ("poor", "moderate", "rich"))
        near = float(getattr(row, "frac_li_near_threshold", float("nan")))
        measure = 2.0 * sd if sd == sd else shift
        regime = ("noise-limited" if measure > limit else "threshold-limited" if near >= near_limit
                  else "resolved" if measure == measure else "not estimated")
        out[str(row.state)] = {"regime": regime, "class_shift_pct": 100 * shift,
                               "class_fraction_sd_pct": 100 * sd, "class_error_pct": 100 * measure,
                               "class_uncertainty_pct": 100 * u, "near_threshold_pct": 100 * near,
                               "noise_sigma_full_bin": float(getattr(row, "li_noise_sigma_full_bin", float("nan")))}
    bad = [f"{k} (+-{v['class_error_pct']:.1f} points)" for k, v in out.items() if v["regime"] == "noise-limited"]
    near_bad = [f"{k} ({v['near_threshold_pct']:.0f} %)" for k, v in out.items() if v["regime"] == "threshold-limited"]
    msgs = []
    if bad:
        msgs.append(f"noise-limited Li map: the Li class fractions are uncertain by {', '.join(bad)}; "
                    "more counts per voxel or more particles in the volume reduce it")
    if near_bad:
        msgs.append("threshold-limited Li map: much of the active material lies within 0.02 of a Li class "
                    f"threshold in {', '.join(near_bad)}; systematic map errors of that size move the class "
                    "fractions by 2-3 points there")
    return out, ("; ".join(msgs) or None)


def run_record(ctx: RunContext, warn: list[str], timings: list[StageTiming], total_s: float,
               states: pd.DataFrame | None = None, projection: pd.DataFrame | None = None) -> dict[str, Any]:
    """The completion record (run.json); ``states``: the run's states table (background, regime);
    ``projection``: its ``li_projection`` table (2-D versus 3-D, Li near voids)."""
    from litomo.workflows.limap.outputs import package_versions
    from litomo.workflows.limap.spectral import spectral_record

    walls: dict[str, float] = {}
    for t in timings:
        walls[t.stage] = walls.get(t.stage, 0.0) + t.wall_s
    return to_jsonable({
        "litomo_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": ctx.options.command,
        "manifest": str(Path(ctx.manifest.path).resolve()),
        "parameters": run_parameters(ctx),
        "energy_advice": ctx.calibration.advice,
        **({} if states is None else {"background": background_record(ctx, states),
                                      "li_map_regime": regime_record(states)[0]}),
        **({} if states is None or ctx.manifest.three_energy else {"nenergy": spectral_record(states)}),
        **({} if projection is None else {"li_projection": projection_record(projection)}),
        "inputs": ctx.checksums,
        "versions": package_versions(),
        "timings_s": {**walls, "total": total_s},
        "stages": [dataclasses.asdict(t) for t in timings],
        # /usr/bin/time reports the larger of the two; the elastix worker is the child (issue 22)
        "peak_rss_mib": {"run_process": peak_rss_mib(), "largest_child_process": peak_rss_children_mib()},
        "warnings": warn,
        "states": [s.name for s in ctx.manifest.states],
        "voxel_size_um": list(ctx.map_voxel_size_um(ctx.manifest.states[0].name)),
    })


def run_experiment(manifest: Manifest | str | os.PathLike, out_dir: str | os.PathLike,
                   options: RunOptions | None = None,
                   progress: ProgressCallback | None = None) -> RunResult:
    """Map Li in every charge state of an experiment and write tables, volumes and a report to ``out_dir``.

    Parameters
    ----------
    manifest : litomo.manifest.Manifest or path
        The experiment (states, energies, references, processing parameters).
    out_dir : path
        Run directory; refused if not empty unless ``options.force`` or ``options.resume``
        (both touch only files litomo wrote there: :class:`litomo.io.rundir.RunDir`).
    options : RunOptions
        Resume/force, scheduler, TIFF export, ...
    progress : callable, optional
        ``progress(done, total, description)`` for long steps.

    Returns
    -------
    RunResult
        The tables written under ``out_dir/tables``, the warnings raised and the stage timings.

    Examples
    --------
    >>> run_experiment("experiment.toml", "run-out")  # doctest: +SKIP
    """
    from litomo.manifest import load_manifest
    from litomo.workflows.limap.outputs import write_report

    t_start = time.perf_counter()
    opts = options or RunOptions()
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    warn: list[str] = []
    timings: list[StageTiming] = []
    ctx = prepare_context(manifest, opts, progress, warn)
    mode = "force" if opts.force else "resume" if opts.resume else "new"
    inputs = [manifest.path, *ctx.checksums]
    # only now touch the output folder: bad input leaves nothing behind
    with RunDir.open(out_dir, kind="run", mode=mode, inputs=inputs) as rd:
        _drop_old_states(rd, [s.name for s in manifest.states])
        cache = StageCache(rd.work, resume=opts.resume)
        tables = run_states(ctx, cache, rd, timings, warn)
        tables = write_outputs(ctx, cache, rd, tables, timings)
        regime_warning = regime_record(tables["states"])[1]
        if regime_warning:
            log.warning(regime_warning)
            warn.append(regime_warning)
        warn = list(dict.fromkeys(warn))
        with measured("report", "", True, timings):
            write_report(rd, run_record(ctx, warn, timings, time.perf_counter() - t_start, tables["states"],
                                        tables["li_projection"]))
        total = time.perf_counter() - t_start
        rd.complete(run_record(ctx, warn, timings, total, tables["states"], tables["li_projection"]))
    return RunResult(rd.root, tables, warn,
                     {**{f"{t.state}/{t.stage}".lstrip("/"): t.wall_s for t in timings}, "total": total},
                     timings)

"""``litomo run`` and ``litomo demo``: the operando Li-mapping pipeline."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import parse_memory_limit, progress_bar, setup_logging, warn_once
from litomo.errors import LitomoError

_OUT = typer.Option(..., "--out", "-o", help="Run directory (tables/, volumes/, figures/, report.html, run.json).")
_FORCE = typer.Option(False, "--force", help="Start over in an --out an earlier litomo run wrote: delete the files it recorded (refused if the folder holds other files).")
_RESUME = typer.Option(False, "--resume", help="Keep the stages (work/) an earlier or interrupted run finished whose inputs and parameters are unchanged; redo the rest and rewrite every other output.")
_TIFF = typer.Option(False, "--tiff", help="Also write volumes/<state>/li.tif (float32, NaN outside AM, binned grid).")
_SCHED = typer.Option(None, "--scheduler", help="Address of an existing dask.distributed scheduler (tcp://host:8786), or 'synchronous'. Default: a local cluster sized to this machine.")
_MEM = typer.Option(None, "--memory-limit", help="Memory limit per dask worker, e.g. '4GB'.")
_WORKERS = typer.Option(None, "--workers", help="Number of local dask worker processes (default: one multi-threaded worker).")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
_VERBOSE = typer.Option(False, "--verbose", "-v", help="Log each step.")


def _command_line(name: str, args: list[object], options: dict[str, object]) -> str:
    """The command as typed, rebuilt from the parsed parameters (for run.json)."""
    words = ["litomo", name, *(str(a) for a in args)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value not in (None, False):
            words += [flag, str(value)]
    return shlex.join(words)


def _summary_line(result) -> str:
    df = result.tables["states"]
    parts = [f"{r.state}: mean x_Li {r.mean_li:.3f}, Li-rich {r.frac_li_rich:.0%}" for r in df.itertuples()]
    return "; ".join(parts)


@app.command()
def run(
    manifest: Path = typer.Argument(..., help="Experiment manifest (TOML)."),
    out: Path = _OUT,
    force: bool = _FORCE,
    resume: bool = _RESUME,
    tiff: bool = _TIFF,
    no_register: bool = typer.Option(False, "--no-register", help="Skip registration (for comparison)."),
    scheduler: str = _SCHED,
    memory_limit: str = _MEM,
    workers: int = _WORKERS,
    quiet: bool = _QUIET,
    verbose: bool = _VERBOSE,
) -> None:
    """Map Li content in every charge state of an experiment (register, bin, map, calibrate,
    segment particles, statistics, tracking across states) and write a report."""
    from litomo.workflows.limap import RunOptions, run_experiment

    setup_logging(verbose)
    if force and resume:
        raise LitomoError("--force and --resume exclude each other")
    memory_limit = parse_memory_limit(memory_limit)
    cmd = _command_line("run", [manifest], {"out": out, "force": force, "resume": resume, "tiff": tiff,
                                            "no_register": no_register, "scheduler": scheduler,
                                            "memory_limit": memory_limit, "workers": workers})
    opts = RunOptions(force=force, resume=resume, tiff=tiff, register=False if no_register else None,
                      scheduler=scheduler, memory_limit=memory_limit, n_workers=workers, command=cmd)
    result = run_experiment(manifest, out, opts, progress=progress_bar(not quiet))
    typer.echo(_summary_line(result))
    for w in result.warnings:
        warn_once(w)
    typer.echo(f"report: {Path(out) / 'report.html'}")


@app.command()
def demo(
    out: Path = _OUT,
    size: int = typer.Option(192, "--size", help="Edge length of the raw phantom cube in voxels."),
    states: int = typer.Option(4, "--states", help="Number of charge states (like the seed's I-IV)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the phantom."),
    force: bool = _FORCE,
    resume: bool = _RESUME,
    tiff: bool = _TIFF,
    no_register: bool = typer.Option(False, "--no-register", help="Skip registration (faster; shows what registration buys)."),
    scheduler: str = _SCHED,
    quiet: bool = _QUIET,
    verbose: bool = _VERBOSE,
) -> None:
    """Generate the built-in synthetic operando electrode (OUT/data) and run the whole
    Li-mapping pipeline on it (OUT/results), then score the result against the known truth."""
    from litomo.io.rundir import RunDir
    from litomo.phantom.scoring import score_run
    from litomo.phantom.writer import dataset_entries, write_operando_phantom
    from litomo.workflows.limap import RunOptions, run_experiment

    setup_logging(verbose)
    if force and resume:
        raise LitomoError("--force and --resume exclude each other")
    if Path(out).exists() and not Path(out).is_dir():
        raise LitomoError(f"--out {out} is a file; give a folder")
    data_dir, res_dir = Path(out) / "data", Path(out) / "results"
    manifest_path = data_dir / "experiment.toml"
    if not (resume and manifest_path.exists()):
        typer.echo(f"generating the synthetic operando electrode ({size}^3, {states} states) in {data_dir}")
        # the data folder follows the output-folder rules too: --force replaces only what litomo wrote
        with RunDir.open(data_dir, kind="phantom", mode="force" if force else "new", flag="--out") as rd:
            for entry in dataset_entries(states):
                rd.output(entry)
            write_operando_phantom(rd.root, size=size, n_states=states, seed=seed, overwrite=True,
                                  progress=progress_bar(not quiet))
            rd.complete({"kind": "phantom", "size": size, "states": states, "seed": seed})
    opts = RunOptions(force=force, resume=resume, tiff=tiff, scheduler=scheduler,
                      register=False if no_register else None,
                      command=_command_line("demo", [], {"out": out, "size": size, "states": states,
                                                         "seed": seed, "force": force, "resume": resume,
                                                         "tiff": tiff, "no_register": no_register}))
    result = run_experiment(manifest_path, res_dir, opts, progress=progress_bar(not quiet))
    typer.echo(_summary_line(result))
    score = score_run(res_dir, data_dir)
    typer.echo(
        f"accuracy vs truth: x_Li RMSE {score['rmse_li']:.3f}, worst class-fraction error "
        f"{score['max_class_fraction_error_pp']:.1f} pp, total Li error {score['max_total_li_error_pct']:.1f} %"
    )
    typer.echo(f"report: {res_dir / 'report.html'}")

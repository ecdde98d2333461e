"""``litomo tortuosity``: diffusion (and electrode) tortuosity factor of one phase (SPEC 4)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from litomo.cli._app import app
from litomo.cli._common import check_output_file, print_json, progress_bar, setup_logging
from litomo.errors import LitomoError
from litomo.workflows.execution import COMMAND_SCHEDULER_HELP, command_scheduler


def _read_labels(path: Path, voxel_size_um: float | None, progress=None):
    """Label array and voxel size (um) from a volume file, read lazily z-slab by z-slab on the
    dask scheduler of the moment (a ``--scheduler`` cluster reads there)."""
    from litomo.io import read_volume
    from litomo.io.guards import require_voxel_size
    from litomo.metrics.chunked import read_slabs

    if not path.exists():
        raise LitomoError(f"{path}: no such file")
    vol = require_voxel_size(read_volume(path, voxel_size_um=voxel_size_um, lazy=True))
    return read_slabs(vol.array, progress, "reading labels"), vol.voxel_size_um


def _write_flux(path: Path, flux, voxel_size_um) -> None:
    from litomo.io.tiff import write_tiff

    write_tiff(path, flux, voxel_size_um=voxel_size_um)


def _cbd_diffusivity(cbd_diffusivity: float | None, cbd_porosity: float | None, phase: str) -> float | None:
    """``D_CBD / D_0`` from ``--cbd-diffusivity`` or ``--cbd-porosity`` (None: binary pore phase)."""
    from litomo.transport.multiphase import cbd_relative_diffusivity

    if cbd_diffusivity is None and cbd_porosity is None:
        return None
    if cbd_diffusivity is not None and cbd_porosity is not None:
        raise LitomoError("give --cbd-diffusivity or --cbd-porosity, not both")
    if phase != "pore":
        raise LitomoError("--cbd-diffusivity/--cbd-porosity need --phase pore (electrolyte in pores and CBD)")
    if cbd_porosity is not None:
        return cbd_relative_diffusivity(cbd_porosity)
    if not (math.isfinite(cbd_diffusivity) and 0.0 <= cbd_diffusivity <= 1.0):
        raise LitomoError(f"--cbd-diffusivity must lie in [0, 1] (D_CBD/D_0), got {cbd_diffusivity:g}")
    return float(cbd_diffusivity)


def _check_backend(backend: str, *, native_only: bool, scheduler: str | None) -> str:
    """``--backend`` normalised, refused with the options it does not take."""
    backend = backend.strip().lower()
    if backend not in ("native", "petsc"):
        raise LitomoError(f"--backend must be native or petsc, got {backend!r}")
    if backend == "petsc" and scheduler is not None:
        raise LitomoError("--scheduler does not apply to --backend petsc: each MPI rank reads its own slab")
    if backend == "petsc" and native_only:
        raise LitomoError("--backend petsc does not support --periodic, --electrode, --flux-map, --classes, "
                          "--cbd-diffusivity or --cbd-porosity")
    return backend


def _run_multiphase(arr, mapping, d_cbd: float, axis: str, voxel, rtol: float, want_flux: bool, prog,
                    periodic: bool):
    from litomo.transport.multiphase import diffusivity_map, multiphase_tortuosity

    if periodic:
        raise LitomoError("--periodic is not supported with --cbd-diffusivity/--cbd-porosity")
    field = diffusivity_map(arr, {"pore": 1.0, "cbd": d_cbd}, mapping)
    return multiphase_tortuosity(field, axis, voxel_size_um=voxel, rtol=rtol, return_flux=want_flux,
                                 progress=prog)


def _solve_native(arr, phase: str, mapping, axes: list[str], voxel, *, d_cbd: float | None, periodic: bool,
                  rtol: float, want_flux: bool, progress) -> dict[str, Any]:
    """``{axis: result}`` of the binary (or, with ``d_cbd``, multiphase) solver; flux of the first axis."""
    from litomo.transport.diffusion import phase_mask
    from litomo.transport.diffusion import tortuosity as run_tortuosity

    mask = phase_mask(arr, phase, mapping) if d_cbd is None else None
    results = {}
    for k, a in enumerate(axes):
        if d_cbd is not None:
            results[a] = _run_multiphase(arr, mapping, d_cbd, a, voxel, rtol, want_flux and k == 0, progress,
                                         periodic)
        else:
            results[a] = run_tortuosity(mask, a, voxel_size_um=voxel, periodic=periodic, rtol=rtol,
                                        return_flux=want_flux and k == 0, progress=progress)
    return results


def _json_summary(labels: Path, phase: str, voxel: Any, results: dict[str, Any]) -> dict[str, Any]:
    first = next(iter(results.values()))
    return {
        "file": str(labels),
        "phase": phase,
        "voxel_size_um": voxel,
        "eps": first.eps,
        **({"d_mean": first.d_mean, "cbd_diffusivity": "D_CBD/D_0 from --cbd-*; tau = d_mean/deff, N_M = 1/deff"}
           if hasattr(first, "d_mean") else {}),
        "tau": {a: r.tau for a, r in results.items()},
        "deff": {a: r.deff for a, r in results.items()},
        "mcmullin": {a: r.mcmullin for a, r in results.items()},
        "stagnant_flux_fraction": {a: r.stagnant_flux_fraction for a, r in results.items()},
        "definitions": {"stagnant_flux_fraction": "share of the phase voxels whose local flux is below 2 % of "
                        "the maximum (non-percolating voxels included); not micro's connectivity-based "
                        "dead_end_cluster_fraction"},
        "percolating_fraction": {a: r.percolating_fraction for a, r in results.items()},
        "flux_balance": {a: r.flux_balance for a, r in results.items()},
        "iterations": {a: r.iterations for a, r in results.items()},
        "converged": all(r.converged for r in results.values()),
        "reason": {a: r.reason for a, r in results.items() if r.reason},
        "elapsed_s": sum(r.elapsed_s for r in results.values()),
    }


def _echo(labels: Path, phase: str, results: dict[str, Any], out: dict[str, Any], flux_map: Path | None) -> None:
    extra = (f" (pores + CBD conducting; D_mean = {out['d_mean']:.4f}, tau = D_mean/deff, N_M = 1/deff)"
             if "d_mean" in out else "")
    typer.echo(f"{labels}: phase {phase}, eps = {out['eps']:.4f}{extra}")
    for a, r in results.items():
        line = (f"  axis {a}: tau = {r.tau:.4f}, D_eff/D_0 = {r.deff:.4f}, N_M = {r.mcmullin:.3f}, "
                f"stagnant (<2 % of max flux) {r.stagnant_flux_fraction:.1%}, percolating {r.percolating_fraction:.1%}")
        if r.reason:
            line += f" ({r.reason})"
        typer.echo(line)
    if "tau_e" in out:
        typer.echo(f"  electrode tortuosity tau_e ({next(iter(results))}) = {out['tau_e']:.4f}")
    if flux_map is not None:
        typer.echo(f"  flux map: {flux_map}")


def _run_petsc(labels: Path, phase: str, axes: list[str], voxel_size_um: float | None, mapping: Any,
               rtol: float, *, quiet: bool, as_json: bool) -> None:
    """The PETSc backend: every MPI rank solves (reading its own slab), rank 0 reports."""
    from litomo.io import read_volume
    from litomo.io.guards import require_voxel_size
    from litomo.transport.petsc_solver import import_petsc, tortuosity_petsc

    if not labels.exists():
        raise LitomoError(f"{labels}: no such file")
    _, MPI = import_petsc()
    rank0 = MPI.COMM_WORLD.rank == 0
    voxel = require_voxel_size(read_volume(labels, lazy=True, voxel_size_um=voxel_size_um)).voxel_size_um
    prog = progress_bar(rank0 and not (quiet or as_json))
    results = {a: tortuosity_petsc(labels, phase, a, voxel_size_um=voxel_size_um, mapping=mapping,
                                   rtol=rtol, progress=prog) for a in axes}
    if not rank0:
        return
    out = _json_summary(labels, phase, voxel, results)
    out["backend"] = {"name": "petsc", "ranks": MPI.COMM_WORLD.size}
    if as_json:
        print_json(out)
        return
    _echo(labels, phase, results, out, None)


@app.command()
def tortuosity(
    labels: Path = typer.Argument(..., help="Label volume (TIFF), indexed (z, y, x)."),
    phase: str = typer.Option("pore", "--phase", help="Conducting phase: pore (ionic), am or cbd (electronic)."),
    axis: str = typer.Option("z", "--axis", help="Transport axis: z (through-plane), y, x or all."),
    voxel_size_um: float = typer.Option(None, "--voxel-size-um", help="Voxel edge length in um (default: from the file, else 1)."),
    label_map: str = typer.Option(None, "--labels", help="Which stored value is which phase, e.g. pore=0,am=85,cbd=170 (default pore=0,am=1,cbd=2)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    electrode: bool = typer.Option(False, "--electrode", help="Also compute the electrode tortuosity factor tau_e (pore/AM capacitive interface, separator at index 0)."),
    periodic: bool = typer.Option(False, "--periodic", help="Periodic instead of no-flux side faces."),
    flux_map: Path = typer.Option(None, "--flux-map", help="Write the flux-density magnitude (float32, NaN outside the phase) of the first axis to this TIFF."),
    rtol: float = typer.Option(1e-6, "--rtol", help="Relative residual of the linear solve."),
    cbd_diffusivity: float = typer.Option(None, "--cbd-diffusivity", help="Multiphase: the CBD conducts too, with this D_CBD/D_0 (pores 1, AM 0); needs --phase pore."),
    cbd_porosity: float = typer.Option(None, "--cbd-porosity", help="Multiphase: D_CBD/D_0 = porosity^1.5 (Bruggeman) of the CBD's nano-porosity (e.g. 0.47)."),
    classes: Path = typer.Option(None, "--classes", help="Write the phase's transport classes (uint8 TIFF: 1 through-flowing, 2 stagnant, 3 dead-end, 4 isolated) along the first axis."),
    backend: str = typer.Option("native", "--backend", help="Solver: native (multigrid-CG on this machine, ~33 bytes per voxel) or petsc (PETSc CG + GAMG over MPI: mpiexec -n N litomo tortuosity ... --backend petsc; each rank reads its own z-slab; needs petsc4py and mpi4py)."),
    scheduler: str = typer.Option(None, "--scheduler", help=COMMAND_SCHEDULER_HELP + " There: reading the volume in z-slabs; the solver runs in this process (native) or on MPI ranks (--backend petsc, which takes no --scheduler)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Tortuosity factor tau, D_eff/D_0 = eps/tau and McMullin number tau/eps of one phase
    (steady-state diffusion on its face-connected percolating part; tau = inf if it does not
    percolate).

    JSON: stagnant_flux_fraction = share of the phase's voxels whose local flux is below 2 % of
    the maximum (non-percolating voxels included), a flow-based measure; `litomo micro`'s
    dead_end_cluster_fraction (clusters touching one face only) is a different, connectivity one.
    "definitions" in the JSON says the same."""
    from litomo.phases import PHASE_CODES, parse_label_mapping

    setup_logging(verbose)
    phase = phase.strip().lower()
    if phase not in PHASE_CODES:
        raise LitomoError(f"--phase must be one of {', '.join(PHASE_CODES)}, got {phase!r}")
    axes = ["z", "y", "x"] if axis.strip().lower() == "all" else [axis.strip().lower()]
    if any(a not in ("z", "y", "x") for a in axes):
        raise LitomoError(f"--axis must be z, y, x or all, got {axis!r}")
    if voxel_size_um is not None and not voxel_size_um > 0:
        raise LitomoError(f"--voxel-size-um must be positive, got {voxel_size_um}")
    if not 0.0 < rtol < 1.0:
        raise LitomoError(f"--rtol must be between 0 and 1 (e.g. 1e-6), got {rtol:g}")
    d_cbd = _cbd_diffusivity(cbd_diffusivity, cbd_porosity, phase)
    native_only = periodic or electrode or flux_map is not None or classes is not None or d_cbd is not None
    backend = _check_backend(backend, native_only=native_only, scheduler=scheduler)
    for opt, path in (("--flux-map", flux_map), ("--classes", classes)):
        if path is not None:
            check_output_file(path, opt, inputs=[labels])
    mapping = parse_label_mapping(label_map)
    if backend == "petsc":
        _run_petsc(labels, phase, axes, voxel_size_um, mapping, rtol, quiet=quiet, as_json=as_json)
        return
    prog = progress_bar(not (quiet or as_json))
    with command_scheduler(scheduler):  # an unreachable address fails here, before anything is written
        arr, voxel = _read_labels(labels, voxel_size_um, prog)
    results = _solve_native(arr, phase, mapping, axes, voxel, d_cbd=d_cbd, periodic=periodic, rtol=rtol,
                            want_flux=flux_map is not None or classes is not None, progress=prog)
    first = results[axes[0]]
    if flux_map is not None:
        _write_flux(flux_map, first.flux, voxel)
    if classes is not None:
        import numpy as np

        from litomo.transport.multiphase import transport_classes

        _write_flux(classes, transport_classes(np.isfinite(first.flux), axes[0], first.flux), voxel)
    out = _json_summary(labels, phase, voxel, results)
    if electrode:
        from litomo.transport.electrode import electrode_tortuosity

        if phase != "pore":
            raise LitomoError("--electrode needs --phase pore (electrolyte in the pores, AM interface)")
        e = electrode_tortuosity(arr, axes[0], conductive="pore", reactive="am", voxel_size_um=voxel,
                                 mapping=mapping, progress=prog)
        out["tau_e"] = e.tau_e
        out["electrode"] = e.as_dict()
    if as_json:
        print_json(out)
        return
    _echo(labels, phase, results, out, flux_map)

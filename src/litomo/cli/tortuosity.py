"""``litomo tortuosity``: diffusion (and electrode) tortuosity factor of one phase (SPEC 4)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging
from litomo.errors import LitomoError


def _read_labels(path: Path, voxel_size_um: float | None):
    """Label array and voxel size (um) from a volume file."""
    try:
        from litomo.io import read_volume
    except ImportError:  # the io package may not provide read_volume yet
        read_volume = None
    if not path.exists():
        raise LitomoError(f"{path}: no such file")
    if read_volume is not None:
        vol = read_volume(path, voxel_size_um=voxel_size_um)
        return vol.numpy(), vol.voxel_size_um
    import tifffile

    try:
        arr = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for bad files
        raise LitomoError(f"{path}: cannot read as TIFF ({exc})") from None
    return arr, voxel_size_um if voxel_size_um is not None else 1.0


def _write_flux(path: Path, flux, voxel_size_um) -> None:
    try:
        from litomo.io.tiff import write_tiff
    except ImportError:
        write_tiff = None
    if write_tiff is not None:
        write_tiff(path, flux, voxel_size_um=voxel_size_um)
        return
    import tifffile

    from litomo.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, flux)


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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Tortuosity factor tau, D_eff/D_0 = eps/tau and McMullin number tau/eps of one phase
    (steady-state diffusion on its face-connected percolating part; tau = inf if it does not
    percolate)."""
    from litomo.phases import PHASE_CODES, parse_label_mapping
    from litomo.transport.diffusion import phase_mask
    from litomo.transport.diffusion import tortuosity as run_tortuosity

    setup_logging(verbose)
    phase = phase.strip().lower()
    if phase not in PHASE_CODES:
        raise LitomoError(f"--phase must be one of {', '.join(PHASE_CODES)}, got {phase!r}")
    axes = ["z", "y", "x"] if axis.strip().lower() == "all" else [axis.strip().lower()]
    if any(a not in ("z", "y", "x") for a in axes):
        raise LitomoError(f"--axis must be z, y, x or all, got {axis!r}")
    if voxel_size_um is not None and not voxel_size_um > 0:
        raise LitomoError(f"--voxel-size-um must be positive, got {voxel_size_um}")
    if flux_map is not None and flux_map.resolve() == labels.resolve():
        raise LitomoError("--flux-map would overwrite the input volume")
    mapping = parse_label_mapping(label_map)
    arr, voxel = _read_labels(labels, voxel_size_um)
    mask = phase_mask(arr, phase, mapping)
    prog = progress_bar(not (quiet or as_json))
    results = {}
    for k, a in enumerate(axes):
        results[a] = run_tortuosity(mask, a, voxel_size_um=voxel, periodic=periodic, rtol=rtol,
                                    return_flux=flux_map is not None and k == 0, progress=prog)
    first = results[axes[0]]
    if flux_map is not None:
        _write_flux(flux_map, first.flux, voxel)
    out = {
        "file": str(labels),
        "phase": phase,
        "voxel_size_um": voxel,
        "eps": first.eps,
        "tau": {a: r.tau for a, r in results.items()},
        "deff": {a: r.deff for a, r in results.items()},
        "mcmullin": {a: r.mcmullin for a, r in results.items()},
        "dead_end_fraction": {a: r.dead_end_fraction for a, r in results.items()},
        "percolating_fraction": {a: r.percolating_fraction for a, r in results.items()},
        "flux_balance": {a: r.flux_balance for a, r in results.items()},
        "iterations": {a: r.iterations for a, r in results.items()},
        "converged": all(r.converged for r in results.values()),
        "reason": {a: r.reason for a, r in results.items() if r.reason},
        "elapsed_s": sum(r.elapsed_s for r in results.values()),
    }
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
    typer.echo(f"{labels}: phase {phase}, eps = {first.eps:.4f}")
    for a, r in results.items():
        line = (f"  axis {a}: tau = {r.tau:.4f}, D_eff/D_0 = {r.deff:.4f}, N_M = {r.mcmullin:.3f}, "
                f"dead-end {r.dead_end_fraction:.1%}, percolating {r.percolating_fraction:.1%}")
        if r.reason:
            line += f" ({r.reason})"
        typer.echo(line)
    if electrode:
        typer.echo(f"  electrode tortuosity tau_e ({axes[0]}) = {out['tau_e']:.4f}")
    if flux_map is not None:
        typer.echo(f"  flux map: {flux_map}")

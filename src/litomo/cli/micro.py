"""``litomo micro``: microstructure metrics of a three-phase label volume (:mod:`litomo.workflows.micro`)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging
from litomo.errors import LitomoError
from litomo.workflows.execution import COMMAND_SCHEDULER_HELP, command_scheduler


def _parse_voxel(text: str) -> float | tuple[float, float, float]:
    import math

    try:
        vals = [float(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise LitomoError(f"--voxel-size-um: expected a number or z,y,x in um, got {text!r}") from None
    if len(vals) not in (1, 3) or not all(math.isfinite(v) and v > 0 for v in vals):
        raise LitomoError(f"--voxel-size-um: expected one positive number or three (z,y,x), got {text!r}")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1], vals[2])


def _parse_supplier(text: str | None) -> tuple[float, float, float] | None:
    """``--supplier-psd D10,D50,D90`` (um, increasing, positive)."""
    if text is None:
        return None
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise LitomoError(f"--supplier-psd: expected three numbers D10,D50,D90 in um, got {text!r}") from None
    if len(vals) != 3 or not all(v > 0 for v in vals) or not vals[0] <= vals[1] <= vals[2]:
        raise LitomoError(f"--supplier-psd must be three increasing positive numbers D10,D50,D90 in um, got {text!r}")
    return vals  # type: ignore[return-value]


@app.command()
def micro(
    labels_path: Path = typer.Argument(..., metavar="LABELS", help="Three-phase label volume (TIFF, ...), indexed (z, y, x)."),
    voxel_size_um: str = typer.Option(..., "--voxel-size-um", help="Voxel edge length in um: one number or z,y,x."),
    label_map: str = typer.Option(None, "--labels", help="Which stored value is which phase, e.g. pore=0,am=85,cbd=170 (default pore=0,am=1,cbd=2)."),
    out: Path = typer.Option(..., "--out", help="Output folder (tables/, figures/, report.html, run.json); must be new or empty unless --force."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier litomo output in --out (only files litomo wrote)."),
    axes: str = typer.Option("z", "--axes", help="Percolation and S2 axes: z (through-plane) or all."),
    no_transport: bool = typer.Option(False, "--no-transport", help="Skip the tortuosity solves (pore and CBD along z)."),
    no_close_cracks: bool = typer.Option(False, "--no-close-cracks", help="Separate particles on the AM mask as it is (default: close one-voxel cracks and fill enclosed voids first, so a cracked particle stays one)."),
    expected: str = typer.Option(None, "--expected", help="Expected volume fractions, e.g. am=0.6,cbd=0.1,pore=0.3 (shown beside the data)."),
    supplier_psd: str = typer.Option(None, "--supplier-psd", help="A supplier's volume-based D10,D50,D90 in um (laser diffraction), compared with the particles' edge-corrected volume PSD."),
    cbd_porosity: float = typer.Option(None, "--cbd-porosity", help="Also the multiphase pore + porous-CBD tortuosity along z: the CBD's own nano-porosity (0-1; D_CBD/D_0 = porosity^1.5, Bruggeman), e.g. 0.47."),
    tile_um: float = typer.Option(None, "--tile-um", help="Local property maps: volume fractions, specific surfaces and pore tortuosity (z) on tiles of this edge in um (tables/local_maps.csv, local_profile.csv)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random REV sub-volumes."),
    rev_tolerance: float = typer.Option(0.05, "--rev-tolerance", help="REV size criterion: relative tolerance of mean and spread (0.05 = 5 %)."),
    no_pore_sizes: bool = typer.Option(False, "--no-pore-sizes", help="Skip the pore size distributions, constrictivity and pore radius maps (~20 s CPU at 256^3)."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Write tables only."),
    chunk_size: int = typer.Option(None, "--chunk-size", help="Compute out of core in blocks of this edge in voxels (automatic, 128, above 2^28 voxels): fractions, areas, TPB, percolation, REV and S2 exact; no particles, transport, pore sizes or figures."),
    scheduler: str = typer.Option(None, "--scheduler", help=COMMAND_SCHEDULER_HELP + " Out of core: the blocks, percolation and S2 slabs run there; in memory: the reading (the metrics run in this process)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (microstructure.json) on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each stage (and which one failed)."),
) -> None:
    """Volume fractions, percolation, surface/interfacial areas, TPB density, particle sizes and
    sphericity, REV and two-point correlation (and tortuosity) of a pore/AM/CBD label volume.

    JSON keys that are easy to confuse: dead_end_cluster_fraction = share of a phase in clusters
    touching only one of the two faces normal to the axis (connectivity; `litomo tortuosity`'s
    stagnant_flux_fraction is a different, flow-based measure); surface_area_mc_smoothed_um-1 /
    surface_area_mc_unsmoothed_um-1 = marching-cubes areas with and without the 0.7-voxel
    smoothing; sphericity_mean / sphericity_median over inner particles of at least
    sphericity_min_voxels voxels (always in (0, 1]); internal_pore_volume_um3 = voids enclosed by
    a particle (CBD-filled parts included; internal_pore_cbd_volume_um3 the CBD part);
    constrictivity = (r_min/r_max)^2 from simulated mercury intrusion vs continuous PSD;
    characteristic_length_um = 1/e lag of the S2 autocovariance; rev_edge_um = REV size at
    --rev-tolerance. "definitions" in the JSON says the same.

    Writes OUT/tables/{microstructure.json, metrics_table.csv, particles.csv, z_profile.csv,
    rev.csv, s2.csv, rev_size.csv, pore_size_distribution.csv, particle_size_distribution.csv
    (laser-diffraction-style volume PSD, edge-corrected), coverage_by_size.csv}, OUT/volumes/pore_radius_*.tif
    (pore radius and bottleneck maps), PNG+SVG figures under OUT/figures, OUT/report.html and
    OUT/run.json.
    """
    from litomo.phases import parse_label_mapping, parse_phase_items
    from litomo.workflows.micro import MicroSettings, run_micro

    setup_logging(verbose)
    ax_mode = axes.strip().lower()
    if ax_mode not in ("z", "all"):
        raise LitomoError(f"--axes must be z or all, got {axes!r}")
    settings = MicroSettings(
        voxel_size_um=_parse_voxel(voxel_size_um),
        label_mapping=parse_label_mapping(label_map),
        axes=("z", "y", "x") if ax_mode == "all" else ("z",),
        transport=not no_transport, close_cracks=not no_close_cracks,
        expected=parse_phase_items(expected, float, option="--expected", example="am=0.6,cbd=0.1") if expected else None,
        seed=seed, figures=not no_figures, pore_sizes=not no_pore_sizes, rev_tolerance=rev_tolerance,
        supplier_psd_um=_parse_supplier(supplier_psd), chunk_vox=chunk_size, tile_um=tile_um,
        cbd_porosity=cbd_porosity)
    with command_scheduler(scheduler):  # an unreachable address fails here, before --out is made
        result = run_micro(labels_path, out, settings, mode="force" if force else "new",
                           progress=progress_bar(not (quiet or as_json)))
    rep = result.summary
    if as_json:
        print_json(rep)
        return
    vf = rep["volume_fraction"]
    typer.echo(f"volume fractions: pore {vf['pore']:.4f}, AM {vf['am']:.4f}, CBD {vf['cbd']:.4f}; "
               f"TPB {rep['tpb_density_um-2']:.4g} um^-2; particles {rep['n_particles']}; written to {out}")

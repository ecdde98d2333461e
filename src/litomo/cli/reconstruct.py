"""``litomo reconstruct``: raw projection series -> aligned, centred volume (OME-Zarr, optional TIFF)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging
from litomo.errors import LitomoError


def _center(value: str) -> float | None:
    if value.strip().lower() == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise LitomoError(f"--center must be a number of pixels or 'auto', got {value!r}") from None


@app.command()
def reconstruct(
    projections: Path = typer.Argument(..., help="DXchange/NeXus HDF5 file, .txrm stack, folder of .xrm frames, or TIFF stack / folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (new, or a previous one with --resume)."),
    method: str = typer.Option("fbp", "--method", help="fbp (redundancy-weighted for > 180 deg), sirt or tv."),
    center: str = typer.Option("auto", "--center", help="Rotation centre in detector pixels from column 0, or 'auto'."),
    align: str = typer.Option("none", "--align", help="none, xcorr (fast consistency pass) or reprojection (iterative)."),
    angles: str = typer.Option(None, "--angles", help="Angle list: text file (degrees, one per line) or start:stop:count."),
    rings: str = typer.Option("none", "--rings", help="Ring removal (algotom): none, sorting, filtering or wavelet-fft."),
    flats: list[Path] = typer.Option(None, "--flats", help="Separately stored reference (flat) frames; repeatable."),
    darks: list[Path] = typer.Option(None, "--darks", help="Separately stored dark frames; repeatable."),
    bin_factor: int = typer.Option(1, "--bin", help="Detector binning factor."),
    n_iter: int = typer.Option(100, "--n-iter", help="Iterations for sirt/tv."),
    tv_weight: float = typer.Option(0.02, "--tv-weight", help="TV regularisation strength (dimensionless)."),
    pixel_size_um: float = typer.Option(None, "--pixel-size-um", help="Pixel size (um) if the file lacks it."),
    tiff: bool = typer.Option(False, "--tiff", help="Also write volume.tif."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted reconstruction in --out."),
    force: bool = typer.Option(False, "--force", help="Start over in an --out that litomo wrote (only its own files)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Address of a dask.distributed scheduler (tcp://host:8786), or 'synchronous'. Default: a local cluster sized to this machine."),
    json_out: bool = typer.Option(False, "--json", help="Print the completion record as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Reconstruct a parallel-beam projection series: flat/dark, zingers, rings, alignment, centre,
    FBP/SIRT/TV slab by slab. Writes OUT/volume.ome.zarr, OUT/figures/*.png and OUT/run.json (last)."""
    from litomo.io.projections import read_projections
    from litomo.report.recon import write_recon_figures
    from litomo.workflows.reconstruct import (
        ReconstructionConfig,
        completed_record,
        run_reconstruction,
    )

    setup_logging(verbose)
    if force and resume:
        raise LitomoError("--force and --resume exclude each other")
    config = ReconstructionConfig(method=method, center_px=_center(center), align=align, rings=rings, bin=bin_factor,
                                  n_iter=n_iter, tv_weight=tv_weight)
    done = completed_record(projections, out, config) if resume else None
    if done is not None:
        if json_out:
            print_json(done)
        else:
            typer.echo(f"{out}: already complete (nothing to resume)")
        return
    series = read_projections(projections, angles=angles, flats=flats or None, darks=darks or None,
                              pixel_size_um=pixel_size_um)
    mode = "resume" if resume else "force" if force else "new"
    _, record = run_reconstruction(projections, out, config, series=series, mode=mode, write_tiff=tiff,
                                   scheduler=scheduler, figures=write_recon_figures,
                                   progress=progress_bar(not (quiet or json_out)))
    if json_out:
        print_json(record)
    else:
        c = record["center"]
        extra = f" ({c['method']}; check {c['check_method']} {c['check_px']:.2f})" if c else ""
        typer.echo(f"reconstructed {tuple(record['shape_zyx'])} voxels, centre {record['center_px_unbinned']:.2f} px"
                   f"{extra} -> {out / 'volume.ome.zarr'}")

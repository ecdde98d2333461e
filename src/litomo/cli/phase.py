"""``litomo phase``: multi-distance holograms -> phase retrieval -> FBP -> delta volume."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging, to_jsonable
from litomo.errors import LitomoError


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise LitomoError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def _pick(cli_value, attrs: dict, key: str, option: str):
    if cli_value is not None:
        return cli_value
    if key in attrs:
        return attrs[key]
    raise LitomoError(f"{option} is required (the HOLOGRAMS file does not give '{key}')")


def _material_delta_beta(text: str, energy_kev: float) -> float:
    from litomo.holo.geometry import material_delta_beta

    formula, _, rho = text.partition(":")
    try:
        density = float(rho)
    except ValueError:
        raise LitomoError(f"--material: expected FORMULA:DENSITY, e.g. LiNi0.6Mn0.2Co0.2O2:4.75, got {text!r}") from None
    d, b = material_delta_beta(formula.strip(), density, energy_kev)
    return d / b


@app.command()
def phase(
    holograms: str = typer.Argument(..., metavar="HOLOGRAMS", help="litomo holotomography HDF5 (/d0, /d1, ... with data and flats), or comma-separated scans, one per distance: ESRF EDF folders or anything `litomo reconstruct` reads (NXtomo/DXchange HDF5, .txrm, .xrm folder, TIFF)."),
    out: Path = typer.Option(..., "--out", help="Output folder (new or empty unless --force): volume.ome.zarr, volume.tif (delta), figures/, report.html, phase.json, run.json."),
    energy_kev: float = typer.Option(None, "--energy-kev", help="Photon energy in keV (e.g. 29.6)."),
    z1_mm: str = typer.Option(None, "--z1-mm", help="Focus-to-sample distance per distance, increasing, comma-separated (mm)."),
    z12_mm: float = typer.Option(None, "--z12-mm", help="Focus-to-detector distance z1+z2 (mm)."),
    pixel_um: float = typer.Option(None, "--pixel-um", help="Detector pixel size (um)."),
    delta_beta: float = typer.Option(137.0, "--delta-beta", help="delta/beta of the material (137: NMC at 17-30 keV, the seeds' value)."),
    material: str = typer.Option(None, "--material", help="FORMULA:DENSITY (g/cm3), e.g. LiNi0.6Mn0.2Co0.2O2:4.75: delta/beta from xraydb at --energy-kev, instead of --delta-beta."),
    method: str = typer.Option("ctf", "--method", help="ctf (multi-distance, default), multi-paganin, or paganin (first distance only)."),
    regularization: float = typer.Option(None, "--regularization", help="Tikhonov alpha (multi-paganin, ctf); default per method."),
    pad: str = typer.Option("reflect", "--pad", help="FFT padding: reflect (default), edge, mean or none."),
    iterations: int = typer.Option(0, "--iterations", help="Recursive Paganin (paganin, multi-paganin): corrections with the exact Fresnel model's residual (3 is a good choice; 0: single pass)."),
    center_px: float = typer.Option(None, "--center-px", help="Rotation axis column on the common grid, from 0 (default: found automatically)."),
    half_acquisition: bool = typer.Option(False, "--half-acquisition", help="360-degree scan with the axis near one edge of the field: stitch to a double-width 180-degree sinogram."),
    no_align: bool = typer.Option(False, "--no-align", help="Use the nominal Fresnel scaling only (no shift/scale registration)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier litomo output in --out (only files litomo wrote)."),
    json_out: bool = typer.Option(False, "--json", help="Print the run record as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", help="Log alignment details."),
) -> None:
    """Phase retrieval (Paganin, multi-distance Paganin-like or CTF) and FBP of holotomography scans."""
    from litomo.holo.geometry import HoloGeometry
    from litomo.holo.io import read_holo_input
    from litomo.holo.retrieve import RetrievalSettings
    from litomo.workflows.phase import PhaseOptions, run_phase

    setup_logging(verbose)
    t0 = time.time()
    RetrievalSettings(method, delta_beta, regularization, pad, iterations)  # validate the options first
    paths = [p for p in holograms.split(",") if p]
    scan = read_holo_input(paths)
    a = scan.attrs
    geometry = HoloGeometry(
        _pick(energy_kev, a, "energy_kev", "--energy-kev"),
        _pick(_floats(z1_mm, "--z1-mm"), a, "z1_mm", "--z1-mm"),
        _pick(z12_mm, a, "z12_mm", "--z12-mm"),
        _pick(pixel_um, a, "pixel_um", "--pixel-um"),
    )
    if material is not None:
        delta_beta = _material_delta_beta(material, geometry.energy_kev)
    settings = RetrievalSettings(method, delta_beta, regularization, pad, iterations)
    progress = progress_bar(not (quiet or json_out))
    result = run_phase(scan, geometry, settings, out, PhaseOptions(center_px=center_px, half_acquisition=half_acquisition,
                                                                        n_align=0 if no_align else 8),
                       mode="force" if force else "new", progress=progress)
    summary = {"out": str(out), "voxel_size_um": geometry.common_pixel_um, "seconds": round(time.time() - t0, 1),
               **result.record}
    if json_out:
        print_json(to_jsonable(summary))
    else:
        typer.echo(f"phase: {result.volume.shape} delta volume at {geometry.common_pixel_um:.4g} um -> "
                   f"{result.outputs['volume_ome_zarr']}")

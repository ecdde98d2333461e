"""``litomo map2d``: 2-D TXM-XANES maps from raw frames (:mod:`litomo.workflows.map2d`)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging
from litomo.errors import LitomoError


@app.command()
def map2d(
    manifest: Path = typer.Argument(None, metavar="MANIFEST", help="map2d TOML manifest (docs/manifest.md); or give --sample and --flat."),
    sample: list[Path] = typer.Option(None, "--sample", help="Sample frame (.xrm), repeatable; grouped by the energy each file records."),
    flat: list[Path] = typer.Option(None, "--flat", help="Flat-field (reference, I0) frame (.xrm), repeatable; every energy needs one."),
    dark: list[Path] = typer.Option(None, "--dark", help="Dark frame, repeatable (subtracted at every energy)."),
    out: Path = typer.Option(..., "--out", help="Output folder (tables/, maps/, figures/, report.html, run.json); new or empty unless --force."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier litomo output in --out (only files litomo wrote)."),
    method: str = typer.Option(None, "--method", help="auto (default: 2 energies edge-jump, 3 three-energy, 4+ fit), edge-jump, three-energy or fit."),
    align: str = typer.Option(None, "--align", help="similarity (default: shift + scale + rotation), translation, rigid or none."),
    name: str = typer.Option(None, "--name", help="Name shown in the report (default: the manifest's or 'map2d')."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each stage (and which one failed)."),
) -> None:
    """Raw TXM frames + flat fields per energy -> optical density (exposure-normalised) ->
    alignment across energies (shift and magnification) -> edge-jump (Ni) map, three-energy
    or full-spectrum Li map -> particles and per-particle statistics, with tables, float32
    TIFF maps, figures and report.html. Two energies give the Ni map and the alignment QA;
    a Li map needs three energies or more."""
    from dataclasses import replace

    from litomo.manifest.map2d import (
        ALIGN_MODES,
        METHODS,
        Map2DSpec,
        group_frames_by_energy,
        load_map2d_manifest,
    )
    from litomo.workflows.map2d import run_map2d

    setup_logging(verbose)
    if manifest is not None and (sample or flat):
        raise LitomoError("give a map2d MANIFEST or --sample/--flat frames, not both")
    if manifest is not None:
        spec = load_map2d_manifest(manifest)
    elif sample and flat:
        spec = Map2DSpec(frames=group_frames_by_energy(sample, flat, dark or ()))
    else:
        raise LitomoError("give a map2d MANIFEST, or --sample and --flat frames (at least one of each per energy)")
    for flag, value, allowed, key in (("--method", method, METHODS, "method"), ("--align", align, ALIGN_MODES, "align")):
        if value is not None:
            if value not in allowed:
                raise LitomoError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
            spec = replace(spec, **{key: value})
    if name:
        spec = replace(spec, name=name)
    res = run_map2d(spec, out, mode="force" if force else "new", progress=progress_bar(not (quiet or as_json)))
    if as_json:
        print_json(res.summary)
        return
    s = res.summary
    msg = f"{res.method} map of {len(res.energies_ev)} energies: {s['n_particles']} particles, AM area {s['am_area_um2']:.4g} um^2"
    if "mean_li" in s:
        msg += f", mean x_Li {s['mean_li']:.3f}"
    typer.echo(f"{msg}; written to {out}")

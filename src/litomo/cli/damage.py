"""``litomo damage``: per-particle crack/damage quantification (:mod:`litomo.workflows.damage`)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging
from litomo.errors import LitomoError


def _parse_bbox(text: str | None):
    if not text:
        return None
    try:
        parts = [tuple(float(v) for v in item.split(":")) for item in text.split(",")]
    except ValueError:
        raise LitomoError(f"--bbox-um: expected 'z0:z1,y0:y1,x0:x1' in um, got {text!r}") from None
    if len(parts) != 3 or any(len(p) != 2 for p in parts):
        raise LitomoError(f"--bbox-um: expected 'z0:z1,y0:y1,x0:x1' in um, got {text!r}")
    return tuple(parts)


@app.command()
def damage(
    volume: Path = typer.Argument(..., help="Phase-label volume (0 pore, 1 AM, 2 CBD, or see --labels) or a greyscale volume (AM bright)."),
    voxel_size_um: float = typer.Option(..., "--voxel-size-um", help="Voxel edge length (um)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (tables/, figures/, run.json); must be new or empty unless --force."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier litomo output in --out (only files litomo wrote)."),
    labels: str = typer.Option(None, "--labels", help="Phase-label mapping, e.g. 'pore=0,am=85,cbd=170'. Implies a label volume."),
    kind: str = typer.Option("auto", "--kind", help="'labels', 'grey' or 'auto' (integer volumes with <= 16 values are labels)."),
    window_um: float = typer.Option(10.0, "--window-um", help="Height of the depth windows for class populations (um)."),
    mild: float = typer.Option(0.03, "--mild-threshold", help="Damage index at and above which a particle is 'mild'."),
    severe: float = typer.Option(0.6, "--severe-threshold", help="Damage index at and above which a particle is 'severe'."),
    separator_side: str = typer.Option("z_min", "--separator-side", help="Side of the separator (z_min or z_max): the Canny-edge damage windows count depth from it."),
    li_run: Path = typer.Option(None, "--li-run", help="A litomo run folder (or its tables/particles.csv), same frame in um: pair particles by centroid and correlate damage with Li content (tables/crack_li*.csv)."),
    li_state: str = typer.Option(None, "--li-state", help="State of --li-run to correlate with (default: the last)."),
    k: int = typer.Option(3, "--k", help="Neighbours per particle in the network of severely damaged particles."),
    bbox_um: str = typer.Option(None, "--bbox-um", help="Region of the sphere-pack export, 'z0:z1,y0:y1,x0:x1' in um (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each stage (and which one failed)."),
) -> None:
    """Crack/void fraction, crack surface density, edge density, detachment gap and a damage
    index per particle; classes least/mild/severe; depth profiles, the k-NN network of severely
    damaged particles and a sphere-pack (centres, radii in um) for finite-element models.
    Also the crack paper's method: median filter, Canny edges per slice, crack-edge density per
    particle and per --window-um window from the separator, and each particle's detachment gap
    from the carbon-binder (label volumes): tables/damage_edges_{particles,depth}.csv."""
    from litomo.damage import DamageParams
    from litomo.phases import parse_label_mapping
    from litomo.workflows.damage import DamageSettings, run_damage

    setup_logging(verbose)
    settings = DamageSettings(
        voxel_size_um=voxel_size_um, kind=kind, label_mapping=parse_label_mapping(labels) if labels else None,
        params=DamageParams(mild_threshold=mild, severe_threshold=severe), window_um=window_um, k=k,
        bbox_um=_parse_bbox(bbox_um), separator_side=separator_side.strip().lower(), li_state=li_state)
    result = run_damage(volume, out, settings, mode="force" if force else "new",
                        progress=progress_bar(not (quiet or json_out)), li_run=li_run)
    if json_out:
        print_json({**result.summary, "out": str(result.out_dir)})
    else:
        c = result.summary["class_counts"]
        typer.echo(f"{len(result.particles)} particles: {c['least']} least, {c['mild']} mild, "
                   f"{c['severe']} severe damaged; written to {out}")

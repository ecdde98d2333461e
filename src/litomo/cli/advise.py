"""``litomo advise-energies``: Li sensitivity of the configured edge energy and a better one (SPEC 2.3)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, setup_logging
from litomo.errors import LitomoError


@app.command("advise-energies")
def advise_energies(
    manifest: Path = typer.Argument(
        ..., help="Experiment manifest (TOML) with a [xanes] table and reference spectra."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the results (with the full scan table) as JSON."
    ),
    search_lo: float = typer.Option(
        8330.0, "--search-from", help="Lowest edge energy to try (eV)."
    ),
    search_hi: float = typer.Option(8360.0, "--search-to", help="Highest edge energy to try (eV)."),
    step_ev: float = typer.Option(0.5, "--step", help="Scan step (eV)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details."),
) -> None:
    """Print dR/dx_Li (change of the edge ratio R per unit Li content, from the reference
    spectra) at the manifest's edge energy and at the most sensitive edge energy in the search
    range. On the rising edge R changes several times faster with Li than at the white line."""
    from litomo.manifest import load_manifest
    from litomo.xanes.advisor import advise_edge_energy
    from litomo.xanes.spectra import read_spectrum

    setup_logging(verbose)
    m = load_manifest(manifest)
    x = m.xanes
    missing = [
        k
        for k in (
            "pre_edge_ev",
            "edge_ev",
            "post_edge_ev",
            "reference_pristine",
            "reference_charged",
        )
        if getattr(x, k) is None
    ]
    if missing:
        raise LitomoError(f"{manifest}: [xanes] needs {', '.join(missing)} to advise on energies")
    adv = advise_edge_energy(
        read_spectrum(x.reference_pristine, energy_unit=x.energy_unit),
        read_spectrum(x.reference_charged, energy_unit=x.energy_unit),
        x.pre_edge_ev,
        x.post_edge_ev,
        edge_ev=x.edge_ev,
        li_pristine=x.li_pristine,
        li_charged=x.li_charged,
        search=(search_lo, search_hi),
        step_ev=step_ev,
        energy_shift_ev=x.energy_shift_ev,
    )
    if as_json:
        print_json(adv)
        return
    typer.echo(f"pre-edge {x.pre_edge_ev:.2f} eV, post-edge {x.post_edge_ev:.2f} eV")
    typer.echo(
        f"configured edge {x.edge_ev:.2f} eV: dR/dx_Li = {adv['configured_sensitivity']:+.4f}"
    )
    typer.echo(
        f"best edge       {adv['best_edge_ev']:.2f} eV: dR/dx_Li = {adv['best_sensitivity']:+.4f} "
        f"({adv['ratio']:.1f}x the configured sensitivity)"
    )

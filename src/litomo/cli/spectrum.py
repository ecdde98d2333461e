"""``litomo spectrum``: edge position, step and white line of one XANES spectrum (SPEC 2.2)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, setup_logging


@app.command()
def spectrum(
    file: Path = typer.Argument(
        ..., help="Spectrum file: XDI, Athena .prj, CSV (energy_ev, mu) or two-column text."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    energy_unit: str = typer.Option(
        None,
        "--energy-unit",
        help="Energy unit of the file when it does not say: eV or keV (energies below 100 need keV).",
    ),
    column: str = typer.Option(
        None,
        "--column",
        help="mu column (CSV/XDI) or group label (Athena project); default: mu / the merged group.",
    ),
    post_order: int = typer.Option(
        2, "--post-order", help="Order of the post-edge polynomial (0, 1 or 2)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Normalise a spectrum (larch pre_edge conventions: pre-edge -150..-30 eV, post-edge
    +50..+300 eV around E0) and print E0 (derivative maximum, eV), the half-jump edge energy
    (eV), the edge step (units of mu) and the white-line position (eV) and height (normalised)."""
    from litomo.xanes.normalize import edge_energy_half, normalize_spectra, white_line
    from litomo.xanes.spectra import read_spectrum

    setup_logging(verbose)
    s = read_spectrum(file, energy_unit=energy_unit, column=column)
    r = normalize_spectra(s.energy_ev, s.mu, post_order=post_order)
    e0 = float(r.e0_ev)
    half = edge_energy_half(s.energy_ev, r.norm)
    wl_e, wl_h = white_line(s.energy_ev, r.norm, search_ev=(e0 - 20.0, e0 + 40.0))
    out = {
        "file": str(file),
        "name": s.name,
        "n_points": int(s.energy_ev.size),
        "energy_range_ev": list(s.range_ev),
        "e0_ev": e0,
        "edge_half_ev": half,
        "edge_step": float(r.edge_step),
        "white_line_ev": wl_e,
        "white_line_height": wl_h,
    }
    if as_json:
        print_json(out)
        return
    typer.echo(f"{s.name}: {s.energy_ev.size} points, {s.range_ev[0]:.2f}-{s.range_ev[1]:.2f} eV")
    typer.echo(f"  E0 (derivative maximum)   {e0:10.2f} eV")
    typer.echo(f"  edge energy (norm = 0.5)  {half:10.2f} eV")
    typer.echo(f"  edge step                 {out['edge_step']:10.4g}")
    typer.echo(f"  white line                {wl_e:10.2f} eV, height {wl_h:.3f}")

"""``litomo spectrum``: edge position, step and white line of one XANES spectrum (SPEC 2.2)."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, setup_logging


def _check_plot(plot: Path, file: Path) -> None:
    """Fail before any work on a --plot path that cannot be written."""
    from litomo.cli._common import check_output_file
    from litomo.errors import LitomoError
    from litomo.report.spectrum import PLOT_FORMATS

    check_output_file(plot, "--plot", inputs=[file])
    if plot.suffix.lower() not in PLOT_FORMATS:
        raise LitomoError(f"--plot {plot}: unknown figure format {plot.suffix or '(none)'!r}; use .png, .svg or .pdf")


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
        None, "--post-order",
        help="Order of the post-edge polynomial (0, 1 or 2); default: larch's choice from the range.",
    ),
    plot: Path = typer.Option(
        None, "--plot", help="Write a figure of the normalised spectrum with E0 and the half-jump energy (.png, .svg, .pdf)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Normalise a spectrum with xraylarch pre_edge's default fit windows (the same E0, edge
    step and half-jump energy as Athena/larch) and print E0 (derivative maximum, eV), the
    half-jump edge energy (eV), the edge step (units of mu), the white-line position (eV) and
    height (normalised), and the fit windows used."""
    from litomo.errors import LitomoError
    from litomo.xanes.spectra import read_spectrum

    setup_logging(verbose)
    if post_order is not None and post_order not in (0, 1, 2):
        raise LitomoError(f"--post-order must be 0, 1 or 2, got {post_order}")
    if plot is not None:
        _check_plot(plot, file)
    s = read_spectrum(file, energy_unit=energy_unit, column=column)
    summary, r = _summarise(s, post_order)
    out = {"file": str(file), **summary}
    e0, half, wl_e, wl_h = out["e0_ev"], out["edge_half_ev"], out["white_line_ev"], out["white_line_height"]
    fit_pre, fit_post, order = out["pre_edge_range_ev"], out["post_edge_range_ev"], out["post_order"]
    if plot is not None:
        from litomo.report.spectrum import save_spectrum_plot, spectrum_figure

        fig = spectrum_figure(s.energy_ev, r.norm, e0_ev=e0, edge_half_ev=half, white_line_ev=wl_e, name=s.name)
        out["plot"] = str(save_spectrum_plot(fig, plot))
    if as_json:
        print_json(out)
        return
    typer.echo(f"{s.name}: {s.energy_ev.size} points, {s.range_ev[0]:.2f}-{s.range_ev[1]:.2f} eV")
    typer.echo(f"  E0 (derivative maximum)   {e0:10.2f} eV")
    typer.echo(f"  edge energy (norm = 0.5)  {half:10.2f} eV")
    typer.echo(f"  edge step                 {out['edge_step']:10.4g}")
    typer.echo(f"  white line                {wl_e:10.2f} eV, height {wl_h:.3f}")
    typer.echo(f"  fit windows (larch)       pre-edge {fit_pre[0]:+.0f}..{fit_pre[1]:+.0f} eV, "
               f"post-edge {fit_post[0]:+.0f}..{fit_post[1]:+.0f} eV, order {order}")


def _summarise(s, post_order: int | None) -> tuple[dict, object]:
    """E0, half-jump energy, edge step, white line and the fit windows of one spectrum, with the
    normalisation result (xraylarch ``pre_edge`` default windows)."""
    from litomo.xanes.normalize import (
        edge_energy_half,
        find_e0,
        larch_default_ranges,
        normalize_spectra,
        white_line,
    )

    e0 = float(find_e0(s.energy_ev, s.mu))
    fit = larch_default_ranges(s.energy_ev, e0)
    order = fit.post_order if post_order is None else post_order
    r = normalize_spectra(s.energy_ev, s.mu, e0=e0, pre_range=fit.pre_range, post_range=fit.post_range,
                          post_order=order)
    half = edge_energy_half(s.energy_ev, r.norm)
    wl_e, wl_h = white_line(s.energy_ev, r.norm, search_ev=(e0 - 20.0, e0 + 40.0))
    out = {
        "name": s.name, "n_points": int(s.energy_ev.size), "energy_range_ev": list(s.range_ev),
        "e0_ev": e0, "edge_half_ev": half, "edge_step": float(r.edge_step),
        "white_line_ev": wl_e, "white_line_height": wl_h,
        "pre_edge_range_ev": list(fit.pre_range), "post_edge_range_ev": list(fit.post_range),
        "post_order": order,
    }
    return out, r

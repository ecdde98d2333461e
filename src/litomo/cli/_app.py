"""The typer application every ``litomo`` sub-command registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="litomo",
    help=(
        "litomo: quantitative 3D analysis of X-ray nano-tomography of Li-ion battery electrodes.\n\n"
        "Start with `litomo demo --out DIR` (synthetic operando electrode, full Li-mapping run), "
        "then `litomo run experiment.toml --out DIR` on your own data. Arrays are (z, y, x), "
        "z is through-plane; lengths in um, energies in eV."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """litomo: quantitative 3D analysis of X-ray nano-tomography of battery electrodes."""

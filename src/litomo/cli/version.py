"""``litomo version``."""

from __future__ import annotations

import typer

from litomo.cli._app import app


@app.command()
def version() -> None:
    """Print the litomo version."""
    from litomo import __version__

    typer.echo(__version__)

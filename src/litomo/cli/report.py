"""``litomo report DIR``: (re)build report.html of a run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import setup_logging


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory of `litomo run`, `demo`, `micro` or `damage`."),
    kind: str = typer.Option("auto", "--kind", help="auto, limap (Li mapping), micro (microstructure) or damage."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Rebuild the self-contained report.html (and figures/) of a finished run."""
    from litomo.report.html import rebuild_report

    setup_logging(verbose)
    path = rebuild_report(run_dir, kind=kind)
    typer.echo(f"report: {path}")

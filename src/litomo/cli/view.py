"""``litomo view DIR``: open a run's Li maps and particle labels in napari, or export them for ParaView."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import progress_bar, setup_logging
from litomo.errors import LitomoError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "napari is not installed, so the run cannot be opened in the 3D viewer.\n"
    "Install it with:  pip install \"litomo[viewer]\"\n"
    "Alternatives: `litomo view DIR --export-vti` writes .vti files for ParaView, and "
    "DIR/report.html opens in any web browser."
)


def open_in_napari(run_dir: Path, states: list[str] | None = None) -> None:
    """One napari window with every state's Li map (cividis, NaN transparent) and labels.

    Layers are scaled by the voxel size (um), so napari's scale bar and coordinates are
    physical; the data stay lazy (dask) and only the displayed planes are read.
    """
    import napari

    from litomo.report import run_volumes

    vols = run_volumes(run_dir, states=states)
    viewer = napari.Viewer(title=f"litomo: {run_dir}")
    for state, d in vols.items():
        if "labels" in d:
            viewer.add_labels(d["labels"].array, scale=d["labels"].voxel_size_um, name=f"{state} particles",
                              visible=False)
        if "li" in d:
            viewer.add_image(d["li"].array, scale=d["li"].voxel_size_um, name=f"{state} Li (x in LixMO2)",
                             colormap="cividis", contrast_limits=(0.3, 1.1))
    viewer.scale_bar.visible = True
    viewer.scale_bar.unit = "um"
    napari.run()


@app.command()
def view(
    run_dir: Path = typer.Argument(..., metavar="DIR", help="A run directory written by `litomo run` or `litomo demo`."),
    export_vti: bool = typer.Option(False, "--export-vti", help="Write DIR/volumes/<state>/{li,labels}.vti (spacing in um) for ParaView instead of opening napari."),
    state: list[str] = typer.Option(None, "--state", help="Only these states (repeatable); default all."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Look at a run's 3D Li maps and particle labels.

    Opens napari (one layer per state, scaled by the voxel size in um) when it is installed;
    otherwise prints how to install it. With --export-vti writes VTK ImageData files for ParaView.
    """
    setup_logging(verbose)
    if not run_dir.is_dir():
        raise LitomoError(f"{run_dir}: run directory not found")
    if export_vti:
        from litomo.report import export_vti as _export

        paths = _export(run_dir, states=state or None, progress=progress_bar(not quiet))
        for p in paths:
            typer.echo(str(p))
        return
    try:
        import napari  # noqa: F401
    except ImportError:
        typer.echo(INSTALL_HINT)
        raise typer.Exit(0) from None
    open_in_napari(run_dir, state or None)

"""``litomo segment``: greyscale volume -> three-phase label volume (:mod:`litomo.workflows.segment`)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging
from litomo.errors import LitomoError
from litomo.workflows.execution import COMMAND_SCHEDULER_HELP, command_scheduler


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise LitomoError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise LitomoError(f"{option}: expected positive numbers, got {text!r}")
    return vals


def _parse_mapping(text: str, option: str) -> dict[str, int]:
    from litomo.phases import parse_label_mapping

    try:
        return parse_label_mapping(text)
    except LitomoError as exc:
        raise LitomoError(str(exc).replace("--labels", option)) from None


def _items(text: str) -> tuple[str, ...]:
    return tuple(s.strip().lower() for s in text.split(",") if s.strip())


@app.command()
def segment(
    grey_path: Path = typer.Argument(..., metavar="GREY", help="Greyscale volume (TIFF, HDF5, OME-Zarr, ...)."),
    scribbles_path: Path = typer.Option(None, "--labels", help="Scribble volume on the same grid: 0 = unlabelled, other values = phases (see --scribble-values), e.g. painted in napari."),
    out: Path = typer.Option(..., "--out", help="Output folder: labels.tif (0 pore, 1 AM, 2 CBD), segmentation.ome.zarr (labels + probability per phase), model.joblib, segmentation.json, run.json; must be new or empty unless --force."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier litomo output in --out (only files litomo wrote; never a labels.tif litomo did not write)."),
    model_path: Path = typer.Option(None, "--model", help="Apply this trained model (model.joblib from an earlier run) instead of training."),
    method: str = typer.Option("forest", "--method", help="forest (random forest from scribbles) or multi-otsu (global thresholds, no scribbles)."),
    classifier: str = typer.Option("random-forest", "--classifier", help="forest method: random-forest or hgb (histogram gradient boosting)."),
    denoise: str = typer.Option("", "--denoise", help="Denoising steps before segmentation, comma-separated from nlm,unsharp,median (e.g. nlm,unsharp)."),
    voxel_size_um: float = typer.Option(None, "--voxel-size-um", help="Voxel edge length in um (overrides the file's)."),
    scribble_values: str = typer.Option("pore=1,am=2,cbd=3", "--scribble-values", help="Which scribble value is which phase."),
    phase_order: str = typer.Option("pore,cbd,am", "--phase-order", help="multi-otsu: phases by increasing grey value (2 or 3 of pore, am, cbd)."),
    sigmas: str = typer.Option(None, "--sigmas", help="Feature scales in voxels (default 0.7,1.5,3,6; with --model: the model's)."),
    n_estimators: int = typer.Option(20, "--n-estimators", help="Trees in the random forest (default: SegmentSettings.n_estimators; boosting iterations with --classifier hgb)."),
    max_samples: int = typer.Option(20000, "--max-samples-per-class", help="Scribbled voxels used per class at most (balanced subsampling)."),
    chunks: int = typer.Option(None, "--chunks", help="Block edge (voxels) for chunk-wise feature computation; default from --memory-mb."),
    memory_mb: float = typer.Option(512.0, "--memory-mb", help="Memory budget for one block's features (MiB)."),
    n_jobs: int = typer.Option(-1, "--n-jobs", help="Threads for the random forest (-1 = all cores)."),
    majority: bool = typer.Option(False, "--majority", help="Clean the labels with a strict 3x3x3 majority vote (a voxel takes a class held by >= 14 of its 27 neighbourhood voxels): removes isolated misclassified voxels and one-voxel boundary excursions that inflate surface areas of thin phases such as carbon binder."),
    seed: int = typer.Option(0, "--seed", help="Seed for subsampling and the forest (same seed = identical result)."),
    reference: Path = typer.Option(None, "--reference", help="Reference labelling on the same grid (e.g. FIB-SEM or a hand-labelled sub-volume): adds Dice, IoU and volume-fraction differences per phase to segmentation.json (reference_agreement)."),
    reference_values: str = typer.Option("pore=0,am=1,cbd=2", "--reference-values", help="Which value is which phase in --reference; other values are unlabelled and not compared."),
    scheduler: str = typer.Option(None, "--scheduler", help=COMMAND_SCHEDULER_HELP + " There: staging and denoising the grey volume, sampling it, the forest's prediction (one task per block, the model sent to the workers once; the workers read the staged grey volume in OUT/work, so a remote cluster needs that folder on a shared file system), writing labels.tif and the OME-Zarr; training runs in this process (--n-jobs threads)."),
    as_json: bool = typer.Option(False, "--json", help="Print segmentation.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each stage (and which one failed)."),
) -> None:
    """Segment a greyscale volume into pore / AM / CBD.

    With --labels, a random forest is trained on multi-scale filter features of the painted voxels and applied block by block (memory bounded); with --model an existing model is applied; --method multi-otsu needs neither.

    Writes OUT/labels.tif (canonical codes 0 pore, 1 AM, 2 CBD), OUT/segmentation.ome.zarr (forest: labels and one uint8 probability map per phase, streamed block by block), OUT/model.joblib (JSON header line + joblib) and OUT/segmentation.json (per-class validation accuracy, volume fractions, AM fraction after 1-voxel dilation/erosion, Otsu inter-class variance before/after denoising, parameters).
    """
    from litomo.workflows.segment import SegmentSettings, run_segment

    setup_logging(verbose)
    settings = SegmentSettings(
        method=method.strip().lower(), classifier=classifier.strip().lower(), denoise=_items(denoise), voxel_size_um=voxel_size_um,
        scribble_values=_parse_mapping(scribble_values, "--scribble-values"), phase_order=_items(phase_order),
        sigmas=_parse_floats(sigmas, "--sigmas") if sigmas else None, n_estimators=n_estimators,
        max_samples_per_class=max_samples, chunks=chunks, memory_mb=memory_mb, n_jobs=n_jobs, seed=seed,
        majority=majority)
    ref_values = _parse_mapping(reference_values, "--reference-values") if reference else None
    with command_scheduler(scheduler):  # an unreachable address fails here, before --out is made
        result = run_segment(grey_path, out, settings, scribbles_path=scribbles_path, model_path=model_path,
                             reference_path=reference, reference_values=ref_values,
                             mode="force" if force else "new", progress=progress_bar(not (quiet or as_json)))
    if as_json:
        print_json(result.report)
    else:
        fr = ", ".join(f"{k} {v:.4f}" for k, v in result.report["volume_fractions"].items())
        typer.echo(f"wrote {result.files[0]} ({fr})", err=True)
        agree = result.report.get("reference_agreement")
        if agree:
            dice = ", ".join(f"{k} {v:.3f}" for k, v in agree["dice"].items())
            typer.echo(f"Dice vs {reference}: {dice}", err=True)

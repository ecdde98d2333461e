"""``litomo segment``: greyscale volume -> three-phase label volume (random forest or multi-Otsu)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging, to_jsonable
from litomo.errors import LitomoError
from litomo.phases import PHASE_CODES

log = logging.getLogger(__name__)


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise LitomoError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not vals or not all(np.isfinite(v) and v > 0 for v in vals):
        raise LitomoError(f"{option}: expected positive numbers, got {text!r}")
    return vals


def _parse_mapping(text: str, option: str) -> dict[str, int]:
    from litomo.phases import parse_label_mapping

    try:
        mapping = parse_label_mapping(text)
    except LitomoError as exc:
        raise LitomoError(str(exc).replace("--labels", option)) from None
    if 0 in mapping.values():
        raise LitomoError(f"{option}: 0 means 'unlabelled' in scribbles; give each phase a non-zero value")
    return mapping


def _parse_order(text: str) -> tuple[str, ...]:
    order = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    bad = [p for p in order if p not in PHASE_CODES]
    if bad or len(set(order)) != len(order) or len(order) < 2:
        raise LitomoError(f"--phase-order: expected 2 or 3 distinct phases from {', '.join(PHASE_CODES)} "
                          f"by increasing grey value, got {text!r}")
    return order


@app.command()
def segment(
    grey_path: Path = typer.Argument(..., metavar="GREY", help="Greyscale volume (TIFF, HDF5, OME-Zarr, ...)."),
    scribbles_path: Path = typer.Option(None, "--labels", help="Scribble volume on the same grid: 0 = unlabelled, other values = phases (see --scribble-values), e.g. painted in napari."),
    out: Path = typer.Option(..., "--out", help="Output directory: labels.tif (0 pore, 1 AM, 2 CBD), model.joblib, segmentation.json."),
    model_path: Path = typer.Option(None, "--model", help="Apply this trained model (model.joblib from an earlier run) instead of training."),
    method: str = typer.Option("forest", "--method", help="forest (random forest from scribbles) or multi-otsu (global thresholds, no scribbles)."),
    denoise: str = typer.Option("", "--denoise", help="Denoising steps before segmentation, comma-separated from nlm,unsharp,median (e.g. nlm,unsharp)."),
    voxel_size_um: float = typer.Option(None, "--voxel-size-um", help="Voxel edge length in um (overrides the file's)."),
    scribble_values: str = typer.Option("pore=1,am=2,cbd=3", "--scribble-values", help="Which scribble value is which phase."),
    phase_order: str = typer.Option("pore,cbd,am", "--phase-order", help="multi-otsu: phases by increasing grey value (2 or 3 of pore, am, cbd)."),
    sigmas: str = typer.Option(None, "--sigmas", help="Feature scales in voxels (default 0.7,1.5,3,6; with --model: the model's)."),
    n_estimators: int = typer.Option(100, "--n-estimators", help="Trees in the random forest."),
    max_samples: int = typer.Option(20000, "--max-samples-per-class", help="Scribbled voxels used per class at most (balanced subsampling)."),
    chunks: int = typer.Option(None, "--chunks", help="Block edge (voxels) for chunk-wise feature computation; default from --memory-mb."),
    memory_mb: float = typer.Option(512.0, "--memory-mb", help="Memory budget for one block's features (MiB)."),
    n_jobs: int = typer.Option(-1, "--n-jobs", help="Threads for the random forest (-1 = all cores)."),
    seed: int = typer.Option(0, "--seed", help="Seed for subsampling and the forest (same seed = identical result)."),
    as_json: bool = typer.Option(False, "--json", help="Print segmentation.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Segment a greyscale volume into pore / AM / CBD.

    With --labels, a random forest is trained on multi-scale filter features of the painted voxels and applied block by block (memory bounded); with --model an existing model is applied; --method multi-otsu needs neither.

    Writes OUT/labels.tif (canonical codes 0 pore, 1 AM, 2 CBD), OUT/model.joblib and OUT/segmentation.json (per-class out-of-bag accuracy, volume fractions, AM fraction after 1-voxel dilation/erosion, Otsu inter-class variance before/after denoising, parameters).
    """
    from litomo.io import read_volume, write_tiff
    from litomo.io.atomic import write_text_atomic
    from litomo.preprocess import denoise_pipeline, otsu_interclass_variance
    from litomo.segment.features import DEFAULT_SIGMAS, check_grey, feature_params
    from litomo.segment.forest import am_fraction_sensitivity, load_model, train_forest
    from litomo.segment.threshold import multi_otsu_labels

    setup_logging(verbose)
    progress = progress_bar(not (quiet or as_json))
    t0 = time.perf_counter()
    method = method.strip().lower()
    if method not in ("forest", "multi-otsu"):
        raise LitomoError(f"--method must be 'forest' or 'multi-otsu', got {method!r}")
    if method == "forest" and model_path is None and scribbles_path is None:
        raise LitomoError("--method forest needs scribbles (--labels SCRIBBLES.tif) or a trained --model")
    if model_path is not None and scribbles_path is not None:
        raise LitomoError("give either --labels (train a new model) or --model (apply one), not both")
    if model_path is not None and method != "forest":
        raise LitomoError("--model applies a random forest; drop --method multi-otsu")
    out = out.resolve()
    for p in (grey_path, scribbles_path, model_path):
        if p is not None and p.resolve().parent == out and p.name in ("labels.tif", "model.joblib"):
            raise LitomoError(f"{p}: would be overwritten by the output; choose another --out")

    vol = read_volume(grey_path, voxel_size_um=voxel_size_um)
    grey = vol.numpy()
    check_grey(grey, f"{grey_path}")
    steps = tuple(s.strip().lower() for s in denoise.split(",") if s.strip())
    model = None
    if model_path is not None:
        sig = _parse_floats(sigmas, "--sigmas") if sigmas else None
        model = load_model(model_path, feature_params_expected=feature_params(sig) if sig else None)
        if not model.class_names:
            raise LitomoError(f"{model_path}: model does not say which class is which phase; retrain it with litomo segment")
        trained_steps = tuple(model.preprocessing)
        if not steps:
            steps = trained_steps  # predict on grey values prepared like the training ones
        elif steps != trained_steps:
            raise LitomoError(f"--denoise {','.join(steps)} differs from the model's training preprocessing "
                              f"{','.join(trained_steps) or '(none)'}; the grey values would not match")
    params: dict[str, Any] = {"method": method, "denoise": list(steps), "seed": seed,
                              "voxel_size_um": list(vol.voxel_size_um), "grey": str(grey_path)}
    report: dict[str, Any] = {"parameters": params}
    report["otsu_interclass_variance"] = {"before": otsu_interclass_variance(grey, seed=seed)}
    if steps:
        grey, record = denoise_pipeline(grey, steps, chunks=chunks, return_record=True)
        params["denoise_steps"] = record
        report["otsu_interclass_variance"]["after"] = otsu_interclass_variance(grey, seed=seed)
    else:
        report["otsu_interclass_variance"]["after"] = report["otsu_interclass_variance"]["before"]

    if method == "multi-otsu":
        order = _parse_order(phase_order)
        params["phase_order"] = list(order)
        labels = multi_otsu_labels(grey, classes=len(order), order=order, seed=seed)
    else:
        sig = _parse_floats(sigmas, "--sigmas") if sigmas else None
        if model is not None:
            params["model"] = str(model_path)
        else:
            mapping = _parse_mapping(scribble_values, "--scribble-values")
            svol = read_volume(scribbles_path, voxel_size_um=vol.voxel_size_um)
            scribbles = svol.numpy()
            unknown = sorted(set(np.unique(scribbles).tolist()) - set(mapping.values()) - {0})
            if unknown:
                raise LitomoError(f"{scribbles_path}: scribble values {unknown[:8]} are not in --scribble-values "
                                  f"{scribble_values!r} (0 = unlabelled)")
            model = train_forest(grey, scribbles, sigmas=sig or DEFAULT_SIGMAS, n_estimators=n_estimators,
                                 max_samples_per_class=max_samples, seed=seed, n_jobs=n_jobs,
                                 chunks=chunks, memory_mb=memory_mb, progress=progress)
            inverse = {v: k for k, v in mapping.items()}
            model.class_names = {int(c): inverse[int(c)] for c in model.classes_}
            model.preprocessing = list(steps)
            params.update(scribbles=str(scribbles_path), scribble_values=mapping, n_estimators=n_estimators,
                          max_samples_per_class=max_samples)
        params["feature_params"] = model.feature_params
        pred = model.predict(grey, chunks=chunks, progress=progress, memory_mb=memory_mb, n_jobs=n_jobs)
        lut = np.zeros(int(max(model.classes_.max(), 0)) + 1, dtype=np.uint8)
        for c, name in model.class_names.items():
            lut[int(c)] = PHASE_CODES[name]
        labels = lut[pred]
        report["oob_accuracy"] = model.oob_accuracy
        report["oob_accuracy_per_class"] = {model.class_names[c]: a for c, a in model.oob_accuracy_per_class.items()}
        report["training_samples_per_class"] = {model.class_names[c]: n for c, n in model.n_samples_per_class.items()}

    present = sorted(set(np.unique(labels).tolist()))
    report["volume_fractions"] = {name: float((labels == code).mean()) for name, code in PHASE_CODES.items()
                                  if code in present or method == "multi-otsu" and name in params.get("phase_order", [])}
    if PHASE_CODES["am"] in present:
        report["am_fraction_sensitivity"] = am_fraction_sensitivity(labels, PHASE_CODES["am"])
    report["elapsed_s"] = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    write_tiff(out / "labels.tif", vol.with_array(labels, step="segment", method=method))
    if model is not None:
        model.save(out / "model.joblib")
        report["model"] = str(out / "model.joblib")
    write_text_atomic(out / "segmentation.json", json.dumps(to_jsonable(report), indent=2) + "\n")
    if as_json:
        print_json(report)
    else:
        fr = ", ".join(f"{k} {v:.4f}" for k, v in report["volume_fractions"].items())
        typer.echo(f"wrote {out / 'labels.tif'} ({fr})", err=True)

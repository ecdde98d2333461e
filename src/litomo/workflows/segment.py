"""Segmentation workflow (``litomo segment``): greyscale volume -> pore / AM / CBD labels.

A random forest trained on scribbles (or a saved model), or global multi-Otsu thresholds.
:func:`segment_volume` works on arrays; :func:`run_segment` reads the files, checks the
options before any computation and writes the output folder through
:class:`litomo.io.rundir.RunDir` (an existing ``labels.tif`` / ``segmentation.json`` that
litomo did not write is never replaced)::

    OUT/labels.tif (0 pore, 1 AM, 2 CBD), OUT/model.joblib (classifier), OUT/segmentation.json,
    OUT/segmentation.ome.zarr (forest: labels + one uint8 probability map per phase),
    OUT/run.json (completion record, last)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.phases import PHASE_CODES
from litomo.progress import ProgressCallback
from litomo.workflows.segment_settings import SegmentSettings, check_options
from litomo.workflows.stage import stage

log = logging.getLogger(__name__)

#: random voxels behind the Otsu separability figure and the multi-Otsu thresholds (a fixed
#: cost of the streamed path: ~28 bytes per sample for the indices, their order and values)
OTSU_SAMPLES = 2_000_000
MULTI_OTSU_SAMPLES = 4_000_000


@dataclass
class SegmentResult:
    """Labels (canonical codes 0 pore, 1 AM, 2 CBD), the report (``segmentation.json``), the model."""

    labels: Any  # ndarray from segment_volume, dask array from segment_streamed / run_segment
    report: dict[str, Any]
    model: Any | None = None
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)


def _load_model(model_path: Path, settings: SegmentSettings) -> tuple[Any, tuple[str, ...]]:
    """The saved model and the denoising steps to use with it (its training ones)."""
    from litomo.segment.features import feature_params
    from litomo.segment.model_file import load_model

    expected = feature_params(settings.sigmas) if settings.sigmas else None
    model = load_model(model_path, feature_params_expected=expected)
    if not model.class_names:
        raise DataError(f"{model_path}: model does not say which class is which phase; retrain it with litomo segment")
    trained = tuple(model.preprocessing)
    if settings.denoise and settings.denoise != trained:
        raise DataError(f"--denoise {','.join(settings.denoise)} differs from the model's training preprocessing "
                        f"{','.join(trained) or '(none)'}; the grey values would not match")
    return model, trained


def _prepare(grey: np.ndarray, steps: tuple[str, ...], settings: SegmentSettings,
             report: dict[str, Any]) -> np.ndarray:
    from litomo.denoise import denoise_pipeline, otsu_interclass_variance
    from litomo.workflows.segment_stream import sample_values

    def separability(g: np.ndarray) -> float:
        return otsu_interclass_variance(sample_values(g, OTSU_SAMPLES, settings.seed, depth=g.shape[0]),
                                        max_samples=OTSU_SAMPLES, seed=settings.seed)

    before = separability(grey)
    report["otsu_interclass_variance"] = {"before": before, "after": before}
    if steps:
        grey, record = denoise_pipeline(grey, steps, chunks=settings.chunks, return_record=True)
        report["parameters"]["denoise_steps"] = record
        report["otsu_interclass_variance"]["after"] = separability(grey)
    return grey


def _train(grey: np.ndarray, scribbles: Any, settings: SegmentSettings, steps: tuple[str, ...],
           progress: ProgressCallback | None) -> Any:
    from litomo.segment.features import DEFAULT_SIGMAS
    from litomo.segment.forest import ForestSettings, train_forest
    from litomo.segment.scribbles import sparse_labels

    mapping = dict(settings.scribble_values)
    scribbles = sparse_labels(scribbles)
    unknown = sorted(set(scribbles.classes.tolist()) - set(mapping.values()) - {0})
    if unknown:
        raise DataError(f"--labels: scribble values {unknown[:8]} are not in --scribble-values "
                        f"{mapping} (0 = unlabelled)")
    forest = ForestSettings(classifier=settings.classifier, sigmas=settings.sigmas or DEFAULT_SIGMAS,
                            n_estimators=settings.n_estimators, max_samples_per_class=settings.max_samples_per_class,
                            seed=settings.seed, n_jobs=settings.n_jobs)
    model = train_forest(grey, scribbles, forest, chunks=settings.chunks, memory_mb=settings.memory_mb,
                         progress=progress)
    inverse = {v: k for k, v in mapping.items()}
    model.class_names = {int(c): inverse[int(c)] for c in model.classes_}
    model.preprocessing = list(steps)
    return model


def _model_for(grey: Any, scribbles: Any, model: Any | None, settings: SegmentSettings,
               steps: tuple[str, ...], progress: ProgressCallback | None, report: dict[str, Any]) -> Any:
    """The given model, or one trained on the scribbles (its parameters recorded in ``report``)."""
    if model is not None:
        return model
    if scribbles is None:
        raise DataError("--method forest needs scribbles (--labels SCRIBBLES.tif) or a trained --model")
    report["parameters"].update(scribble_values=dict(settings.scribble_values), n_estimators=settings.n_estimators,
                                max_samples_per_class=settings.max_samples_per_class)
    return _train(grey, scribbles, settings, steps, progress)


def _phase_lut(model: Any) -> np.ndarray:
    """Scribble value -> canonical phase code."""
    lut = np.zeros(int(max(model.classes_.max(), 0)) + 1, dtype=np.uint8)
    for c, name in model.class_names.items():
        lut[int(c)] = PHASE_CODES[name]
    return lut


def _record_model(model: Any, report: dict[str, Any]) -> None:
    names = model.class_names
    report["parameters"]["feature_params"] = model.feature_params
    report["parameters"]["classifier"] = type(model.classifier).__name__
    report["validation"] = model.validation
    report["validation_accuracy"] = model.validation_accuracy
    report["validation_accuracy_per_class"] = {names[c]: a for c, a in model.validation_accuracy_per_class.items()}
    report["training_samples_per_class"] = {names[c]: n for c, n in model.n_samples_per_class.items()}


def _forest_labels(grey: np.ndarray, model: Any, settings: SegmentSettings, report: dict[str, Any],
                   progress: ProgressCallback | None, store: Path | None = None) -> np.ndarray:
    if store is None:
        pred = model.predict(grey, chunks=settings.chunks, progress=progress, memory_mb=settings.memory_mb,
                             n_jobs=settings.n_jobs)
    else:  # labels and probabilities streamed block by block to a zarr store (run_segment publishes it)
        import zarr

        model.predict_to_zarr(grey, store, chunks=settings.chunks, memory_mb=settings.memory_mb,
                              n_jobs=settings.n_jobs, progress=progress)
        pred = zarr.open_group(str(store), mode="r")["labels"][...]
    _record_model(model, report)
    return _phase_lut(model)[pred]


def segment_volume(grey: np.ndarray, settings: SegmentSettings, *, scribbles: Any = None,
                   model: Any | None = None, progress: ProgressCallback | None = None,
                   prediction_store: Path | None = None) -> SegmentResult:
    """Segment a greyscale volume (no files written).

    Parameters
    ----------
    grey : ndarray, (z, y, x)
        Greyscale volume (checked by :func:`litomo.segment.features.check_grey`).
    settings : SegmentSettings
    scribbles : ndarray, optional
        Scribbles on the same grid (forest training).
    model : optional
        A model from :func:`litomo.segment.model_file.load_model` (forest application); its
        training preprocessing is applied when ``settings.denoise`` is empty.
    progress : callable, optional
    prediction_store : path, optional
        Forest: stream labels and class probabilities to this zarr store
        (:meth:`litomo.segment.forest.SegmentationModel.predict_to_zarr`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> grey = rng.normal(0, 0.05, (8, 8, 8)) + np.repeat([0.0, 1.0], 4)[None, None, :]
    >>> r = segment_volume(grey, SegmentSettings(method="multi-otsu", phase_order=("pore", "am")))
    >>> r.report["volume_fractions"]
    {'pore': 0.5, 'am': 0.5}
    """
    from litomo.segment.features import check_grey
    from litomo.segment.forest import am_fraction_sensitivity

    t0 = time.perf_counter()
    check_grey(grey, "the greyscale volume")
    steps = settings.denoise or (tuple(model.preprocessing) if model is not None else ())
    report: dict[str, Any] = {"parameters": {"method": settings.method, "denoise": list(steps),
                                             "seed": settings.seed}}
    grey = _prepare(grey, steps, settings, report)
    if settings.method == "multi-otsu":
        report["parameters"]["phase_order"] = list(settings.phase_order)
        labels = _otsu_coder(grey, settings, grey.shape[0])(grey)
    else:
        model = _model_for(grey, scribbles, model, settings, steps, progress, report)
        labels = _forest_labels(grey, model, settings, report, progress, prediction_store)
    if settings.majority:
        from litomo.segment.cleanup import majority_filter

        labels = majority_filter(labels, len(PHASE_CODES))
        report["parameters"]["majority"] = True
    present = set(np.unique(labels).tolist())
    keep = set(settings.phase_order) if settings.method == "multi-otsu" else set()
    report["volume_fractions"] = {name: float((labels == code).mean()) for name, code in PHASE_CODES.items()
                                  if code in present or name in keep}
    if PHASE_CODES["am"] in present:
        report["am_fraction_sensitivity"] = am_fraction_sensitivity(labels, PHASE_CODES["am"])
    report["elapsed_s"] = time.perf_counter() - t0
    return SegmentResult(labels=labels, report=report, model=model)


def _block_and_slab(grey: Any, model: Any, settings: SegmentSettings) -> tuple[tuple[int, int, int], int]:
    """Prediction block shape (also the staged store's chunks) and the z-slab depth of reads."""
    from litomo.segment.blocks import normalise_chunks
    from litomo.segment.features import DEFAULT_SIGMAS, feature_halo, feature_names, feature_params
    from litomo.workflows.segment_stream import slab_depth

    params = model.feature_params if model is not None else feature_params(settings.sigmas or DEFAULT_SIGMAS)
    halo = feature_halo(params["sigmas"], structure_tensor=params["structure_tensor"])
    shape = tuple(int(n) for n in grey.shape)
    block = normalise_chunks(settings.chunks, shape, halo, len(feature_names(params)) + 3, settings.memory_mb)
    return block, slab_depth(shape, max(np.dtype(grey.dtype).itemsize, 4), settings.memory_mb)


def _otsu_coder(grey: Any, settings: SegmentSettings, depth: int) -> Any:
    """Multi-Otsu thresholds from the voxel sample; returns grey -> canonical codes."""
    from litomo.segment.threshold import multi_otsu_thresholds
    from litomo.workflows.segment_stream import otsu_coder, sample_values

    sample = sample_values(grey, MULTI_OTSU_SAMPLES, settings.seed, depth=depth)
    thresholds = multi_otsu_thresholds(sample.reshape(1, 1, -1), len(settings.phase_order),
                                       max_samples=MULTI_OTSU_SAMPLES, seed=settings.seed)
    return otsu_coder(thresholds, settings.phase_order)


def _record_fractions(report: dict[str, Any], counts: np.ndarray, bracket: dict[str, float],
                      settings: SegmentSettings) -> None:
    keep = set(settings.phase_order) if settings.method == "multi-otsu" else set()
    n = float(counts.sum())
    report["volume_fractions"] = {name: float(counts[code]) / n for name, code in PHASE_CODES.items()
                                  if counts[code] > 0 or name in keep}
    if counts[PHASE_CODES["am"]] > 0:
        report["am_fraction_sensitivity"] = bracket


def segment_streamed(grey: Any, settings: SegmentSettings, work: Path, *, scribbles: Any = None,
                     model: Any | None = None, progress: ProgressCallback | None = None) -> SegmentResult:
    """:func:`segment_volume` of a lazy (dask) volume, never holding it whole.

    The grey volume is denoised block-wise and staged into ``work/grey.zarr`` (chunks = the
    prediction blocks); Otsu figures and multi-Otsu thresholds come from the same random
    voxel sample as in memory (gathered slab by slab); the forest streams labels and
    probabilities into ``work/prediction.zarr``. ``labels`` of the result is a dask array
    over that store (or over the staged grey for multi-Otsu). Labels, fractions and figures
    equal :func:`segment_volume`'s.
    """
    from litomo.denoise import otsu_interclass_variance
    from litomo.segment.features import check_grey
    from litomo.workflows import segment_stream as ss

    t0 = time.perf_counter()
    check_grey(grey, "the greyscale volume")
    steps = settings.denoise or (tuple(model.preprocessing) if model is not None else ())
    report: dict[str, Any] = {"parameters": {"method": settings.method, "denoise": list(steps),
                                             "seed": settings.seed}}
    block, depth = _block_and_slab(grey, model, settings)
    before = otsu_interclass_variance(ss.sample_values(grey, OTSU_SAMPLES, settings.seed, depth=depth),
                                      max_samples=OTSU_SAMPLES, seed=settings.seed)
    report["otsu_interclass_variance"] = {"before": before, "after": before}
    grey, record = ss.stage_grey(grey, work / "grey.zarr", block, steps)
    if steps:
        report["parameters"]["denoise_steps"] = record
        report["otsu_interclass_variance"]["after"] = otsu_interclass_variance(
            ss.sample_values(grey, OTSU_SAMPLES, settings.seed, depth=depth), max_samples=OTSU_SAMPLES,
            seed=settings.seed)
    import dask.array as da
    import zarr

    if settings.method == "multi-otsu":
        report["parameters"]["phase_order"] = list(settings.phase_order)
        to_labels = _otsu_coder(grey, settings, depth)
        source = grey
    else:
        model = _model_for(grey, scribbles, model, settings, steps, progress, report)
        store = model.predict_to_zarr(grey, work / "prediction.zarr", chunks=block, memory_mb=settings.memory_mb,
                                      n_jobs=settings.n_jobs, progress=progress)
        _record_model(model, report)
        lut = _phase_lut(model)
        source = zarr.open_group(str(store), mode="r")["labels"]

        def to_labels(b: np.ndarray) -> np.ndarray:
            return lut[b]
    labels = da.from_zarr(source).map_blocks(to_labels, dtype=np.uint8)
    if settings.majority:
        from litomo.segment.cleanup import majority_filter

        # dask's "reflect" boundary mirrors like scipy's, so blocks equal the in-memory filter
        labels = labels.map_overlap(majority_filter, depth=1, boundary="reflect", dtype=np.uint8,
                                    n_classes=len(PHASE_CODES))
        report["parameters"]["majority"] = True

    def region(sl: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(labels[sl]) if settings.majority else to_labels(np.asarray(source[sl]))
    counts, bracket = ss.label_summary(region, tuple(grey.shape), block)
    _record_fractions(report, counts, bracket, settings)
    report["elapsed_s"] = time.perf_counter() - t0
    return SegmentResult(labels=labels, report=report, model=model)


def _read_inputs(grey_path: Path, scribbles_path: Path | None, model_path: Path | None,
                 settings: SegmentSettings) -> tuple[Any, Any, Any, SegmentSettings]:
    from dataclasses import replace

    from litomo.io import read_volume
    from litomo.workflows.segment_stream import slab_depth

    # lazily, in z-slabs of at most a quarter of --memory-mb (an OME-Zarr keeps its own chunks)
    vol = read_volume(grey_path, voxel_size_um=settings.voxel_size_um, lazy=True)
    depth = slab_depth(vol.shape, max(np.dtype(vol.dtype).itemsize, 4), settings.memory_mb)
    if max(vol.array.chunks[0]) > depth and not grey_path.name.lower().endswith(".zarr"):
        vol = read_volume(grey_path, voxel_size_um=settings.voxel_size_um, lazy=True,
                          chunks=(depth, *vol.shape[1:]))
    scribbles = model = None
    if model_path is not None:
        model, trained = _load_model(model_path, settings)
        settings = replace(settings, denoise=settings.denoise or trained)
    if scribbles_path is not None:  # only the painted voxels are kept, read in z-slabs
        from litomo.segment.scribbles import sparse_labels

        lazy = read_volume(scribbles_path, voxel_size_um=vol.voxel_size_um, lazy=True)
        scribbles = sparse_labels(lazy.array, slab_depth(lazy.shape, max(np.dtype(lazy.dtype).itemsize, 8),
                                                        settings.memory_mb))
    return vol, scribbles, model, settings


def _publish_prediction(path: Path, store: Path, model: Any, vol: Any) -> Path:
    """Labels (canonical codes) + one uint8 probability map per phase as OME-Zarr, from the
    streamed prediction store, chunk by chunk (nothing is loaded whole)."""
    import dask.array as da
    import zarr

    from litomo.io.omezarr import write_ome_zarr

    group = zarr.open_group(str(store), mode="r")
    lut = _phase_lut(model)
    labels = da.from_zarr(group["labels"])
    prob = da.from_zarr(group["probability"])
    images = {"labels": vol.with_array(labels.map_blocks(lambda b: lut[b], dtype=np.uint8), step="segment")}
    for i, c in enumerate(model.classes_):
        name = model.class_names[int(c)]
        images[f"probability_{name}"] = vol.with_array(prob[i], step="segment", probability_of=name,
                                                       scale="probability x 255")
    return write_ome_zarr(path, images, chunks=group["labels"].chunks, downsample={"labels": "nearest"})


def _open_reference(path: Path, values: Mapping[str, int] | None, vol: Any) -> Any:
    """The reference labelling as a lazy array, its shape and phase values checked."""
    from litomo.io import read_volume
    from litomo.metrics.agreement import check_reference_values

    check_reference_values(values)
    ref = read_volume(path, voxel_size_um=vol.voxel_size_um, lazy=True).array
    if tuple(ref.shape) != tuple(vol.shape):
        raise DataError(f"--reference: shape {tuple(ref.shape)} differs from the greyscale volume's "
                        f"{tuple(vol.shape)}")
    return ref


def run_segment(grey_path: str | os.PathLike, out_dir: str | os.PathLike, settings: SegmentSettings, *,
                scribbles_path: str | os.PathLike | None = None, model_path: str | os.PathLike | None = None,
                reference_path: str | os.PathLike | None = None,
                reference_values: Mapping[str, int] | None = None,
                mode: str = "new", progress: ProgressCallback | None = None) -> SegmentResult:
    """``litomo segment`` from Python: check, read, segment, write ``out_dir``.

    ``mode="new"`` refuses a non-empty folder (so an existing ``labels.tif`` is never silently
    replaced); ``"force"`` replaces only an earlier litomo output there (``--force``). With
    ``reference_path`` (``--reference``; phase values ``reference_values``, voxels of other
    values unlabelled) the report gets ``reference_agreement``
    (:func:`litomo.metrics.agreement.reference_agreement`: Dice, IoU, volume-fraction differences).
    """
    from litomo.io import read_volume, write_tiff
    from litomo.io.atomic import write_text_atomic
    from litomo.io.rundir import RunDir, to_jsonable
    from litomo.workflows.segment_stream import slab_depth

    grey_path = Path(grey_path)
    scribbles_path = Path(scribbles_path) if scribbles_path is not None else None
    model_path = Path(model_path) if model_path is not None else None
    reference_path = Path(reference_path) if reference_path is not None else None
    check_options(settings, scribbles_path, model_path)
    inputs = [p for p in (grey_path, scribbles_path, model_path, reference_path) if p is not None]
    with RunDir.open(out_dir, kind="segment", mode=mode, inputs=inputs) as rd:
        with stage(log, "segment", "reading inputs"):
            vol, scribbles, model, settings = _read_inputs(grey_path, scribbles_path, model_path, settings)
            ref = None
            if reference_path is not None:  # opened and checked before the (long) segmentation
                ref = _open_reference(reference_path, reference_values, vol)
        store = rd.work / "prediction.zarr" if settings.method == "forest" else None
        with stage(log, "segment", f"segmentation ({settings.method})"):
            result = segment_streamed(vol.array, settings, rd.work, scribbles=scribbles, model=model,
                                      progress=progress)
        params = result.report["parameters"]
        params.update(voxel_size_um=list(vol.voxel_size_um), grey=str(grey_path))
        if scribbles_path is not None:
            params["scribbles"] = str(scribbles_path)
        if model_path is not None:
            params["model"] = str(model_path)
        with stage(log, "segment", "writing outputs"):
            result.files = [rd.output("labels.tif")]
            write_tiff(result.files[0], vol.with_array(result.labels, step="segment", method=settings.method))
            if store is not None:
                result.files.append(rd.output("segmentation.ome.zarr"))
                _publish_prediction(result.files[-1], store, result.model, vol)
            rd.remove("work")  # the staged grey and the prediction store: labels now read from labels.tif
            result.labels = read_volume(result.files[0], lazy=True).array
        if ref is not None:  # slab by slab: neither the labels nor the reference is held whole
            from litomo.workflows.segment_stream import compare_reference

            with stage(log, "segment", "comparing with the reference"):
                depth = slab_depth(tuple(vol.shape), 8, settings.memory_mb)
                result.report["reference_agreement"] = compare_reference(result.labels, ref, reference_values,
                                                                         depth, progress)
                result.report["reference_agreement"]["reference"] = str(reference_path)
        with stage(log, "segment", "writing outputs"):
            if result.model is not None:
                result.files.append(rd.output("model.joblib"))
                result.model.save(result.files[-1])
                result.report["model"] = str(result.files[-1])
            result.files.append(rd.output("segmentation.json"))
            write_text_atomic(result.files[-1], json.dumps(to_jsonable(result.report), indent=2) + "\n")
        result.files.append(rd.complete({"kind": "segment", "parameters": params,
                                         "outputs": [p.name for p in result.files]}))
        result.out_dir = rd.root
    return result


__all__ = ["SegmentResult", "SegmentSettings", "check_options", "run_segment", "segment_streamed", "segment_volume"]

"""A trained pixel classifier and everything needed to apply it again (chunk-wise).

Prediction runs block by block with the features' halo, so the result equals whole-volume
prediction while memory stays bounded; labels and class probabilities can be streamed block
by block into a zarr store. A random forest is evaluated by :mod:`litomo.segment.forest_eval`
(a numba walk of the fitted trees: the same probabilities as ``predict_proba``, faster);
boosting keeps scikit-learn's own ``predict_proba``.

Model files: one JSON header line (format, litomo and scikit-learn versions, feature record
and its hash, classes) followed by the joblib payload, so a model from another feature
definition or format is refused from the header alone, before anything is unpickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from litomo.progress import ProgressCallback
from litomo.segment.blocks import as_rows, block_features, iter_blocks, normalise_chunks
from litomo.segment.features import (
    FEATURES_VERSION,
    check_grey,
    feature_halo,
    feature_names,
    feature_set_hash,
    features_unpadded,
)
from litomo.segment.forest_eval import CompiledForest, compile_forest

log = logging.getLogger(__name__)

MODEL_FORMAT = "litomo-segmentation-model"
MODEL_FORMAT_VERSION = 2
HEADER_MAX_BYTES = 1 << 20


@dataclass
class SegmentationModel:
    """A trained classifier plus everything needed to apply it again.

    Attributes
    ----------
    classifier : sklearn classifier
        ``HistGradientBoostingClassifier`` or ``RandomForestClassifier``.
    feature_params : dict
        The feature record (:func:`litomo.segment.features.feature_params`).
    classes_ : ndarray
        Scribble values the classifier predicts (in increasing order).
    validation_accuracy, validation_accuracy_per_class : float, dict
        Accuracy on scribbled voxels the classifier did not learn from: out-of-bag
        (random forest) or a stratified 20 % hold-out (hgb; the final model is then refit
        on all samples). ``validation`` names which.
    n_samples_per_class : dict
        Training voxels used per class (after balanced subsampling).
    class_names : dict
        Optional ``{value: phase name}`` (set by the CLI from the scribble mapping).
    train_dtype : str
        dtype of the greyscale volume the model was trained on (a warning is logged when a
        volume of another dtype is predicted: grey units may differ).
    preprocessing : list of str
        Denoising steps applied before training (the CLI applies the same before predicting).
    feature_scale : ndarray, optional
        Per-feature factor applied before the classifier (1 / standard deviation of the
        training features); None for models saved before it existed.
    """

    classifier: Any
    feature_params: dict[str, Any]
    classes_: np.ndarray
    validation_accuracy_per_class: dict[int, float]
    validation_accuracy: float
    validation: str
    n_samples_per_class: dict[int, int]
    seed: int
    class_names: dict[int, str] = field(default_factory=dict)
    train_dtype: str = "float32"
    preprocessing: list[str] = field(default_factory=list)
    feature_scale: np.ndarray | None = None

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.feature_params)

    @property
    def halo(self) -> int:
        return feature_halo(self.feature_params["sigmas"], structure_tensor=self.feature_params["structure_tensor"])

    def compiled_forest(self) -> CompiledForest | None:
        """The random forest as litomo's numba walk evaluates it (the feature scale folded into
        its thresholds); None for other classifiers."""
        return compile_forest(self.classifier, getattr(self, "feature_scale", None))

    def _proba_block(self, f: np.ndarray, compiled: CompiledForest | None = None,
                     batch: int = 1_000_000) -> np.ndarray:
        """Class probabilities ``(C, z, y, x)`` float32 of one block's features."""
        if compiled is not None:  # a random forest: same probabilities, scale folded into its thresholds,
            # features read in place (no row-major copy of the block)
            return compiled.predict_proba(f.reshape(f.shape[0], -1).T).reshape((self.classes_.size, *f.shape[1:]))
        rows = as_rows(f)
        out = np.empty((self.classes_.size, rows.shape[0]), dtype=np.float32)
        for a in range(0, rows.shape[0], batch):  # bounds predict_proba's (n, classes) float64 buffer
            out[:, a : a + batch] = self.classifier.predict_proba(_scaled(rows[a : a + batch], self)).T
        return out.reshape((self.classes_.size, *f.shape[1:]))

    def _labels_of(self, proba: np.ndarray) -> np.ndarray:
        # argmax of the probabilities is what both classifiers' predict() returns (first of
        # equal maxima); numpy's argmax along the class axis copies the block transposed first
        # (0.037 vs 0.003 us/voxel for this loop)
        out = np.empty(proba.shape[1:], dtype=self.classes_.dtype)
        _argmax_labels(proba.reshape(proba.shape[0], -1), self.classes_, out.reshape(-1))
        return out

    @contextmanager
    def _set_threads(self, n_jobs: int | None) -> Iterator[None]:
        import numba
        from threadpoolctl import threadpool_limits

        if n_jobs is not None and "n_jobs" in self.classifier.get_params():
            self.classifier.set_params(n_jobs=n_jobs)
        before = numba.get_num_threads()
        if n_jobs is not None and n_jobs > 0:  # the numba forest walk: as many threads as asked
            numba.set_num_threads(min(n_jobs, numba.config.NUMBA_NUM_THREADS))
        try:  # hgb predicts with OpenMP threads: limit them like the forest's n_jobs
            with threadpool_limits(n_jobs if n_jobs is not None and n_jobs > 0 else None, user_api="openmp"):
                yield
        finally:
            numba.set_num_threads(before)

    def iter_proba(self, grey: Any, chunks: Any = None, progress: ProgressCallback | None = None, *,
                   memory_mb: float = 512.0, n_jobs: int | None = None
                   ) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
        """Yield ``(block slices, class probabilities (C, z, y, x) float32)`` block by block.

        Blocks tile the volume on a regular grid of the block shape (see :meth:`predict`),
        so they can be written to zarr chunks of that shape one task per chunk.
        """
        check_grey(grey)
        if str(grey.dtype) != self.train_dtype:
            log.warning("model trained on %s grey values, predicting %s: make sure the grey units match",
                        self.train_dtype, grey.dtype)
        halo = self.halo
        compiled = self.compiled_forest()
        with self._set_threads(n_jobs):
            for sl, i, n in iter_blocks(grey, self.feature_params, chunks, memory_mb,
                                         extra_features=self.classes_.size):
                yield sl, self._proba_block(block_features(grey, sl, halo, self.feature_params), compiled)
                if progress is not None:
                    progress(i + 1, n, "pixel classification")

    def block_shape(self, grey_shape: tuple[int, ...], chunks: Any = None, memory_mb: float = 512.0
                    ) -> tuple[int, int, int]:
        """The block shape :meth:`iter_proba` uses for a volume of ``grey_shape``."""
        halo = self.halo
        return normalise_chunks(chunks, tuple(grey_shape), halo,
                                 len(self.feature_names) + self.classes_.size, memory_mb)

    def predict(
        self,
        grey: Any,
        chunks: Any = None,
        progress: ProgressCallback | None = None,
        *,
        memory_mb: float = 512.0,
        n_jobs: int | None = None,
    ) -> np.ndarray:
        """Classify every voxel; chunk-wise with the feature halo (same result as whole-volume).

        Parameters
        ----------
        grey : ndarray or dask array, (z, y, x)
            Greyscale volume in the same grey units as the training volume. Dask input is
            read block by block (only one padded block in memory at a time).
        chunks : int or (z, y, x), optional
            Block shape; by default the largest cube whose features fit in ``memory_mb``.
        progress : callable, optional
            ``progress(done, total, description)`` after each block.
        n_jobs : int, optional
            Threads for the classifier (default: as trained).

        Returns
        -------
        ndarray with the dtype of ``classes_``: the predicted scribble value per voxel.
        """
        out = np.empty(tuple(grey.shape), dtype=self.classes_.dtype)
        for sl, proba in self.iter_proba(grey, chunks, progress, memory_mb=memory_mb, n_jobs=n_jobs):
            out[sl] = self._labels_of(proba)
        return out

    def predict_to_zarr(self, grey: Any, store: str | Path, *, chunks: Any = None, memory_mb: float = 512.0,
                        n_jobs: int | None = None, progress: ProgressCallback | None = None) -> Path:
        """Stream labels and class probabilities into a zarr v3 group, block by block.

        Arrays: ``labels`` (z, y, x) with the dtype of ``classes_`` and ``probability``
        (C, z, y, x) uint8 (probability x 255, rounded; class order of ``classes_``). Zarr
        chunks equal the prediction blocks, so memory stays one block's worth whatever the
        volume size. Written to a temporary sibling and renamed into place (atomic).

        Examples
        --------
        >>> import tempfile, pathlib, zarr
        >>> from litomo.segment.forest import ForestSettings, train_forest
        >>> rng = np.random.default_rng(0)
        >>> grey = rng.normal(0, 20, (20, 20, 20)).astype(np.float32); grey[:, :, 10:] += 100
        >>> scrib = np.zeros(grey.shape, np.uint8); scrib[::3, ::3, 2] = 1; scrib[::3, ::3, 17] = 2
        >>> m = train_forest(grey, scrib, ForestSettings(sigmas=(1.0,), n_estimators=10, n_jobs=1))
        >>> p = m.predict_to_zarr(grey, pathlib.Path(tempfile.mkdtemp()) / "pred.zarr", chunks=8)
        >>> g = zarr.open_group(str(p), mode="r")
        >>> g["probability"].shape, bool((g["labels"][:] == m.predict(grey)).all())
        ((2, 20, 20, 20), True)
        """
        import zarr

        from litomo.io.atomic import atomic_path

        shape = tuple(int(s) for s in grey.shape)
        block = self.block_shape(shape, chunks, memory_mb)
        n_cls = int(self.classes_.size)
        with atomic_path(Path(store), directory=True) as tmp:
            root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
            config = {"write_empty_chunks": True}  # every chunk on disk: a missing one is damage
            labels = root.create_array("labels", shape=shape, chunks=block, dtype=self.classes_.dtype,
                                       fill_value=0, dimension_names=("z", "y", "x"), config=config)
            probs = root.create_array("probability", shape=(n_cls, *shape), chunks=(n_cls, *block),
                                      dtype=np.uint8, fill_value=0, dimension_names=("c", "z", "y", "x"),
                                      config=config)
            root.attrs.update({"litomo": {"classes": self.classes_.tolist(),
                                          "class_names": {str(k): v for k, v in self.class_names.items()},
                                          "probability_scale": 255}})
            if _on_cluster(grey):
                self._predict_on_cluster(grey, str(tmp), block, progress)
            else:
                for sl, proba in self.iter_proba(grey, block, progress, memory_mb=memory_mb, n_jobs=n_jobs):
                    _write_block(self, sl, proba, labels, probs)
        return Path(store)

    def _predict_on_cluster(self, grey: Any, store: str, block: tuple[int, int, int],
                            progress: ProgressCallback | None) -> None:
        """One dask.distributed task per block: the model (and its compiled trees) scattered to
        the workers once; each task reads its padded block from ``grey`` (a zarr array the
        workers can open: the staged grey volume) and writes its own zarr chunks of ``store``
        (one block = one chunk: no two tasks write the same chunk)."""
        from distributed import as_completed, default_client

        from litomo.segment.blocks import block_slices

        check_grey(grey)
        client = default_client()
        model, compiled = client.scatter([self, self.compiled_forest()], broadcast=True)
        blocks = block_slices(tuple(grey.shape), block)
        futures = [client.submit(predict_block_task, model, compiled, grey, sl, store, pure=False) for sl in blocks]
        try:
            for i, fut in enumerate(as_completed(futures)):
                fut.result()  # a failed block raises here (its own error)
                if progress is not None:
                    progress(i + 1, len(blocks), "pixel classification")
        except BaseException:
            # else the other blocks run on, writing into the store after this call failed, for as
            # long as the raised error's traceback keeps the futures alive
            client.cancel(futures)
            raise

    def predict_dask(self, grey: Any, chunks: Any = None) -> Any:
        """Lazy prediction of a dask (or numpy) volume via ``dask.array.map_overlap``.

        Gives the same labels as :meth:`predict`; use it inside larger dask pipelines.
        """
        import dask.array as da

        check_grey(grey)
        halo = self.halo
        darr = grey if isinstance(grey, da.Array) else da.from_array(grey, chunks=chunks or 128)
        if chunks is not None:
            darr = darr.rechunk(chunks)
        if min(min(c) for c in darr.chunks) < halo:
            darr = darr.rechunk(tuple(max(halo, max(c)) for c in darr.chunks))
        compiled = self.compiled_forest()

        def block(b: np.ndarray) -> np.ndarray:
            f = features_unpadded(b.astype(np.float32), self.feature_params, crop=halo)
            out = np.zeros(b.shape, dtype=self.classes_.dtype)  # map_overlap trims the rim again
            out[halo:-halo, halo:-halo, halo:-halo] = self._labels_of(self._proba_block(f, compiled))
            return out

        return da.map_overlap(block, darr, depth=halo, boundary="reflect", dtype=self.classes_.dtype)

    def header(self) -> dict[str, Any]:
        """The JSON header written in front of the model file."""
        import sklearn

        from litomo import __version__

        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "litomo_version": __version__,
            "sklearn_version": sklearn.__version__,
            "classifier": type(self.classifier).__name__,
            "features_version": FEATURES_VERSION,
            "feature_params": dict(self.feature_params),
            "feature_hash": feature_set_hash(self.feature_params),
            "feature_names": self.feature_names,
            "classes": self.classes_.tolist(),
            "class_names": {str(k): v for k, v in self.class_names.items()},
            "preprocessing": list(self.preprocessing),
            "train_dtype": self.train_dtype,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model atomically: one JSON header line, then the joblib payload.

        ``head -n 1 model.joblib`` shows the header (versions, feature hash, classes).
        """
        import joblib

        from litomo.io.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(json.dumps(self.header(), sort_keys=True).encode() + b"\n")
            joblib.dump(self, fh, compress=3)
        return path




def _write_block(model: SegmentationModel, sl: tuple[slice, ...], proba: np.ndarray, labels: Any, probs: Any) -> None:
    labels[sl] = model._labels_of(proba)
    probs[(slice(None), *sl)] = np.rint(proba * 255.0).astype(np.uint8)


def _on_cluster(grey: Any) -> bool:
    """Predict on the dask.distributed workers: a client is active and the workers can read ``grey``."""
    import zarr

    from litomo.metrics.chunked import cluster_threads

    return isinstance(grey, zarr.Array) and cluster_threads() > 0


def predict_block_task(model: SegmentationModel, compiled: CompiledForest | None, grey: Any,
                       sl: tuple[slice, ...], store: str) -> None:
    """Predict one block on a dask worker and write its chunks of the prediction ``store``."""
    import numba
    import zarr

    before = numba.get_num_threads()
    numba.set_num_threads(1)  # one worker thread = one core (numba's thread count is per thread)
    try:
        proba = model._proba_block(block_features(grey, sl, model.halo, model.feature_params), compiled)
    finally:
        numba.set_num_threads(before)
    config = {"write_empty_chunks": True}  # as predict_to_zarr made them: every chunk on disk
    _write_block(model, sl, proba, zarr.open_array(store, path="labels", mode="r+", config=config),
                 zarr.open_array(store, path="probability", mode="r+", config=config))


@njit(cache=True)
def _argmax_labels(proba, classes, out):  # pragma: no cover (compiled)
    # probabilities are never NaN (leaf fractions, softmax), so ">" is numpy's argmax here
    for i in range(proba.shape[1]):
        k = 0
        best = proba[0, i]
        for c in range(1, proba.shape[0]):
            if proba[c, i] > best:
                best = proba[c, i]
                k = c
        out[i] = classes[k]


def _scaled(rows: np.ndarray, model: SegmentationModel) -> np.ndarray:
    scale = getattr(model, "feature_scale", None)  # absent in models saved before it existed
    return rows if scale is None else rows * scale



"""Pixel classification from sparse scribbles (ilastik-style), chunk-wise.

Train a tree ensemble (scikit-learn random forest by default, or histogram gradient
boosting) on a few painted voxels per class (e.g. a napari Labels layer: 0 = unlabelled,
1, 2, ... = classes), predict every voxel block by block with a feature halo so the result
equals whole-volume prediction while memory stays bounded; labels and class probabilities
can be streamed block by block into a zarr store.

Model files: one JSON header line (format, litomo and scikit-learn versions, feature record
and its hash, classes) followed by the joblib payload, so a model from another feature
definition or format is refused from the header alone, before anything is unpickled.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.progress import ProgressCallback
from litomo.segment.blocks import as_rows, block_features, iter_blocks, normalise_chunks
from litomo.segment.features import (
    DEFAULT_SIGMAS,
    FEATURES_VERSION,
    check_grey,
    feature_halo,
    feature_names,
    feature_params,
    feature_set_hash,
    features_unpadded,
)

log = logging.getLogger(__name__)

MODEL_FORMAT = "litomo-segmentation-model"
MODEL_FORMAT_VERSION = 2
CLASSIFIERS = ("random-forest", "hgb")
HEADER_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class ForestSettings:
    """How :func:`train_forest` builds features and the classifier.

    Attributes
    ----------
    classifier : {"random-forest", "hgb"}
        ``"random-forest"``: scikit-learn ``RandomForestClassifier`` (default);
        ``"hgb"``: ``HistGradientBoostingClassifier``. Chosen by measurement
        (docs/benchmarks.md): on the same features and scribbles boosting was no more
        accurate and 2-3x slower to apply (3 classes x 100 iterations = 300 trees).
    sigmas : sequence of float
        Feature scales in voxels.
    structure_tensor : bool
        Add structure-tensor eigenvalues per sigma.
    n_estimators : int
        Trees (random forest) or boosting iterations (hgb). 30 trees predicted as accurately
        as 100 on the benchmark (0.8629 vs 0.8626) at a third of the cost.
    max_samples_per_class : int
        Each class contributes at most this many randomly drawn scribbled voxels, so a
        heavily painted class does not dominate (balanced subsampling).
    min_samples_leaf : int
        Smallest leaf (random forest; hgb uses its own default of 20).
    seed : int
        Seeds the subsampling and the classifier: same inputs + seed = identical model.
    n_jobs : int
        Threads for scikit-learn (-1 = all cores).
    """

    classifier: str = "random-forest"
    sigmas: Sequence[float] = DEFAULT_SIGMAS
    structure_tensor: bool = False
    n_estimators: int = 30
    max_samples_per_class: int = 20_000
    min_samples_leaf: int = 1
    seed: int = 0
    n_jobs: int = -1

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise DataError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {self.classifier!r}")
        if self.max_samples_per_class < 1 or self.n_estimators < 1 or self.min_samples_leaf < 1:
            raise DataError("max_samples_per_class, n_estimators and min_samples_leaf must be positive")


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------

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

    def _proba_block(self, f: np.ndarray, batch: int = 1_000_000) -> np.ndarray:
        """Class probabilities ``(C, z, y, x)`` float32 of one block's features."""
        rows = as_rows(f)
        out = np.empty((self.classes_.size, rows.shape[0]), dtype=np.float32)
        for a in range(0, rows.shape[0], batch):  # bounds predict_proba's (n, classes) float64 buffer
            out[:, a : a + batch] = self.classifier.predict_proba(_scaled(rows[a : a + batch], self)).T
        return out.reshape((self.classes_.size, *f.shape[1:]))

    def _labels_of(self, proba: np.ndarray) -> np.ndarray:
        # argmax of the probabilities is what both classifiers' predict() returns
        return self.classes_[np.argmax(proba, axis=0)]

    def _set_threads(self, n_jobs: int | None) -> Any:
        from threadpoolctl import threadpool_limits

        if n_jobs is not None and "n_jobs" in self.classifier.get_params():
            self.classifier.set_params(n_jobs=n_jobs)
        # hgb predicts with OpenMP threads: limit them like the forest's n_jobs
        return threadpool_limits(n_jobs if n_jobs is not None and n_jobs > 0 else None, user_api="openmp")

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
        with self._set_threads(n_jobs):
            for sl, i, n in iter_blocks(grey, self.feature_params, chunks, memory_mb,
                                         extra_features=self.classes_.size):
                yield sl, self._proba_block(block_features(grey, sl, halo, self.feature_params))
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
            for sl, proba in self.iter_proba(grey, block, progress, memory_mb=memory_mb, n_jobs=n_jobs):
                labels[sl] = self._labels_of(proba)
                probs[(slice(None), *sl)] = np.rint(proba * 255.0).astype(np.uint8)
        return Path(store)

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

        def block(b: np.ndarray) -> np.ndarray:
            f = features_unpadded(b.astype(np.float32), self.feature_params, crop=halo)
            out = np.zeros(b.shape, dtype=self.classes_.dtype)  # map_overlap trims the rim again
            out[halo:-halo, halo:-halo, halo:-halo] = self._labels_of(self._proba_block(f))
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


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------

def _check_scribbles(grey: Any, scribbles: Any) -> np.ndarray:
    scribbles = np.asarray(scribbles)
    if tuple(scribbles.shape) != tuple(grey.shape):
        raise DataError(f"scribbles have shape {tuple(scribbles.shape)} but the greyscale volume has "
                        f"{tuple(grey.shape)}; paint them on the same grid")
    if scribbles.dtype.kind == "f":
        if not np.all(np.isfinite(scribbles)) or not np.all(scribbles == np.round(scribbles)):
            raise DataError("scribbles must hold integer class values (0 = unlabelled)")
        scribbles = scribbles.astype(np.int64)
    elif scribbles.dtype.kind not in "biu":
        raise DataError(f"scribbles have non-integer dtype {scribbles.dtype}")
    return scribbles


def _balanced_sample(scribbles: np.ndarray, classes: np.ndarray, max_per_class: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    flat = scribbles.ravel()
    idx_all, y_all = [], []
    for c in classes:
        idx = np.flatnonzero(flat == c)
        if idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, max_per_class, replace=False))
        idx_all.append(idx)
        y_all.append(np.full(idx.size, c, dtype=classes.dtype))
    return np.concatenate(idx_all), np.concatenate(y_all)


def _sample_features(grey: Any, idx: np.ndarray, params: dict, chunks: Any, memory_mb: float,
                     progress: ProgressCallback | None) -> np.ndarray:
    """Features at the flat indices ``idx`` only, block by block (bounded memory)."""
    coords = np.unravel_index(idx, tuple(grey.shape))
    X = np.empty((idx.size, len(feature_names(params))), dtype=np.float32)
    halo = feature_halo(params["sigmas"], structure_tensor=params["structure_tensor"])
    for sl, i, n in iter_blocks(grey, params, chunks, memory_mb):
        inside = np.ones(idx.size, dtype=bool)
        for ax in range(3):
            inside &= (coords[ax] >= sl[ax].start) & (coords[ax] < sl[ax].stop)
        if inside.any():
            f = block_features(grey, sl, halo, params)
            local = tuple(coords[ax][inside] - sl[ax].start for ax in range(3))
            X[inside] = f[(slice(None), *local)].T
        if progress is not None:
            progress(i + 1, n, "training features")
    return X


def training_feature_scale(X: np.ndarray) -> np.ndarray:
    """Per-feature factor 1 / std (1 where a feature is constant), float32.

    scikit-learn's trees treat feature differences <= 1e-7 as ties (``FEATURE_THRESHOLD`` in
    ``sklearn/tree/_partitioner.pxd``): on grey values of order 1e-6 (a refractive-index
    decrement volume from ``litomo phase``) a random forest found no split and predicted one
    class. Trees are otherwise invariant to a positive scale per feature.

    Examples
    --------
    >>> s = training_feature_scale(np.array([[1e-6, 5.0], [3e-6, 5.0]]))
    >>> bool(np.isclose(s[0], 1e6)), float(s[1])
    (True, 1.0)
    """
    sd = np.std(np.asarray(X, dtype=np.float64), axis=0)
    ok = np.isfinite(sd) & (sd > 0)
    return np.where(ok, 1.0 / np.where(ok, sd, 1.0), 1.0).astype(np.float32)


def _scaled(rows: np.ndarray, model: SegmentationModel) -> np.ndarray:
    scale = getattr(model, "feature_scale", None)  # absent in models saved before it existed
    return rows if scale is None else rows * scale


def _per_class_accuracy(pred: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[float, dict[int, float]]:
    per_class = {int(c): float((pred[y == c] == c).mean()) if (y == c).any() else math.nan for c in classes}
    return (float((pred == y).mean()) if y.size else math.nan), per_class


def _fit(X: np.ndarray, y: np.ndarray, classes: np.ndarray, settings: ForestSettings
         ) -> tuple[Any, float, dict[int, float], str]:
    """Fit the classifier; return it with its validation accuracy (overall, per class) and method."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from threadpoolctl import threadpool_limits

    if settings.classifier == "random-forest":
        clf = RandomForestClassifier(n_estimators=settings.n_estimators, oob_score=True, bootstrap=True,
                                     n_jobs=settings.n_jobs, random_state=settings.seed,
                                     min_samples_leaf=settings.min_samples_leaf)
        clf.fit(X, y)
        oob = clf.oob_decision_function_
        valid = np.all(np.isfinite(oob), axis=1)
        pred = clf.classes_[np.argmax(np.where(np.isfinite(oob), oob, -1), axis=1)]
        overall, per_class = _per_class_accuracy(pred[valid], y[valid], classes)
        return clf, overall, per_class, "out-of-bag"
    from sklearn.model_selection import train_test_split

    def make() -> Any:
        return HistGradientBoostingClassifier(max_iter=settings.n_estimators, early_stopping=False,
                                              random_state=settings.seed)

    with threadpool_limits(settings.n_jobs if settings.n_jobs > 0 else None, user_api="openmp"):
        tr, te = train_test_split(np.arange(y.size), test_size=0.2, stratify=y, random_state=settings.seed)
        overall, per_class = _per_class_accuracy(make().fit(X[tr], y[tr]).predict(X[te]), y[te], classes)
        clf = make().fit(X, y)
    return clf, overall, per_class, "held-out 20 %"


def train_forest(
    grey: Any,
    scribbles: Any,
    settings: ForestSettings | None = None,
    *,
    chunks: Any = None,
    memory_mb: float = 512.0,
    progress: ProgressCallback | None = None,
) -> SegmentationModel:
    """Train a tree-ensemble pixel classifier on multi-scale features at the scribbled voxels.

    Parameters
    ----------
    grey : ndarray or dask array, (z, y, x)
        Greyscale volume.
    scribbles : ndarray, same shape
        0 = unlabelled; any other integer = a class (e.g. a napari Labels layer).
    settings : ForestSettings, optional
        Classifier, feature scales, sample budget, seed, threads (defaults: ``ForestSettings()``).
    chunks : int or (z, y, x), optional
        Block shape for the feature computation; default from ``memory_mb``.
    memory_mb : float
        Memory budget of one block's features (MiB).
    progress : callable, optional
        ``progress(done, total, description)`` after each block.

    Returns
    -------
    SegmentationModel

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = np.zeros((24, 24, 24), np.uint8); truth[:, :, 12:] = 1
    >>> grey = (truth * 100 + rng.normal(0, 20, truth.shape)).astype(np.float32)
    >>> scrib = np.zeros_like(truth); scrib[::4, ::4, 2] = 1; scrib[::4, ::4, 20] = 2
    >>> m = train_forest(grey, scrib, ForestSettings(sigmas=(1.0, 2.0), n_estimators=20, n_jobs=1))
    >>> m.classes_.tolist(), bool((m.predict(grey) - 1 == truth).mean() > 0.95)
    ([1, 2], True)
    """
    settings = settings or ForestSettings()
    check_grey(grey)
    scribbles = _check_scribbles(grey, scribbles)
    classes = np.unique(scribbles[scribbles != 0])
    if classes.size < 2:
        raise DataError(f"--labels: scribbles must mark at least two classes (non-zero values); found "
                        f"{classes.tolist() or 'none'}")
    params = feature_params(settings.sigmas, structure_tensor=settings.structure_tensor)
    rng = np.random.default_rng(settings.seed)
    idx, y = _balanced_sample(scribbles, classes, settings.max_samples_per_class, rng)
    counts = {int(c): int((y == c).sum()) for c in classes}
    if min(counts.values()) < 5:
        raise DataError(f"--labels: too few scribbled voxels for some class (voxels per class: {counts}); "
                        "paint more")
    X = _sample_features(grey, idx, params, chunks, memory_mb, progress)
    scale = training_feature_scale(X)
    clf, overall, per_class, how = _fit(X * scale, y, classes, settings)
    log.info("%s: %d samples, %s accuracy %.4f, per class %s", settings.classifier, y.size, how, overall, per_class)
    return SegmentationModel(
        classifier=clf, feature_params=params, classes_=clf.classes_.copy(),
        validation_accuracy_per_class=per_class, validation_accuracy=overall, validation=how,
        n_samples_per_class=counts, seed=int(settings.seed), train_dtype=str(grey.dtype), feature_scale=scale,
    )


def am_fraction_sensitivity(labels: Any, am_code: int = 1) -> dict[str, float]:
    """AM volume fraction and its bracket after a 1-voxel dilation / erosion (SPEC 3).

    Uses the 6-connected (face) structuring element. Outside the volume counts as AM for
    the erosion so the faces of the box are not eroded artificially.

    Examples
    --------
    >>> lab = np.zeros((10, 10, 10), np.uint8); lab[3:7, 3:7, 3:7] = 1
    >>> s = am_fraction_sensitivity(lab)
    >>> s["eroded"] < s["fraction"] < s["dilated"]
    True
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise DataError(f"label volume must be 3D, got shape {labels.shape}")
    am = labels == am_code
    st = ndimage.generate_binary_structure(3, 1)
    return {
        "fraction": float(am.mean()),
        "dilated": float(ndimage.binary_dilation(am, st).mean()),
        "eroded": float(ndimage.binary_erosion(am, st, border_value=1).mean()),
    }

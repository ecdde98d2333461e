"""Training a pixel classifier from sparse scribbles (ilastik-style), chunk-wise.

Train a tree ensemble (scikit-learn random forest by default, or histogram gradient
boosting) on a few painted voxels per class (e.g. a napari Labels layer: 0 = unlabelled,
1, 2, ... = classes); the features of the scribbled voxels are computed block by block with
the features' halo. The trained :class:`~litomo.segment.model.SegmentationModel` (predict,
stream to zarr, save) lives in :mod:`litomo.segment.model` and is re-exported here.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.progress import ProgressCallback
from litomo.segment.blocks import block_features, iter_blocks
from litomo.segment.features import (
    DEFAULT_SIGMAS,
    check_grey,
    feature_halo,
    feature_names,
    feature_params,
)
from litomo.segment.model import (
    HEADER_MAX_BYTES,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    SegmentationModel,
)
from litomo.segment.scribbles import SparseLabels, sparse_labels

__all__ = [
    "CLASSIFIERS", "HEADER_MAX_BYTES", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "ForestSettings",
    "SegmentationModel", "am_fraction_sensitivity", "train_forest", "training_feature_scale",
]

log = logging.getLogger(__name__)

CLASSIFIERS = ("random-forest", "hgb")


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
        Trees (random forest) or boosting iterations (hgb). 20 fully grown trees. 10 trees are
        as accurate on the rendered real-label benchmark (three seeds: mean 0.8593 vs 0.8592) at
        half the classifier cost, but on the real holotomography chain the CBD fraction error
        grew from -1.75 to -2.17 pp (mean of three seeds; docs/benchmarks.md), so 20 stays.
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
    n_estimators: int = 20
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
# training
# ---------------------------------------------------------------------------

def _check_scribbles(grey: Any, scribbles: Any) -> SparseLabels:
    sparse = sparse_labels(scribbles)
    if tuple(sparse.shape) != tuple(grey.shape):
        raise DataError(f"scribbles have shape {tuple(sparse.shape)} but the greyscale volume has "
                        f"{tuple(grey.shape)}; paint them on the same grid")
    return sparse


def _balanced_sample(scribbles: SparseLabels, classes: np.ndarray, max_per_class: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx_all, y_all = [], []
    for c in classes:
        idx = scribbles.index[scribbles.values == c]  # increasing, as np.flatnonzero(volume == c)
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
        with warnings.catch_warnings():
            # with few trees some samples are in every bootstrap: they are left out below
            warnings.filterwarnings("ignore", "Some inputs do not have OOB scores", UserWarning)
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
    scribbles : ndarray, dask array or SparseLabels, same shape
        0 = unlabelled; any other integer = a class (e.g. a napari Labels layer). Arrays are
        read slab by slab and only the labelled voxels kept (:func:`~litomo.segment.scribbles.sparse_labels`).
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
    classes = scribbles.classes
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

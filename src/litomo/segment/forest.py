"""Random-forest pixel classification from sparse scribbles (ilastik-style), chunk-wise.

Train on a few painted voxels per class (e.g. a napari Labels layer: 0 = unlabelled,
1, 2, ... = classes), predict every voxel block by block with a feature halo so the result
equals whole-volume prediction while memory stays bounded.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import DataError, InputFileError
from litomo.progress import ProgressCallback
from litomo.segment.features import (
    DEFAULT_SIGMAS,
    FEATURES_VERSION,
    _features_unpadded,
    check_grey,
    feature_halo,
    feature_names,
    feature_params,
)

log = logging.getLogger(__name__)

MODEL_FORMAT = "litomo-segmentation-model"
MODEL_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------
# chunking
# ---------------------------------------------------------------------------

def _auto_chunk(shape: tuple[int, ...], n_features: int, halo: int, memory_mb: float) -> int:
    # features + one contiguous (n, F) copy + filter temporaries, float32, per padded voxel
    bytes_per_voxel = 4 * (2 * n_features + 12)
    edge = int((memory_mb * 2**20 / bytes_per_voxel) ** (1 / 3)) - 2 * halo
    return max(edge, halo, 16)


def _normalise_chunks(chunks: Any, shape: tuple[int, ...], halo: int, n_features: int,
                      memory_mb: float) -> tuple[int, int, int]:
    if chunks is None:
        c = (_auto_chunk(shape, n_features, halo, memory_mb),) * 3
    elif np.isscalar(chunks):
        c = (int(chunks),) * 3
    else:
        c = tuple(int(x) for x in chunks)
        if len(c) != 3:
            raise DataError(f"chunks must be one integer or three (z, y, x), got {chunks!r}")
    if any(x < 1 for x in c):
        raise DataError(f"chunks must be positive, got {chunks!r}")
    # blocks thinner than their halo cost more in context than they deliver; equal-sized
    # blocks avoid thin remainders (correctness does not depend on it: see _padded_block)
    c = tuple(min(n, max(x, halo)) for x, n in zip(c, shape, strict=True))
    return tuple(math.ceil(n / math.ceil(n / x)) for x, n in zip(c, shape, strict=True))  # type: ignore[return-value]


def _block_slices(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[slice, ...]]:
    ranges = [[slice(a, min(a + c, n)) for a in range(0, n, c)] for n, c in zip(shape, chunks, strict=True)]
    return [tuple(s) for s in itertools.product(*ranges)]


def _padded_block(grey: Any, sl: tuple[slice, ...], halo: int) -> np.ndarray:
    """The block plus ``halo`` voxels of context, mirrored (numpy "symmetric") at volume faces.

    Identical to what ``np.pad(grey, halo, "symmetric")`` holds around the block, and to
    dask ``map_overlap(boundary="reflect")``.
    """
    lo = [max(s.start - halo, 0) for s in sl]
    hi = [min(s.stop + halo, n) for s, n in zip(sl, grey.shape, strict=True)]
    region = np.asarray(grey[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))], dtype=np.float32)
    pads = [(halo - (s.start - a), halo - (b - s.stop)) for s, a, b in zip(sl, lo, hi, strict=True)]
    if any(p != (0, 0) for p in pads):
        region = np.pad(region, pads, mode="symmetric")
    return region


def _block_features(grey: Any, sl: tuple[slice, ...], halo: int, params: dict) -> np.ndarray:
    f = _features_unpadded(_padded_block(grey, sl, halo), params)
    if halo:
        f = f[:, halo:-halo, halo:-halo, halo:-halo]
    return f


def _iter_blocks(grey: Any, params: dict, chunks: Any, memory_mb: float
                 ) -> Iterator[tuple[tuple[slice, ...], int, int]]:
    halo = feature_halo(params["sigmas"], structure_tensor=params["structure_tensor"])
    c = _normalise_chunks(chunks, tuple(grey.shape), halo, len(feature_names(params)), memory_mb)
    blocks = _block_slices(tuple(grey.shape), c)
    for i, sl in enumerate(blocks):
        yield sl, i, len(blocks)


def _as_rows(f: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(f.reshape(f.shape[0], -1).T)


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------

@dataclass
class SegmentationModel:
    """A trained random forest plus everything needed to apply it again.

    Attributes
    ----------
    forest : sklearn.ensemble.RandomForestClassifier
    feature_params : dict
        The feature record (:func:`litomo.segment.features.feature_params`).
    classes_ : ndarray
        Scribble values the forest predicts (in increasing order).
    oob_accuracy_per_class : dict
        Out-of-bag accuracy per class value, from the OOB decision function.
    n_samples_per_class : dict
        Training voxels used per class (after balanced subsampling).
    class_names : dict
        Optional ``{value: phase name}`` (set by the CLI from the scribble mapping).
    train_dtype : str
        dtype of the greyscale volume the model was trained on (a warning is logged when a
        volume of another dtype is predicted: grey units may differ).
    preprocessing : list of str
        Denoising steps applied before training (the CLI applies the same before predicting).
    """

    forest: Any
    feature_params: dict[str, Any]
    classes_: np.ndarray
    oob_accuracy_per_class: dict[int, float]
    oob_accuracy: float
    n_samples_per_class: dict[int, int]
    seed: int
    class_names: dict[int, str] = field(default_factory=dict)
    train_dtype: str = "float32"
    preprocessing: list[str] = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.feature_params)

    @property
    def halo(self) -> int:
        return feature_halo(self.feature_params["sigmas"], structure_tensor=self.feature_params["structure_tensor"])

    def _predict_block(self, f: np.ndarray, batch: int = 1_000_000) -> np.ndarray:
        rows = _as_rows(f)
        out = np.empty(rows.shape[0], dtype=self.classes_.dtype)
        for a in range(0, rows.shape[0], batch):  # bounds predict_proba's (n, classes) buffer
            out[a : a + batch] = self.forest.predict(rows[a : a + batch])
        return out.reshape(f.shape[1:])

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
            Threads for the forest (default: as trained).

        Returns
        -------
        ndarray with the dtype of ``classes_``: the predicted scribble value per voxel.
        """
        check_grey(grey)
        if str(grey.dtype) != self.train_dtype:
            log.warning("model trained on %s grey values, predicting %s: make sure the grey units match",
                        self.train_dtype, grey.dtype)
        if n_jobs is not None:
            self.forest.set_params(n_jobs=n_jobs)
        out = np.empty(tuple(grey.shape), dtype=self.classes_.dtype)
        halo = self.halo
        for sl, i, n in _iter_blocks(grey, self.feature_params, chunks, memory_mb):
            out[sl] = self._predict_block(_block_features(grey, sl, halo, self.feature_params))
            if progress is not None:
                progress(i + 1, n, "random-forest prediction")
        return out

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
            return self._predict_block(_features_unpadded(b.astype(np.float32), self.feature_params))

        return da.map_overlap(block, darr, depth=halo, boundary="reflect", dtype=self.classes_.dtype)

    def save(self, path: str | Path) -> Path:
        """Write the model with joblib, atomically, with a version/feature record."""
        import joblib
        import sklearn

        from litomo.io.atomic import atomic_path

        payload = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "features_version": FEATURES_VERSION,
            "sklearn_version": sklearn.__version__,
            "feature_params": dict(self.feature_params),
            "model": self,
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            joblib.dump(payload, tmp, compress=3)
        return path


def load_model(path: str | Path, *, feature_params_expected: dict[str, Any] | None = None) -> SegmentationModel:
    """Load a model written by :meth:`SegmentationModel.save`.

    Refuses files that are not litomo models, models trained with another feature
    definition (``FEATURES_VERSION``) and, when ``feature_params_expected`` is given,
    models whose feature settings differ from it. Only load model files you trust
    (joblib unpickles Python objects).
    """
    import joblib
    import sklearn

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: model file not found")
    try:
        payload = joblib.load(path)
    except Exception as exc:  # any unpickling failure means "not a model file"
        raise InputFileError(f"{path}: not a readable joblib model file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputFileError(f"{path}: not a litomo segmentation model")
    if payload.get("format_version") != MODEL_FORMAT_VERSION:
        raise InputFileError(f"{path}: model format version {payload.get('format_version')} is not supported "
                             f"(this litomo reads version {MODEL_FORMAT_VERSION}); retrain the model")
    if payload.get("features_version") != FEATURES_VERSION:
        raise DataError(f"{path}: model was trained with feature definition v{payload.get('features_version')}, "
                        f"this litomo computes v{FEATURES_VERSION}; retrain the model")
    if feature_params_expected is not None and dict(feature_params_expected) != payload["feature_params"]:
        raise DataError(f"{path}: model was trained with features {payload['feature_params']}, "
                        f"not the requested {dict(feature_params_expected)}")
    if payload.get("sklearn_version") != sklearn.__version__:
        log.warning("%s was saved with scikit-learn %s, running %s: predictions may differ",
                    path, payload.get("sklearn_version"), sklearn.__version__)
    return payload["model"]


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


def train_forest(
    grey: Any,
    scribbles: Any,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    n_estimators: int = 100,
    max_samples_per_class: int = 20_000,
    seed: int = 0,
    n_jobs: int = -1,
    min_samples_leaf: int = 1,
    structure_tensor: bool = False,
    chunks: Any = None,
    memory_mb: float = 512.0,
    progress: ProgressCallback | None = None,
) -> SegmentationModel:
    """Train a random forest on multi-scale features at the scribbled voxels.

    Parameters
    ----------
    grey : ndarray or dask array, (z, y, x)
        Greyscale volume.
    scribbles : ndarray, same shape
        0 = unlabelled; any other integer = a class (e.g. a napari Labels layer).
    sigmas : sequence of float
        Feature scales in voxels.
    n_estimators : int
        Trees in the forest.
    max_samples_per_class : int
        Each class contributes at most this many randomly drawn scribbled voxels, so a
        heavily painted class does not dominate (balanced subsampling).
    seed : int
        Seeds the subsampling and the forest: same inputs + seed = identical model.
    n_jobs : int
        Threads for scikit-learn (-1 = all cores).

    Returns
    -------
    SegmentationModel

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = np.zeros((24, 24, 24), np.uint8); truth[:, :, 12:] = 1
    >>> grey = (truth * 100 + rng.normal(0, 20, truth.shape)).astype(np.float32)
    >>> scrib = np.zeros_like(truth); scrib[::4, ::4, 2] = 1; scrib[::4, ::4, 20] = 2
    >>> m = train_forest(grey, scrib, sigmas=(1.0, 2.0), n_estimators=20, n_jobs=1)
    >>> m.classes_.tolist(), bool((m.predict(grey) - 1 == truth).mean() > 0.95)
    ([1, 2], True)
    """
    from sklearn.ensemble import RandomForestClassifier

    check_grey(grey)
    scribbles = _check_scribbles(grey, scribbles)
    classes = np.unique(scribbles[scribbles != 0])
    if classes.size < 2:
        raise DataError(f"scribbles must mark at least two classes (non-zero values); found "
                        f"{classes.tolist() or 'none'}")
    if max_samples_per_class < 1 or n_estimators < 1:
        raise DataError("max_samples_per_class and n_estimators must be positive")
    params = feature_params(sigmas, structure_tensor=structure_tensor)
    rng = np.random.default_rng(seed)
    idx, y = _balanced_sample(scribbles, classes, max_samples_per_class, rng)
    counts = {int(c): int((y == c).sum()) for c in classes}
    if min(counts.values()) < 5:
        raise DataError(f"too few scribbled voxels for some class (voxels per class: {counts}); paint more")

    # gather features only at the sampled voxels, block by block (bounded memory)
    shape = tuple(grey.shape)
    coords = np.unravel_index(idx, shape)
    X = np.empty((idx.size, len(feature_names(params))), dtype=np.float32)
    halo = feature_halo(params["sigmas"], structure_tensor=structure_tensor)
    for sl, i, n in _iter_blocks(grey, params, chunks, memory_mb):
        inside = np.ones(idx.size, dtype=bool)
        for ax in range(3):
            inside &= (coords[ax] >= sl[ax].start) & (coords[ax] < sl[ax].stop)
        if inside.any():
            f = _block_features(grey, sl, halo, params)
            local = tuple(coords[ax][inside] - sl[ax].start for ax in range(3))
            X[inside] = f[(slice(None), *local)].T
        if progress is not None:
            progress(i + 1, n, "training features")

    forest = RandomForestClassifier(
        n_estimators=n_estimators, oob_score=True, bootstrap=True, n_jobs=n_jobs,
        random_state=seed, min_samples_leaf=min_samples_leaf,
    )
    forest.fit(X, y)
    oob = forest.oob_decision_function_
    valid = np.all(np.isfinite(oob), axis=1)
    pred = forest.classes_[np.argmax(np.where(np.isfinite(oob), oob, -1), axis=1)]
    per_class = {}
    for c in classes:
        sel = valid & (y == c)
        per_class[int(c)] = float((pred[sel] == c).mean()) if sel.any() else math.nan
    overall = float((pred[valid] == y[valid]).mean()) if valid.any() else math.nan
    log.info("random forest: %d samples, OOB accuracy %.4f, per class %s", y.size, overall, per_class)
    return SegmentationModel(
        forest=forest, feature_params=params, classes_=forest.classes_.copy(),
        oob_accuracy_per_class=per_class, oob_accuracy=overall, n_samples_per_class=counts,
        seed=int(seed), train_dtype=str(grey.dtype),
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

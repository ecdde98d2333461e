"""Reading a saved segmentation model: header checks before anything is unpickled."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from litomo.errors import DataError, InputFileError
from litomo.segment.features import FEATURES_VERSION, feature_set_hash
from litomo.segment.model import (
    HEADER_MAX_BYTES,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    SegmentationModel,
)

log = logging.getLogger(__name__)


def read_model_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a model file (nothing unpickled); one-line errors for other files."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"--model {path}: model file not found")
    with open(path, "rb") as fh:
        line = fh.readline(HEADER_MAX_BYTES)
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise InputFileError(f"--model {path}: not a litomo segmentation model (or one written before "
                             f"model format {MODEL_FORMAT_VERSION}); retrain it with litomo segment")
    return header


def load_model(path: str | Path, *, feature_params_expected: dict[str, Any] | None = None) -> SegmentationModel:
    """Load a model written by :meth:`SegmentationModel.save`.

    Refuses, from the header alone, files that are not litomo models, other model formats,
    models trained on another feature definition (its hash differs from the one this litomo
    computes for the same settings) and, when ``feature_params_expected`` is given, models
    whose feature settings differ from it. Only load model files you trust (joblib
    unpickles Python objects).
    """
    import joblib
    import sklearn

    from litomo import __version__

    path = Path(path)
    header = read_model_header(path)
    if header.get("format_version") != MODEL_FORMAT_VERSION:
        raise InputFileError(f"--model {path}: model format version {header.get('format_version')} is not "
                             f"supported (this litomo reads version {MODEL_FORMAT_VERSION}); retrain the model")
    stored = header.get("feature_params") or {}
    if header.get("features_version") != FEATURES_VERSION or stored.get("features_version") != FEATURES_VERSION:
        raise DataError(f"--model {path}: trained on feature definition v{header.get('features_version')}, "
                        f"this litomo computes v{FEATURES_VERSION}; retrain the model")
    if header.get("feature_hash") != feature_set_hash(stored):
        raise DataError(f"--model {path}: feature hash {header.get('feature_hash')} does not match its feature "
                        "record (file altered?); retrain the model")
    if feature_params_expected is not None and feature_set_hash(dict(feature_params_expected)) != header["feature_hash"]:
        raise DataError(f"--model {path}: trained with features at sigmas {stored.get('sigmas')}, not the requested "
                        f"{dict(feature_params_expected).get('sigmas')} (--sigmas)")
    for what, saved, now in (("litomo", header.get("litomo_version"), __version__),
                             ("scikit-learn", header.get("sklearn_version"), sklearn.__version__)):
        if saved != now:
            log.warning("%s was saved with %s %s, running %s: predictions may differ", path, what, saved, now)
    with open(path, "rb") as fh:
        fh.readline(HEADER_MAX_BYTES)
        try:
            model = joblib.load(fh)
        except Exception as exc:  # any unpickling failure means a damaged file
            raise InputFileError(f"--model {path}: model payload unreadable ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(model, SegmentationModel) or feature_set_hash(model.feature_params) != header["feature_hash"]:
        raise InputFileError(f"--model {path}: payload does not match its header; retrain the model")
    return model

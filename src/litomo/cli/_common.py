"""Small helpers shared by the CLI commands (output, logging, progress)."""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any

import numpy as np

from litomo.progress import ProgressCallback, tqdm_progress


def setup_logging(verbose: bool = False) -> None:
    """Log warnings (and info with ``verbose``) to stderr in a short format."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # dask.distributed sets INFO levels on its own loggers, which then reach our handler
    # whatever the root level; filter at the handler so only warnings show unless --verbose
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO if verbose else logging.WARNING)


def progress_bar(enabled: bool = True) -> ProgressCallback | None:
    """A tqdm progress callback on stderr, or None when disabled (``--quiet``/``--json``)."""
    return tqdm_progress(file=sys.stderr) if enabled else None


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats into JSON-friendly values.

    ``inf`` becomes the string ``"inf"`` and NaN becomes ``None`` so the output is strict JSON.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return obj


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented strict JSON on stdout."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")

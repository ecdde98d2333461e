"""The stage cache of a Li-mapping run: resume keys and stage outputs under ``OUT/work``.

Each stage of each state stores its output dataclass under ``work/<state>/<stage>/`` (arrays
as zarr v3, tables as CSV, everything else in ``meta.json``) and then, last, a record
``work/<state>/<stage>.json`` with its *resume key*: a hash of exactly the stage's parameters,
the litomo version and the keys of the stages it reads (the first stage: the checksums of its
input files). ``--resume`` reuses a stage whose record holds the same key, so a changed
parameter reruns only the stages that read it and the stages after them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from litomo import __version__
from litomo.io.atomic import atomic_path, write_csv_atomic, write_text_atomic
from litomo.io.rundir import to_jsonable

log = logging.getLogger(__name__)
T = TypeVar("T")


def file_sha256(path: str | os.PathLike, *, block_mb: int = 8) -> str:
    """SHA-256 of a file (or of every file below a directory, in sorted order).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = p.write_text("abc")
    >>> file_sha256(p)[:12]
    'ba7816bf8f01'
    """
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(block_mb << 20):
                h.update(chunk)
    return h.hexdigest()


def params_key(obj: Any) -> str:
    """A short stable hash of a JSON-able object (the resume key of a stage).

    Examples
    --------
    >>> params_key({"b": 1, "a": 2}) == params_key({"a": 2, "b": 1})
    True
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_array(path: Path, array: np.ndarray) -> Path:
    """Write an intermediate array atomically as a zarr v3 array (chunks of at most 256^3)."""
    import zarr

    with atomic_path(path, directory=True) as tmp:
        z = zarr.create_array(
            store=str(tmp), shape=array.shape, dtype=array.dtype,
            chunks=tuple(min(s, 256) for s in array.shape) if array.ndim else (), overwrite=True,
        )
        z[...] = array
    return path


def load_array(path: Path) -> np.ndarray:
    """Read an array written by :func:`save_array`."""
    import zarr

    return np.asarray(zarr.open_array(str(path), mode="r")[...])


def _is_array_dict(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(a, np.ndarray) for a in v.values())


def save_output(obj: Any, directory: Path) -> list[Path]:
    """Store a stage's output dataclass under ``directory``; returns the files written."""
    written: list[Path] = []
    meta: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray):
            written.append(save_array(directory / f"{f.name}.zarr", v))
            meta[f.name] = {"array": True}
        elif _is_array_dict(v):
            written += [save_array(directory / f.name / f"{k}.zarr", a) for k, a in v.items()]
            meta[f.name] = {"arrays": list(v)}
        elif isinstance(v, pd.DataFrame) and len(v.columns):
            written.append(write_csv_atomic(directory / f"{f.name}.csv", v))
            meta[f.name] = {"table": True}
        else:
            meta[f.name] = {"value": to_jsonable(v.to_dict("list") if isinstance(v, pd.DataFrame) else v)}
    written.append(write_text_atomic(directory / "meta.json", json.dumps(meta)))
    return written


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_field(cls: type, directory: Path, name: str) -> Any:
    """One field of a stored output (arrays are read only when asked for)."""
    meta = json.loads((directory / "meta.json").read_text())[name]
    if "array" in meta:
        return load_array(directory / f"{name}.zarr")
    if "arrays" in meta:
        return {k: load_array(directory / name / f"{k}.zarr") for k in meta["arrays"]}
    if "table" in meta:
        return pd.read_csv(directory / f"{name}.csv")
    value = meta["value"]
    ftype = {f.name: str(f.type) for f in dataclasses.fields(cls)}[name]
    if ftype.startswith("pd.DataFrame"):
        return pd.DataFrame(value or {})
    if ftype == "float" and (value is None or isinstance(value, str)):
        # strict JSON stored NaN as null and infinities as "inf"/"-inf" (to_jsonable)
        return _float(value)
    if ftype.startswith("tuple[float") and isinstance(value, list):  # e.g. (rms, max) that may be NaN
        return tuple(_float(v) for v in value)
    return _tuples(value) if ftype.startswith("tuple") else value


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def load_output(cls: type[T], directory: Path) -> T:
    """The output dataclass stored by :func:`save_output`."""
    return cls(**{f.name: load_field(cls, directory, f.name) for f in dataclasses.fields(cls)})


class StageCache:
    """Stage outputs and records of one run under ``work/`` (see the module docstring)."""

    def __init__(self, work_dir: Path, *, resume: bool):
        self.work = work_dir
        self.resume = resume
        self._fresh: set[tuple[str, str]] = set()  # stored by this run

    def directory(self, state: str, stage: str) -> Path:
        return self.work / state / stage

    def _record(self, state: str, stage: str) -> Path:
        return self.work / state / f"{stage}.json"

    def is_done(self, state: str, stage: str, key: str, fields: Sequence[str] = ()) -> bool:
        """Whether ``--resume`` may reuse the stored output (same key, every file there, and each of
        the output's ``fields``: an output stored by an older litomo may lack a newer one)."""
        rec = self._record(state, stage)
        if not ((self.resume or (state, stage) in self._fresh) and rec.exists()):
            return False
        try:
            data = json.loads(rec.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if not isinstance(data, dict):
            return False
        if data.get("key") != key:
            log.info("state %s, stage %s is stale (inputs or parameters changed): redoing it", state, stage)
            return False
        # outputs are stored relative to work/, so a moved or copied run directory resumes
        if not all((self.work / p).exists() for p in data.get("outputs", [])):
            return False
        if fields and (state, stage) not in self._fresh:
            try:
                stored = json.loads((self.directory(state, stage) / "meta.json").read_text())
            except (OSError, json.JSONDecodeError):
                return False
            if missing := [f for f in fields if f not in stored]:
                log.info("state %s, stage %s was stored without %s (an older litomo): redoing it", state, stage,
                         ", ".join(missing))
                return False
        return True

    def store(self, state: str, stage: str, key: str, output: Any, extra: dict[str, Any]) -> None:
        """Write the output, then (last) the record that makes it reusable."""
        files = save_output(output, self.directory(state, stage))
        rel = [os.path.relpath(p, self.work) for p in files]
        write_text_atomic(self._record(state, stage),
                          json.dumps({"key": key, "outputs": rel, "version": __version__,
                                      "stored": time.time(), **extra}))
        self._fresh.add((state, stage))

    def warnings(self, state: str, stage: str) -> list[str]:
        """The warnings recorded with a stored stage."""
        try:
            return list(json.loads(self._record(state, stage).read_text()).get("warnings", []))
        except (OSError, ValueError, AttributeError):
            return []

    def load(self, state: str, stage: str, cls: type[T]) -> T:
        return load_output(cls, self.directory(state, stage))

    def field(self, state: str, stage: str, cls: type, name: str) -> Any:
        return load_field(cls, self.directory(state, stage), name)

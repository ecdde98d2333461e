"""The output folder of a litomo command: layout, ownership, lock and completion record.

Every command that writes an output folder (``litomo run``, ``micro``, ``segment``, ...) goes
through :class:`RunDir`, which writes the layout that :class:`litomo.io.runlayout.RunLayout`
describes (``work/``, ``tables/``, ``figures/``, ``volumes/<state>/``, ``report.html``,
``run.json``) and enforces the rules that keep a user's files safe:

- an ownership marker ``OUT/.litomo/owner.json`` (run id, kind, litomo version, the list of
  files litomo wrote) is written before any output; :meth:`RunDir.output` records a file in it
  *before* the file is written, so a run killed mid-write still owns what it left;
- ``mode="new"`` refuses a non-empty folder; ``"force"`` (start over) and ``"resume"`` (keep
  the stage cache ``work/``) delete only files the marker lists, and refuse a folder that holds
  anything else;
- an exclusive ``fcntl.flock`` on ``OUT/.litomo/lock`` keeps a second command off a folder in
  use;
- the completion record ``run.json`` is written last (:meth:`RunDir.complete`) and removed
  first when a run starts over or resumes, so an interrupted run never looks finished;
- a new folder in which a command fails before it finished any work (:meth:`RunDir.keep`) is
  removed again, so the next try is not blocked by a half-made folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from litomo import __version__
from litomo.errors import InputFileError
from litomo.io.runlayout import (  # noqa: F401 (re-exported: the layout's names stay importable from here)
    COMPLETION_RECORD,
    MARKER_DIR,
    RunLayout,
    check_path_component,
)

log = logging.getLogger(__name__)

KINDS = ("run", "micro", "segment", "damage", "reconstruct", "phase", "map2d", "phantom", "deadangle")
MODES = ("new", "force", "resume")
#: entries owned as whole trees: litomo's stage cache and the report's figures
OWNED_TREES = ("work", "figures")


def to_jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays and non-finite floats as strict-JSON values (NaN -> None, inf -> "inf").

    Examples
    --------
    >>> to_jsonable({"a": np.float32(0.5), "b": [np.nan, np.inf], "c": np.arange(2)})
    {'a': 0.5, 'b': [None, 'inf'], 'c': [0, 1]}
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return obj


def _leftover_base(name: str) -> str | None:
    """``x`` for an atomic-write leftover ``.x.partial-*`` / ``.x.old-*`` (else None)."""
    if not name.startswith("."):
        return None
    for tag in (".partial-", ".old-"):
        if tag in name:
            return name[1:name.rindex(tag)]
    return None


class RunDir:
    """An output folder that litomo owns; open it with :meth:`RunDir.open`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> with RunDir.open(out, kind="run") as rd:
    ...     _ = rd.output("tables/states.csv").write_text("state\\nI\\n")
    ...     _ = rd.complete({"states": ["I"]})
    >>> sorted(p.name for p in out.iterdir())
    ['.litomo', 'run.json', 'tables']
    >>> with RunDir.open(out, kind="run", mode="force") as rd:
    ...     sorted(rd.owned)
    []
    """

    def __init__(self, root: Path, kind: str, marker: dict[str, Any]):
        self.root = root
        self.layout = RunLayout(root)
        self.kind = kind
        self._marker = marker
        self._keep = False

    # ------------------------------------------------------------------ opening

    @classmethod
    @contextlib.contextmanager
    def open(cls, out_dir: str | os.PathLike, *, kind: str, mode: str = "new",
             inputs: Iterable[str | os.PathLike] = (), flag: str = "--out") -> Iterator[RunDir]:
        """Take ``out_dir`` for one command, under its lock, following the rules above.

        Parameters
        ----------
        out_dir : path
            The output folder (created if absent).
        kind : str
            What writes it (one of :data:`KINDS`); ``resume`` refuses a folder of another kind.
        mode : {"new", "force", "resume"}
            ``"new"``: the folder must be absent or empty. ``"force"``: delete the files an
            earlier litomo command wrote there and start over. ``"resume"``: keep ``work/``
            (the stage cache), delete the other files litomo wrote.
        inputs : paths
            Input files; an ``out_dir`` that is or contains one is refused.
        flag : str
            The option that named ``out_dir`` (for error messages).

        Raises
        ------
        InputFileError
            ``out_dir`` is a file, holds inputs or files litomo did not write, is in use by
            another litomo process, or cannot be created.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown RunDir kind {kind!r}")
        if mode not in MODES:
            raise ValueError(f"unknown RunDir mode {mode!r}")
        root = Path(out_dir).absolute()
        _check_not_inputs(root, inputs, flag)
        fresh = _prepare_root(root, mode, flag)
        lock_fd = _lock(root, flag)
        rd = None
        try:
            rd = cls(root, kind, _claim(root, kind, mode, flag))
            yield rd
        except BaseException:
            if rd is not None and fresh and not rd._keep:
                # nothing worth resuming: leave no folder that would block the next try
                log.info("cleaning %s: the command stopped before finishing any work", root)
                os.close(lock_fd)
                lock_fd = -1
                _undo(root, fresh)
            raise
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)

    @classmethod
    @contextlib.contextmanager
    def update(cls, out_dir: str | os.PathLike, *, touches: Iterable[str] = ("report.html", "figures"),
               flag: str = "RUN_DIR") -> Iterator[RunDir]:
        """Take a folder an earlier litomo command wrote, under its lock, to rewrite a few outputs.

        Nothing is deleted; the outputs named in ``touches`` may be rewritten only if litomo
        wrote them (or they are absent). Used by ``litomo report DIR``.

        Raises
        ------
        InputFileError
            ``out_dir`` is not a folder litomo wrote, is in use, or holds one of ``touches``
            that litomo did not write.
        """
        root = Path(out_dir).absolute()
        if not root.is_dir():
            raise InputFileError(f"{flag} {root}: no such folder")
        if _read_marker(root) is None:
            raise InputFileError(f"{flag} {root} holds no litomo output (no {MARKER_DIR}/owner.json): "
                                 "litomo rewrites files only in folders it wrote")
        lock_fd = _lock(root, flag)
        try:
            marker = _read_marker(root) or {"owned": []}  # re-read under the lock
            for rel in touches:
                if (root / rel).exists() and rel not in marker["owned"]:
                    raise InputFileError(f"{flag} {root / rel} was not written by litomo; move it away "
                                         "(litomo never overwrites a file it did not write)")
            yield cls(root, str(marker.get("kind", "run")), marker)
        finally:
            os.close(lock_fd)

    # ------------------------------------------------------------------ layout

    @property
    def work(self) -> Path:
        """``OUT/work``: intermediate results and stage records (owned as a whole)."""
        return self._tree("work")

    @property
    def figures(self) -> Path:
        """``OUT/figures``: the report's figures (owned as a whole)."""
        return self._tree("figures")

    @property
    def tables(self) -> Path:
        """``OUT/tables`` (files in it are owned one by one, through :meth:`output`)."""
        return self.layout.tables

    @property
    def report(self) -> Path:
        """``OUT/report.html``, recorded as owned."""
        return self.output(self.layout.rel(self.layout.report))

    def volumes(self, state: str) -> Path:
        """``OUT/volumes/<state>`` (files in it are owned one by one)."""
        return self.layout.volumes(state)

    @property
    def owned(self) -> list[str]:
        """The entries (relative paths) litomo wrote in this folder."""
        return list(self._marker["owned"])

    def output(self, rel: str | os.PathLike) -> Path:
        """Record ``rel`` (a file, or a directory such as a zarr store) as owned; its path.

        Call it *before* writing: a run killed mid-write still owns what it left. The parent
        folders are created.
        """
        rel_path = Path(rel)
        parts = rel_path.parts
        if rel_path.is_absolute() or not parts or any(p in ("..", ".", "") for p in parts) \
                or parts[0] == MARKER_DIR:
            raise ValueError(f"not a relative output path inside the run folder: {rel!s}")
        # inside work/ or figures/ the whole tree is owned
        key = parts[0] if parts[0] in OWNED_TREES else rel_path.as_posix()
        if not self._is_owned(key):
            self._marker["owned"].append(key)
            self._write_marker()
        path = self.root / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, rel: str | os.PathLike) -> None:
        """Delete an owned entry (and its atomic-write leftovers); no-op if absent."""
        key = Path(rel).as_posix()
        if key not in self._marker["owned"]:
            raise ValueError(f"{key} is not owned by this run folder")
        _delete(self.root, key)
        self._marker["owned"].remove(key)
        self._write_marker()

    def keep(self) -> None:
        """Finished work worth resuming is there: an error no longer removes a new folder."""
        self._keep = True

    def complete(self, record: dict[str, Any]) -> Path:
        """Write the completion record ``run.json`` (call it last) and mark the folder complete."""
        from litomo.io.atomic import write_text_atomic

        path = self.output(COMPLETION_RECORD)
        write_text_atomic(path, json.dumps(to_jsonable(record), indent=2))
        self._marker["completed"] = _now()
        self._write_marker()
        self._keep = True
        return path

    # ------------------------------------------------------------------ internals

    def _tree(self, name: str) -> Path:
        path = self.output(name)
        path.mkdir(exist_ok=True)
        return path

    def _is_owned(self, key: str) -> bool:
        return key in self._marker["owned"]

    def _write_marker(self) -> None:
        _write_marker(self.root, self._marker)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _check_not_inputs(root: Path, inputs: Iterable[str | os.PathLike], flag: str) -> None:
    real = root.resolve()
    for p in inputs:
        p = Path(p).resolve()
        if real == p or real in p.parents:
            raise InputFileError(f"{flag} {root} contains input {p}; choose another {flag} "
                                 "(litomo never writes over its inputs)")


def _prepare_root(root: Path, mode: str, flag: str) -> str:
    """Refuse a file or a foreign non-empty folder; create the folder.

    Returns ``"created"`` (made here), ``"empty"`` (was there, empty) or ``""`` (held a run).
    """
    if root.exists() and not root.is_dir():
        raise InputFileError(f"{flag} {root} is an existing file; choose a folder")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER_DIR / "owner.json").is_file():
            what = ("--force only starts over" if mode == "force" else
                    "--resume only continues" if mode == "resume" else "litomo writes only")
            raise InputFileError(
                f"{flag} {root} is not empty and holds no earlier litomo run (no {MARKER_DIR}/owner.json): "
                f"{what} in an empty folder or one litomo wrote; choose an empty or new {flag}")
        return ""
    if root.is_dir():
        return "empty"
    try:
        root.mkdir(parents=True)
    except OSError as exc:
        raise InputFileError(f"{flag} {root}: cannot create the folder ({exc.strerror or exc})") from None
    return "created"


def _undo(root: Path, fresh: str) -> None:
    """Remove what a failed command made in a folder that was new (or empty) before it."""
    if fresh == "created":
        shutil.rmtree(root, ignore_errors=True)
        return
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _lock(root: Path, flag: str) -> int:
    """An exclusive lock on ``OUT/.litomo/lock`` (released when the descriptor is closed)."""
    try:
        (root / MARKER_DIR).mkdir(exist_ok=True)
        fd = os.open(root / MARKER_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputFileError(f"{flag} {root}: cannot write there ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise InputFileError(f"{flag} {root} is in use by another litomo process (pid {holder}); "
                                 f"wait for it to finish or choose another {flag}") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _read_marker(root: Path) -> dict[str, Any] | None:
    path = root / MARKER_DIR / "owner.json"
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
        if not (isinstance(marker, dict) and isinstance(marker.get("owned"), list)):
            raise ValueError("no list of owned files")
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path} is unreadable ({exc}); move the folder's files away or "
                             "choose another output folder") from None
    return marker


def _write_marker(root: Path, marker: dict[str, Any]) -> None:
    from litomo.io.atomic import write_text_atomic

    write_text_atomic(root / MARKER_DIR / "owner.json", json.dumps(marker, indent=1))


def _foreign(root: Path, owned: list[str]) -> list[str]:
    """Entries of ``root`` that litomo did not write (owned entries' ancestors are fine)."""
    owned_set = set(owned)
    ancestors = {Path(o).parents[i].as_posix() for o in owned for i in range(len(Path(o).parents) - 1)}
    found = []

    def walk(d: Path, prefix: str) -> None:
        for child in sorted(d.iterdir()):
            rel = f"{prefix}{child.name}"
            base = _leftover_base(child.name)
            if rel == MARKER_DIR or rel in owned_set or (base is not None and f"{prefix}{base}" in owned_set):
                continue
            if rel in ancestors and child.is_dir() and not child.is_symlink():
                walk(child, rel + "/")
            else:
                found.append(rel)

    walk(root, "")
    return found


def _delete(root: Path, rel: str) -> None:
    path = root / rel
    parent = path.parent
    victims = [path]
    if parent.is_dir():
        victims += [c for c in parent.iterdir() if _leftover_base(c.name) == path.name]
    for v in victims:
        if v.is_dir() and not v.is_symlink():
            shutil.rmtree(v)
        elif v.exists() or v.is_symlink():
            v.unlink()
    # folders that only held litomo's files go too
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _claim(root: Path, kind: str, mode: str, flag: str) -> dict[str, Any]:
    """Apply the mode's rules under the lock; returns the marker to continue with."""
    marker = _read_marker(root)
    others = [c.name for c in root.iterdir() if c.name != MARKER_DIR]
    if marker is not None and mode == "new" and (marker["owned"] or others):
        # only `litomo run` (stages) and `litomo reconstruct` (slabs) resume; the others start over
        hint = ("pass --resume to keep finished stages and redo the rest, or --force to start over"
                if kind in ("run", "reconstruct") else "pass --force to replace it (only files litomo wrote)")
        raise InputFileError(
            f"{flag} {root} is not empty (an earlier litomo {marker.get('kind', 'run')}): {hint}")
    if marker is not None and mode != "new":
        foreign = _foreign(root, marker["owned"])
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InputFileError(
                f"{flag} {root} holds files litomo did not write ({shown}); --{mode} touches only "
                f"litomo's own files: move them away or choose another {flag}")
        if mode == "resume" and marker.get("kind", kind) != kind:
            raise InputFileError(f"{flag} {root} holds a litomo {marker.get('kind')} output, not a "
                                 f"{kind}: --resume needs the same command; use --force or another {flag}")
    old = marker["owned"] if marker is not None else []
    keep = set(OWNED_TREES[:1]) if mode == "resume" else set()
    # the completion record goes first: an interrupted clean-up never looks finished
    for rel in sorted(old, key=lambda r: r != COMPLETION_RECORD):
        if rel not in keep:
            _delete(root, rel)
    for rel in keep & set(old):  # leftovers of atomic writes cut short by a kill
        for left in sorted((root / rel).rglob(".*"), reverse=True):
            if _leftover_base(left.name) is not None:
                shutil.rmtree(left) if left.is_dir() and not left.is_symlink() else left.unlink()
    new = {"format": 1, "run_id": uuid.uuid4().hex, "kind": kind, "litomo_version": __version__,
           "created": _now(), "pid": os.getpid(), "mode": mode,
           "owned": [r for r in old if r in keep]}
    _write_marker(root, new)
    return new

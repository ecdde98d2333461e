"""itk-elastix in a worker process, so the calling process never loads itk.

Loading itk-elastix costs ~17 s of CPU and ~750 MiB of resident memory, and one 256^3
registration adds ~1.5 GiB of elastix working memory (image pyramids, interpolator
coefficients); none of it is returned to the system when the registration ends. Run inside
:func:`session`, the functions of :mod:`litomo.register` execute in one long-lived
``spawn``-started worker process instead: the memory goes away with the worker at the end
of the session, and the worker imports itk while the caller does other work.

A separate process, not a thread: a background thread importing itk deadlocked the test
suite (itk's lazy-loader lock beside Python's import locks); a spawned process shares no lock
with the caller. Arrays travel pickled through the executor's pipe (a 256^3 float32 volume
is 64 MiB: well under a second).

Errors: a :class:`litomo.errors.LitomoError` raised in the worker is raised again in the
caller; a worker that dies (killed, out of memory) raises a one-line :class:`LitomoError`
instead of hanging the run.

Arrays of :data:`FILE_MIN_BYTES` or more travel as ``.npy`` files in a temporary folder
(``TMPDIR``), not pickled through the executor's pipe: pickling copies each array twice in the
sending process (numpy's bytes, then the pickle buffer) and the receiving process holds the
received buffer beside the arrays it rebuilds. A pair of 256^3 float32 volumes sent while the
run separates particles added ~260 MiB to the run process's peak (issue 22).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import LitomoError

log = logging.getLogger(__name__)

#: environment variable: ``1`` worker always, ``0`` never (elastix in the caller), unset: under the CLI
ENV_SWITCH = "LITOMO_ELASTIX_WORKER"

_ACTIVE: ElastixWorker | None = None
_USERS = 0  # sessions open on _ACTIVE (stages of several states may run in threads)
_LOCK = threading.Lock()
_IN_WORKER = False


def _init_worker() -> None:
    """Runs once in the worker: mark it (no nested workers) and load itk-elastix up front."""
    global _IN_WORKER
    _IN_WORKER = True
    from litomo import elastix

    itk = elastix.load_itk()
    # touch the lazily loaded elastix/transformix wrappers now, while the caller reads its data
    itk.ParameterObject.New()
    _ = itk.elastix_registration_method, itk.transformix_filter


def _ready() -> int:
    return os.getpid()


#: arrays at least this large go to the worker as files (module docstring)
FILE_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class _ArrayFile:
    """An argument array saved to ``path`` (``.npy``) for the worker to read."""

    path: str


def _to_files(folder: str, values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if isinstance(v, np.ndarray) and v.nbytes >= FILE_MIN_BYTES:
            path = os.path.join(folder, f"{k}.npy")
            np.save(path, v, allow_pickle=False)  # contiguous arrays are written as they are: no copy
            v = _ArrayFile(path)
        out[k] = v
    return out


def _call_with_files(func: Callable[..., Any], args: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """Runs in the worker: ``func`` on the arguments, the arrays read back from their files."""
    def load(v: Any) -> Any:
        return np.load(v.path, allow_pickle=False) if isinstance(v, _ArrayFile) else v

    return func(*(load(args[k]) for k in sorted(args, key=int)), **{k: load(v) for k, v in kwargs.items()})


class ElastixWorker:
    """One spawned worker process running :mod:`litomo.register` functions.

    The functions travel by reference (module and name) and run there with the worker
    marked, so that they do the work themselves instead of delegating again.

    Examples
    --------
    >>> with ElastixWorker() as w:  # doctest: +SKIP
    ...     res = w.call(register_pair, fixed, moving, voxel_size_um=0.25)
    """

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker)
        self._started = self._pool.submit(_ready)  # starts the process (and its itk import) now

    @property
    def pid(self) -> int:
        """Process id of the worker (waits for it to start)."""
        return int(self._started.result())

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)`` in the worker (a module-level function); its result or its error."""
        with tempfile.TemporaryDirectory(prefix="litomo-elastix-") as tmp:
            try:
                # positional arguments under their index, keywords under their name: no clash
                sent = _to_files(tmp, {str(i): a for i, a in enumerate(args)}), _to_files(tmp, kwargs)
            except OSError as exc:
                raise LitomoError(f"could not hand the volumes to the elastix worker through a temporary folder "
                                  f"({exc.strerror}); set TMPDIR to a folder with space, or {ENV_SWITCH}=0") from exc
            try:
                return self._pool.submit(_call_with_files, func, *sent).result()
            except BrokenProcessPool as exc:
                raise LitomoError(
                    f"the elastix worker process died during {func.__name__} (killed, or out of memory); "
                    f"set {ENV_SWITCH}=0 to run elastix in the main process"
                ) from exc

    def wait_ready(self) -> None:
        """Wait until the worker has imported itk (its first task can run)."""
        try:
            self._started.result()
        except BrokenProcessPool as exc:
            raise LitomoError(f"the elastix worker process died while loading itk; set {ENV_SWITCH}=0 to run "
                              "elastix in the main process") from exc

    def close(self) -> None:
        """End the worker process (its memory goes back to the system)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ElastixWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def active() -> ElastixWorker | None:
    """The worker of the current :func:`session` (None outside one, and inside the worker)."""
    return None if _IN_WORKER else _ACTIVE


def _litomo_main() -> bool:
    """Whether this process runs litomo's CLI, whose main module a spawned child may re-import.

    A spawned child re-runs the parent's main script up to its ``if __name__ == "__main__"``
    guard; a user's unguarded script would run again in the worker, so the worker is used
    there only on request. The ``litomo`` console script is guarded, and ``python -m
    litomo.cli`` runs from a ``__main__`` module, which children never re-run.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", "") or ""
    return name == "litomo.cli.__main__" or Path(sys.argv[0] if sys.argv else "").name == "litomo"


def enabled() -> bool:
    """Whether :func:`session` starts a worker.

    ``LITOMO_ELASTIX_WORKER``: ``1`` always (a script calling litomo must then guard its main
    code with ``if __name__ == "__main__":``), ``0`` never, unset: under litomo's CLI only.
    Never in a daemonic process (e.g. a dask worker process): those cannot have children.
    """
    if multiprocessing.current_process().daemon:
        return False
    value = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    return value in ("1", "true", "yes", "on") or _litomo_main()


@contextlib.contextmanager
def session() -> Iterator[ElastixWorker | None]:
    """Run :mod:`litomo.register` functions in one worker process until the block ends.

    Nested (or concurrent) sessions share one worker; the last to end closes it. Inside the worker itself, or with the
    worker turned off (:func:`enabled`), this does nothing and elastix runs in-process.

    Examples
    --------
    >>> from litomo import register_worker
    >>> with register_worker.session():  # doctest: +SKIP
    ...     res = register_pair(fixed, moving)  # runs in the worker
    """
    global _ACTIVE, _USERS
    if _IN_WORKER or not enabled():
        yield None
        return
    with _LOCK:
        if _ACTIVE is None:
            _ACTIVE = ElastixWorker()
            log.debug("elastix worker started")
        _USERS += 1
        worker = _ACTIVE
    try:
        yield worker
    finally:
        with _LOCK:
            _USERS -= 1
            last = _USERS == 0
            if last:
                _ACTIVE = None
        if last:
            worker.close()

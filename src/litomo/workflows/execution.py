"""Where the dask work of a workflow runs: a local cluster, a remote scheduler or in-thread.

:func:`dask_client` is the one place that starts, connects to and shuts down a dask
scheduler; workflows wrap their computation in it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from litomo.errors import LitomoError

log = logging.getLogger(__name__)


def _restore_scheduler(previous: Any, client: Any = None) -> None:
    # a Client that does not close cleanly (e.g. a timeout on a loaded machine) can stay the
    # global default client, and every later dask computation of the process then waits for
    # its dead cluster forever (seen in the test suite under a load of 16 on 2 cores): point
    # dask at its local threads instead
    import dask

    stale = False
    if client is not None:
        try:
            from distributed import default_client

            stale = default_client() is client
        except ValueError:  # no default client left: it closed cleanly
            stale = False
    if stale:
        log.warning("the dask client did not close cleanly; later computations use local threads")
        dask.config.set(scheduler="threads")
        return
    # a leftover "dask.distributed" from a client that no longer exists is no scheduler at all
    dask.config.set(scheduler=None if previous == "dask.distributed" else previous)


def _default_client() -> Any:
    """The process's default dask.distributed client, or None."""
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _close(*things: Any) -> None:
    """Close a client/cluster; a timeout while closing is logged, not raised."""
    for thing in things:
        try:
            thing.close()
        except (OSError, TimeoutError) as exc:
            log.warning("closing %s failed: %s", type(thing).__name__, exc)


@contextlib.contextmanager
def _quiet_task_failures() -> Iterator[None]:
    """Keep in-process dask workers from logging a failed task's traceback: the client
    re-raises the task's exception (a one-line ``LitomoError`` for bad input), so the log
    only repeats it as a multi-line block on stderr. ``-v`` (INFO on litomo's logger) keeps it."""
    loggers = [logging.getLogger(n) for n in ("distributed.worker", "distributed.worker.state_machine")]
    previous = [lg.level for lg in loggers]
    if not logging.getLogger("litomo").isEnabledFor(logging.INFO):
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, previous, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def dask_client(scheduler: str | None, *, memory_limit: str | None = None,
                n_workers: int | None = None, connect_timeout_s: float = 10.0) -> Iterator[Any]:
    """Context with the dask scheduler for a run.

    ``None`` starts a local dask.distributed cluster sized to the machine (one worker
    process per core pair would copy data between processes; for a streaming, I/O-bound
    pipeline one multi-threaded worker is faster, so we use threads). ``"synchronous"`` runs
    without a cluster (tests, debugging). Anything else is the address of an existing
    dask.distributed scheduler (``connect_timeout_s``: how long to try to reach it);
    ``"local"`` is the same as ``None`` (so a command whose default is no cluster can ask for one).

    Examples
    --------
    >>> import dask.array as da
    >>> with dask_client("synchronous"):
    ...     int(da.ones(10, chunks=5).sum().compute())
    10
    """
    import dask

    if n_workers is not None and n_workers < 1:
        raise LitomoError(f"the number of dask workers must be >= 1, got {n_workers} (--workers)")
    if scheduler == "local":
        scheduler = None

    if scheduler == "synchronous":
        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    from distributed import Client, LocalCluster

    previous = dask.config.get("scheduler", None)

    if scheduler:
        before = _default_client()
        try:
            client = Client(scheduler, timeout=f"{connect_timeout_s}s")
        except (OSError, ValueError, TypeError) as exc:
            # OSError/TimeoutError: nothing answers there; ValueError: a malformed address.
            # The failed Client has already made itself dask's scheduler and default client:
            # undo both, or every later computation of this process is sent to it and waits
            # for ever (seen in the tests: a later in-process read hung in Client.gather)
            failed = _default_client()
            if failed is not None and failed is not before:
                _close(failed)
            _restore_scheduler(previous)
            raise LitomoError(
                f"cannot reach the dask scheduler at {scheduler!r} (give 'synchronous', "
                f"leave --scheduler out for a local cluster, or tcp://host:port): {exc}"
            ) from None
        with _quiet_task_failures():  # closing too: it cancels the failed graph's other tasks
            try:
                yield client
            finally:
                _close(client)
                _restore_scheduler(previous, client)
        return
    ncores = os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n_workers or 1,
        threads_per_worker=max(1, ncores // (n_workers or 1)),
        processes=bool(n_workers and n_workers > 1),
        memory_limit=memory_limit or "auto",
        # ":0": any free port; the default 8787 warns when another cluster already holds it
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    with _quiet_task_failures():
        try:
            yield client
        finally:
            _close(client, cluster)
            _restore_scheduler(previous, client)


def command_scheduler(scheduler: str | None) -> contextlib.AbstractContextManager[Any]:
    """:func:`dask_client` for a command whose default is no cluster (``litomo segment``,
    ``micro``, ``tortuosity``): ``None`` keeps dask's own threads in this process; ``"local"``,
    ``"synchronous"`` or an address are as in :func:`dask_client`.

    Examples
    --------
    >>> with command_scheduler(None) as client:
    ...     client is None
    True
    """
    if scheduler is None:
        return contextlib.nullcontext()
    return dask_client(scheduler)


#: ``--scheduler`` help of the commands that use :func:`command_scheduler`
COMMAND_SCHEDULER_HELP = ("Run the chunked steps on a dask.distributed scheduler: its address (tcp://host:8786), "
                          "'local' for a local cluster sized to this machine, or 'synchronous'. "
                          "Default: dask threads in this process, no cluster.")




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


def _close(*things: Any) -> None:
    """Close a client/cluster; a timeout while closing is logged, not raised."""
    for thing in things:
        try:
            thing.close()
        except (OSError, TimeoutError) as exc:
            log.warning("closing %s failed: %s", type(thing).__name__, exc)


@contextlib.contextmanager
def dask_client(scheduler: str | None, *, memory_limit: str | None = None,
                n_workers: int | None = None, connect_timeout_s: float = 10.0) -> Iterator[Any]:
    """Context with the dask scheduler for a run.

    ``None`` starts a local dask.distributed cluster sized to the machine (one worker
    process per core pair would copy data between processes; for a streaming, I/O-bound
    pipeline one multi-threaded worker is faster, so we use threads). ``"synchronous"`` runs
    without a cluster (tests, debugging). Anything else is the address of an existing
    dask.distributed scheduler (``connect_timeout_s``: how long to try to reach it).

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

    if scheduler == "synchronous":
        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    from distributed import Client, LocalCluster

    previous = dask.config.get("scheduler", None)

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{connect_timeout_s}s")
        except (OSError, ValueError, TypeError) as exc:
            # OSError/TimeoutError: nothing answers there; ValueError: a malformed address
            raise LitomoError(
                f"cannot reach the dask scheduler at {scheduler!r} (give 'synchronous', "
                f"leave --scheduler out for a local cluster, or tcp://host:port): {exc}"
            ) from None
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
    try:
        yield client
    finally:
        _close(client, cluster)
        _restore_scheduler(previous, client)




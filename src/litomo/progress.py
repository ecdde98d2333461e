"""Progress reporting for long steps.

The library never prints. Long functions accept ``progress: ProgressCallback | None``
and call it as ``progress(done, total, description)``. The CLI passes
:func:`stage_progress`: one display, one line per stage; library users can pass their own or
nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

ProgressCallback = Callable[[int, int, str], None]

T = TypeVar("T")

#: no rate ("it/s"): a stage's steps are of unequal size (a registration reports 2 steps of
#: minutes each, a writer 1 of milliseconds), so a rate says nothing and showed 68759 it/s
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}]"


def track(
    items: Iterable[T],
    total: int,
    description: str,
    progress: ProgressCallback | None,
) -> Iterator[T]:
    """Yield ``items`` and report ``(i, total, description)`` after each one.

    Examples
    --------
    >>> seen = []
    >>> list(track([1, 2], 2, "demo", lambda d, t, s: seen.append((d, t))))
    [1, 2]
    >>> seen
    [(1, 2), (2, 2)]
    """
    for i, item in enumerate(items, start=1):
        yield item
        if progress is not None:
            progress(i, total, description)


class StageProgress:
    """One progress display for a whole command: one line per stage, never nested bars.

    A new description closes the current stage's line (left on screen, at its last count) and
    opens the next one, so stages reported from nested functions (a writer inside a pipeline
    stage) follow each other instead of stacking. On a terminal the line is a tqdm bar
    without a rate; elsewhere (a log file, CI) each stage prints one plain line when it ends.

    Parameters
    ----------
    stream : file, optional
        Where to write (default ``sys.stderr``).
    bar : bool, optional
        Draw tqdm bars; default: when ``stream`` is a terminal.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> p = StageProgress(out, bar=False)
    >>> p(1, 2, "bin"); p(2, 2, "bin"); p(1, 1, "write")
    >>> p.close()
    >>> [line.split(" [")[0] for line in out.getvalue().splitlines()]
    ['bin: 2/2', 'write: 1/1']
    """

    def __init__(self, stream: IO[str] | None = None, *, bar: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.bar = bool(isatty and isatty()) if bar is None else bar
        self._desc: str | None = None
        self._tqdm: Any = None
        self._done = 0
        self._total = 0
        self._t0 = 0.0

    def __call__(self, done: int, total: int, description: str) -> None:
        if description != self._desc:
            self._finish()
            self._desc, self._t0 = description, time.perf_counter()
            if self.bar:
                from tqdm.auto import tqdm

                self._tqdm = tqdm(total=total, desc=description, file=self.stream, leave=True,
                                  bar_format=BAR_FORMAT, dynamic_ncols=True)
        self._done, self._total = int(done), int(total)
        if self._tqdm is not None:
            self._tqdm.total = total
            self._tqdm.n = done
            self._tqdm.refresh()
        if total and done >= total:
            self._finish()

    def _finish(self) -> None:
        if self._desc is None:
            return
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        else:
            elapsed = time.perf_counter() - self._t0
            self.stream.write(f"{self._desc}: {self._done}/{self._total} [{elapsed:.1f} s]\n")
            self.stream.flush()
        self._desc = None

    def close(self) -> None:
        """End the current stage's line (call at the end of the command)."""
        self._finish()


def stage_progress(stream: IO[str] | None = None, *, bar: bool | None = None) -> StageProgress:
    """A :class:`StageProgress` callback (the CLI's one progress display)."""
    return StageProgress(stream, bar=bar)


def tqdm_progress(**tqdm_kwargs: Any) -> ProgressCallback:
    """A :data:`ProgressCallback` with one line per stage on ``tqdm_kwargs["file"]`` (stderr)."""
    return StageProgress(tqdm_kwargs.get("file"))

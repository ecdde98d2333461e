"""Progress reporting for long steps.

The library never prints. Long functions accept ``progress: ProgressCallback | None``
and call it as ``progress(done, total, description)``. The CLI passes a tqdm-backed
callback; library users can pass their own or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

ProgressCallback = Callable[[int, int, str], None]

T = TypeVar("T")


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


def tqdm_progress(**tqdm_kwargs) -> ProgressCallback:
    """A :data:`ProgressCallback` that drives one tqdm bar per description (for the CLI)."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def callback(done: int, total: int, description: str) -> None:
        bar = bars.get(description)
        if bar is None:
            bar = tqdm(total=total, desc=description, leave=False, **tqdm_kwargs)
            bars[description] = bar
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            bars.pop(description, None)

    return callback

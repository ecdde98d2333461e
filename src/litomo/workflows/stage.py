"""Name the stage a workflow is in, so that ``-v`` says which stage failed (issue #21 item 8)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def stage(log: logging.Logger, workflow: str, name: str) -> Iterator[None]:
    """Log the start of ``name`` and, if it raises, which stage failed (INFO: shown with ``-v``).

    Examples
    --------
    >>> import logging
    >>> with stage(logging.getLogger("demo"), "micro", "reading"):
    ...     pass
    """
    log.info("%s: %s", workflow, name)
    try:
        yield
    except Exception as exc:
        log.info("%s: stage '%s' failed (%s)", workflow, name, type(exc).__name__)
        raise

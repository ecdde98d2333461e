"""Small helpers shared by the CLI commands (output, logging, progress)."""

from __future__ import annotations

import errno
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from litomo.errors import LitomoError
from litomo.progress import ProgressCallback, stage_progress


class WarningsOnce(logging.Filter):
    """Let each distinct warning through once per run and count the repeats.

    A run of four states used to print the same cropping or noise warning eight times; now
    the first one shows and :meth:`summary` names how often each came back.

    Examples
    --------
    >>> once = WarningsOnce()
    >>> rec = logging.LogRecord("x", logging.WARNING, "", 0, "cropping", None, None)
    >>> [once.filter(rec) for _ in range(3)]
    [True, False, False]
    >>> once.summary()
    ["(the warning above, 'cropping', came 3 times in all)"]
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = f"{record.levelno}:{record.getMessage()}"
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        return n == 0

    def summary(self) -> list[str]:
        """One line per warning that came more than once."""
        return [f"(the warning above, {key.split(':', 1)[1][:80]!r}, came {n} times in all)"
                for key, n in self.counts.items() if n > 1]


_STATE: dict[str, Any] = {"filter": None, "progress": []}


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # Python warnings (numpy, dask, ours) as one log line each, so they are counted with the rest
    logging.getLogger("py.warnings").warning("%s", message)


def setup_logging(verbose: bool = False) -> None:
    """Log warnings (and info with ``verbose``) to stderr in a short format, each warning once."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    once = WarningsOnce()
    _STATE["filter"] = once
    # dask.distributed sets INFO levels on its own loggers, which then reach our handler
    # whatever the root level; filter at the handler so only warnings show unless --verbose
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO if verbose else logging.WARNING)
        handler.addFilter(once)
    warnings.showwarning = _show_warning


def progress_bar(enabled: bool = True) -> ProgressCallback | None:
    """The command's progress display on stderr (one line per stage), or None when disabled
    (``--quiet``/``--json``)."""
    if not enabled:
        return None
    prog = stage_progress(sys.stderr)
    _STATE["progress"].append(prog)
    return prog


def finish_cli() -> None:
    """End open progress lines and say how often repeated warnings came (end of a command)."""
    for prog in _STATE["progress"]:
        prog.close()
    _STATE["progress"].clear()
    once = _STATE["filter"]
    if once is not None:
        for line in once.summary():
            sys.stderr.write(f"WARNING: {line}\n")
        once.counts.clear()


def to_jsonable(obj: Any) -> Any:
    """Strict-JSON values (NaN -> None, inf -> "inf"); :func:`litomo.io.rundir.to_jsonable`.

    Imported on use: numpy (which it needs) would add ~0.2 s to every CLI start.
    """
    from litomo.io.rundir import to_jsonable as _to_jsonable

    return _to_jsonable(obj)


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented strict JSON on stdout."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")


def error_line(exc: BaseException) -> str:
    """One line for the user from a :class:`LitomoError`, an ``OSError`` or a ``MemoryError``.

    Examples
    --------
    >>> import errno
    >>> error_line(OSError(errno.ENOSPC, "No space left on device", "out/li.tif"))
    'out/li.tif: No space left on device (free some space, or write --out elsewhere)'
    """
    if isinstance(exc, MemoryError):
        return ("out of memory; use a larger bin factor, a smaller volume, or a machine with more "
                "memory (--memory-limit sets the dask workers' share)")
    if isinstance(exc, OSError) and not isinstance(exc, LitomoError):
        where = exc.filename if exc.filename is not None else ""
        hint = _OS_HINTS.get(exc.errno or 0, "")
        text = exc.strerror or str(exc) or type(exc).__name__
        line = f"{where}: {text}" if where else text
        return f"{line} ({hint})" if hint else line
    return " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__


_OS_HINTS = {
    errno.ENOSPC: "free some space, or write --out elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space, or write --out elsewhere",
    errno.EROFS: "the file system is read-only; write --out elsewhere",
    errno.EACCES: "no permission; check the folder's permissions",
}


def check_output_file(path: Path, flag: str, *, inputs: Sequence[Path] = ()) -> Path:
    """Validate an output file path before any work: its folder exists, it is no folder or input.

    Checked first, so a typo fails in a second rather than after the computation (and no
    folders are created on the user's behalf).

    Examples
    --------
    >>> check_output_file(Path("/nonexistent/dir/f.tif"), "--flux-map")
    Traceback (most recent call last):
    ...
    litomo.errors.LitomoError: --flux-map /nonexistent/dir/f.tif: the folder /nonexistent/dir does not exist
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise LitomoError(f"{flag} {path}: the folder {parent} does not exist")
    if path.is_dir():
        raise LitomoError(f"{flag} {path}: is a folder, give a file name")
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise LitomoError(f"{flag} {path} would overwrite an input file")
    return path


def parse_memory_limit(value: str | None, flag: str = "--memory-limit") -> str | None:
    """Check a dask memory limit (``"4GB"``, ``"512 MiB"``, ``"auto"``) before a cluster starts.

    Examples
    --------
    >>> parse_memory_limit("4GB")
    '4GB'
    >>> parse_memory_limit("banana")
    Traceback (most recent call last):
    ...
    litomo.errors.LitomoError: --memory-limit 'banana': give a size such as 4GB or 512MiB, or auto
    """
    if value is None or value.strip().lower() == "auto":
        return value
    from dask.utils import parse_bytes

    try:
        n = parse_bytes(value.strip())
    except (ValueError, TypeError):
        raise LitomoError(f"{flag} {value!r}: give a size such as 4GB or 512MiB, or auto") from None
    if n < 64 * 2**20:
        raise LitomoError(f"{flag} {value!r}: at least 64MiB per worker")
    return value.strip()


def parse_factors(value: str, flag: str) -> int | tuple[int, int, int]:
    """A bin factor option: one integer (``"7"``) or three, z,y,x (``"1,8,8"``).

    Examples
    --------
    >>> parse_factors("7", "--bin"), parse_factors("1,8,8", "--bin")
    (7, (1, 8, 8))
    """
    parts = [p.strip() for p in str(value).split(",")]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise LitomoError(f"{flag}: expected one integer or three (z,y,x) like 1,8,8, got {value!r}") from None
    if len(nums) not in (1, 3) or any(n < 1 or n > 1024 for n in nums):
        raise LitomoError(f"{flag}: expected one integer or three (z,y,x), each 1-1024, got {value!r}")
    return nums[0] if len(nums) == 1 else (nums[0], nums[1], nums[2])


def warn_once(message: str) -> None:
    """Show a workflow's warning on stderr unless the run already logged the same text.

    Workflows log a warning when it happens and also return it in their result; printing both
    showed it twice (and counted the one event twice).
    """
    once = _STATE["filter"]
    if once is not None and f"{logging.WARNING}:{message}" in once.counts:
        return
    logging.getLogger("litomo").warning("%s", message)

"""The ``litomo`` command line. A thin layer over the library.

Each sub-command lives in its own module in this package and registers itself on
:data:`litomo.cli._app.app`; modules are discovered automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from litomo.cli._app import app
from litomo.cli._common import error_line, finish_cli
from litomo.errors import LitomoError

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input or a failing environment gives one line on stderr and exit code 2.

    :class:`LitomoError` is bad input; ``OSError`` (disk full, read-only or unwritable output,
    a vanished file) and ``MemoryError`` are the environment's. Anything else is a bug and keeps
    its traceback.
    """
    try:
        app(args=argv, prog_name="litomo")
    except (LitomoError, OSError, MemoryError) as exc:
        finish_cli()
        sys.stderr.write(f"litomo: error: {error_line(exc)}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        finish_cli()
        sys.stderr.write("litomo: interrupted\n")
        sys.exit(130)
    except SystemExit:
        finish_cli()
        _before_exit(argv)
        raise
    finish_cli()
    _before_exit(argv)
    return 0


def _before_exit(argv: list[str] | None) -> None:
    # the process ends right after a command-line call (argv None): Python's final garbage
    # collection would walk every object the run created (itk, numba, dask modules); moving
    # them out of the collector's reach took the exit of `litomo run` from 5-8 s to < 1 s on a
    # loaded machine. Not for in-process calls (tests): their objects must stay collectable.
    if argv is None:
        import gc

        gc.freeze()


__all__ = ["app", "main"]

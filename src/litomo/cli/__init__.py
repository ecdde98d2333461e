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
        raise
    finish_cli()
    return 0


__all__ = ["app", "main"]

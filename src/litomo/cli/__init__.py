"""The ``litomo`` command line. A thin layer over the library.

Each sub-command lives in its own module in this package and registers itself on
:data:`litomo.cli._app.app`; modules are discovered automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from litomo.cli._app import app
from litomo.errors import LitomoError

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input gives a one-line error on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="litomo")
    except LitomoError as exc:
        sys.stderr.write(f"litomo: error: {exc}\n")
        sys.exit(2)
    return 0


__all__ = ["app", "main"]

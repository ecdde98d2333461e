"""Where each output of a litomo run folder lives: :class:`RunLayout`, read-only.

The one description of the folder layout (``work/``, ``tables/``, ``figures/``,
``volumes/<state>/``, ``report.html``, ``run.json``). Readers of a finished folder (the report,
``litomo view``, scoring) use it directly; :class:`litomo.io.rundir.RunDir` (ownership, lock,
completion record) uses it to write.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from litomo.errors import LitomoError

MARKER_DIR = ".litomo"
COMPLETION_RECORD = "run.json"


def check_path_component(name: str, what: str = "name") -> str:
    """Refuse a name that is not one safe path component (state names become folder names).

    Examples
    --------
    >>> check_path_component("II")
    'II'
    >>> check_path_component("..")
    Traceback (most recent call last):
    ...
    litomo.errors.LitomoError: name '..' is not a safe folder name (...)
    """
    bad = (not name or name != name.strip() or name in (".", "..") or name.startswith(".")
           or any(c in name for c in "/\\\0") or any(ord(c) < 32 for c in name))
    if bad:
        raise LitomoError(f"{what} {name!r} is not a safe folder name (non-empty, no leading dot, "
                          "no surrounding spaces, no path separators / or \\, no NUL or control characters)")
    return name


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Where each output of a run folder lives: the one description of the layout.

    Read-only (it creates, locks and records nothing): readers of a finished folder (the
    report, ``litomo view``, scoring) use it; :class:`RunDir` uses it to write.

    Examples
    --------
    >>> lay = RunLayout(Path("out"))
    >>> lay.volume("II", "li").as_posix()
    'out/volumes/II/li.ome.zarr'
    >>> lay.table("states").as_posix(), lay.record.name
    ('out/tables/states.csv', 'run.json')
    """

    root: Path

    @property
    def work(self) -> Path:
        """``OUT/work``: the stage cache."""
        return self.root / "work"

    @property
    def figures(self) -> Path:
        """``OUT/figures``: the report's figures."""
        return self.root / "figures"

    @property
    def tables(self) -> Path:
        """``OUT/tables``."""
        return self.root / "tables"

    @property
    def report(self) -> Path:
        """``OUT/report.html``."""
        return self.root / "report.html"

    @property
    def record(self) -> Path:
        """``OUT/run.json``, the completion record."""
        return self.root / COMPLETION_RECORD

    @property
    def volumes_root(self) -> Path:
        """``OUT/volumes``."""
        return self.root / "volumes"

    def volumes(self, state: str) -> Path:
        """``OUT/volumes/<state>``."""
        return self.volumes_root / check_path_component(state, "state name")

    def volume(self, state: str, name: str, suffix: str = ".ome.zarr") -> Path:
        """``OUT/volumes/<state>/<name><suffix>`` (an OME-Zarr image by default)."""
        return self.volumes(state) / f"{name}{suffix}"

    def table(self, name: str, suffix: str = ".csv") -> Path:
        """``OUT/tables/<name><suffix>``."""
        return self.tables / f"{name}{suffix}"

    def state_folders(self) -> list[str]:
        """The state folders under ``volumes/``, sorted (empty if there are none)."""
        vdir = self.volumes_root
        return sorted(p.name for p in vdir.iterdir() if p.is_dir()) if vdir.is_dir() else []

    def rel(self, path: Path) -> str:
        """``path`` relative to the root, as RunDir records it."""
        return path.relative_to(self.root).as_posix()

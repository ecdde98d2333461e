"""Input of ``litomo map2d``: raw TXM frames and flat fields per energy, from TOML or file lists.

A map2d manifest (all paths relative to the manifest's folder)::

    [map2d]
    name = "fov07 soc01"
    method = "auto"            # auto, edge-jump, three-energy, fit
    align = "similarity"       # similarity, translation, none
    pixel_size_um = 0.0389     # optional; default: from the .xrm files
    energy_shift_ev = 0.0      # E_true = E_nominal + shift (as in the Li-mapping manifest)
    edge_ev = 8344.0           # three-energy: the frame used as the edge (default: the middle one)
    background_exponent = 0.0  # three-energy: p of an E^-p background removed first (0: plain ratio)
    [map2d.references]         # optional; default: the bundled NiO / LiNiO2 spectra
    pristine = "refs/NiO.csv"
    charged = "refs/LiNiO2.csv"
    energy_unit = "eV"         # or "keV" (for both files, when they do not say)
    li_pristine = 1.0
    li_charged = 0.38
    [[map2d.energy]]
    energy_ev = 8250.0         # optional for .xrm frames that record it (file or file name)
    sample = ["fov07_xanessoc01_8250_0eV.xrm"]   # repeats are averaged
    flat = ["ref_xanessoc01_8250_0eV.xrm"]
    dark = []                  # optional

Every problem raises :class:`litomo.errors.ManifestError` naming the file and the field.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litomo.errors import InputFileError, ManifestError

METHODS = ("auto", "edge-jump", "three-energy", "fit")
ALIGN_MODES = ("similarity", "translation", "rigid", "none")
_TOP = ("name", "method", "align", "pixel_size_um", "energy_shift_ev", "edge_ev", "background_exponent", "references", "energy",
        "li_poor_max", "li_rich_min", "min_particle_area_um2")
_REFS = ("pristine", "charged", "energy_unit", "li_pristine", "li_charged")
_ENERGY = ("energy_ev", "sample", "flat", "dark")


@dataclass(frozen=True)
class EnergyFrames:
    """Raw frames of one energy: sample exposures (averaged), flat fields and optional darks."""

    energy_ev: float | None
    sample: tuple[Path, ...]
    flat: tuple[Path, ...]
    dark: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ReferenceSpec:
    """Reference spectra files (None: the bundled NiO / LiNiO2) and their Li contents."""

    pristine: Path | None = None
    charged: Path | None = None
    energy_unit: str | None = None
    li_pristine: float = 1.0
    li_charged: float = 0.38


@dataclass(frozen=True)
class Map2DSpec:
    """Everything ``litomo map2d`` needs: frames per energy and the analysis settings."""

    frames: tuple[EnergyFrames, ...]
    name: str = "map2d"
    method: str = "auto"
    align: str = "similarity"
    pixel_size_um: float | None = None
    energy_shift_ev: float = 0.0
    edge_ev: float | None = None
    #: p of an E**-p non-resonant background removed before the three-energy ratio (0: plain ratio)
    background_exponent: float = 0.0
    references: ReferenceSpec = ReferenceSpec()
    li_poor_max: float = 0.6
    li_rich_min: float = 0.9
    min_particle_area_um2: float = 0.5

    def input_files(self) -> list[Path]:
        """Every file the spec reads (for the output-folder check)."""
        out = [p for f in self.frames for p in (*f.sample, *f.flat, *f.dark)]
        return out + [p for p in (self.references.pristine, self.references.charged) if p is not None]


def _err(path: Path, msg: str, where: str) -> ManifestError:
    return ManifestError(msg, path=str(path), field=where)


def _check_keys(path: Path, table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
            raise _err(path, f"unknown key '{key}'{hint}", f"{where}{key}")


def _number(path: Path, value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(path, f"expected a finite number, got {value!r}", where)
    if positive and value <= 0:
        raise _err(path, f"must be positive, got {value!r}", where)
    return float(value)


def _files(path: Path, value: Any, where: str, *, required: bool) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if items is None or (isinstance(items, list) and not items):
        if required:
            raise _err(path, "give at least one file", where)
        return ()
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise _err(path, f"expected a file name or a list of file names, got {value!r}", where)
    out = []
    for s in items:
        p = (path.parent / s) if not Path(s).is_absolute() else Path(s)
        if not p.is_file():
            raise _err(path, f"file not found: {p}", where)
        out.append(p)
    return tuple(out)


def _references(path: Path, t: Any) -> ReferenceSpec:
    if not isinstance(t, Mapping):
        raise _err(path, "expected a table", "map2d.references")
    _check_keys(path, t, _REFS, "map2d.references.")
    files = {k: _files(path, t.get(k), f"map2d.references.{k}", required=False) for k in ("pristine", "charged")}
    if bool(files["pristine"]) != bool(files["charged"]):
        raise _err(path, "give both reference spectra or neither", "map2d.references")
    unit = t.get("energy_unit")
    if unit is not None and str(unit).lower() not in ("ev", "kev"):
        raise _err(path, f"energy_unit must be 'eV' or 'keV', got {unit!r}", "map2d.references.energy_unit")
    li_p = _number(path, t.get("li_pristine", 1.0), "map2d.references.li_pristine")
    li_c = _number(path, t.get("li_charged", 0.38), "map2d.references.li_charged")
    if not li_c < li_p:
        raise _err(path, f"li_charged ({li_c:g}) must be below li_pristine ({li_p:g})", "map2d.references.li_charged")
    return ReferenceSpec(files["pristine"][0] if files["pristine"] else None,
                         files["charged"][0] if files["charged"] else None, unit, li_p, li_c)


def load_map2d_manifest(path: str | Path) -> Map2DSpec:
    """Read and validate a map2d TOML manifest (format in the module docstring).

    Examples
    --------
    >>> spec = load_map2d_manifest("fov07.toml")  # doctest: +SKIP
    >>> [f.energy_ev for f in spec.frames]  # doctest: +SKIP
    [8250.0, 8353.0]
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: manifest not found")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid TOML ({exc})") from None
    t = doc.get("map2d")
    if not isinstance(t, Mapping) or set(doc) - {"map2d"}:
        raise _err(path, "a map2d manifest has exactly one table, [map2d]", "map2d")
    _check_keys(path, t, _TOP, "map2d.")
    rows = t.get("energy")
    if not isinstance(rows, list) or not rows:
        raise _err(path, "give one [[map2d.energy]] table per energy", "map2d.energy")
    frames = []
    for i, row in enumerate(rows):
        where = f"map2d.energy[{i}]"
        if not isinstance(row, Mapping):
            raise _err(path, "expected a table", where)
        _check_keys(path, row, _ENERGY, where + ".")
        e = row.get("energy_ev")
        frames.append(EnergyFrames(
            None if e is None else _number(path, e, where + ".energy_ev", positive=True),
            _files(path, row.get("sample"), where + ".sample", required=True),
            _files(path, row.get("flat"), where + ".flat", required=True),
            _files(path, row.get("dark"), where + ".dark", required=False)))
    kw: dict[str, Any] = {}
    for key in ("pixel_size_um", "min_particle_area_um2"):
        if key in t:
            kw[key] = _number(path, t[key], f"map2d.{key}", positive=True)
    for key in ("energy_shift_ev", "edge_ev", "background_exponent", "li_poor_max", "li_rich_min"):
        if key in t:
            kw[key] = _number(path, t[key], f"map2d.{key}")
    for key, allowed in (("method", METHODS), ("align", ALIGN_MODES)):
        if key in t and t[key] not in allowed:
            raise _err(path, f"must be one of {', '.join(allowed)}, got {t[key]!r}", f"map2d.{key}")
        if key in t:
            kw[key] = t[key]
    if "references" in t:
        kw["references"] = _references(path, t["references"])
    return Map2DSpec(frames=tuple(frames), name=str(t.get("name", path.stem)), **kw)


def group_frames_by_energy(samples: Sequence[Path], flats: Sequence[Path],
                           darks: Sequence[Path] = (), *, tolerance_ev: float = 0.5) -> tuple[EnergyFrames, ...]:
    """Group sample and flat frames (``.xrm``) by the energy each file records (file or name).

    Every energy needs at least one sample and one flat frame; darks are shared by all
    energies. Energies closer than ``tolerance_ev`` are one energy.

    Raises
    ------
    InputFileError
        A frame has no energy, or an energy lacks its sample or flat frames (names the flag).
    """
    from litomo.io.xrm import read_xrm

    def energy_of(p: Path, flag: str) -> float:
        e = read_xrm(p).energy_ev
        if e is None or not isinstance(e, float):
            raise InputFileError(f"{flag} {p}: no energy in the file or its name; use a map2d manifest "
                                 "with energy_ev for each energy")
        return float(e)

    groups: list[list[Any]] = []  # [energy, samples, flats]
    for flag, files, slot in (("--sample", samples, 1), ("--flat", flats, 2)):
        for p in files:
            e = energy_of(Path(p), flag)
            g = next((g for g in groups if abs(g[0] - e) < tolerance_ev), None)
            if g is None:
                g = [e, [], []]
                groups.append(g)
            g[slot].append(Path(p))
    for e, s, f in groups:
        if not s:
            raise InputFileError(f"--sample: no sample frame at {e:.1f} eV, where --flat gives {f[0].name}")
        if not f:
            raise InputFileError(f"--flat: no flat-field frame at {e:.1f} eV (sample {s[0].name}); "
                                 "every energy needs its own flat field")
    groups.sort(key=lambda g: g[0])
    return tuple(EnergyFrames(float(e), tuple(s), tuple(f), tuple(Path(d) for d in darks)) for e, s, f in groups)

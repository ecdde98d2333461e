"""Typed field readers for the manifest: energies with units, numbers, paths, with the field's name in every error."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from litomo.errors import InputFileError, ManifestError
from litomo.io.guards import check_input_path

# --------------------------------------------------------------------------- parsing helpers

_ENERGY_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(kev|ev)?\s*$", re.IGNORECASE)


def parse_energy_ev(value: Any, *, where: str = "energy", path: str | None = None) -> float:
    """Parse an energy to eV: a number (eV) or a string with unit, ``"8.345 keV"``/``"8345 eV"``.

    A bare number below 100 is refused (it is almost certainly keV written without a unit).

    Examples
    --------
    >>> parse_energy_ev(8345.0), parse_energy_ev("8.345 keV"), parse_energy_ev("8345 eV")
    (8345.0, 8345.0, 8345.0)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ManifestError(f"expected an energy in eV (number or string like \"8.345 keV\"), "
                            f"got {type(value).__name__} {value!r}", path=path, field=where)
    unit = None
    if isinstance(value, str):
        m = _ENERGY_RE.match(value)
        if not m:
            raise ManifestError(f"cannot read energy {value!r}; write e.g. 8345.0 or \"8.345 keV\"",
                                path=path, field=where)
        number, unit = float(m.group(1)), (m.group(2) or "").lower() or None
    else:
        number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ManifestError(f"energy must be positive and finite, got {value!r}", path=path, field=where)
    if unit == "kev":
        return number * 1000.0
    if unit is None and number < 100:
        raise ManifestError(f"{number:g} looks like keV; write {number * 1000:.1f} or \"{number:g} keV\"",
                            path=path, field=where)
    return number


class FieldReader:
    """Carries the manifest path for error messages and resolves relative paths."""

    def __init__(self, path: Path):
        self.path = path
        self.base = path.parent

    def err(self, message: str, where: str) -> ManifestError:
        return ManifestError(message, path=str(self.path), field=where)

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key.lower(), allowed, n=1, cutoff=0.6) or [
                    a for a in allowed if a.startswith(key.lower()) or key.lower().startswith(a)][:1]
                hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(allowed)}"
                prefix = f"{where}." if where else ""
                raise self.err(f"unknown key '{key}'{hint}", f"{prefix}{key}")

    def table(self, doc: Mapping[str, Any], key: str, where: str, required: bool = True) -> dict:
        if key not in doc:
            if required:
                raise self.err(f"missing required table [{key}]", where)
            return {}
        value = doc[key]
        if not isinstance(value, dict):
            raise self.err(f"expected a table, got {type(value).__name__}", where)
        return value

    def number(self, value: Any, where: str, *, lo: float | None = None, hi: float | None = None,
               strict_lo: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.err(f"expected a number, got {type(value).__name__} {value!r}", where)
        v = float(value)
        if not math.isfinite(v):
            raise self.err(f"must be finite, got {value!r}", where)
        if lo is not None and (v <= lo if strict_lo else v < lo):
            raise self.err(f"must be {'>' if strict_lo else '>='} {lo:g}, got {v:g}", where)
        if hi is not None and v > hi:
            raise self.err(f"must be <= {hi:g}, got {v:g}", where)
        return v

    def string(self, value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.err(f"expected a string, got {type(value).__name__} {value!r}", where)
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.err(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}{hint}", where)
        return value

    def factors(self, value: Any, where: str, *, hi: int = 1024) -> tuple[int, int, int]:
        """A bin factor: one integer or three ``[z, y, x]`` (each 1..``hi``)."""
        if isinstance(value, list):
            if len(value) != 3:
                raise self.err(f"expected one integer or three [z, y, x], got {len(value)} values", where)
            vals, names = value, [f"{where}[{i}]" for i in range(3)]
        else:
            vals, names = [value] * 3, [where] * 3
        out = []
        for v, name in zip(vals, names, strict=True):
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.err(f"expected an integer >= 1, got {v!r}", name)
            if not 1 <= v <= hi:
                raise self.err(f"must be >= 1 and <= {hi}, got {v}", name)
            out.append(int(v))
        return tuple(out)  # type: ignore[return-value]

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.err(f"expected true or false, got {value!r}", where)
        return value

    def file(self, value: Any, where: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.err(f"expected a file path (string), got {value!r}", where)
        if "\x00" in value:
            raise self.err(f"a file path cannot hold a NUL character: {value!r}", where)
        p = Path(value).expanduser()
        p = (p if p.is_absolute() else self.base / p).resolve()
        try:
            check_input_path(p)
        except InputFileError as exc:
            raise self.err(str(exc), where) from None
        return p

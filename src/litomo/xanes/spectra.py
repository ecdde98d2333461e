"""Reference spectra: the :class:`Spectrum` container and :func:`read_spectrum`.

Supported files (format sniffed from the content, not the extension):

* XDI (``# XDI/1.0``): energy column plus ``mutrans``/``mufluor``/``mu``, or ``i0`` and
  ``itrans`` (``mu = ln(i0 / itrans)``).
* Athena project (``.prj``, gzip'd or plain Demeter text): the groups' ``@x``/``@y`` arrays.
  ``column`` selects a group by its label (``"NiO.000"``, ``"Ref NiO"``); the default is the
  merged group.
* CSV with a header row (litomo's reference format: ``energy_ev,mu``) or a ``# columns: ...``
  comment naming the columns; ``#`` comment lines are allowed; ``column`` selects the mu column.
* Two whitespace-separated columns (energy, mu).

Energies are in eV. Energies all below 100 are accepted as keV only when ``energy_unit="keV"``
is passed or the file header says keV (SPEC 1: a bare number below 100 is an error, not a guess).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from litomo.errors import DataError, InputFileError
from litomo.io.guards import check_input_path

log = logging.getLogger(__name__)

MIN_POINTS = 4


@dataclass
class Spectrum:
    """One absorption spectrum mu(E).

    Parameters
    ----------
    energy_ev : ndarray
        Strictly increasing energies in eV, shape (E,).
    mu : ndarray
        Absorption (raw or normalised), shape (E,).
    name : str
        Label used in messages.
    metadata : dict
        Provenance (file, column, group, unit conversion).

    Examples
    --------
    >>> s = Spectrum(np.array([8300.0, 8340.0, 8350.0, 8400.0]), np.array([0.0, 0.5, 1.2, 1.0]), "demo")
    >>> float(s.at(8320.0))
    0.25
    """

    energy_ev: np.ndarray
    mu: np.ndarray
    name: str = "spectrum"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.energy_ev, self.mu = _validate(
            np.asarray(self.energy_ev, dtype=float), np.asarray(self.mu, dtype=float), self.name
        )

    @property
    def range_ev(self) -> tuple[float, float]:
        """(first, last) energy in eV."""
        return float(self.energy_ev[0]), float(self.energy_ev[-1])

    def at(self, energies_ev) -> np.ndarray | float:
        """mu at ``energies_ev`` (eV) by linear interpolation.

        Raises
        ------
        DataError
            If an energy lies outside the measured range (no extrapolation).
        """
        e = np.asarray(energies_ev, dtype=float)
        lo, hi = self.range_ev
        # a tolerance of 1e-6 eV absorbs float round-off at the end points
        bad = (e < lo - 1e-6) | (e > hi + 1e-6) | ~np.isfinite(e)
        if np.any(bad):
            outside = np.atleast_1d(e)[np.atleast_1d(bad)]
            raise DataError(
                f"spectrum '{self.name}' covers {lo:.2f}-{hi:.2f} eV; cannot evaluate it at "
                f"{', '.join(f'{v:.2f}' for v in outside[:5])} eV"
            )
        out = np.interp(e, self.energy_ev, self.mu)
        return float(out) if out.ndim == 0 else out

    def shifted(self, shift_ev: float) -> Spectrum:
        """A copy with energies shifted by ``shift_ev`` (eV), e.g. to another beamtime's calibration."""
        meta = dict(
            self.metadata, energy_shift_ev=self.metadata.get("energy_shift_ev", 0.0) + shift_ev
        )
        return Spectrum(self.energy_ev + float(shift_ev), self.mu.copy(), self.name, meta)


def _validate(energy: np.ndarray, mu: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    if energy.ndim != 1 or mu.ndim != 1 or energy.shape != mu.shape:
        raise DataError(
            f"spectrum '{name}': energy and mu must be 1-D of equal length, got {energy.shape} "
            f"and {mu.shape}"
        )
    if energy.size < MIN_POINTS:
        raise DataError(f"spectrum '{name}' has {energy.size} points; at least {MIN_POINTS} needed")
    if not (np.all(np.isfinite(energy)) and np.all(np.isfinite(mu))):
        raise DataError(f"spectrum '{name}' contains NaN or infinite values")
    d = np.diff(energy)
    if np.any(d <= 0):
        i = int(np.argmax(d <= 0))
        kind = "duplicate" if d[i] == 0 else "decreasing"
        raise DataError(
            f"spectrum '{name}': energies must increase strictly; {kind} energy at row {i + 1} "
            f"({energy[i]:.4f} -> {energy[i + 1]:.4f})"
        )
    return energy, mu


def _to_ev(energy: np.ndarray, unit: str | None, header_unit: str | None, name: str) -> np.ndarray:
    """Apply the explicit or header unit; refuse keV-looking energies without one."""
    unit = unit or header_unit
    if unit is not None:
        u = unit.strip().lower()
        if u not in ("ev", "kev"):
            raise DataError(f"spectrum '{name}': unknown energy unit '{unit}' (use 'eV' or 'keV')")
        if u == "kev":
            energy = energy * 1000.0
    if energy.size and np.nanmax(energy) < 100.0:
        raise DataError(
            f"spectrum '{name}': energies look like keV (largest {np.nanmax(energy):.6g}, eV expected "
            "above 100): pass --energy-unit keV (manifest: energy_unit = \"keV\"; Python: energy_unit='keV')"
        )
    return energy


def _open_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputFileError(f"{path}: corrupt gzip data ({exc})") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_spectrum(
    path: str | os.PathLike,
    *,
    energy_unit: str | None = None,
    column: str | None = None,
) -> Spectrum:
    """Read one spectrum from an XDI, Athena ``.prj``, CSV or two-column text file.

    Parameters
    ----------
    path : path-like
        The file.
    energy_unit : {"eV", "keV"}, optional
        Unit of the energy column when the file does not say; required for keV data.
    column : str, optional
        mu column (CSV/XDI) or group label (Athena project) to read.

    Returns
    -------
    Spectrum
        Energies in eV.

    Raises
    ------
    InputFileError
        Missing or unparseable file.
    DataError
        keV-looking energies without a unit, non-monotonic energies, NaN, too few points.

    Examples
    --------
    >>> from importlib.resources import files
    >>> s = read_spectrum(files("litomo.xanes") / "data" / "ni_kedge_NiO.csv")
    >>> s.energy_ev[0]
    np.float64(8200.0)
    """
    path = check_input_path(path, allow_dir=False)  # a FIFO would block the read
    text = _open_text(path)
    first = text.lstrip()[:200]
    if first.startswith("# XDI") or first.startswith("#XDI"):
        return _read_xdi(path, text, energy_unit, column)
    if "Athena project file" in first:
        return _read_athena(path, text, energy_unit, column)
    return _read_table(path, text, energy_unit, column)


def _float_rows(lines: list[str], path: Path, sep: str | None) -> np.ndarray:
    rows = []
    for n, line in lines:
        parts = [p for p in (line.split(sep) if sep else line.split())]
        try:
            rows.append([float(p) for p in parts])
        except ValueError as exc:
            raise InputFileError(
                f"{path}: line {n}: cannot parse numbers in {line[:60]!r}"
            ) from exc
    if not rows:
        raise InputFileError(f"{path}: no data rows")
    ncol = {len(r) for r in rows}
    if len(ncol) != 1:
        raise InputFileError(f"{path}: rows have different numbers of columns {sorted(ncol)}")
    return np.array(rows, dtype=float)


def _pick_mu_column(names: list[str], column: str | None, path: Path) -> int:
    lower = [c.strip().lower() for c in names]
    if column is not None:
        if column.strip().lower() not in lower:
            raise DataError(f"{path}: no column '{column}'; columns are {names}")
        return lower.index(column.strip().lower())
    for cand in ("mu", "mutrans", "mu_trans", "xmu", "mufluor", "norm", "od"):
        if cand in lower:
            return lower.index(cand)
    # otherwise the first non-energy column (documented default for multi-column files)
    idx = 1
    if len(names) > 2:
        log.info("%s: several columns %s; using '%s' (select with column=)", path, names, names[1])
    return idx


def _read_table(path: Path, text: str, energy_unit: str | None, column: str | None) -> Spectrum:
    header: list[str] | None = None
    data_lines: list[tuple[int, str]] = []
    comment_columns: list[str] | None = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if body.lower().startswith("columns:"):
                # "columns: energy_eV, mu_a (description, more), mu_b (..)" -> names
                spec = re.sub(r"\([^)]*\)", "", body.split(":", 1)[1])
                comment_columns = [c.strip() for c in spec.split(",") if c.strip()]
            continue
        if header is None and not data_lines and re.match(r"^[A-Za-z_\"]", line):
            header = [c.strip().strip('"') for c in re.split(r"[,\t;]|\s+", line) if c.strip()]
            continue
        data_lines.append((n, line))
    sep = "," if data_lines and "," in data_lines[0][1] else None
    arr = _float_rows(data_lines, path, sep)
    names = header or comment_columns
    if names is not None and len(names) != arr.shape[1]:
        raise InputFileError(
            f"{path}: header names {len(names)} columns but rows have {arr.shape[1]}"
        )
    if arr.shape[1] < 2:
        raise InputFileError(f"{path}: need at least two columns (energy, mu)")
    header_unit = None
    if names is None:
        names = ["energy"] + [f"col{i}" for i in range(2, arr.shape[1] + 1)]
        if column is not None:
            raise DataError(f"{path}: has no column names; cannot select column '{column}'")
    e_low = names[0].lower()
    if "kev" in e_low:
        header_unit = "keV"
    elif e_low.endswith("ev") or "(ev)" in e_low:
        header_unit = "eV"
    imu = _pick_mu_column(names, column, path)
    if imu == 0:
        raise DataError(f"{path}: column '{names[0]}' is the energy column")
    name = f"{path.stem}:{names[imu]}" if len(names) > 2 else path.stem
    energy = _to_ev(arr[:, 0], energy_unit, header_unit, name)
    return Spectrum(
        energy,
        arr[:, imu],
        name,
        {"file": str(path), "format": "table", "column": names[imu], "columns": names},
    )


def _read_xdi(path: Path, text: str, energy_unit: str | None, column: str | None) -> Spectrum:
    cols: dict[int, tuple[str, str | None]] = {}
    data_lines: list[tuple[int, str]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*Column\.(\d+)\s*:\s*(\S+)(?:\s+(\S+))?", line)
            if m:
                cols[int(m.group(1))] = (m.group(2), m.group(3))
            continue
        data_lines.append((n, line))
    arr = _float_rows(data_lines, path, None)
    names = [cols.get(i + 1, (f"col{i + 1}", None))[0] for i in range(arr.shape[1])]
    lower = [c.lower() for c in names]
    if column is not None:
        mu = arr[:, _pick_mu_column(names, column, path)]
        used = column
    elif "mutrans" in lower or "mufluor" in lower or "mu" in lower:
        used = next(c for c in ("mutrans", "mufluor", "mu") if c in lower)
        mu = arr[:, lower.index(used)]
    elif "i0" in lower and "itrans" in lower:
        i0, it = arr[:, lower.index("i0")], arr[:, lower.index("itrans")]
        if np.any(i0 <= 0) or np.any(it <= 0):
            raise DataError(f"{path}: i0/itrans must be positive to form ln(i0/itrans)")
        mu, used = np.log(i0 / it), "ln(i0/itrans)"
    else:
        raise DataError(f"{path}: no mu column (mutrans, mufluor, mu or i0+itrans) in {names}")
    unit = cols.get(1, ("energy", None))[1]
    energy = _to_ev(arr[:, 0], energy_unit, unit, path.stem)
    return Spectrum(energy, mu, path.stem, {"file": str(path), "format": "xdi", "column": used})


def _read_athena(path: Path, text: str, energy_unit: str | None, column: str | None) -> Spectrum:
    # Demeter writes Perl assignments; the arrays are lists of quoted numbers, so a regex is
    # enough and avoids evaluating file content.
    groups: list[dict] = []
    cur: dict = {}
    for line in text.splitlines():
        if line.startswith("$old_group"):
            cur = {"tag": (re.findall(r"'([^']*)'", line) or [""])[0]}
        elif line.startswith("@args"):
            # tokens: quoted strings, bare numbers, or Perl lists ([] / [...]) kept as one item
            items = re.findall(
                r"'((?:[^'\\]|\\.)*)'|(\[[^\]]*\])|([-+]?[\d.][\d.eE+-]*)",
                line[line.index("(") :],
            )
            flat = [a or b or c for a, b, c in items]
            cur["args"] = dict(zip(flat[0::2], flat[1::2], strict=False))
        elif line.startswith("@x ") or line.startswith("@y "):
            try:
                cur[line[1]] = np.array([float(v) for v in re.findall(r"'([^']*)'", line)])
            except ValueError as exc:
                raise InputFileError(f"{path}: bad number in Athena array ({exc})") from exc
        elif line.startswith("[record]"):
            if "x" in cur and "y" in cur:
                groups.append(cur)
            cur = {}
    if not groups:
        raise InputFileError(f"{path}: no data groups found in Athena project")

    def label(g: dict) -> str:
        return str(g.get("args", {}).get("label", g.get("tag", ""))).strip()

    # a project may hold two groups of one label (NiO.prj: 'NiO.000' twice); list each once
    labels = list(dict.fromkeys(label(g) for g in groups))
    if column is not None:
        want = column.strip()
        hits = [g for g in groups if label(g) == want or g.get("tag") == want]
        if not hits:
            raise DataError(f"{path}: no group '{column}'; groups are {labels}")
        g = hits[0]
    else:
        merged = [
            g
            for g in groups
            if g.get("args", {}).get("is_merge", "") not in ("", "0")
            and not label(g).startswith("Ref")
        ]
        if merged:
            g = merged[0]
        elif len(groups) == 1:
            g = groups[0]
        else:
            raise DataError(
                f"{path}: no merged group; choose one with --column (Python: column=), groups are {labels}"
            )
    args = g.get("args", {})
    header_unit = "keV" if str(args.get("is_kev", "0")) == "1" else None
    name = f"{path.stem}:{label(g)}"
    energy = _to_ev(g["x"], energy_unit, header_unit, name)
    e0 = args.get("bkg_e0")
    meta = {
        "file": str(path),
        "format": "athena",
        "group": label(g),
        "groups": labels,
        "athena_e0_ev": float(e0) if e0 is not None and _isnum(e0) else None,
    }
    return Spectrum(energy, g["y"], name, meta)


def _isnum(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False

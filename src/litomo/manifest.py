"""The experiment manifest: a TOML file describing one operando XANES tomography experiment.

:func:`load_manifest` turns the file into a validated, immutable :class:`Manifest`;
:func:`write_manifest` writes one back (atomically). Every problem raises
:class:`litomo.errors.ManifestError` naming the file and the field path (``states[1].edge``,
0-based state index) so a scientist can fix it without reading code.

A minimal manifest::

    [sample]
    name = "MX-A"
    voxel_size_um = 0.03            # or [z, y, x]
    expected = {am = 0.6, cbd = 0.1, pore = 0.3}   # optional reference values
    [xanes]
    pre_edge_ev = 8330.0            # a bare number must be eV; "8.33 keV" is accepted
    edge_ev = 8345.0
    post_edge_ev = 8430.0
    energy_shift_ev = 0.0           # optional foil calibration, see below
    reference_pristine = "refs/pristine.csv"   # columns: energy_ev, mu (normalised)
    reference_charged = "refs/charged.csv"
    li_pristine = 1.0
    li_charged = 0.38
    [processing]
    bin = 7
    [[states]]
    name = "I"
    pre_edge = "I/pre_edge.tif"
    edge = "I/edge.tif"
    post_edge = "I/post_edge.tif"

Energy-list mode (full spectra): a state gives ``energies_ev = [...]`` and ``volumes = [...]``
instead of ``pre_edge``/``edge``/``post_edge``; then the ``[xanes]`` three energies are optional.

**Energy calibration sign.** ``energy_shift_ev`` is *added* to the nominal (monochromator)
energies of the images before they are compared with the reference spectra:
``E_true = E_nominal + energy_shift_ev``. If the Ni foil edge measured on the beamline appears at
8331.0 eV while its tabulated value is 8333.0 eV, the shift is +2.0 eV.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litomo.errors import ManifestError
from litomo.io.atomic import write_text_atomic

__all__ = [
    "ENERGY_ROLES",
    "Manifest",
    "ProcessingSpec",
    "SampleSpec",
    "StateSpec",
    "XanesSpec",
    "load_manifest",
    "parse_energy_ev",
    "write_manifest",
]

#: The three image roles of a three-energy state, in energy order.
ENERGY_ROLES: tuple[str, str, str] = ("pre_edge", "edge", "post_edge")

_SAMPLE_KEYS = ("name", "voxel_size_um", "expected")
_XANES_KEYS = (
    "pre_edge_ev", "edge_ev", "post_edge_ev", "energy_shift_ev",
    "reference_pristine", "reference_charged", "li_pristine", "li_charged",
)
_PROCESSING_KEYS = (
    "bin", "register", "bspline", "denoise", "jump_threshold", "sign_convention",
    "li_poor_max", "li_rich_min", "clip_li", "histogram_bins", "background_exponent",
    "register_bin", "bspline_spacing_um", "map_binning", "surface_erosion_vox",
)
_STATE_KEYS = (
    "name", "pre_edge", "edge", "post_edge", "energies_ev", "volumes",
    "label", "voltage_v", "expected_li", "note",
)
_TOP_KEYS = ("sample", "xanes", "processing", "states")
_FRACTION_KEYS = ("am", "cbd", "pore")


@dataclass(frozen=True)
class SampleSpec:
    """``[sample]``: name, voxel size ``(z, y, x)`` in um, optional expected metric values."""

    name: str
    voxel_size_um: tuple[float, float, float]
    expected: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class XanesSpec:
    """``[xanes]``: nominal energies (eV), reference spectra, Li content of the two references."""

    pre_edge_ev: float | None = None
    edge_ev: float | None = None
    post_edge_ev: float | None = None
    reference_pristine: Path | None = None
    reference_charged: Path | None = None
    li_pristine: float = 1.0
    li_charged: float = 0.38
    energy_shift_ev: float = 0.0

    @property
    def three_energies_ev(self) -> tuple[float, float, float] | None:
        """``(pre, edge, post)`` nominal energies in eV, or None when not given."""
        if self.pre_edge_ev is None or self.edge_ev is None or self.post_edge_ev is None:
            return None
        return (self.pre_edge_ev, self.edge_ev, self.post_edge_ev)

    def calibrated_ev(self, energies_ev: Any) -> tuple[float, ...]:
        """Nominal energies plus ``energy_shift_ev`` (the energies to compare with references)."""
        return tuple(float(e) + self.energy_shift_ev for e in energies_ev)


@dataclass(frozen=True)
class ProcessingSpec:
    """``[processing]``: options of the analysis pipeline (all optional, defaults shown)."""

    bin: tuple[int, int, int] = (7, 7, 7)
    register: bool = True
    bspline: bool = True
    denoise: str = "none"
    jump_threshold: str | float = "auto"
    sign_convention: str = "conventional"
    li_poor_max: float = 0.6
    li_rich_min: float = 0.9
    clip_li: tuple[float, float] | None = (0.0, 1.2)
    histogram_bins: int = 50
    #: p of an E**-p non-resonant background removed before the ratio (0 = SPEC 2.1's plain R);
    #: see litomo.xanes.threeenergy.background_corrected_ratio
    background_exponent: float = 0.0
    #: binning of the volumes the registration is estimated on (applied at full resolution);
    #: "auto": the smallest factor >= 2 giving at most ~17 M voxels (256^3)
    register_bin: int | str = "auto"
    #: B-spline control-point spacing of the non-rigid registration stage (um)
    bspline_spacing_um: float = 4.5
    #: what the edge ratio of a bin is computed from: "am_interior" = the mean over the
    #: full-resolution voxels inside the particles (see litomo.pipeline.stage_map), "mean" =
    #: the plain block mean of every voxel (SPEC 2.1 read literally)
    map_binning: str = "am_interior"
    #: voxels of each particle's surface left out of the "am_interior" means
    surface_erosion_vox: int = 1


@dataclass(frozen=True)
class StateSpec:
    """One electrochemical state: its images and their nominal energies (eV, increasing).

    In three-energy mode ``energies_ev`` is ``(pre, edge, post)`` from ``[xanes]`` and
    ``volumes`` the matching images; :meth:`volume_for` looks one up by role.
    """

    name: str
    energies_ev: tuple[float, ...]
    volumes: tuple[Path, ...]
    label: str | None = None
    voltage_v: float | None = None
    expected_li: float | None = None
    note: str | None = None
    three_energy: bool = True

    def volume_for(self, role: str) -> Path:
        """The image path for ``role`` in ``("pre_edge", "edge", "post_edge")``.

        Examples
        --------
        >>> s = StateSpec("I", (8330.0, 8345.0, 8430.0), (Path("a"), Path("b"), Path("c")))
        >>> s.volume_for("edge").name
        'b'
        """
        if role not in ENERGY_ROLES:
            raise ValueError(f"role must be one of {ENERGY_ROLES}, got {role!r}")
        if not self.three_energy:
            raise ManifestError(
                f"state {self.name!r} is an energy-list state ({len(self.volumes)} energies); "
                "it has no pre_edge/edge/post_edge roles"
            )
        return self.volumes[ENERGY_ROLES.index(role)]


@dataclass(frozen=True)
class Manifest:
    """A validated experiment manifest; all paths are absolute."""

    path: Path
    sample: SampleSpec
    xanes: XanesSpec
    processing: ProcessingSpec
    states: list[StateSpec]

    def state(self, name: str) -> StateSpec:
        """The state called ``name``."""
        for s in self.states:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def three_energy(self) -> bool:
        """True when every state is a three-energy (pre/edge/post) state."""
        return all(s.three_energy for s in self.states)


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


class _Ctx:
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

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.err(f"expected true or false, got {value!r}", where)
        return value

    def file(self, value: Any, where: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.err(f"expected a file path (string), got {value!r}", where)
        p = Path(value).expanduser()
        p = (p if p.is_absolute() else self.base / p).resolve()
        if not p.exists():
            raise self.err(f"file not found: {p}", where)
        return p


def _parse_sample(ctx: _Ctx, t: dict) -> SampleSpec:
    ctx.check_keys(t, _SAMPLE_KEYS, "sample")
    if "name" not in t:
        raise ctx.err("missing required field", "sample.name")
    name = ctx.string(t["name"], "sample.name")
    if "voxel_size_um" not in t:
        raise ctx.err("missing required field (voxel edge length in um)", "sample.voxel_size_um")
    vs = t["voxel_size_um"]
    if isinstance(vs, list):
        if len(vs) != 3:
            raise ctx.err(f"expected one number or three [z, y, x], got {len(vs)} values", "sample.voxel_size_um")
        voxel = tuple(ctx.number(v, f"sample.voxel_size_um[{i}]", lo=0, strict_lo=True) for i, v in enumerate(vs))
    else:
        voxel = (ctx.number(vs, "sample.voxel_size_um", lo=0, strict_lo=True),) * 3
    expected: dict[str, float] = {}
    if "expected" in t:
        ex = t["expected"]
        if not isinstance(ex, dict):
            raise ctx.err("expected an inline table like {am = 0.6, cbd = 0.1, pore = 0.3}", "sample.expected")
        for k, v in ex.items():
            where = f"sample.expected.{k}"
            if k in _FRACTION_KEYS:
                expected[k] = ctx.number(v, where, lo=0.0, hi=1.0)
            else:
                expected[k] = ctx.number(v, where)
        fr = [expected[k] for k in _FRACTION_KEYS if k in expected]
        if len(fr) == 3 and abs(sum(fr) - 1.0) > 0.02:
            raise ctx.err(f"volume fractions am + cbd + pore must sum to 1, got {sum(fr):.3f}", "sample.expected")
    return SampleSpec(name=name, voxel_size_um=voxel, expected=expected)  # type: ignore[arg-type]


def _parse_xanes(ctx: _Ctx, t: dict, need_three: bool) -> XanesSpec:
    ctx.check_keys(t, _XANES_KEYS, "xanes")
    e: dict[str, float | None] = {}
    for key in ("pre_edge_ev", "edge_ev", "post_edge_ev"):
        if key in t:
            e[key] = parse_energy_ev(t[key], where=f"xanes.{key}", path=str(ctx.path))
        elif need_three:
            raise ctx.err("missing required field (needed by states with pre_edge/edge/post_edge)", f"xanes.{key}")
        else:
            e[key] = None
    if all(v is not None for v in e.values()):
        pre, edge, post = e["pre_edge_ev"], e["edge_ev"], e["post_edge_ev"]
        if not (pre < edge < post):  # type: ignore[operator]
            raise ctx.err(f"energies must satisfy pre_edge_ev < edge_ev < post_edge_ev; got "
                          f"{pre:g} < {edge:g} < {post:g}", "xanes.edge_ev")
    refs: dict[str, Path | None] = {}
    for key in ("reference_pristine", "reference_charged"):
        refs[key] = ctx.file(t[key], f"xanes.{key}") if key in t else None
        if refs[key] is None and need_three:
            raise ctx.err("missing required field (reference spectrum CSV: energy_ev, mu)", f"xanes.{key}")
    if (refs["reference_pristine"] is None) != (refs["reference_charged"] is None):
        missing = "reference_charged" if refs["reference_charged"] is None else "reference_pristine"
        raise ctx.err("give both reference spectra or neither", f"xanes.{missing}")
    li_p = ctx.number(t.get("li_pristine", 1.0), "xanes.li_pristine", lo=0.0)
    li_c = ctx.number(t.get("li_charged", 0.38), "xanes.li_charged", lo=0.0)
    if li_c >= li_p:
        raise ctx.err(f"li_charged ({li_c:g}) must be smaller than li_pristine ({li_p:g})", "xanes.li_charged")
    shift = ctx.number(t.get("energy_shift_ev", 0.0), "xanes.energy_shift_ev")
    if abs(shift) > 100:
        raise ctx.err(f"energy shift of {shift:g} eV is implausible (a foil calibration is a few eV)",
                      "xanes.energy_shift_ev")
    return XanesSpec(
        pre_edge_ev=e["pre_edge_ev"], edge_ev=e["edge_ev"], post_edge_ev=e["post_edge_ev"],
        reference_pristine=refs["reference_pristine"], reference_charged=refs["reference_charged"],
        li_pristine=li_p, li_charged=li_c, energy_shift_ev=shift,
    )


def _parse_processing(ctx: _Ctx, t: dict) -> ProcessingSpec:
    ctx.check_keys(t, _PROCESSING_KEYS, "processing")
    d = ProcessingSpec()
    kw: dict[str, Any] = {}
    if "bin" in t:
        b = t["bin"]
        if isinstance(b, list):
            if len(b) != 3:
                raise ctx.err(f"expected one integer or three [z, y, x], got {len(b)} values", "processing.bin")
            vals = b
        else:
            vals = [b] * 3
        out = []
        for i, v in enumerate(vals):
            where = f"processing.bin[{i}]" if isinstance(b, list) else "processing.bin"
            if isinstance(v, bool) or not isinstance(v, int):
                raise ctx.err(f"expected an integer >= 1, got {v!r}", where)
            if v < 1:
                raise ctx.err(f"must be >= 1, got {v}", where)
            out.append(int(v))
        kw["bin"] = tuple(out)
    for key in ("register", "bspline"):
        if key in t:
            kw[key] = ctx.boolean(t[key], f"processing.{key}")
    if "denoise" in t:
        kw["denoise"] = ctx.string(t["denoise"], "processing.denoise", ("none", "median", "nlm"))
    if "jump_threshold" in t:
        v = t["jump_threshold"]
        if isinstance(v, str):
            kw["jump_threshold"] = ctx.string(v, "processing.jump_threshold", ("auto",))
        else:
            kw["jump_threshold"] = ctx.number(v, "processing.jump_threshold", lo=0.0)
    if "sign_convention" in t:
        kw["sign_convention"] = ctx.string(t["sign_convention"], "processing.sign_convention",
                                           ("conventional", "printed"))
    for key in ("li_poor_max", "li_rich_min"):
        if key in t:
            kw[key] = ctx.number(t[key], f"processing.{key}", lo=0.0)
    poor, rich = kw.get("li_poor_max", d.li_poor_max), kw.get("li_rich_min", d.li_rich_min)
    if not poor < rich:
        raise ctx.err(f"li_poor_max ({poor:g}) must be below li_rich_min ({rich:g})", "processing.li_poor_max")
    if "clip_li" in t:
        v = t["clip_li"]
        if v is False:
            kw["clip_li"] = None
        elif isinstance(v, list) and len(v) == 2:
            lo = ctx.number(v[0], "processing.clip_li[0]")
            hi = ctx.number(v[1], "processing.clip_li[1]")
            if not lo < hi:
                raise ctx.err(f"expected [low, high] with low < high, got {v!r}", "processing.clip_li")
            kw["clip_li"] = (lo, hi)
        else:
            raise ctx.err(f"expected [low, high] or false, got {v!r}", "processing.clip_li")
    if "histogram_bins" in t:
        v = t["histogram_bins"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ctx.err(f"expected an integer >= 1, got {v!r}", "processing.histogram_bins")
        kw["histogram_bins"] = v
    if "register_bin" in t:
        v = t["register_bin"]
        if isinstance(v, str):
            kw["register_bin"] = ctx.string(v, "processing.register_bin", ("auto",))
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ctx.err(f"expected \"auto\" or an integer >= 1, got {v!r}", "processing.register_bin")
        else:
            kw["register_bin"] = v
    if "bspline_spacing_um" in t:
        kw["bspline_spacing_um"] = ctx.number(t["bspline_spacing_um"], "processing.bspline_spacing_um",
                                              lo=0.0, strict_lo=True)
    if "background_exponent" in t:
        kw["background_exponent"] = ctx.number(t["background_exponent"], "processing.background_exponent",
                                               lo=0.0, hi=5.0)
    if "map_binning" in t:
        kw["map_binning"] = ctx.string(t["map_binning"], "processing.map_binning", ("am_interior", "mean"))
    if "surface_erosion_vox" in t:
        v = t["surface_erosion_vox"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10:
            raise ctx.err(f"expected an integer from 0 to 10, got {v!r}", "processing.surface_erosion_vox")
        kw["surface_erosion_vox"] = v
    return ProcessingSpec(**kw)


def _opt(ctx: _Ctx, t: dict, key: str, where: str, kind: str) -> Any:
    if key not in t:
        return None
    if kind == "str":
        return ctx.string(t[key], f"{where}.{key}")
    return ctx.number(t[key], f"{where}.{key}", lo=0.0 if key == "expected_li" else None)


def _parse_state(ctx: _Ctx, i: int, t: Any, xanes_energies: tuple[float, float, float] | None) -> StateSpec:
    where = f"states[{i}]"
    if not isinstance(t, dict):
        raise ctx.err("each [[states]] entry must be a table", where)
    ctx.check_keys(t, _STATE_KEYS, where)
    if "name" not in t:
        raise ctx.err("missing required field", f"{where}.name")
    name = ctx.string(t["name"], f"{where}.name")
    if not name.strip() or any(c in name for c in "/\\"):
        raise ctx.err(f"state name must be non-empty and contain no path separators, got {name!r}",
                      f"{where}.name")
    has_roles = any(r in t for r in ENERGY_ROLES)
    has_list = "energies_ev" in t or "volumes" in t
    if has_roles and has_list:
        raise ctx.err("give either pre_edge/edge/post_edge or energies_ev/volumes, not both", where)
    if has_list:
        for key in ("energies_ev", "volumes"):
            if key not in t:
                raise ctx.err("missing required field (energy-list mode needs energies_ev and volumes)",
                              f"{where}.{key}")
            if not isinstance(t[key], list):
                raise ctx.err(f"expected a list, got {type(t[key]).__name__}", f"{where}.{key}")
        en, vol = t["energies_ev"], t["volumes"]
        if len(en) != len(vol):
            raise ctx.err(f"energies_ev has {len(en)} values but volumes has {len(vol)}", f"{where}.volumes")
        if len(en) < 2:
            raise ctx.err("need at least two energies", f"{where}.energies_ev")
        energies = tuple(parse_energy_ev(e, where=f"{where}.energies_ev[{k}]", path=str(ctx.path))
                         for k, e in enumerate(en))
        for k in range(1, len(energies)):
            if not energies[k] > energies[k - 1]:
                raise ctx.err(f"energies must be strictly increasing; {energies[k]:g} follows "
                              f"{energies[k - 1]:g}", f"{where}.energies_ev[{k}]")
        volumes = tuple(ctx.file(v, f"{where}.volumes[{k}]") for k, v in enumerate(vol))
        three = False
    else:
        for r in ENERGY_ROLES:
            if r not in t:
                raise ctx.err("missing required field (image file)", f"{where}.{r}")
        assert xanes_energies is not None  # guaranteed by _parse_xanes(need_three=True)
        energies = tuple(xanes_energies)
        volumes = tuple(ctx.file(t[r], f"{where}.{r}") for r in ENERGY_ROLES)
        three = True
    expected_li = _opt(ctx, t, "expected_li", where, "num")
    return StateSpec(
        name=name, energies_ev=energies, volumes=volumes,
        label=_opt(ctx, t, "label", where, "str"), voltage_v=_opt(ctx, t, "voltage_v", where, "num"),
        expected_li=expected_li, note=_opt(ctx, t, "note", where, "str"), three_energy=three,
    )


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate an experiment manifest (TOML).

    Parameters
    ----------
    path : path-like
        The manifest file. Relative paths inside it are relative to its directory.

    Returns
    -------
    Manifest
        With absolute, existing paths; energies in eV.

    Raises
    ------
    ManifestError
        With the file and the field path (``states[1].edge``) of the first problem found.

    Examples
    --------
    >>> m = load_manifest("experiment.toml")  # doctest: +SKIP
    >>> m.states[0].volume_for("edge")  # doctest: +SKIP
    PosixPath('/data/MX-A/I/edge.tif')
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ManifestError("manifest file not found", path=str(p))
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"invalid TOML: {exc}", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not a UTF-8 text file ({exc.reason})", path=str(p)) from None
    ctx = _Ctx(p)
    ctx.check_keys(doc, _TOP_KEYS, "")
    sample = _parse_sample(ctx, ctx.table(doc, "sample", "sample"))
    raw_states = doc.get("states")
    if raw_states is None:
        raise ctx.err("missing: add at least one [[states]] table", "states")
    if not isinstance(raw_states, list) or not raw_states:
        raise ctx.err("expected one or more [[states]] tables", "states")
    # a state mixing both modes gets its own, clearer error in _parse_state
    need_three = any(isinstance(s, dict) and any(r in s for r in ENERGY_ROLES)
                     and not ("energies_ev" in s or "volumes" in s) for s in raw_states)
    xanes = _parse_xanes(ctx, ctx.table(doc, "xanes", "xanes", required=need_three), need_three)
    processing = _parse_processing(ctx, ctx.table(doc, "processing", "processing", required=False))
    states: list[StateSpec] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(raw_states):
        s = _parse_state(ctx, i, t, xanes.three_energies_ev)
        if s.name in seen:
            raise ctx.err(f"duplicate state name {s.name!r} (also states[{seen[s.name]}])", f"states[{i}].name")
        seen[s.name] = i
        states.append(s)
    return Manifest(path=p, sample=sample, xanes=xanes, processing=processing, states=states)


# --------------------------------------------------------------------------- writing

def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON basic strings are valid TOML basic strings when non-ASCII stays literal
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Path):
        return _toml_value(v.as_posix())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def _rel(p: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(p, base)).as_posix()
    except ValueError:  # different drive on Windows
        return p.as_posix()


def write_manifest(manifest: Manifest, path: str | os.PathLike) -> Path:
    """Write ``manifest`` as TOML to ``path`` (atomically); paths become relative to its folder.

    The output round-trips: ``load_manifest(write_manifest(m, p))`` equals ``m`` (with ``path=p``)
    as long as the referenced files exist.

    Examples
    --------
    >>> write_manifest(manifest, "out/experiment.toml")  # doctest: +SKIP
    """
    out = Path(path).expanduser().resolve()
    base = out.parent
    lines: list[str] = ["# litomo experiment manifest", ""]

    def kv(key: str, value: Any) -> None:
        lines.append(f"{key} = {_toml_value(value)}")

    s = manifest.sample
    lines.append("[sample]")
    kv("name", s.name)
    vs = s.voxel_size_um
    kv("voxel_size_um", float(vs[0]) if len(set(vs)) == 1 else [float(x) for x in vs])
    if s.expected:
        kv("expected", {k: float(v) for k, v in s.expected.items()})
    x = manifest.xanes
    lines += ["", "[xanes]"]
    for key in ("pre_edge_ev", "edge_ev", "post_edge_ev"):
        if getattr(x, key) is not None:
            kv(key, float(getattr(x, key)))
    if x.energy_shift_ev:
        kv("energy_shift_ev", float(x.energy_shift_ev))
    for key in ("reference_pristine", "reference_charged"):
        if getattr(x, key) is not None:
            kv(key, _rel(Path(getattr(x, key)), base))
    kv("li_pristine", float(x.li_pristine))
    kv("li_charged", float(x.li_charged))
    pr = manifest.processing
    lines += ["", "[processing]"]
    b = tuple(pr.bin) if not isinstance(pr.bin, int) else (pr.bin,) * 3
    kv("bin", int(b[0]) if len(set(b)) == 1 else [int(v) for v in b])
    kv("register", bool(pr.register))
    kv("bspline", bool(pr.bspline))
    kv("denoise", pr.denoise)
    kv("jump_threshold", pr.jump_threshold if isinstance(pr.jump_threshold, str) else float(pr.jump_threshold))
    kv("sign_convention", pr.sign_convention)
    kv("li_poor_max", float(pr.li_poor_max))
    kv("li_rich_min", float(pr.li_rich_min))
    kv("clip_li", False if pr.clip_li is None else [float(v) for v in pr.clip_li])
    kv("histogram_bins", int(pr.histogram_bins))
    kv("background_exponent", float(pr.background_exponent))
    kv("register_bin", pr.register_bin if isinstance(pr.register_bin, str) else int(pr.register_bin))
    kv("bspline_spacing_um", float(pr.bspline_spacing_um))
    kv("map_binning", pr.map_binning)
    kv("surface_erosion_vox", int(pr.surface_erosion_vox))
    for st in manifest.states:
        lines += ["", "[[states]]"]
        kv("name", st.name)
        if st.three_energy:
            for role, vol in zip(ENERGY_ROLES, st.volumes, strict=True):
                kv(role, _rel(Path(vol), base))
        else:
            kv("energies_ev", [float(e) for e in st.energies_ev])
            kv("volumes", [_rel(Path(v), base) for v in st.volumes])
        for key in ("label", "voltage_v", "expected_li", "note"):
            v = getattr(st, key)
            if v is not None:
                kv(key, v if isinstance(v, str) else float(v))
    write_text_atomic(out, "\n".join(lines) + "\n")
    return out

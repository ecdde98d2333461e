"""Reading and validating a manifest file: every problem is a ManifestError naming the field."""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from litomo.errors import LitomoError, ManifestError
from litomo.io.rundir import check_path_component
from litomo.manifest.fields import FieldReader, parse_energy_ev
from litomo.manifest.model import (
    ENERGY_ROLES,
    SEPARATOR_SIDES,
    DataSpec,
    Manifest,
    ProcessingSpec,
    SampleSpec,
    StateSpec,
    XanesSpec,
)

_SAMPLE_KEYS = ("name", "voxel_size_um", "expected", "composition", "separator_side", "labels", "cbd_value")
_XANES_KEYS = (
    "pre_edge_ev", "edge_ev", "post_edge_ev", "energy_shift_ev",
    "reference_pristine", "reference_charged", "li_pristine", "li_charged", "energy_unit",
    "energies_ev",
)
#: tabulated Ni K-edge energy (eV): an [xanes] energies_ev list must reach below and above it
NI_K_EDGE_EV = 8333.0
_PROCESSING_KEYS = (
    "bin", "register", "bspline", "denoise", "jump_threshold", "sign_convention",
    "li_poor_max", "li_rich_min", "clip_li", "histogram_bins", "background_exponent",
    "register_bin", "bspline_spacing_um", "map_binning", "surface_erosion_vox", "li_shrinkage",
)
_STATE_KEYS = (
    "name", "pre_edge", "edge", "post_edge", "energies_ev", "volumes",
    "label", "voltage_v", "expected_li", "note",
)
_TOP_KEYS = ("sample", "xanes", "processing", "states", "reconstruction", "data")
_DATA_KEYS = ("mu_scale_per_count", "mu_offset_per_um")
_FRACTION_KEYS = ("am", "cbd", "pore")

#: bounds that keep a mistyped or hostile manifest from running for hours or exhausting memory
MAX_STATES = 1000
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_HISTOGRAM_BINS = 100_000
#: fewest registration-grid voxels per B-spline control point: finer grids make elastix hang
#: (0.1 um on a 0.06 um grid) or abort with heap corruption (1e-6 um)
MIN_BSPLINE_SPACING_VOX = 4.0


def _parse_sample(ctx: FieldReader, t: dict) -> SampleSpec:
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
    composition = _parse_composition(ctx, t["composition"]) if "composition" in t else None
    side = ctx.string(t.get("separator_side", "z_min"), "sample.separator_side", choices=SEPARATOR_SIDES)
    labels = ctx.file(t["labels"], "sample.labels") if "labels" in t else None
    cbd_value = 2
    if "cbd_value" in t:
        if labels is None:
            raise ctx.err("cbd_value names the binder's value in sample.labels, which is missing", "sample.cbd_value")
        v = t["cbd_value"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ctx.err(f"expected a non-negative integer label value, got {v!r}", "sample.cbd_value")
        cbd_value = v
    return SampleSpec(name=name, voxel_size_um=voxel, expected=expected,  # type: ignore[arg-type]
                      composition=composition, separator_side=side, labels=labels, cbd_value=cbd_value)


def _parse_data(ctx: FieldReader, t: dict) -> DataSpec:
    """``[data]``: a positive finite scale (a zero or negative one would erase or invert the
    contrast) and a finite offset."""
    ctx.check_keys(t, _DATA_KEYS, "data")
    kw = {}
    if "mu_scale_per_count" in t:
        kw["mu_scale_per_count"] = ctx.number(t["mu_scale_per_count"], "data.mu_scale_per_count",
                                              lo=0.0, strict_lo=True)
    if "mu_offset_per_um" in t:
        kw["mu_offset_per_um"] = ctx.number(t["mu_offset_per_um"], "data.mu_offset_per_um")
    return DataSpec(**kw)


def _parse_composition(ctx: FieldReader, value: Any) -> str:
    """A chemical formula with the Ni of the Ni K edge (parsed by xraydb, whose tables the law uses)."""
    import xraydb

    where = "sample.composition"
    if not isinstance(value, str) or not value.strip():
        raise ctx.err(f"expected a chemical formula like \"LiNi0.8Mn0.1Co0.1O2\", got {value!r}", where)
    try:
        atoms = xraydb.chemparse(value.strip())
    except (ValueError, TypeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ctx.err(f"cannot read the formula {value!r}: {first}", where) from None
    if not atoms or any(not (math.isfinite(v) and v > 0) for v in atoms.values()):
        raise ctx.err(f"the formula {value!r} needs positive amounts of known elements", where)
    if "Ni" not in atoms:
        raise ctx.err(f"the formula {value!r} has no Ni: the Li map reads the Ni K edge", where)
    return value.strip()


def _parse_xanes(ctx: FieldReader, t: dict, need_three: bool) -> XanesSpec:
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
    unit = None
    if "energy_unit" in t:
        unit = ctx.string(t["energy_unit"], "xanes.energy_unit", ("eV", "keV"))
    shift = ctx.number(t.get("energy_shift_ev", 0.0), "xanes.energy_shift_ev")
    if abs(shift) > 100:
        raise ctx.err(f"energy shift of {shift:g} eV is implausible (a foil calibration is a few eV)",
                      "xanes.energy_shift_ev")
    energies = _parse_energy_list(ctx, t["energies_ev"], shift) if "energies_ev" in t else None
    return XanesSpec(
        pre_edge_ev=e["pre_edge_ev"], edge_ev=e["edge_ev"], post_edge_ev=e["post_edge_ev"],
        reference_pristine=refs["reference_pristine"], reference_charged=refs["reference_charged"],
        li_pristine=li_p, li_charged=li_c, energy_shift_ev=shift, energy_unit=unit,
        energies_ev=energies,
    )


def _parse_energy_list(ctx: FieldReader, value: Any, shift_ev: float) -> tuple[float, ...]:
    """``[xanes] energies_ev``: distinct, increasing energies reaching across the Ni K edge."""
    where = "xanes.energies_ev"
    if not isinstance(value, list) or len(value) < 4:
        raise ctx.err(f"expected a list of at least four energies across the edge, got {value!r}", where)
    en = [parse_energy_ev(v, where=f"{where}[{k}]", path=str(ctx.path)) for k, v in enumerate(value)]
    for k in range(1, len(en)):
        if en[k] in en[:k]:
            raise ctx.err(f"energy {en[k]:g} eV is listed twice (positions {en.index(en[k])} and {k})",
                          f"{where}[{k}]")
        if en[k] < en[k - 1]:
            raise ctx.err(f"energies must increase: {en[k]:g} eV follows {en[k - 1]:g} eV", f"{where}[{k}]")
    # two energies 15 eV below the edge (pre-edge line) and two 40 eV above it (normalisation)
    true = [v + shift_ev for v in en]
    n_pre = sum(v <= NI_K_EDGE_EV - 15.0 for v in true)
    n_post = sum(v >= NI_K_EDGE_EV + 40.0 for v in true)
    if n_pre < 2 or n_post < 2:
        raise ctx.err(f"the energies ({en[0]:g}-{en[-1]:g} eV) do not cover the Ni K edge at "
                      f"{NI_K_EDGE_EV:g} eV: need two at or below {NI_K_EDGE_EV - 15:g} eV (have {n_pre}) "
                      f"and two at or above {NI_K_EDGE_EV + 40:g} eV (have {n_post})", where)
    return tuple(en)


def _parse_processing(ctx: FieldReader, t: dict) -> ProcessingSpec:
    ctx.check_keys(t, _PROCESSING_KEYS, "processing")
    d = ProcessingSpec()
    kw: dict[str, Any] = {}
    if "bin" in t:
        kw["bin"] = ctx.factors(t["bin"], "processing.bin")
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
    kw.update(_parse_processing_map(ctx, t))
    return ProcessingSpec(**kw)


def _parse_processing_map(ctx: FieldReader, t: dict) -> dict[str, Any]:
    """The Li-map options of ``[processing]`` (clipping, histogram, registration, background, binning)."""
    kw: dict[str, Any] = {}
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
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_HISTOGRAM_BINS:
            raise ctx.err(f"expected an integer >= 1 and <= {MAX_HISTOGRAM_BINS}, got {v!r}",
                          "processing.histogram_bins")
        kw["histogram_bins"] = v
    if "register_bin" in t:
        v = t["register_bin"]
        if isinstance(v, str):
            kw["register_bin"] = ctx.string(v, "processing.register_bin", ("auto",))
        else:
            f = ctx.factors(v, "processing.register_bin")
            kw["register_bin"] = f[0] if len(set(f)) == 1 and not isinstance(v, list) else f
    if "bspline_spacing_um" in t:
        kw["bspline_spacing_um"] = ctx.number(t["bspline_spacing_um"], "processing.bspline_spacing_um",
                                              lo=0.0, strict_lo=True)
    if "background_exponent" in t:
        kw["background_exponent"] = ctx.number(t["background_exponent"], "processing.background_exponent",
                                               lo=0.0, hi=5.0)
    if "map_binning" in t:
        kw["map_binning"] = ctx.string(t["map_binning"], "processing.map_binning", ("am_interior", "mean"))
    if "li_shrinkage" in t:
        kw["li_shrinkage"] = ctx.string(t["li_shrinkage"], "processing.li_shrinkage", ("constrained_bayes", "none"))
    if "surface_erosion_vox" in t:
        v = t["surface_erosion_vox"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10:
            raise ctx.err(f"expected an integer from 0 to 10, got {v!r}", "processing.surface_erosion_vox")
        kw["surface_erosion_vox"] = v
    return kw


def _opt(ctx: FieldReader, t: dict, key: str, where: str, kind: str) -> Any:
    if key not in t:
        return None
    if kind == "str":
        return ctx.string(t[key], f"{where}.{key}")
    return ctx.number(t[key], f"{where}.{key}", lo=0.0 if key == "expected_li" else None)


def _shared_energy_volumes(ctx: FieldReader, t: dict, where: str, shared: tuple[float, ...] | None
                           ) -> tuple[tuple[float, ...], tuple[Path, ...]] | None:
    """A state's ``volumes`` for the energies of ``[xanes] energies_ev`` (None: the state lists its own)."""
    if shared is None or "energies_ev" in t:
        return None
    if not isinstance(t.get("volumes"), list):
        raise ctx.err("expected a list of image files, one per energy of xanes.energies_ev", f"{where}.volumes")
    if len(t["volumes"]) != len(shared):
        raise ctx.err(f"{len(t['volumes'])} volumes for the {len(shared)} energies of xanes.energies_ev",
                      f"{where}.volumes")
    return tuple(shared), tuple(ctx.file(v, f"{where}.volumes[{k}]") for k, v in enumerate(t["volumes"]))


def _state_energy_list(ctx: FieldReader, t: dict, where: str) -> tuple[tuple[float, ...], tuple[Path, ...]]:
    """A state's own ``energies_ev`` and ``volumes`` lists (energy-list mode)."""
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
    return energies, tuple(ctx.file(v, f"{where}.volumes[{k}]") for k, v in enumerate(vol))


def _parse_state(ctx: FieldReader, i: int, t: Any, xanes_energies: tuple[float, float, float] | None,
                 shared_energies: tuple[float, ...] | None = None) -> StateSpec:
    where = f"states[{i}]"
    if not isinstance(t, dict):
        raise ctx.err("each [[states]] entry must be a table", where)
    ctx.check_keys(t, _STATE_KEYS, where)
    if "name" not in t:
        raise ctx.err("missing required field", f"{where}.name")
    # a state name becomes a folder name (work/<state>, volumes/<state>): stripped, then one
    # safe path component ("I" and "I " are the same state; "..", "a/b" and NUL are refused)
    name = ctx.string(t["name"], f"{where}.name").strip()
    try:
        check_path_component(name, "state name")
    except LitomoError as exc:
        raise ctx.err(str(exc), f"{where}.name") from None
    has_roles = any(r in t for r in ENERGY_ROLES)
    has_list = "energies_ev" in t or "volumes" in t
    if has_roles and has_list:
        raise ctx.err("give either pre_edge/edge/post_edge or energies_ev/volumes, not both", where)
    shared = _shared_energy_volumes(ctx, t, where, shared_energies) if has_list else None
    if shared is not None:
        energies, volumes = shared
        three = False
    elif has_list:
        energies, volumes = _state_energy_list(ctx, t, where)
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
    doc = _read_toml(p)
    ctx = FieldReader(p)
    ctx.check_keys(doc, _TOP_KEYS, "")
    sample = _parse_sample(ctx, ctx.table(doc, "sample", "sample"))
    raw_states = doc.get("states")
    if raw_states is None:
        raise ctx.err("missing: add at least one [[states]] table", "states")
    if not isinstance(raw_states, list) or not raw_states:
        raise ctx.err("expected one or more [[states]] tables", "states")
    if len(raw_states) > MAX_STATES:
        raise ctx.err(f"{len(raw_states)} states; at most {MAX_STATES} are supported (one run per "
                      "state series; split the experiment)", "states")
    # a state mixing both modes gets its own, clearer error in _parse_state
    need_three = any(isinstance(s, dict) and any(r in s for r in ENERGY_ROLES)
                     and not ("energies_ev" in s or "volumes" in s) for s in raw_states)
    xanes = _parse_xanes(ctx, ctx.table(doc, "xanes", "xanes", required=need_three), need_three)
    processing = _parse_processing(ctx, ctx.table(doc, "processing", "processing", required=False))
    if processing.bspline and processing.register:
        # the registration grid is at least 2x the raw voxels ("auto" starts at 2)
        rb = processing.register_bin
        factors = (2, 2, 2) if rb == "auto" else rb if isinstance(rb, tuple) else (rb,) * 3
        check_bspline_spacing(processing.bspline_spacing_um,
                              tuple(v * f for v, f in zip(sample.voxel_size_um, factors, strict=True)),
                              where=f"{p}: field 'processing.bspline_spacing_um'")
    states: list[StateSpec] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(raw_states):
        s = _parse_state(ctx, i, t, xanes.three_energies_ev, xanes.energies_ev)
        if s.name in seen:
            raise ctx.err(f"duplicate state name {s.name!r} (also states[{seen[s.name]}])", f"states[{i}].name")
        seen[s.name] = i
        states.append(s)
    recon = doc.get("reconstruction")
    if recon is not None and not isinstance(recon, dict):
        raise ctx.err("expected a [reconstruction] table", "reconstruction")
    return Manifest(path=p, sample=sample, xanes=xanes, processing=processing, states=states,
                    reconstruction=recon, data=_parse_data(ctx, ctx.table(doc, "data", "data", required=False)))


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        st = p.stat()
    except OSError:
        raise ManifestError("manifest file not found", path=str(p)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError("not a regular file (a FIFO or device would block)", path=str(p))
    if st.st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{st.st_size / 2**20:.0f} MiB is no manifest (at most "
                            f"{MAX_MANIFEST_BYTES // 2**20} MiB)", path=str(p))
    try:
        text = p.read_text(encoding="utf-8")
        # count the [[states]] headers before parsing: 100,000 of them took 54 s to load
        n_states = len(re.findall(r"^[ \t]*\[\[[ \t]*states[ \t]*\]\]", text, flags=re.M))
        if n_states > MAX_STATES:
            raise ManifestError(f"{n_states} states; at most {MAX_STATES} are supported (one run per "
                                "state series; split the experiment)", path=str(p), field="states")
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"invalid TOML: {exc}", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not a UTF-8 text file ({exc.reason})", path=str(p)) from None
    except RecursionError:
        raise ManifestError("arrays or tables nested too deeply", path=str(p)) from None


def check_bspline_spacing(spacing_um: float, grid_voxel_um: tuple[float, ...], *,
                          min_vox: float = MIN_BSPLINE_SPACING_VOX,
                          where: str = "processing.bspline_spacing_um") -> float:
    """The B-spline control-point spacing in registration-grid voxels; refuse one that is too fine.

    Parameters
    ----------
    spacing_um : float
        Control-point spacing (um).
    grid_voxel_um : (z, y, x)
        Voxel size of the grid the registration is estimated on (um).
    min_vox : float
        Fewest grid voxels per control point.
    where : str
        The manifest field (or flag) for the message.

    Raises
    ------
    ManifestError
        When ``spacing_um`` spans fewer than ``min_vox`` voxels along some axis.

    Examples
    --------
    >>> check_bspline_spacing(4.5, (0.06, 0.06, 0.06))
    75.0
    >>> check_bspline_spacing(0.1, (0.06, 0.06, 0.06))
    Traceback (most recent call last):
    ...
    litomo.errors.ManifestError: processing.bspline_spacing_um: 0.1 um is 1.7 voxels of the 0.06 um registration grid; give at least 0.24 um (4 voxels per control point)
    """
    coarsest = max(float(v) for v in grid_voxel_um)
    n_vox = spacing_um / coarsest
    if not n_vox >= min_vox:
        raise ManifestError(
            f"{where}: {spacing_um:g} um is {n_vox:.2g} voxels of the {coarsest:g} um registration "
            f"grid; give at least {min_vox * coarsest:.3g} um ({min_vox:g} voxels per control point)"
        )
    return n_vox

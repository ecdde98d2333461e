"""Writing a manifest back to TOML (atomically), paths relative to the file."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from litomo.io.atomic import write_text_atomic
from litomo.manifest.model import (
    ENERGY_ROLES,
    Manifest,
    StateSpec,
)

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


def _kv_optional(kv: Any, key: str, value: Any) -> None:
    if value is not None:
        kv(key, value)


def _state_kv(kv: Any, st: StateSpec, base: Path) -> None:
    """The key = value lines of one ``[[states]]`` table."""
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
    _kv_optional(kv, "composition", s.composition)
    if s.separator_side != "z_min":
        kv("separator_side", s.separator_side)
    if s.labels is not None:
        kv("labels", _rel(Path(s.labels), base))
        kv("cbd_value", int(s.cbd_value))
    x = manifest.xanes
    lines += ["", "[xanes]"]
    for key in ("pre_edge_ev", "edge_ev", "post_edge_ev"):
        if getattr(x, key) is not None:
            kv(key, float(getattr(x, key)))
    if x.energy_shift_ev:
        kv("energy_shift_ev", float(x.energy_shift_ev))
    _kv_optional(kv, "energies_ev", None if x.energies_ev is None else [float(v) for v in x.energies_ev])
    for key in ("reference_pristine", "reference_charged"):
        if getattr(x, key) is not None:
            kv(key, _rel(Path(getattr(x, key)), base))
    kv("li_pristine", float(x.li_pristine))
    kv("li_charged", float(x.li_charged))
    if x.energy_unit is not None:
        kv("energy_unit", x.energy_unit)
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
    _kv_optional(kv, "background_exponent", pr.background_exponent)
    rb = pr.register_bin
    kv("register_bin", rb if isinstance(rb, str) else [int(v) for v in rb] if isinstance(rb, tuple) else int(rb))
    kv("bspline_spacing_um", float(pr.bspline_spacing_um))
    kv("map_binning", pr.map_binning)
    kv("surface_erosion_vox", int(pr.surface_erosion_vox))
    kv("li_shrinkage", pr.li_shrinkage)
    if not manifest.data.identity:
        lines += ["", "[data]"]
        kv("mu_scale_per_count", float(manifest.data.mu_scale_per_count))
        kv("mu_offset_per_um", float(manifest.data.mu_offset_per_um))
    if manifest.reconstruction is not None:
        lines += ["", "[reconstruction]"]
        for key, v in manifest.reconstruction.items():
            kv(key, v)
    for st in manifest.states:
        lines += ["", "[[states]]"]
        _state_kv(kv, st, base)
    write_text_atomic(out, "\n".join(lines) + "\n")
    return out

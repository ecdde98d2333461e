"""Plain-language "at a glance" sentences of a Li-mapping run, computed from its tables.

Used by :mod:`litomo.report.html` at the top of the Li-mapping page; kept apart because these
sentences are the report's reading of the science (what counts as a fall, a front, a failed
registration), while ``html`` only assembles the page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def background_sentence(bg: dict[str, Any] | None) -> str | None:
    """Which matrix-background law the map used and how far it moved each state's mean x_Li.

    Examples
    --------
    >>> background_sentence({"law": "tabulated", "composition": "LiNi0.8Mn0.1Co0.1O2",
    ...                      "mean_li_shift": {"I": -0.016, "II": -0.022}})
    'Matrix background: tabulated law for LiNi0.8Mn0.1Co0.1O2; it moved the mean x_Li by -0.016 (I), -0.022 (II).'
    """
    if not bg or not bg.get("law"):
        return None
    p = float(bg.get("effective_exponent") or 0.0)
    law = {"none": "none (plain edge ratio)", "power": f"power law E^-{p:.2f}"}.get(
        bg["law"], f"{bg['law']} law" + (f" for {bg['composition']}" if bg.get("composition") else ""))
    shifts = ", ".join(f"{float(v):+.3f} ({k})" for k, v in (bg.get("mean_li_shift") or {}).items()
                       if v is not None and v == v)
    return f"Matrix background: {law}" + (f"; it moved the mean x_Li by {shifts}." if shifts else ".")


def glance_limap(run: dict[str, Any], tables: dict[str, pd.DataFrame | None]) -> list[str]:
    """Plain-language sentences summarising a Li-mapping run, computed from its tables.

    Parameters
    ----------
    run : dict
        ``run.json``.
    tables : dict name -> DataFrame or None
        ``states``, ``registration``, ``matching``, ``z_profile`` (any may be None).

    Returns
    -------
    list of str

    Examples
    --------
    >>> st = pd.DataFrame({"state": ["I", "II"], "mean_li": [0.97, 0.55],
    ...                    "frac_li_rich": [0.92, 0.08]})
    >>> glance_limap({}, {"states": st})[0]
    'Mean Li fell from 0.97 (I) to 0.55 (II); the Li-rich fraction dropped from 92 % to 8 %.'
    """
    st = tables.get("states")
    out = _state_sentences(st) + _depth_sentences(tables.get("z_profile"), st)
    out += _registration_sentences(tables.get("registration"))
    out += _deformation_sentences(tables.get("registration"))
    out += _matching_sentences(tables.get("matching"))
    bg = background_sentence(run.get("background"))
    if bg:
        out.append(bg)
    n_warn = len(run.get("warnings") or [])
    if n_warn:
        out.append(f"The run raised {n_warn} warning{'s' if n_warn > 1 else ''} (listed below).")
    return out


def _state_sentences(st: pd.DataFrame | None) -> list[str]:
    """Mean Li and Li-rich share from the first to the last state; worst miss of the expected Li."""
    if st is None or not len(st):
        return []
    out: list[str] = []
    first, last = st.iloc[0], st.iloc[-1]
    a, b = float(first["mean_li"]), float(last["mean_li"])
    if len(st) == 1:
        s = f"Mean Li in {first['state']} is {a:.2f}"
        if "frac_li_rich" in st:
            s += f"; {_pct(float(first['frac_li_rich']))} of the active material is Li-rich"
        out.append(s + ".")
    else:
        verb = "fell" if b < a - 0.005 else "rose" if b > a + 0.005 else "stayed near"
        s = (f"Mean Li {verb} from {a:.2f} ({first['state']}) to {b:.2f} ({last['state']})"
             if verb != "stayed near" else f"Mean Li stayed near {a:.2f} from {first['state']} to {last['state']}")
        if "frac_li_rich" in st:
            ra, rb = float(first["frac_li_rich"]), float(last["frac_li_rich"])
            v2 = "dropped" if rb < ra - 0.005 else "grew" if rb > ra + 0.005 else "stayed"
            s += f"; the Li-rich fraction {v2} from {_pct(ra)} to {_pct(rb)}"
        out.append(s + ".")
    if "expected_li" in st and st["expected_li"].notna().any():
        e = st.dropna(subset=["expected_li"])
        err = e["mean_li"].astype(float) - e["expected_li"].astype(float)
        k = int(np.argmax(np.abs(err.to_numpy())))
        out.append(f"Against the expected Li content ({len(e)} state{'s' if len(e) > 1 else ''}), "
                   f"the largest deviation is {err.iloc[k]:+.3f} in state {e['state'].iloc[k]}.")
    return out


def _depth_sentences(zp: pd.DataFrame | None, st: pd.DataFrame | None) -> list[str]:
    """Separator-side versus current-collector-side Li of the last state (outer thirds of the depth)."""
    if zp is None or st is None or not len(st) or not {"z_um", "mean_li"} <= set(zp.columns):
        return []
    last = str(st["state"].iloc[-1])
    g = zp[zp["state"].astype(str) == last].dropna(subset=["mean_li"])
    g = g.sort_values("depth_um" if "depth_um" in g else "z_um")
    if len(g) < 6:
        return []
    third = len(g) // 3
    top, bottom = g["mean_li"].iloc[:third].mean(), g["mean_li"].iloc[-third:].mean()
    if abs(top - bottom) >= 0.02:
        side = "separator side" if top < bottom else "current-collector side"
        return [f"In {last}, Li is lower on the {side} (mean {min(top, bottom):.2f} vs "
                f"{max(top, bottom):.2f} in the outer thirds of the depth)."]
    return [f"In {last}, Li is uniform through the depth (outer thirds {top:.2f} and {bottom:.2f})."]


def _registration_sentences(reg: pd.DataFrame | None) -> list[str]:
    """How many registered pairs improved their NCC, and the worst pair after registration."""
    if reg is None or not {"ncc_before", "ncc_after"} <= set(reg.columns):
        return []
    improved = (reg["ncc_after"] > reg["ncc_before"]).to_numpy()
    n = len(reg)
    k = int(np.nanargmin(reg["ncc_after"].to_numpy(float))) if reg["ncc_after"].notna().any() else None
    worst = ""
    if k is not None:
        r = reg.iloc[k]
        who = " ".join(str(r[c]) for c in ("state", "moving") if c in reg and pd.notna(r[c]))
        worst = f" (worst after-NCC {float(r['ncc_after']):.2f}{': ' + who if who else ''})"
    if improved.all():
        return [f"Registration improved NCC in all {n} pairs{worst}."]
    return [f"Registration improved NCC in {int(improved.sum())} of {n} pairs{worst}; "
            "check the pairs flagged red in the registration table."]


def _deformation_sentences(reg: pd.DataFrame | None) -> list[str]:
    """Where the register stage's test found a deformation between energies (issue 16).

    Examples
    --------
    >>> reg = pd.DataFrame({"state": ["I", "I"], "moving": ["pre_edge", "edge"], "mode": ["rigid"] * 2,
    ...                     "deformation_rms_vox": [0.03] * 2, "deformation_misfit_gain": [float("nan")] * 2})
    >>> _deformation_sentences(reg)[0].split(":")[0]
    'No deformation between energies shown in I (pre-edge B-spline beyond rigid'
    """
    if reg is None or not {"deformation_rms_vox", "moving", "mode", "state"} <= set(reg.columns):
        return []
    rows = reg[(reg["moving"] == "edge") & reg["deformation_rms_vox"].notna()]
    if rows.empty:
        return []
    rigid = rows["mode"] == "rigid"
    rms = rows["deformation_rms_vox"].to_numpy(float)
    span = f"{rms.min():.2f}" if rms.min() == rms.max() else f"{rms.min():.2f}-{rms.max():.2f}"
    out = []
    if rigid.any():
        names = ", ".join(str(s) for s in rows["state"][rigid])
        out.append(f"No deformation between energies shown in {names} (pre-edge B-spline beyond rigid: "
                   f"rms {span} registration voxels): pre-edge and edge registered rigidly there.")
    if (~rigid).any():
        names = ", ".join(str(s) for s in rows["state"][~rigid])
        out.append(f"Deformation between energies in {names}: B-spline registration kept.")
    return out


def _matching_sentences(m: pd.DataFrame | None) -> list[str]:
    """The lowest share of first-state particles tracked into a later state."""
    if m is None or "matched_fraction" not in m:
        return []
    frac = m["matched_fraction"].to_numpy(float)
    if not np.isfinite(frac).any():
        return []
    k = int(np.nanargmin(frac))
    if np.nanmax(frac) - frac[k] < 0.005:
        return [f"Particle tracking matched {_pct(frac[k])} of the first state's particles "
                "in every later state."]
    return [f"Particle tracking matched at least {_pct(frac[k])} of the first state's "
            f"particles in every later state (lowest: {m['state'].iloc[k]})."]

__all__ = ["background_sentence", "glance_limap"]

"""The issue-16 robustness table, fast: registration once per state, map + statistics per setting.

Same cases and scores as ``bench_robust.py`` (which runs ``litomo run`` per case and setting),
but in process: the stages of ``litomo.workflows.limap`` run through their own stage cache
(one per case under the workdir, ``--resume`` semantics), so the read, registration and warp
stages run once per state and only the stages after them rerun for each setting.

Run: ``python benchmarks/bench_robust_inprocess.py --workdir W [--cases a,b] [--rigid] [--seed-offset N] [--size N]``;
prints one JSON line per case, state and setting (``before`` = pre-issue-16 defaults,
``default`` = current defaults with ``[sample] composition``, ``shrink`` = the same with
``li_shrinkage = "constrained_bayes"``; ``--settings`` picks some). ``class_pp`` scores the
class fractions the states table reports (deconvolved, of the mapped AM volume) and
``map_class_pp`` the map's bins counted; ``noise_var_ratio`` checks the run's predicted noise
variance against the truth (1 = right), ``noise_pair_ratio`` is the run's own upper bound on it
(neighbouring full bins; the variance is scaled by it where it is below 1); ``regime`` is the run's statement for the state
(``litomo.workflows.limap.run.regime_record``), ``near_threshold_pct`` what it reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import forward_models as fm

COMPOSITION = "LiNi0.8Mn0.1Co0.1O2"


def case_manifest(name: str, work: Path, *, rigid: bool) -> Any:
    """The case's manifest (the case is written under ``work`` the first time)."""
    from litomo.manifest import load_manifest

    data = work / name
    if not (data / "truth.json").exists():
        fm.write_case(fm.CASES[name], data)
    m = load_manifest(data / "experiment.toml")
    if rigid:
        m = dataclasses.replace(m, processing=dataclasses.replace(m.processing, bspline=False))
    return m


def score(name: str, work: Path, m: Any, *, rigid: bool, stages_dir: str = "stages", **processing: Any) -> dict:
    """Run the state stages (reusing the cached ones) with ``processing`` changed; score each state."""
    from litomo.workflows.execution import dask_client
    from litomo.workflows.limap.cache import StageCache
    from litomo.workflows.limap.li import LiMap
    from litomo.workflows.limap.options import RunOptions
    from litomo.workflows.limap.run import STATE_STAGES, prepare_context, regime_record
    from litomo.workflows.limap.stage import StateRunner
    from litomo.workflows.limap.stats import StateTables

    m = dataclasses.replace(m, processing=dataclasses.replace(m.processing, **processing))
    ctx = prepare_context(m, RunOptions(scheduler="synchronous"), None, [])
    cache = StageCache(work / name / (stages_dir + ("_rigid" if rigid else "")), resume=True)
    stages = [s for s in STATE_STAGES if s.active(ctx)]
    out = {}
    case_dir = work / name
    for st in m.states:
        with dask_client("synchronous"):
            StateRunner(stages, ctx, st, cache, []).run_all()
        li = cache.load(st.name, "li", LiMap)
        tables = cache.load(st.name, "statistics", StateTables)
        row = tables.states.iloc[0]
        f_am, f_li = np.load(case_dir / st.name / "truth_am.npy"), np.load(case_dir / st.name / "truth_li.npy")
        reported = (np.array([row[f"frac_li_{c}"] for c in ("poor", "moderate", "rich")])
                    if "frac_li_poor_map" in row else None)  # deconvolved fractions (issue 16)
        s = fm.score_state(li.li.astype(float), f_am, f_li, int(m.processing.bin[0]), float(row["total_li_um3"]),
                           fm.CASES[name].voxel_size_um, run_fractions=reported)
        s["class_uncertainty_pct"] = 100 * float(row["li_class_uncertainty"])
        s["class_shift_pct"] = 100 * float(row["li_class_shift"])
        s["class_sd_pp"] = (100 * max(float(row.get(f"frac_li_{c}_sd", np.nan)) for c in ("poor", "moderate", "rich")))
        s["near_threshold_pct"] = 100 * float(row.get("frac_li_near_threshold", np.nan))
        s["regime"] = regime_record(tables.states)[0][st.name]["regime"]
        s["noise_var_ratio"] = noise_check(li, f_am, f_li, int(m.processing.bin[0]))
        s["noise_pair_ratio"] = float(row.get("li_noise_pair_ratio", np.nan))  # the run's bound (session 9)
        out[st.name] = s
    return out


def noise_check(li: Any, f_am: np.ndarray, f_li: np.ndarray, factor: int) -> float:
    """Robust variance of (map - truth) / predicted noise sd over the bins with truth: 1 when the
    run's noise variance (``LiMap.li_variance``) is right; it includes any systematic error."""
    tb, _ = fm.truth_binned(f_am, f_li, factor)
    sh = tuple(min(a, b) for a, b in zip(tb.shape, li.li.shape, strict=True))
    x = li.li[: sh[0], : sh[1], : sh[2]].astype(float)
    v = li.li_variance[: sh[0], : sh[1], : sh[2]].astype(float)
    ok = np.isfinite(x) & np.isfinite(tb[: sh[0], : sh[1], : sh[2]]) & (v > 0)
    z = (x[ok] - tb[: sh[0], : sh[1], : sh[2]][ok]) / np.sqrt(v[ok])
    return float((1.4826 * np.median(np.abs(z - np.median(z)))) ** 2) if z.size else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--cases", default=",".join(fm.CASES))
    ap.add_argument("--rigid", action="store_true", help="register rigid-only (bspline = false)")
    ap.add_argument("--stages", default="stages", help="stage-cache folder per case (one per code version)")
    ap.add_argument("--settings", default="before,default,shrink", help="settings to score (see the docstring)")
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="add this to every case's seed: another draw of the same generators (use its own --workdir)")
    ap.add_argument("--size", type=int, default=0,
                    help="volume edge in voxels instead of each case's own (98): more bins, less sampling error")
    args = ap.parse_args()
    for name in list(fm.CASES):
        c = fm.CASES[name]
        fm.CASES[name] = dataclasses.replace(c, seed=c.seed + args.seed_offset, size=args.size or c.size)
    wanted = set(args.settings.split(","))
    work = Path(args.workdir)
    for name in args.cases.split(","):
        m0 = case_manifest(name, work, rigid=args.rigid)
        m1 = dataclasses.replace(m0, sample=dataclasses.replace(m0.sample, composition=COMPOSITION))
        for tag, m, shrink in (("before", m0, "none"), ("default", m1, "none"), ("shrink", m1, "constrained_bayes")):
            if tag not in wanted:
                continue
            for st, s in score(name, work, m, rigid=args.rigid, stages_dir=args.stages, li_shrinkage=shrink).items():
                print(json.dumps({"case": name, "state": st, "settings": tag, "rigid": args.rigid, **s}), flush=True)


if __name__ == "__main__":
    main()

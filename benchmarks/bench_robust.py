"""Robustness benchmark of the Li map on forward models independent of litomo (issue 16).

Each case of ``tests/forward_models.py`` (other end-member spectra, no / tabulated background,
plateaus near the class thresholds, reaction fronts both ways, uniform particles, Poisson noise
on counts, small and touching particles, partial-volume surfaces) is written as TIFF volumes +
manifest, run through ``litomo run`` (a subprocess: the CLI a user runs, default settings unless
``--processing`` says otherwise) and scored from the run's files: x_Li RMSE and bias, class
fractions (pp), Wasserstein distance between the mapped and true x_Li distributions, total Li (%).

Run: ``python benchmarks/bench_robust.py [--cases a,b] [--processing 'map_binning="mean"']``;
prints one JSON object (``--table`` also prints a markdown table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import forward_models as fm


def run_case(name: str, work: Path, processing: dict, sample: dict, tag: str) -> dict:
    case = fm.CASES[name]
    data = work / name
    manifest = data / f"experiment_{tag}.toml"
    if not (data / "truth.json").exists():
        fm.write_case(case, data)
    fm.write_manifest(case, data, [f"S{k + 1}" for k in range(len(case.fields))],
                      processing=processing, sample=sample, name=manifest.name)
    out = work / f"run_{name}_{tag}"
    t0 = time.process_time()
    cmd = [sys.executable, "-m", "litomo", "run", str(manifest), "--out", str(out), "--force", "-q",
           "--scheduler", "synchronous"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1:]}
    score = fm.score_run(out, data)
    run = json.loads((out / "run.json").read_text())
    score["background_law"] = run.get("background", {})
    score["regime"] = run.get("li_map_regime")
    score["cpu_s_parent"] = time.process_time() - t0
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(fm.CASES))
    ap.add_argument("--processing", default="", help="TOML lines for [processing], ';'-separated")
    ap.add_argument("--sample", default="", help="TOML lines for [sample], ';'-separated")
    ap.add_argument("--tag", default="default")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    processing = tomllib.loads(args.processing.replace(";", "\n"))
    sample = tomllib.loads(args.sample.replace(";", "\n"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="litomo-bench-robust-"))
    results = {}
    for name in args.cases.split(","):
        t0 = time.perf_counter()
        results[name] = run_case(name, work, processing, sample, args.tag)
        results[name]["wall_s"] = time.perf_counter() - t0
        print(name, json.dumps(results[name].get("worst", results[name])), file=sys.stderr, flush=True)
    print(json.dumps({"processing": processing, "sample": sample, "workdir": str(work),
                      "cases": results}, indent=1))
    if args.table:
        print("| case | RMSE | max class pp | total Li % | Wasserstein |")
        print("|---|---|---|---|---|")
        for name, r in results.items():
            w = r.get("worst")
            if w:
                print(f"| {name} | {w['rmse']:.3f} | {w['max_class_pp']:.1f} | {w['total_li_pct']:.1f} "
                      f"| {w['wasserstein']:.3f} |")


if __name__ == "__main__":
    main()

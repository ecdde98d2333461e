"""Run every benchmark in this folder and print one JSON summary.

Usage: ``python benchmarks/run_all.py [--quick] [--only NAME[,NAME]]``. ``--quick`` passes each
script its small-size options where it has them (a smoke run, minutes instead of an hour).
Each script runs in its own process, so peak-memory figures are its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "limap": ("bench_limap.py", ["--size", "96", "--states", "2"]),
    "scale": ("bench_scale.py", ["--sizes", "128,256"]),
    "spectral": ("bench_spectral.py", ["--n-voxels", "100000"]),
    "micro": ("bench_micro.py", ["--skip-cli", "--skip-nosmooth"]),
    "transport": ("bench_transport.py", ["--sections", "crop128"]),
    "register": ("bench_register.py", ["--sizes", "32,64", "--repeats", "1"]),
    "segment": ("bench_segment.py", ["--sizes", "64"]),
    "recon": ("bench_recon.py", ["--size", "128", "--n-proj", "181", "--quick"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SCRIPTS))
    args = ap.parse_args()
    summary: dict[str, object] = {}
    for name in args.only.split(","):
        script, quick_args = SCRIPTS[name]
        cmd = [sys.executable, str(HERE / script), *(quick_args if args.quick else [])]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        entry: dict[str, object] = {"wall_s": time.perf_counter() - t0, "returncode": proc.returncode}
        try:
            entry["result"] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            entry["stdout_tail"] = proc.stdout[-2000:]
            entry["stderr_tail"] = proc.stderr[-2000:]
        summary[name] = entry
        print(f"{name}: rc={proc.returncode} in {entry['wall_s']:.0f} s", file=sys.stderr, flush=True)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

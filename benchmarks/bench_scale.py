"""Scale benchmark (issues 6 and 22: out-of-core processing, speed per stage, memory floor).

For each size N (default 512, 1024) this generates one state of 3 x N^3 uint16 volumes with
the operando phantom (``litomo phantom operando --states 1 --dtype uint16 --seed SEED``, the
same generator and options as the command), then runs exactly ``litomo run
DATA/experiment.toml --out RUN`` with default options in a subprocess and prints

- per stage: wall time, CPU time (all threads of the run's process) and the process's peak
  RSS so far, as the run recorded them (``run.json`` ``stages``);
- the whole command: wall time, CPU time (user + system of the child, as ``/usr/bin/time``
  gives it) and peak RSS (the child's ``ru_maxrss`` from ``wait4``: the larger of the run process
  and its elastix worker, as ``/usr/bin/time -v`` reports it; each of the two as ``run.json``
  records them; and the process tree sampled every 0.2 s).

``--streaming`` also measures the machine's sequential read bandwidth of the input files and
the streaming stages alone (lazy read + binning + the map) as a fraction of it (issue 6).

Run: ``python benchmarks/bench_scale.py [--sizes 512,1024] [--seed 0] [--workdir DIR]``;
prints one table per size, then JSON (``--json-only``: the JSON alone).
Targets (issue 22): 512^3 < 100 s and 1024^3 < 150 s, peak RSS < 1.5 GiB at both sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def read_bandwidth(paths: list[Path], block_mb: int = 16) -> tuple[float, float]:
    """Bytes/s of a plain sequential read of ``paths`` (the physical limit for streaming)."""
    nbytes = 0
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while chunk := fh.read(block_mb << 20):
                nbytes += len(chunk)
    dt = time.perf_counter() - t0
    return nbytes / dt, dt


def streaming_stages(manifest_path: Path) -> dict[str, float]:
    """Time lazy read + bin of the three energies (the run's ``read`` stage) + the Li map."""
    from litomo.manifest import load_manifest
    from litomo.workflows.execution import dask_client
    from litomo.workflows.limap import RunOptions
    from litomo.workflows.limap.read import BinStage
    from litomo.workflows.limap.run import prepare_context
    from litomo.xanes import threeenergy as te

    m = load_manifest(manifest_path)
    st = m.states[0]
    ctx = prepare_context(m, RunOptions(), None, [])
    cal = ctx.calibration
    nbytes = sum(Path(p).stat().st_size for p in st.volumes)
    with dask_client(None):
        t0 = time.perf_counter()
        b = BinStage().run(ctx, st)
        t_bin = time.perf_counter() - t0
    t1 = time.perf_counter()
    pre, edge, post = (b.map_grid[r] for r in ("pre_edge", "edge", "post_edge"))
    r = te.background_corrected_ratio(pre, edge, post, energies_ev=cal.energies_ev,
                                      background_exponent=0.0, background_factors=cal.background.factors[1:],
                                      reference_levels=cal.levels,
                                      jump_threshold=te.jump_threshold(pre, post))
    te.calibrate_li(r, cal.r_pristine, cal.r_charged)
    t_map = time.perf_counter() - t1
    return {"bytes": nbytes, "read_bin_s": t_bin, "map_s": t_map,
            "read_bin_gbps": nbytes / t_bin / 1e9, "read_bin_map_gbps": nbytes / (t_bin + t_map) / 1e9}


def generate(data: Path, size: int, seed: int) -> float:
    """``litomo phantom operando --out DATA --size N --states 1 --seed SEED --dtype uint16``; seconds."""
    if (data / "experiment.toml").exists():
        return 0.0
    cmd = [sys.executable, "-m", "litomo.cli", "phantom", "operando", "--out", str(data), "--size", str(size),
           "--states", "1", "--seed", str(seed), "--dtype", "uint16"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def full_run(manifest_path: Path, out_dir: Path) -> dict:
    """``litomo run MANIFEST --out OUT`` (default options) in a subprocess: time, CPU, peak RSS, stages."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    cmd = [sys.executable, "-m", "litomo.cli", "run", str(manifest_path), "--out", str(out_dir), "--quiet"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        ps = psutil.Process(proc.pid)
        peak = 0
        while True:
            # wait4: this child's own rusage (CPU, ru_maxrss), not that of every child so far
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"litomo run failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    record = json.loads((out_dir / "run.json").read_text())
    stages = [{"stage": f"{r['state']}/{r['stage']}".lstrip("/"), "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
               "peak_rss_gib": r["peak_rss_mib"] / 1024, "started_early_s": r.get("started_early_s", 0.0)}
              for r in record["stages"]]
    procs = record.get("peak_rss_mib", {})  # the run process and its largest child (the elastix worker)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gib": usage.ru_maxrss / 2**20,
            "peak_rss_tree_gib": peak / 2**30, "peak_rss_run_process_gib": procs.get("run_process", 0) / 1024,
            "peak_rss_elastix_worker_gib": procs.get("largest_child_process", 0) / 1024, "stages": stages}


def table(size: int, run: dict) -> str:
    """The per-stage table of one run (plain text)."""
    lines = [f"{size}^3 x 3 energies, one state: litomo run (default options)",
             f"{'stage':<22}{'wall s':>9}{'CPU s':>9}{'peak RSS GiB':>14}"]
    for s in run["stages"]:
        # a stage begun early (the registration, in the elastix worker during `separate`): its
        # wall time is what was left after the stages before it, mostly the wait for the worker
        early = f"  (begun {s['started_early_s']:.1f} s earlier)" if s.get("started_early_s") else ""
        lines.append(f"{s['stage']:<22}{s['wall_s']:>9.1f}{s['cpu_s']:>9.1f}{s['peak_rss_gib']:>14.2f}{early}")
    rest = run["wall_s"] - sum(s["wall_s"] for s in run["stages"])
    lines.append(f"{'start-up, checks':<22}{rest:>9.1f}{'':>9}{'':>14}")
    lines.append(f"{'total (command)':<22}{run['wall_s']:>9.1f}{run['cpu_s']:>9.1f}{run['peak_rss_gib']:>14.2f}")
    lines.append(f"peak RSS GiB: run process {run['peak_rss_run_process_gib']:.2f}, elastix worker "
                 f"{run['peak_rss_elastix_worker_gib']:.2f}, process tree (sampled) {run['peak_rss_tree_gib']:.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--seed", type=int, default=0, help="phantom seed (the issue's case: 5)")
    ap.add_argument("--workdir", default=None, help="where to generate data (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--streaming", action="store_true", help="also measure read bandwidth and streaming stages")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="litomo-bench-scale-"))
    results = {"machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                           "load_1min_at_start": os.getloadavg()[0]},
               "seed": args.seed, "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        data = work / f"data{n}-seed{args.seed}"
        gen_s = generate(data, n, args.seed)
        manifest = data / "experiment.toml"
        entry: dict = {"phantom_generation_s": gen_s}
        if args.streaming:
            from litomo.manifest import load_manifest

            files = list(load_manifest(manifest).states[0].volumes)
            bw, _ = read_bandwidth(files)
            stream = streaming_stages(manifest)
            entry.update({"input_gib": stream["bytes"] / 2**30, "sequential_read_gbps": bw / 1e9, **stream,
                          "streaming_fraction_of_read_bw": stream["read_bin_map_gbps"] / (bw / 1e9)})
        entry["full_run"] = full_run(manifest, work / f"run{n}")
        results["sizes"][str(n)] = entry
        if not args.json_only:
            print(table(n, entry["full_run"]), "\n", flush=True)
    print(json.dumps(results, indent=2))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

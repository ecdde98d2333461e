"""Scale benchmark (issue: out-of-core processing).

For each size N (default 256, 512, 1024) this generates one state of 3 x N^3 uint16 volumes
with the operando phantom, then measures

- the machine's sequential read bandwidth of those same files (the physical limit),
- the streaming stages (lazy read + 7x7x7 binning of the three energies + the map) as GB/s
  of raw input and as a fraction of that bandwidth,
- a full ``litomo run`` in a subprocess: wall time and peak RSS (resident set size of the
  process tree, sampled every 50 ms).

Run: ``python benchmarks/bench_scale.py [--sizes 256,512,1024] [--workdir DIR]``; prints JSON.
Targets (issue 6): 1024^3 full run < 180 s with peak RSS < 3 GiB; streaming >= 50 % of read bandwidth.
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

import numpy as np
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
    """Time lazy read + 7^3 bin of the three energies + the Li map (edge ratio, calibration)."""
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


def full_run(manifest_path: Path, out_dir: Path) -> dict[str, float]:
    """Run ``litomo run`` in a subprocess; wall time and peak RSS of its process tree."""
    cmd = [sys.executable, "-m", "litomo.cli", "run", str(manifest_path), "--out", str(out_dir),
           "--force", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"litomo run failed ({proc.returncode}): {err.decode()[-2000:]}")
    # per-stage wall/CPU time as the run recorded them (run.json "stages")
    stages = json.loads((out_dir / "run.json").read_text())["stages"]
    return {"wall_s": wall, "peak_rss_gib": peak / 2**30,
            "stages": {f"{r['state']}/{r['stage']}".lstrip("/"): {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"]}
                       for r in stages}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--workdir", default=None, help="where to generate data (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args()
    from litomo.phantom.writer import write_operando_phantom

    work = Path(args.workdir or tempfile.mkdtemp(prefix="litomo-bench-scale-"))
    results = {"machine": {"cpus": os.cpu_count(),
                           "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
               "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        data = work / f"data{n}"
        t0 = time.perf_counter()
        if not (data / "experiment.toml").exists():
            write_operando_phantom(data, size=n, n_states=1, seed=0, dtype="uint16")
        gen_s = time.perf_counter() - t0
        manifest = data / "experiment.toml"
        from litomo.manifest import load_manifest

        files = list(load_manifest(manifest).states[0].volumes)
        bw, _ = read_bandwidth(files)
        stream = streaming_stages(manifest)
        run = full_run(manifest, work / f"run{n}")
        results["sizes"][str(n)] = {
            "phantom_generation_s": gen_s,
            "input_gib": stream["bytes"] / 2**30,
            "sequential_read_gbps": bw / 1e9,
            **stream,
            "streaming_fraction_of_read_bw": stream["read_bin_map_gbps"] / (bw / 1e9),
            "full_run": run,
        }
        print(json.dumps({str(n): results["sizes"][str(n)]}), file=sys.stderr, flush=True)
    sizes = sorted(int(s) for s in results["sizes"])
    if len(sizes) > 1:
        t = [results["sizes"][str(s)]["full_run"]["wall_s"] for s in sizes]
        vox = [s**3 for s in sizes]
        slope = float(np.polyfit(np.log(vox), np.log(t), 1)[0])
        results["scaling_exponent_time_vs_voxels"] = slope
        big = results["sizes"][str(sizes[-1])]
        # projection to 2048^3 from the measured exponent (8x the voxels of 1024^3)
        factor = (2048**3 / sizes[-1] ** 3) ** slope
        results["projection_2048"] = {
            "wall_s": big["full_run"]["wall_s"] * factor,
            "input_gib": 3 * 2048**3 * 2 / 2**30,
            "note": "time extrapolated with the measured exponent; memory stays bounded by "
                    "chunk size x threads + binned volumes (2048/7 = 292^3 float32 = 100 MB each)",
        }
    print(json.dumps(results, indent=2))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

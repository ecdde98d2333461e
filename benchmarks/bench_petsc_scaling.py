"""PETSc tortuosity on 1 vs 2 MPI ranks against the native solver (issue 18: the scaling row).

Runs, each in its own process tree, on the real 256^3 electrode (TauFactor/Polaron NMC, pore,
one axis) or a corner crop of it::

    litomo tortuosity FILE --labels pore=0,am=85,cbd=170 --voxel-size-um 1 --json            # native
    mpiexec -n N litomo tortuosity FILE ... --backend petsc                                   # N = 1, 2

and prints one markdown table row per run: tau, its difference to the native tau, wall time,
CPU time of all ranks (user + system of the whole process tree, from ``getrusage`` of the
waited children), the largest process's peak RSS, and the load average at the start (wall
times and the 1 -> 2 rank speed-up mean something only on an idle machine).

    python benchmarks/bench_petsc_scaling.py [--size 256] [--ranks 1,2] [--axis z] [--rtol 1e-6]
                                             [--skip-native] [--json]

Needs petsc4py, mpi4py and ``mpiexec`` (docs/scale.md says how they were installed here).
Idle 2-core estimate at 256^3 from the loaded runs' CPU (58 + 118 + 133 s): ~4 min.
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

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "micro" / "taufactor_electrode_polaron_nmc_256.tiff").resolve()
#: OpenMPI refuses root and more ranks than cores without these (containers, small machines)
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def run_one(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; its JSON output plus wall time, and from ``wait4`` the CPU (user + system)
    of its whole process tree (mpiexec and every rank) and the largest process's peak RSS."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.read().strip()[-2000:]}")
        result = json.loads(out.read())
    # Linux: ru_maxrss in KiB, the maximum over the reaped child and its reaped descendants
    return {"out": result, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_gb": ru.ru_maxrss * 1024 / 1e9}


def crop(size: int, workdir: Path) -> Path:
    if size >= 256:
        return DATA
    import tifffile

    path = workdir / f"crop{size}.tif"
    tifffile.imwrite(path, tifffile.imread(DATA)[:size, :size, :size])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="corner crop edge (256 = the whole electrode)")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--axis", default="z")
    ap.add_argument("--rtol", default="1e-6")
    ap.add_argument("--skip-native", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the records as JSON too")
    args = ap.parse_args()
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("mpiexec not found: install an MPI (docs/scale.md, 'Tortuosity beyond one machine')")
    env = {**os.environ, **MPI_ENV}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = crop(args.size, Path(tmp))
        base = [sys.executable, "-m", "litomo", "tortuosity", str(path), "--axis", args.axis, "--labels",
                "pore=0,am=85,cbd=170", "--voxel-size-um", "1", "--rtol", args.rtol, "--json", "-q"]
        runs = {}
        if not args.skip_native:
            runs["native"] = run_one(base, env)
        for n in (int(r) for r in args.ranks.split(",")):
            runs[f"petsc -n {n}"] = run_one([mpiexec, "-n", str(n), *base, "--backend", "petsc"], env)
    native = runs["native"]["out"]["tau"][args.axis] if "native" in runs else None
    print(f"| {args.size}^3, pore, axis {args.axis}, rtol {args.rtol} (load {load:.1f} at start) | tau | vs native "
          "| wall | CPU (all ranks) | peak RSS (largest process) |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        tau = r["out"]["tau"][args.axis]
        rel = f"{(tau - native) / native:+.1e}" if native and name != "native" else "-"
        print(f"| {name} | {tau:.7f} | {rel} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | "
              f"{r['peak_rss_gb']:.2f} GB |")
    if args.json:
        print(json.dumps({k: {**v, "out": {"tau": v["out"]["tau"], "iterations": v["out"].get("iterations")}}
                          for k, v in runs.items()}, indent=1))


if __name__ == "__main__":
    main()

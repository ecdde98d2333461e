"""Out-of-core ``litomo micro`` on a large synthetic electrode: peak RSS, CPU and wall (issue 18).

The volume is TauFactor's real 256^3 electrode (or a corner crop of it, ``--crop``) mirror-tiled
``--tiles`` times along each axis (default 4: 1024^3 uint8, 1 GiB; values 0/85/170), written as an
uncompressed TIFF, then::

    litomo micro big.tif --voxel-size-um 0.4 --labels pore=0,am=85,cbd=170 --no-figures --axes z
                 --json -q [--chunk-size N] [--scheduler local]

runs in its own process. Printed: one markdown table row (voxels, blocks, wall, CPU of the
process tree, peak RSS of the largest process, load average at the start) and whether the volume
fractions equal the source's exactly (mirror tiling holds tiles^3 copies of each voxel: a check
of the block counts). Target (issue 18): 1024^3 with peak RSS under 6 GiB.

    python benchmarks/bench_micro_outofcore.py [--tiles 4] [--crop 256] [--chunk-size 128]
                                               [--scheduler local] [--workdir DIR]

Time: the one 1024^3 run so far took 1352 s CPU (docs/scale.md), so ~20 min on one idle core
(``--scheduler local`` spreads the blocks and S2 slabs over the cores); ``--tiles 2`` (512^3)
takes ~3 min, ``--crop 64 --tiles 2`` a few seconds (smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "micro" / "taufactor_electrode_polaron_nmc_256.tiff").resolve()


def build(path: Path, crop: int, tiles: int) -> np.ndarray:
    """Write the mirror-tiled volume page by page; returns the source's value counts."""
    import tifffile

    src = tifffile.imread(DATA)[:crop, :crop, :crop]
    # symmetric padding = mirror copies, so the tiled volume has no seams a block could notice
    yx = np.pad(src, [(0, 0), (0, crop * (tiles - 1)), (0, crop * (tiles - 1))], mode="symmetric")

    def pages():
        for t in range(tiles):
            block = yx if t % 2 == 0 else yx[::-1]
            yield from block

    tifffile.imwrite(path, pages(), shape=(crop * tiles, *yx.shape[1:]), dtype=np.uint8)
    return np.bincount(src.ravel(), minlength=171)[[0, 85, 170]]


def run_micro(path: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "litomo", "micro", str(path), "--voxel-size-um", "0.4", "--labels",
           "pore=0,am=85,cbd=170", "--out", str(out), "--no-figures", "--axes", "z", "--json", "-q", *extra]
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=so, stderr=se, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        so.seek(0)
        se.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"litomo micro failed: {se.read().strip()[-2000:]}")
        summary = json.loads(so.read())
    # Linux: ru_maxrss in KiB, the largest of the process and its reaped children (dask workers)
    return {"summary": summary, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_rss_mib": ru.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256, help="corner of the 256^3 electrode to tile")
    ap.add_argument("--chunk-size", type=int, default=None, help="block edge (default: litomo's, 128 above 2^28)")
    ap.add_argument("--scheduler", default=None, help="passed to litomo micro --scheduler (e.g. local)")
    ap.add_argument("--workdir", default=None, help="where to write the volume (default: a temp dir)")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "big.tif"
        counts = build(path, args.crop, args.tiles)
        n = args.crop * args.tiles
        chunk = args.chunk_size or (128 if n ** 3 > 2 ** 28 else 64)
        extra = ["--chunk-size", str(chunk)]
        if args.scheduler:
            extra += ["--scheduler", args.scheduler]
        r = run_micro(path, Path(tmp) / "out", extra)
    vf = r["summary"]["volume_fraction"]
    exact = [vf[p] for p in ("pore", "am", "cbd")] == (counts / counts.sum()).tolist()
    print("| volume | blocks | scheduler | wall | CPU (process tree) | peak RSS | fractions = source's | load at start |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {n}^3 uint8 ({args.crop}^3 electrode corner mirror-tiled {args.tiles}x) | {chunk}^3 | "
          f"{args.scheduler or 'in-process'} | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} s | {r['peak_rss_mib']:.0f} MiB | "
          f"{'yes' if exact else 'NO'} | {load:.1f} |")


if __name__ == "__main__":
    main()

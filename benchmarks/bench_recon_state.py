"""One XANES state from raw projection files to the Li map (issue 14): time and peak memory.

Builds a one-state operando phantom of ``--size`` voxels (no noise in the volumes, energies
co-registered: the noise and the misregistration of a TXM series come from the projections),
projects each of its three energies with astra (``--views`` views over 240 degrees, Poisson
flats and transmission, stage jitter up to 3 px vertical / 5 px horizontal), writes them as
DXchange HDF5 raw counts, then runs ``litomo run`` on them in a child process (``[reconstruction]``:
automatic centre, ``--align`` alignment) and reports its CPU time, wall time and peak memory
(``resource.getrusage`` of the child) as JSON, with the generation cost kept apart. ``--keep DIR``
keeps (and reuses) the generated files.

    python benchmarks/bench_recon_state.py --size 256          # a few CPU minutes
    python benchmarks/bench_recon_state.py --size 512 --keep /tmp/state512   # the issue's case
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROLES = ("pre_edge", "edge", "post_edge")


def generate(work: Path, size: int, views: int, seed: int = 0) -> dict[str, float]:
    """Phantom, projections and manifest under ``work``; returns the CPU seconds of each step."""
    import h5py
    import numpy as np
    from scipy import ndimage

    from litomo.io import read_volume
    from litomo.phantom.writer import write_operando_phantom
    from litomo.tomo.project import project_volume

    if (work / "proj.toml").is_file():
        return {"reused": 1.0}
    t0 = time.process_time()
    write_operando_phantom(work / "ph", size=size, n_states=1, seed=seed, bin_factor=4, snr=0.0,
                           max_translation_vox=0.0, max_rotation_deg=0.0, deformation_vox=0.0)
    t1 = time.process_time()
    rng = np.random.default_rng(seed)
    th = np.linspace(-120.0, 120.0, views)
    yy, xx = np.mgrid[: size + 1, : size + 1]
    cyl = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= (size // 2 - 0.5) ** 2
    for role in ROLES:
        v = np.asarray(read_volume(work / "ph" / "I" / f"{role}.tif").array, np.float32)
        # scaled so the thickest path transmits a few percent; padded so the axis is a voxel centre
        v = np.pad(v, ((0, 0), (0, 1), (0, 1))) * cyl * (0.35 * 64 / size)
        proj = project_volume(v, th)
        jit = np.stack([rng.uniform(-3, 3, views), rng.uniform(-5, 5, views)], axis=1)
        for i in range(views):
            proj[i] = ndimage.shift(proj[i], jit[i], order=1, mode="nearest")
        flat = 2e4 * (1 + 0.05 * np.sin(np.arange(size + 1) / 5.0))[None, :] * np.ones((size, 1))
        with h5py.File(work / f"proj_{role}.h5", "w") as f:
            f["exchange/data"] = (rng.poisson(flat * np.exp(-proj)) + 100).astype(np.uint16)
            f["exchange/data_white"] = (rng.poisson(np.broadcast_to(flat, (10, *flat.shape))) + 100).astype(np.uint16)
            f["exchange/data_dark"] = np.full((10, *flat.shape), 100, np.uint16)
            f["exchange/theta"] = th
        del proj
    t2 = time.process_time()
    text = (work / "ph" / "experiment.toml").read_text().replace("register = true", "register = false")
    for role in ROLES:
        text = text.replace(f'{role} = "I/{role}.tif"', f'{role} = "../proj_{role}.h5"')
    (work / "proj.toml").write_text(text + '\n[reconstruction]\nalign = "ALIGN"\n')
    return {"phantom_cpu_s": t1 - t0, "projection_cpu_s": t2 - t1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=721)
    ap.add_argument("--align", default="xcorr", choices=("none", "xcorr", "reprojection"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default=None, help="folder for (and reuse of) the generated files")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-recon-state-"))
    work.mkdir(parents=True, exist_ok=True)
    gen = generate(work, args.size, args.views)
    manifest = work / "run.toml"
    manifest.write_text((work / "proj.toml").read_text().replace('"ALIGN"', f'"{args.align}"'))
    (work / "ph" / "run.toml").write_text(manifest.read_text())
    env = {**os.environ, **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "NUMBA_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = work / f"out-{args.align}"
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "litomo", "run", str(work / "ph" / "run.toml"), "--out", str(out),
                           "--force", "-q"], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"size": args.size, "views": args.views, "align": args.align, "threads": args.threads, **gen,
              "returncode": proc.returncode, "run_wall_s": wall,
              "run_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
              "run_peak_rss_gib": r1.ru_maxrss / 2**20, "load_average": os.getloadavg()}
    if proc.returncode:
        result["stderr"] = proc.stderr[-2000:]
    else:
        rec = json.loads((out / "run.json").read_text())
        result["stages_cpu_s"] = {s["stage"]: s.get("cpu_s") for s in rec.get("stages", []) if s.get("ran")}
        result["stages_peak_rss_mib"] = {s["stage"]: s.get("peak_rss_mib") for s in rec.get("stages", []) if s.get("ran")}
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return int(proc.returncode != 0)


if __name__ == "__main__":
    raise SystemExit(main())

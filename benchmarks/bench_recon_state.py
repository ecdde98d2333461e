"""One XANES state from raw projection files to the Li map (issue 14): time and peak memory.

Builds a one-state operando phantom of ``--size`` voxels (no noise in the volumes, energies
co-registered: the noise and the misregistration of a TXM series come from the projections),
projects each of its three energies with astra (``--views`` views over 240 degrees, Poisson
flats and transmission, stage jitter up to 3 px vertical / 5 px horizontal), writes them as
DXchange HDF5 raw counts, then runs ``litomo run`` on them in a child process (``[reconstruction]``:
automatic centre, ``--align`` alignment) and reports its CPU time, wall time and peak memory
(``resource.getrusage`` of the child) as JSON, with the generation cost kept apart. ``--keep DIR``
keeps (and reuses) the generated files.

``--upsample 2`` makes the generation ~8x cheaper (astra's per-slice CPU projector costs N^3:
~35 CPU min at 512^2 x 721 views): the phantom is binned 2 x 2 x 2, projected at half resolution,
and each view is interpolated bilinearly onto the full-resolution detector (the projection of the
binned phantom upsampled 2x; the stage jitter is applied in the same interpolation), before the
Poisson noise of the flats and the transmission is drawn at full resolution. The data are then
smoother than a full-resolution projection at the finest scale; the run does the same work on them.

    python benchmarks/bench_recon_state.py --size 256          # a few CPU minutes
    python benchmarks/bench_recon_state.py --size 512 --upsample 2 --keep /tmp/state512   # the issue's case
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROLES = ("pre_edge", "edge", "post_edge")


def _bin(v: np.ndarray, up: int) -> np.ndarray:
    """Mean of ``up`` x ``up`` x ``up`` blocks, times ``up``: attenuation per coarse voxel length."""
    nz, ny, nx = (d // up for d in v.shape)
    return v[: nz * up, : ny * up, : nx * up].reshape(nz, up, ny, up, nx, up).mean(axis=(1, 3, 5)) * up


def _views(proj: np.ndarray, jit: np.ndarray, up: int) -> Iterator[np.ndarray]:
    """The views of ``proj`` shifted by ``jit`` (px of the output), upsampled ``up`` times on the detector.

    Fine pixel ``i`` sits at coarse coordinate ``(i + 0.5) / up - 0.5``; bilinear interpolation with
    edge values outside, the jitter applied in the same interpolation (for ``up == 1`` this is
    ``ndimage.shift(order=1)``, the generator used before).
    """
    from scipy import ndimage

    rows, cols = proj.shape[1] * up, proj.shape[2] * up
    gi, gj = np.mgrid[:rows, :cols].astype(np.float32)
    for i in range(proj.shape[0]):
        coords = [(gi - jit[i, 0] + 0.5) / up - 0.5, (gj - jit[i, 1] + 0.5) / up - 0.5]
        yield ndimage.map_coordinates(proj[i], coords, order=1, mode="nearest")


def _write_series(path: Path, proj: np.ndarray, th: np.ndarray, up: int, rng: np.random.Generator) -> None:
    """DXchange raw counts of the jittered (upsampled) views: Poisson flats and transmission, darks 100."""
    import h5py

    views = th.size
    jit = np.stack([rng.uniform(-3, 3, views), rng.uniform(-5, 5, views)], axis=1)
    rows, cols = proj.shape[1] * up, proj.shape[2] * up
    flat = 2e4 * (1 + 0.05 * np.sin(np.arange(cols) / 5.0))[None, :] * np.ones((rows, 1))
    with h5py.File(path, "w") as f:
        data = f.create_dataset("exchange/data", (views, rows, cols), np.uint16)
        for i, view in enumerate(_views(proj, jit, up)):
            data[i] = (rng.poisson(flat * np.exp(-view)) + 100).astype(np.uint16)
        f["exchange/data_white"] = (rng.poisson(np.broadcast_to(flat, (10, rows, cols))) + 100).astype(np.uint16)
        f["exchange/data_dark"] = np.full((10, rows, cols), 100, np.uint16)
        f["exchange/theta"] = th


def generate(work: Path, size: int, views: int, seed: int = 0, upsample: int = 1) -> dict[str, float]:
    """Phantom, projections and manifest under ``work``; returns the CPU seconds of each step."""
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
    n = size // upsample + 1  # padded by one voxel so the axis is a voxel centre
    yy, xx = np.mgrid[:n, :n]
    cyl = (yy - (n - 1) // 2) ** 2 + (xx - (n - 1) // 2) ** 2 <= ((n - 1) // 2 - 0.5) ** 2
    for role in ROLES:
        v = np.asarray(read_volume(work / "ph" / "I" / f"{role}.tif").array, np.float32)
        v *= 0.35 * 64 / size  # the thickest path transmits a few percent
        if upsample > 1:
            v = _bin(v, upsample)
        proj = project_volume(np.pad(v, ((0, 0), (0, 1), (0, 1))) * cyl, th)
        del v
        _write_series(work / f"proj_{role}.h5", proj, th, upsample, rng)
        del proj
    t2 = time.process_time()
    text = (work / "ph" / "experiment.toml").read_text().replace("register = true", "register = false")
    for role in ROLES:
        text = text.replace(f'{role} = "I/{role}.tif"', f'{role} = "../proj_{role}.h5"')
    (work / "proj.toml").write_text(text + '\n[reconstruction]\nalign = "ALIGN"\n')
    return {"phantom_cpu_s": t1 - t0, "projection_cpu_s": t2 - t1, "upsample": upsample}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=721)
    ap.add_argument("--align", default="xcorr", choices=("none", "xcorr", "reprojection"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default=None, help="folder for (and reuse of) the generated files")
    ap.add_argument("--upsample", type=int, default=1,
                    help="project the phantom binned this many times and upsample the views (cheap generation)")
    ap.add_argument("--generate-only", action="store_true", help="write the files and stop")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-recon-state-"))
    work.mkdir(parents=True, exist_ok=True)
    gen = generate(work, args.size, args.views, upsample=args.upsample)
    if args.generate_only:
        sys.stdout.write(json.dumps(gen) + "\n")
        return 0
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

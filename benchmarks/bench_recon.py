"""Reconstruction speed and accuracy per slice (litomo.tomo); prints JSON.

Times one reconstructed slice (default 512 x 512 from 721 projections over 180 degrees) for FBP
(ramp), SIRT and TV (Chambolle-Pock), on the astra CPU projectors and on the scikit-image
fallback, limited to ``--threads`` cores (default 2). Iterative timings are also given per
iteration, since the iteration count is a user choice. Accuracy: NRMSE against the phantom inside
the reconstruction circle, and the SPEC 4b 240-degree check (plain vs redundancy-weighted FBP).

    python benchmarks/bench_recon.py                 # full size (SIRT/TV: a few iterations)
    python benchmarks/bench_recon.py --size 128 --n-proj 181 --quick
    python benchmarks/bench_recon.py --tooth ../shared/data/recon/tomopy/tooth.h5 --rows 16

``--tooth``: whole-volume throughput on real projections (issue 14): litomo's slab-wise FBP
(dask threads, ``--threads`` workers) against a per-slice loop of algotom's CPU
``fbp_reconstruction`` and of ``skimage.transform.iradon``, same centre (algotom's Vo), with the
correlation of litomo's slices to algotom's. tooth.h5 has two detector rows; they are repeated to
``--rows`` slices. CPU and wall seconds are both reported, with litomo's FBP split into filtering
and back-projection, and the same FBP with astra's per-slice back-projector.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n-proj", type=int, default=721)
    ap.add_argument("--sirt-iter", type=int, default=5)
    ap.add_argument("--tv-iter", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="skip the scikit-image iterative timings")
    ap.add_argument("--tooth", default=None, help="tooth.h5: run the whole-volume FBP throughput comparison only")
    ap.add_argument("--rows", type=int, default=16, help="slices for --tooth (the file's 2 rows repeated)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.tooth:
        sys.stdout.write(json.dumps(bench_volume_fbp(args.tooth, args.rows, args.threads), indent=2) + "\n")
        return 0

    import numpy as np
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    from litomo.tomo.project import HAVE_ASTRA, Projector2D
    from litomo.tomo.recon import reconstruct_fbp, reconstruct_sirt, reconstruct_tv

    n = args.size
    img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    circle = np.hypot(yy, xx) < 0.45 * n

    def nrmse(rec):
        return float(np.sqrt(np.mean((rec - img)[circle] ** 2)) / np.sqrt(np.mean(img[circle] ** 2)))

    theta = np.linspace(0, 180, args.n_proj, endpoint=False)
    results: dict = {"size": n, "n_proj": args.n_proj, "threads": args.threads, "astra": HAVE_ASTRA, "methods": {}}
    backends = (["astra"] if HAVE_ASTRA else []) + ["skimage"]
    for be in backends:
        P = Projector2D(n, theta, be, use_matrix=False)
        t0 = time.perf_counter()
        sino = P.forward(img)
        t_fp = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = reconstruct_fbp(sino, theta, backend=be)
        t_fbp = time.perf_counter() - t0
        res = {"forward_projection_s": t_fp, "fbp_s_per_slice": t_fbp, "fbp_nrmse": nrmse(rec)}
        if be == "astra" or not args.quick:
            t0 = time.perf_counter()
            rec = reconstruct_sirt(sino, theta, n_iter=args.sirt_iter, backend=be)
            dt = time.perf_counter() - t0
            res.update({"sirt_iterations": args.sirt_iter, "sirt_s_per_slice": dt,
                        "sirt_s_per_iteration": dt / args.sirt_iter, "sirt_nrmse": nrmse(rec)})
            t0 = time.perf_counter()
            rec = reconstruct_tv(sino, theta, n_iter=args.tv_iter, backend=be)
            dt = time.perf_counter() - t0
            res.update({"tv_iterations": args.tv_iter, "tv_s_per_slice": dt,
                        "tv_s_per_iteration": dt / args.tv_iter, "tv_nrmse": nrmse(rec)})
        results["methods"][be] = res

    # SPEC 4b: 240-degree scan, plain vs redundancy-weighted FBP (same angular step)
    step = 180.0 / args.n_proj
    th240 = np.arange(-120, 120, step)
    sino240 = Projector2D(n, th240, use_matrix=False).forward(img)
    results["scan_240deg"] = {
        "fbp_unweighted_nrmse": nrmse(reconstruct_fbp(sino240, th240, redundancy_weighting=False)),
        "fbp_weighted_nrmse": nrmse(reconstruct_fbp(sino240, th240)),
        "fbp_180deg_nrmse": nrmse(reconstruct_fbp(Projector2D(n, theta, use_matrix=False).forward(img), theta)),
    }
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_volume_fbp(path: str, rows: int, threads: int) -> dict:
    """Slices per second of litomo's slab-wise FBP vs per-slice algotom and scikit-image loops."""
    import numpy as np
    from algotom.rec.reconstruction import fbp_reconstruction
    from skimage.transform import iradon

    from litomo.io.projections import read_projections
    from litomo.tomo.center import center_sinogram, center_vo
    from litomo.tomo.prep import normalize
    from litomo.workflows.reconstruct import ReconstructionConfig, reconstruct_projections

    s = read_projections(path)
    p = normalize(s)
    th = s.angles_deg
    proj = np.ascontiguousarray(np.tile(p, (1, rows // p.shape[1] + 1, 1))[:, :rows])
    c = center_vo(p[:, 0], th)
    cfg = ReconstructionConfig(center_px=c, slab_rows=max(1, rows // threads))
    from litomo.tomo.backproject import backproject_stack
    from litomo.tomo.recon import _filter_sinogram, reconstruct_fbp

    sinos = center_sinogram(np.moveaxis(proj, 1, 0), c)
    backproject_stack(_filter_sinogram(sinos[:1], "ramp"), th)  # numba compile (cached on disk afterwards)
    filt, _, c_f = _timed(lambda: _filter_sinogram(sinos, "ramp"))
    _, _, c_b = _timed(lambda: backproject_stack(filt, th))
    _, _, c_astra = _timed(lambda: [reconstruct_fbp(sinos[k], th, backend="astra") for k in range(rows)])
    mine, w_l, c_l = _timed(lambda: reconstruct_projections(proj, th, c, cfg))
    rad = np.deg2rad(th)
    fbp_reconstruction(proj[:, 0], c, angles=rad, apply_log=False, gpu=False, ncore=1)  # numba compile
    alg, w_a, c_a = _timed(lambda: [fbp_reconstruction(proj[:, k], c, angles=rad, apply_log=False, gpu=False,
                                                       filter_name=None, ratio=None, pad=0, ncore=1)
                                    for k in range(rows)])
    _, w_s, c_s = _timed(lambda: [iradon(center_sinogram(proj[:, k], c).T, th, filter_name="ramp")
                                  for k in range(rows)])
    n = proj.shape[2]
    m = (mine.shape[1] - 1) // 2
    crop = mine[0, m - n // 2 : m - n // 2 + n, m - n // 2 : m - n // 2 + n]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    mask = np.hypot(yy, xx) < 0.4 * n
    return {"data": "tooth.h5", "slices": rows, "views": int(th.size), "detector": int(n), "center_px": c,
            "threads": threads,
            "litomo_fbp": {"wall_s": w_l, "cpu_s": c_l, "slices_per_wall_s": rows / w_l},
            "litomo_fbp_parts_cpu_s": {"filter": c_f, "backprojection_numba": c_b,
                                       "whole_fbp_astra_backprojector_per_slice_loop": c_astra},
            "algotom_fbp_loop": {"wall_s": w_a, "cpu_s": c_a, "slices_per_wall_s": rows / w_a},
            "skimage_iradon_loop": {"wall_s": w_s, "cpu_s": c_s, "slices_per_wall_s": rows / w_s},
            "throughput_ratio_vs_algotom": w_a / w_l, "throughput_ratio_vs_skimage": w_s / w_l,
            "cpu_ratio_vs_algotom": c_a / c_l, "cpu_ratio_vs_skimage": c_s / c_l,
            "corr_with_algotom_unshifted_grid": float(np.corrcoef(crop[mask], alg[0][mask])[0, 1])}


if __name__ == "__main__":
    raise SystemExit(main())

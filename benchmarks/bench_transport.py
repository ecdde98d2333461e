"""Benchmark litomo.transport against published values, TauFactor and PoreSpy (prints JSON).

Every solver runs in its own subprocess so its peak RSS (``ru_maxrss``) and wall time are its
own. Cases:

* TauFactor electrode.tiff (256^3, pore = label 0, flux along axis 0): published tau 2.0776
  (conv_crit 1e-2) / 2.07716 (1e-3); litomo must agree within 0.2 %, be >= 3x faster than the
  taufactor package on the CPU and use less peak memory than PoreSpy ``tortuosity_fd``.
* NREL nmc-1-cal bridge (251x301x301), pore axis 0: TauFactor anchor 2.95187; PoreSpy too.
* PuMA FiberForm (100^3, void = grey <= 89, flux along axis 2): PuMA's published tau 1.31335.
* Time and memory growth from 64^3 to 384^3 (crops / mirror tilings of electrode.tiff).
* Electrode tortuosity factor tau_e of electrode.tiff (pore conductive, NMC reactive).

Usage: ``python benchmarks/bench_transport.py [--sections electrode,others,scaling] [--skip-peers]
[--out result.json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "micro").resolve()
ELECTRODE = DATA / "taufactor_electrode_polaron_nmc_256.tiff"
NREL = DATA / "nrel_nmc1cal_generatedCBD_bridge_251x301x301.tif"
FIBER = DATA / "puma_100_fiberform_greyscale.tif"

PUBLISHED = {
    "electrode_tau_axis0": 2.0776,
    "electrode_tau_axis0_conv1e-3": 2.07716,
    "nrel_pore_tau_axis0_taufactor_anchor": 2.95187,
    "fiberform_tau_x_puma": 1.31335,
    "electrode_tau_e_taufactor_head": 2.07292,
}


def _load(case: str, size: int | None = None) -> np.ndarray:
    """Boolean conducting mask for a case, with flux along axis 0."""
    import tifffile

    if case == "electrode":
        m = tifffile.imread(ELECTRODE) == 0
    elif case == "nrel":
        m = tifffile.imread(NREL) == 0
    elif case == "fiberform":
        m = np.moveaxis(tifffile.imread(FIBER) <= 89, 2, 0)  # PuMA's x = numpy axis 2
    else:
        raise ValueError(case)
    if size is not None:
        if size <= m.shape[0]:
            m = m[:size, :size, :size]
        else:  # mirror tiling keeps the structure continuous across the seams
            pad = [(0, size - s) for s in m.shape]
            m = np.pad(m, pad, mode="symmetric")[:size, :size, :size]
    return np.ascontiguousarray(m)


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


def worker(spec: dict) -> dict:
    """Run one solver in this process and return its numbers."""
    solver, case, size = spec["solver"], spec["case"], spec.get("size")
    mask = _load(case, size)
    out: dict = {"solver": solver, "case": case, "shape": list(mask.shape), "eps": float(mask.mean())}
    t0 = time.perf_counter()
    if solver == "litomo":
        from litomo.transport.diffusion import tortuosity

        tortuosity(mask[:16, :16, :16], "z")  # load the compiled kernels before the baseline
        base = _rss_bytes()
        t0 = time.perf_counter()
        r = tortuosity(mask, "z", rtol=spec.get("rtol", 1e-6))
        # peak RSS above the RSS with the mask loaded (issue 18's bytes per voxel)
        out["solver_bytes_per_voxel"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / mask.size
        out.update(tau=r.tau, deff=r.deff, iterations=r.iterations, residual=r.residual,
                   flux_balance=r.flux_balance, converged=r.converged,
                   stagnant_flux_fraction=r.stagnant_flux_fraction, percolating_fraction=r.percolating_fraction)
    elif solver == "taufactor":
        import taufactor as tf
        import torch

        torch.set_num_threads(spec.get("threads", 2))
        s = tf.Solver(mask.astype(np.uint8), device="cpu")
        tau = s.solve(verbose=False, conv_crit=spec.get("conv_crit", 1e-2))
        out.update(tau=float(np.asarray(tau).ravel()[0]), deff=float(np.asarray(s.D_eff).ravel()[0]),
                   iterations=int(s.iter), conv_crit=spec.get("conv_crit", 1e-2))
    elif solver == "porespy":
        import porespy as ps

        r = ps.simulations.tortuosity_fd(mask, axis=0)
        out.update(tau=float(r.tortuosity), deff=float(r.effective_porosity / r.tortuosity))
    elif solver == "litomo_electrode":
        import tifffile

        from litomo.transport.electrode import electrode_tortuosity

        img = tifffile.imread(ELECTRODE)
        r = electrode_tortuosity(img, "z", mapping={"pore": 0, "am": 85, "cbd": 170})
        out.update(tau_e=r.tau_e, eps=r.eps, specific_area_per_um=r.specific_area_per_um,
                   connected_fraction=r.connected_fraction, iterations=r.iterations, converged=r.converged)
    else:
        raise ValueError(solver)
    out["elapsed_s"] = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru.ru_utime + ru.ru_stime  # includes reading the volume (~0.1 s)
    out["peak_rss_mb"] = ru.ru_maxrss / 1024
    return out


def run(spec: dict, timeout: float = 3600) -> dict:
    """Run :func:`worker` in a fresh interpreter and return its JSON (or the error)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout:.0f} s"}
    if p.returncode != 0:
        return {**spec, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc {p.returncode}"}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["wall_incl_startup_s"] = time.perf_counter() - t0
    print(f"# {spec}: {json.dumps(res)}", file=sys.stderr, flush=True)
    return res


def run_many(specs: dict[str, dict], parallel: bool, timeout: float = 3600) -> dict[str, dict]:
    """Run several workers, one after the other or all at once (CPU times stay per process)."""
    if not parallel:
        return {k: run(v, timeout) for k, v in specs.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(specs)) as pool:
        futures = {k: pool.submit(run, v, timeout) for k, v in specs.items()}
        return {k: f.result() for k, f in futures.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--sections", default="electrode,crop128,others,scaling",
                    help="Comma list of: electrode (256^3 vs TauFactor/PoreSpy), crop128 (128^3 "
                         "vs PoreSpy), others (NREL, FiberForm, tau_e), scaling (64^3..384^3).")
    ap.add_argument("--parallel", action="store_true",
                    help="Run the solvers of the selected sections at the same time (for a busy "
                         "shared machine: CPU times stay per process, wall times then include "
                         "contention).")
    ap.add_argument("--porespy-full", action="store_true",
                    help="Also run PoreSpy on the full 256^3 and NREL volumes (~9-11 GB each).")
    ap.add_argument("--skip-peers", action="store_true", help="Do not run taufactor / PoreSpy.")
    ap.add_argument("--out", type=Path, help="Also write the JSON summary here.")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    summary: dict = {"published": PUBLISHED, "runs": {}}
    runs = summary["runs"]
    sections = set(args.sections.split(","))
    specs: dict[str, dict] = {}
    if "electrode" in sections:
        specs["litomo_electrode256"] = {"solver": "litomo", "case": "electrode"}
        if not args.skip_peers:
            specs["taufactor_electrode256"] = {"solver": "taufactor", "case": "electrode",
                                               "conv_crit": 1e-2, "threads": 2}
            if args.porespy_full:
                specs["porespy_electrode256"] = {"solver": "porespy", "case": "electrode"}
    if "crop128" in sections and not args.skip_peers:
        # PoreSpy needs ~1.2 kB per pore voxel (9 GB at 256^3): compare on a 128^3 crop too
        specs["porespy_electrode128"] = {"solver": "porespy", "case": "electrode", "size": 128}
        specs["litomo_electrode128"] = {"solver": "litomo", "case": "electrode", "size": 128}
    if "others" in sections:
        specs["litomo_nrel"] = {"solver": "litomo", "case": "nrel"}
        specs["litomo_fiberform"] = {"solver": "litomo", "case": "fiberform"}
        specs["litomo_electrode_tau_e"] = {"solver": "litomo_electrode", "case": "electrode"}
        if not args.skip_peers:
            specs["taufactor_fiberform"] = {"solver": "taufactor", "case": "fiberform", "conv_crit": 1e-3}
            specs["porespy_fiberform"] = {"solver": "porespy", "case": "fiberform"}
            if args.porespy_full:
                specs["porespy_nrel"] = {"solver": "porespy", "case": "nrel"}
    runs.update(run_many(specs, args.parallel))
    if "scaling" in sections:
        import psutil

        scaling = {}
        for n in (64, 128, 192, 256, 320, 384):
            prev = [v for v in scaling.values() if v.get("peak_rss_mb")]
            if prev:  # skip sizes that would not fit next to the other users of this machine
                need_mb = prev[-1]["peak_rss_mb"] * (n / prev[-1]["n"]) ** 3
                avail_mb = psutil.virtual_memory().available / 2**20
                if need_mb > 0.5 * avail_mb:
                    scaling[str(n)] = {"n": n, "error": f"skipped: needs ~{need_mb:.0f} MB, {avail_mb:.0f} MB free"}
                    continue
            r = run({"solver": "litomo", "case": "electrode", "size": n})
            scaling[str(n)] = {"n": n, **{k: r.get(k) for k in
                                          ("tau", "elapsed_s", "cpu_s", "peak_rss_mb", "solver_bytes_per_voxel",
                                           "iterations", "error")}}
        summary["scaling"] = scaling
        ok = [v for v in scaling.values() if v.get("cpu_s")]
        if len(ok) >= 2:
            nvox = np.array([float(v["n"]) ** 3 for v in ok])
            summary["scaling_exponent_cpu_vs_voxels"] = float(np.polyfit(np.log(nvox), np.log([v["cpu_s"] for v in ok]), 1)[0])
            summary["scaling_exponent_wall_vs_voxels"] = float(np.polyfit(np.log(nvox), np.log([v["elapsed_s"] for v in ok]), 1)[0])

    lit = runs.get("litomo_electrode256", {})
    cmp: dict = {}
    if "tau" in lit:
        cmp["electrode_tau_rel_err_vs_published"] = lit["tau"] / PUBLISHED["electrode_tau_axis0"] - 1
        cmp["electrode_tau_rel_err_vs_published_1e-3"] = lit["tau"] / PUBLISHED["electrode_tau_axis0_conv1e-3"] - 1
        cmp["electrode_within_0.2pct"] = abs(cmp["electrode_tau_rel_err_vs_published_1e-3"]) < 2e-3
        tfr = runs.get("taufactor_electrode256", {})
        if "elapsed_s" in tfr and "tau" in tfr:
            cmp["speedup_vs_taufactor_cpu"] = tfr["elapsed_s"] / lit["elapsed_s"]
            cmp["cpu_time_ratio_taufactor_over_litomo"] = tfr["cpu_s"] / lit["cpu_s"]
            cmp["speedup_ok_3x"] = cmp["speedup_vs_taufactor_cpu"] >= 3
            cmp["memory_ratio_vs_taufactor"] = lit["peak_rss_mb"] / tfr["peak_rss_mb"]
            cmp["tau_rel_diff_vs_taufactor_run"] = lit["tau"] / tfr["tau"] - 1
        psr = runs.get("porespy_electrode256", {})
        if "peak_rss_mb" in psr and "tau" in psr:
            cmp["memory_ratio_vs_porespy"] = lit["peak_rss_mb"] / psr["peak_rss_mb"]
            cmp["memory_less_than_porespy"] = lit["peak_rss_mb"] < psr["peak_rss_mb"]
            cmp["speedup_vs_porespy"] = psr["elapsed_s"] / lit["elapsed_s"]
            cmp["tau_rel_diff_vs_porespy"] = lit["tau"] / psr["tau"] - 1
    p128, l128 = runs.get("porespy_electrode128", {}), runs.get("litomo_electrode128", {})
    if "tau" in p128 and "tau" in l128:
        cmp["crop128_memory_ratio_litomo_over_porespy"] = l128["peak_rss_mb"] / p128["peak_rss_mb"]
        cmp["crop128_cpu_ratio_porespy_over_litomo"] = p128["cpu_s"] / l128["cpu_s"]
        cmp["crop128_tau_rel_diff_vs_porespy"] = l128["tau"] / p128["tau"] - 1
    pf, lf = runs.get("porespy_fiberform", {}), runs.get("litomo_fiberform", {})
    if "tau" in pf and "tau" in lf:
        cmp["fiberform_memory_ratio_litomo_over_porespy"] = lf["peak_rss_mb"] / pf["peak_rss_mb"]
        cmp["fiberform_tau_rel_diff_vs_porespy"] = lf["tau"] / pf["tau"] - 1
    tff = runs.get("taufactor_fiberform", {})
    if "tau" in tff and "tau" in lf:
        cmp["fiberform_tau_rel_diff_vs_taufactor"] = lf["tau"] / tff["tau"] - 1
    if "tau" in runs.get("litomo_nrel", {}):
        cmp["nrel_tau_rel_diff_vs_taufactor_anchor"] = runs["litomo_nrel"]["tau"] / PUBLISHED["nrel_pore_tau_axis0_taufactor_anchor"] - 1
        if "tau" in runs.get("porespy_nrel", {}):
            cmp["nrel_tau_rel_diff_vs_porespy"] = runs["litomo_nrel"]["tau"] / runs["porespy_nrel"]["tau"] - 1
    if "tau" in runs.get("litomo_fiberform", {}):
        cmp["fiberform_tau_rel_diff_vs_puma"] = runs["litomo_fiberform"]["tau"] / PUBLISHED["fiberform_tau_x_puma"] - 1
    if "tau_e" in runs.get("litomo_electrode_tau_e", {}):
        cmp["tau_e_rel_diff_vs_taufactor_head"] = runs["litomo_electrode_tau_e"]["tau_e"] / PUBLISHED["electrode_tau_e_taufactor_head"] - 1
    summary["comparison"] = cmp
    text = json.dumps(summary, indent=2, default=float)
    print(text)
    if args.out:
        from litomo.io.atomic import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()

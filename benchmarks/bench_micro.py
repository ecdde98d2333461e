"""Benchmark litomo.metrics on a real 256^3 electrode against PoreSpy, TauFactor and skimage.

Volume: TauFactor's electrode.tiff (Polaron GAN NMC, 256^3, 0 pore / 85 NMC / 170 CBD), read
from ../shared/data/micro. Prints one JSON object: timings (s), litomo/peer time ratios,
accuracy against the published values (README in ../shared/data/micro) and the wall time of
the whole ``litomo micro`` command (transport excluded).

    python benchmarks/bench_micro.py [--skip-cli] [--threads 2]

The particle labels for the per-particle comparison come from
``litomo.segment.particles.separate_particles`` when it exists, else from a plain
distance-transform watershed (skimage) so that the comparison can run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "micro" / "taufactor_electrode_polaron_nmc_256.tiff").resolve()
PUBLISHED = {
    "volume_fraction": {"pore": 0.449917, "am": 0.400466, "cbd": 0.149616},
    "ssa_face_per_voxel": {"pore": 0.30684, "am": 0.14610, "cbd": 0.34223},
    "ssa_mc_nosmooth_per_voxel": {"pore": 0.22268, "am": 0.10418, "cbd": 0.25400},
    "through_fraction_axis0_conn6": {"pore": 0.9989, "am": 0.9611, "cbd": 0.9740},
}


CPU_S: dict[str, float] = {}


def timed(fn, *a, _name: str | None = None, **k):
    """(result, wall seconds); CPU seconds go to CPU_S[_name] (robust on a shared machine)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    name = _name or getattr(fn, "__qualname__", str(fn))
    CPU_S[name] = CPU_S.get(name, 0.0) + dc
    print(f"{name}: {dt:.2f} s wall, {dc:.2f} s cpu", file=sys.stderr)
    return out, dt


def particle_labels(lab):
    import numpy as np

    am = lab == 1
    try:
        from litomo.segment.particles import separate_particles

        out = separate_particles(am, voxel_size_um=1.0)
        return np.asarray(getattr(out, "labels", out)), "litomo.segment.particles.separate_particles"
    except ImportError:
        from scipy import ndimage as ndi
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        dist = ndi.distance_transform_edt(am)
        peaks = peak_local_max(dist, min_distance=5, labels=ndi.label(am)[0], exclude_border=False)
        markers = np.zeros(am.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        return watershed(-dist, markers, mask=am).astype(np.int32), "skimage watershed (stand-in)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--skip-nosmooth", action="store_true", help="skip the slow binary-mesh reproduction")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import numpy as np
    import tifffile

    from litomo.metrics import fractions, particles, rev, surface, tpb
    from litomo.metrics.percolation import percolation
    from litomo.phases import to_canonical

    lab = to_canonical(tifffile.imread(DATA), {"pore": 0, "am": 85, "cbd": 170})
    res: dict = {"volume": DATA.name, "shape": list(lab.shape), "cpu_count": os.cpu_count(), "litomo_s": {},
                 "peer_s": {}, "ratio_litomo_over_peer": {}, "accuracy": {}}
    L, P = res["litomo_s"], res["peer_s"]

    vf, L["volume_fractions"] = timed(fractions.volume_fractions, lab, _name="volume_fractions")
    face, L["surface_face"] = timed(surface.surface_areas, lab, 1.0, _name="surface_face")
    mc, L["surface_mc_sigma0.7"] = timed(surface.surface_areas, lab, 1.0, method="mc", _name="surface_mc_sigma0.7")
    tp, L["tpb"] = timed(tpb.tpb_stats, lab, 1.0, _name="tpb")
    t0 = time.perf_counter()
    perc = {p: percolation(lab, "z", phase=p) for p in ("pore", "am", "cbd")}
    L["percolation_3phases_z"] = time.perf_counter() - t0
    s2, L["s2_pore_z"] = timed(rev.two_point_correlation, lab, "z", phase="pore", _name="s2_pore_z")
    _, L["z_profile"] = timed(fractions.z_profile_fractions, lab, 1.0, _name="z_profile")
    res["accuracy"]["volume_fraction_abs_err"] = {p: abs(vf[p] - PUBLISHED["volume_fraction"][p]) for p in vf}
    res["accuracy"]["ssa_face_rel_err"] = {
        p: face["specific"][p] / PUBLISHED["ssa_face_per_voxel"][p] - 1 for p in vf}
    res["accuracy"]["through_fraction_abs_err"] = {
        p: perc[p]["through"] - PUBLISHED["through_fraction_axis0_conn6"][p] for p in vf}
    res["accuracy"]["ssa_mc_sigma0.7"] = mc["specific"]
    res["accuracy"]["tpb_edge_fraction"] = tp["edge_fraction"]
    res["accuracy"]["s2_pore_z"] = {"s2_0": float(s2["s2"].iloc[0]), "phi": vf["pore"],
                                    "s2_rmax": float(s2["s2"].iloc[-1]), "phi2": vf["pore"] ** 2}
    if not args.skip_nosmooth:
        mc0, L["surface_mc_binary"] = timed(surface.surface_areas, lab, 1.0, method="mc", smooth_sigma_vox=0, _name="surface_mc_binary")
        res["accuracy"]["ssa_mc_binary_rel_err_vs_taufactor_marching_nosmooth"] = {
            p: mc0["specific"][p] / PUBLISHED["ssa_mc_nosmooth_per_voxel"][p] - 1 for p in vf}

    # particles: ours (faces + TPB + per-particle marching cubes) vs skimage regionprops_table
    (plab, source), L["separate_particles"] = timed(particle_labels, lab, _name="separate_particles")
    res["particles_source"] = source
    res["n_particles"] = int(plab.max())
    table, L["particle_table"] = timed(particles.shape_table, plab, lab, 1.0, _name="particle_table")
    _, L["particle_table_no_mesh"] = timed(particles.shape_table, plab, lab, 1.0, mesh=False, _name="particle_table_no_mesh")
    # like with like for regionprops: size/centroid/volume (+ voxel-face areas), no phases, no mesh
    _, L["particle_table_core"] = timed(particles.shape_table, plab, None, 1.0, mesh=False, _name="particle_table_core")
    from skimage.measure import regionprops_table

    _, P["skimage_regionprops_table"] = timed(
        regionprops_table, plab, properties=("label", "area", "centroid", "bbox", "equivalent_diameter_area"))
    res["ratio_litomo_over_peer"]["particle_table/regionprops_table"] = (
        L["particle_table"] / P["skimage_regionprops_table"])
    cpu = CPU_S
    res["cpu_ratio_particle_table/regionprops_table"] = cpu["particle_table"] / cpu["regionprops_table"]
    res["cpu_ratio_particle_table_no_mesh/regionprops_table"] = cpu["particle_table_no_mesh"] / cpu["regionprops_table"]
    res["cpu_ratio_particle_table_core/regionprops_table"] = cpu["particle_table_core"] / cpu["regionprops_table"]
    res["cpu_s_particle_meshes"] = cpu["particle_table"] - cpu["particle_table_no_mesh"]
    res["sphericity_mean_inner"] = particles.size_statistics(table)["sphericity_mean"]

    try:
        import porespy as ps

        _, P["porespy_porosity_profile"] = timed(ps.metrics.porosity_profile, lab == 0, axis=0)
        _, P["porespy_two_point_correlation"] = timed(ps.metrics.two_point_correlation, lab == 0)
        _, P["porespy_region_surface_areas"] = timed(ps.metrics.region_surface_areas, plab)
        res["ratio_litomo_over_peer"]["z_profile/porespy_porosity_profile"] = (
            L["z_profile"] / P["porespy_porosity_profile"])
        res["ratio_litomo_over_peer"]["s2_one_axis/porespy_two_point_correlation"] = (
            L["s2_pore_z"] / P["porespy_two_point_correlation"])
        res["ratio_litomo_over_peer"]["particle_table/porespy_region_surface_areas"] = (
            L["particle_table"] / P["porespy_region_surface_areas"])
        res["note_s2"] = ("porespy.metrics.two_point_correlation is the radially averaged 3D S2; "
                          "litomo's is directional (one axis), so the ratio compares different work")
    except ImportError as exc:
        res["porespy"] = f"not installed: {exc}"
    try:
        from taufactor import metrics as tm

        _, P["taufactor_volume_fraction"] = timed(tm.volume_fraction, lab)
        tf_ssa, P["taufactor_ssa_face_counting_cpu"] = timed(
            tm.specific_surface_area, lab, method="face_counting", device="cpu")
        # taufactor pads with -1 (needs a signed dtype) and prints; keep our JSON clean
        with contextlib.redirect_stdout(sys.stderr):
            _, P["taufactor_triple_phase_boundary"] = timed(tm.triple_phase_boundary, lab.astype(np.int16))
        t0 = time.perf_counter()
        for code in (0, 1, 2):
            tm.extract_through_feature(lab, code, "x")
        P["taufactor_through_feature_3phases"] = time.perf_counter() - t0
        r = res["ratio_litomo_over_peer"]
        r["volume_fractions/taufactor"] = L["volume_fractions"] / P["taufactor_volume_fraction"]
        r["surface_face/taufactor_face_counting"] = L["surface_face"] / P["taufactor_ssa_face_counting_cpu"]
        r["tpb/taufactor"] = L["tpb"] / P["taufactor_triple_phase_boundary"]
        r["percolation/taufactor_through_feature"] = (
            L["percolation_3phases_z"] / P["taufactor_through_feature_3phases"])
        res["accuracy"]["ssa_face_vs_taufactor_same_run"] = {
            p: face["specific"][p] - tf_ssa[str(c)] for p, c in (("pore", 0), ("am", 1), ("cbd", 2))}
    except ImportError as exc:
        res["taufactor"] = f"not installed: {exc}"

    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            c0 = os.times()
            proc = subprocess.run(
                [sys.executable, "-m", "litomo", "micro", str(DATA), "--voxel-size-um", str(100 / 256),
                 "--labels", "pore=0,am=85,cbd=170", "--out", d, "--no-transport", "-q"],
                capture_output=True, text=True)
            res["litomo_micro_cli_s"] = time.perf_counter() - t0
            c1 = os.times()
            res["litomo_micro_cli_cpu_s"] = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
            res["litomo_micro_cli_rc"] = proc.returncode
            if proc.returncode:
                res["litomo_micro_cli_stderr"] = proc.stderr[-2000:]
        res["litomo_micro_cli_target_s"] = 60
    res["cpu_s_by_function"] = CPU_S
    print(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()

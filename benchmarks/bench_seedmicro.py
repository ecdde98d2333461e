"""Issue 19 items 3, 4, 5, 9: multiphase tortuosity, local maps, particle PSD, Canny damage on a
real electrode (TauFactor's Polaron NMC, 256^3, 0 pore / 85 NMC / 170 CBD, 390.6 nm voxels).

Prints one JSON object with the numbers and CPU seconds (``time.process_time``) of each step.

    python benchmarks/bench_seedmicro.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "micro" / "taufactor_electrode_polaron_nmc_256.tiff").resolve()
VOXEL_UM = 100.0 / 256


def _timed(out: dict, name: str, fn):
    t = time.process_time()
    res = fn()
    out.setdefault("cpu_s", {})[name] = round(time.process_time() - t, 2)
    print(name, out["cpu_s"][name], "s CPU", flush=True)  # progress on a loaded machine
    return res


def main() -> None:
    from litomo.damage import close_cracks
    from litomo.metrics.local import local_property_maps, tile_profile
    from litomo.metrics.particles import shape_table
    from litomo.metrics.psd import coverage_vs_size, particle_psd, representative_particle
    from litomo.phases import to_canonical
    from litomo.segment.particles import separate_particles
    from litomo.transport.diffusion import tortuosity
    from litomo.transport.multiphase import (
        cbd_relative_diffusivity,
        diffusivity_map,
        multiphase_tortuosity,
        transport_classes,
    )

    lab = to_canonical(tifffile.imread(DATA), {"pore": 0, "am": 85, "cbd": 170})
    out: dict = {"shape": list(lab.shape), "voxel_um": VOXEL_UM}
    binary = _timed(out, "tau_pore_binary", lambda: tortuosity(lab == 0, "z", voxel_size_um=VOXEL_UM))
    out["pore_binary"] = {"tau": binary.tau, "eps": binary.eps, "deff": binary.deff, "n_m": binary.mcmullin}
    dc = cbd_relative_diffusivity(0.47)
    field = diffusivity_map(lab, {"pore": 1.0, "cbd": dc})
    multi = _timed(out, "tau_multiphase", lambda: multiphase_tortuosity(field, "z", voxel_size_um=VOXEL_UM,
                                                                        return_flux=True))
    out["pore_plus_cbd"] = {"d_cbd": dc, "tau": multi.tau, "d_mean": multi.d_mean, "deff": multi.deff,
                            "n_m": multi.mcmullin, "iterations": multi.iterations,
                            "stagnant": multi.stagnant_flux_fraction}
    zero = _timed(out, "tau_multiphase_dcbd0", lambda: multiphase_tortuosity(
        diffusivity_map(lab, {"pore": 1.0}), "z", voxel_size_um=VOXEL_UM))
    out["multiphase_dcbd0_vs_binary_rel"] = zero.tau / binary.tau - 1
    print(json.dumps(out, default=float), flush=True)
    flux = tortuosity(lab == 0, "z", voxel_size_um=VOXEL_UM, return_flux=True).flux
    cls = _timed(out, "transport_classes", lambda: transport_classes(lab == 0, "z", flux))
    out["pore_classes_fraction"] = (np.bincount(cls.ravel(), minlength=5)[1:] / (lab == 0).sum()).round(5).tolist()
    local = _timed(out, "local_maps_128vox", lambda: local_property_maps(lab, VOXEL_UM, 128 * VOXEL_UM))
    prof = tile_profile(local, "z")
    out["local_profile_z"] = prof[["iz", "volume_fraction_am_mean", "volume_fraction_am_std",
                                   "specific_surface_pore_um-1_mean", "tau_pore_z_mean",
                                   "tau_pore_z_std"]].round(4).to_dict("list")
    am = lab == 1
    plab = _timed(out, "separate_particles", lambda: separate_particles(close_cracks(am, 1), voxel_size_um=VOXEL_UM))
    plab[~am] = 0
    parts = _timed(out, "shape_table_no_mesh", lambda: shape_table(plab, lab, VOXEL_UM, mesh=False))
    _, dv = _timed(out, "particle_psd", lambda: particle_psd(parts, [n * VOXEL_UM for n in lab.shape]))
    out["psd_volume"] = {k: round(v, 3) for k, v in dv.items()}
    out["coverage_spearman"] = coverage_vs_size(parts)[1]
    out["representative_particle"] = representative_particle(parts)
    print(json.dumps(out, indent=1, default=float), flush=True)


if __name__ == "__main__":
    main()

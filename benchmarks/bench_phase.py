"""Speed of phase retrieval on a 2048^2 four-distance projection set (issue 15), against nabu.

Times (CPU seconds, ``time.process_time``, and wall seconds) per projection:

- ``nabu_paganin_1``: nabu's ``PaganinPhaseRetrieval`` on one 2048^2 image (edge padding,
  all FFT threads), the library used directly;
- ``litomo_paganin_1``: :class:`litomo.holo.PhaseRetriever` with ``method="paganin"`` on the
  same image (same padding) -- the like-for-like overhead figure;
- ``nabu_paganin_x4``: nabu on the four distances separately (the FFT work a four-distance
  method needs; nabu has no multi-distance retrieval);
- ``litomo_multi_paganin_4`` / ``litomo_ctf_4``: litomo's four-distance retrievals;
- ``litomo_align_grid_4``: :func:`litomo.holo.align.to_common_grid` of the four images
  (Fresnel rescaling + shift, cubic splines; distance 0 is copied), which precedes the retrieval;
  ``litomo_align_grid_4_linear``: the same with linear interpolation (the default before
  2026-12-02).

The images are smooth random holograms (the content does not change FFT timings).
Run: ``python benchmarks/bench_phase.py [--size 2048] [--repeat 3]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from litomo.holo import (
    DistanceAlignment,
    HoloGeometry,
    PhaseRetriever,
    RetrievalSettings,
    to_common_grid,
)


def _time(fn, repeat: int) -> dict[str, float]:
    fn()  # warm-up (plans, filters)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        fn()
    return {"cpu_s": (time.process_time() - c0) / repeat, "wall_s": (time.perf_counter() - w0) / repeat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from nabu.preproc.phase import PaganinPhaseRetrieval

    n = args.size
    g = HoloGeometry(29.6, (5.0, 5.5, 6.5, 8.0), 100.0, 3.9)
    rng = np.random.default_rng(0)
    from scipy import ndimage

    imgs = np.stack([1 + 0.05 * ndimage.gaussian_filter(rng.normal(size=(n, n)), 3) for _ in range(4)])
    imgs = imgs.astype(np.float32)
    d0 = g.propagation_distance_mm[0]
    nabu = PaganinPhaseRetrieval((n, n), distance=d0 * 1e-3, energy=g.energy_kev, delta_beta=137.0,
                                 pixel_size=g.common_pixel_um * 1e-6, padding="edge")
    nabus = [PaganinPhaseRetrieval((n, n), distance=d * 1e-3, energy=g.energy_kev, delta_beta=137.0,
                                   pixel_size=g.common_pixel_um * 1e-6, padding="edge")
             for d in g.propagation_distance_mm]
    pag = PhaseRetriever((n, n), [d0], g.energy_kev, g.common_pixel_um, RetrievalSettings("paganin", 137.0))
    mp = PhaseRetriever((n, n), g.propagation_distance_mm, g.energy_kev, g.common_pixel_um,
                        RetrievalSettings("multi-paganin", 137.0))
    al = DistanceAlignment.nominal(g)
    ctf = PhaseRetriever((n, n), g.propagation_distance_mm, g.energy_kev, g.common_pixel_um,
                         RetrievalSettings("ctf", 137.0), detector_px=al.scale)
    res = {
        "size": n,
        "padded": list(pag.pad_shape),
        "nabu_paganin_1": _time(lambda: 68.5 * np.log(nabu.retrieve_phase(imgs[0])), args.repeat),
        "litomo_paganin_1": _time(lambda: pag(imgs[:1]), args.repeat),
        "nabu_paganin_x4": _time(lambda: [68.5 * np.log(r.retrieve_phase(im)) for r, im in zip(nabus, imgs, strict=True)],
                                 args.repeat),
        "litomo_multi_paganin_4": _time(lambda: mp(imgs), args.repeat),
        "litomo_ctf_4": _time(lambda: ctf(imgs), args.repeat),
        "litomo_align_grid_4": _time(lambda: to_common_grid(list(imgs), al), args.repeat),
        "litomo_align_grid_4_linear": _time(lambda: to_common_grid(list(imgs), al, order=1), args.repeat),
    }
    res["overhead_paganin_1_cpu"] = res["litomo_paganin_1"]["cpu_s"] / res["nabu_paganin_1"]["cpu_s"] - 1
    res["overhead_ctf_4_vs_nabu_x4_cpu"] = res["litomo_ctf_4"]["cpu_s"] / res["nabu_paganin_x4"]["cpu_s"] - 1
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

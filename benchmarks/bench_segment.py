"""Random-forest segmentation: training / prediction time and accuracy at 128^3 and 256^3.

Phantom: the TauFactor/Polaron NMC label volume (../shared/data/micro), rendered as grey
levels pore 40 / CBD 100 / AM 180, Gaussian blur 1 voxel, Gaussian noise 25; scribbles =
2000 random voxels per phase. Prints one JSON object.

    python benchmarks/bench_segment.py [--sizes 128,256] [--n-jobs -1] [--chunks N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from litomo.phases import to_canonical
from litomo.preprocess import denoise_pipeline, otsu_interclass_variance
from litomo.segment.features import DEFAULT_SIGMAS
from litomo.segment.forest import train_forest
from litomo.segment.threshold import multi_otsu_labels

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "micro"
LEVELS = np.array([40.0, 180.0, 100.0], np.float32)


def phantom(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lab = tifffile.imread(DATA / "taufactor_electrode_polaron_nmc_256.tiff")[:n, :n, :n]
    truth = to_canonical(lab, {"pore": 0, "am": 85, "cbd": 170})
    rng = np.random.default_rng(seed)
    grey = (ndimage.gaussian_filter(LEVELS[truth], 1.0) + rng.normal(0, 25, truth.shape)).astype(np.float32)
    scribbles = np.zeros(truth.shape, np.uint8)
    for code in range(3):
        idx = rng.choice(np.flatnonzero(truth.ravel() == code), 2000, replace=False)
        scribbles.ravel()[idx] = code + 1
    return grey, truth, scribbles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--chunks", type=int, default=None)
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--denoise", action="store_true", help="also time NLM denoising")
    args = ap.parse_args()
    out = {"machine": platform.node(), "cpus": os.cpu_count(), "sigmas": list(DEFAULT_SIGMAS),
           "n_estimators": args.n_estimators, "results": []}
    for n in (int(s) for s in args.sizes.split(",")):
        grey, truth, scribbles = phantom(n)
        row: dict = {"size": n}
        if args.denoise:
            t = time.perf_counter()
            den = denoise_pipeline(grey, ("nlm",), chunks=64)
            row["nlm_s"] = time.perf_counter() - t
            row["otsu_var_before"] = otsu_interclass_variance(grey)
            row["otsu_var_after"] = otsu_interclass_variance(den)
        t = time.perf_counter()
        model = train_forest(grey, scribbles, n_estimators=args.n_estimators, n_jobs=args.n_jobs,
                             chunks=args.chunks)
        row["train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        pred = model.predict(grey, chunks=args.chunks)
        row["predict_s"] = time.perf_counter() - t
        row["predict_mvox_per_s"] = grey.size / row["predict_s"] / 1e6
        row["accuracy_forest"] = float((pred - 1 == truth).mean())
        row["accuracy_multi_otsu"] = float((multi_otsu_labels(grey) == truth).mean())
        row["oob_accuracy"] = model.oob_accuracy
        out["results"].append(row)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

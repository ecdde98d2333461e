"""Pixel classification: CPU time per voxel (features, classifier) and accuracy, per classifier.

Phantom: the TauFactor/Polaron NMC label volume (../shared/data/micro), rendered as grey
levels pore 40 / CBD 100 / AM 180, Gaussian blur 1 voxel, Gaussian noise 25; scribbles =
2000 random voxels per phase; accuracy = fraction of voxels equal to the label volume (the
measure of tests/test_segment.py). Rows, on the same grey volume and scribbles:

- ``old:<commit>``: an earlier litomo (``git archive`` of the commit, run in a subprocess with
  its own defaults; 13456ec = before issue 18: random forest 100 trees, 4 sigmas; 6099144 = end
  of session 6: 30 trees, 4 sigmas, scikit-learn ``predict_proba``);
- ``default``: this code's defaults (20 trees, sigmas 0.7/1.5/3/6, numba tree walk);
  ``rf30_s4``: 30 trees on the same sigmas (the session-6 model, new evaluation);
  ``rf20_s3``: 20 trees on sigmas 0.7/1.5/3 (no sigma 6: 14- instead of 26-voxel halo); ``hgb100``: histogram gradient boosting, 100 iterations;
  ``rf20`` / ``rf10`` / ``rf8``: 20 / 10 / 8 trees on the default sigmas;
- ``skimage_gallery``: the scikit-image gallery recipe ("Trainable segmentation using local
  features and random forests"): ``multiscale_basic_features(intensity, texture, sigma 1-16)``
  on the whole volume + ``RandomForestClassifier(50, max_depth=10, max_samples=0.05)``.

Times are CPU seconds (``time.process_time``: all threads of the process), per voxel, the
smallest of ``--repeat`` runs for predictions; ``predict_cpu_us`` is the whole chunk-wise
prediction (features + classifier, default blocks), ``classifier_cpu_us`` the classifier alone
on precomputed features. Prints one JSON object.

    python benchmarks/bench_segment.py --sizes 128 --old 13456ec,6099144 [--seed 1]

``--seed`` changes the phantom's noise, the scribbles and the forest's seed together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from litomo.phases import to_canonical
from litomo.segment.features import DEFAULT_SIGMAS, features_from_params
from litomo.segment.forest import ForestSettings, train_forest
from litomo.segment.threshold import multi_otsu_labels

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "micro"
LEVELS = np.array([40.0, 180.0, 100.0], np.float32)
REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"default": ForestSettings(), "rf30_s4": ForestSettings(n_estimators=30, sigmas=(0.7, 1.5, 3.0, 6.0)),
           "rf20_s3": ForestSettings(n_estimators=20, sigmas=(0.7, 1.5, 3.0)),
           "rf20": ForestSettings(n_estimators=20), "rf10": ForestSettings(n_estimators=10), "rf8": ForestSettings(n_estimators=8),
           "hgb100": ForestSettings(classifier="hgb", n_estimators=100)}
#: run inside an old checkout: its own train_forest defaults (API before / after ForestSettings)
OLD_SNIPPET = """
import json, sys, time, numpy as np
from litomo.segment import forest
d = np.load(sys.argv[1])
grey, truth, scrib = d["grey"], d["truth"], d["scribbles"]
n_jobs = int(sys.argv[3])
t = time.process_time()
if hasattr(forest, "ForestSettings"):
    m = forest.train_forest(grey, scrib, forest.ForestSettings(n_jobs=n_jobs))
else:
    m = forest.train_forest(grey, scrib, n_estimators=100, n_jobs=n_jobs)
train = time.process_time() - t
best = float("inf")
for _ in range(int(sys.argv[4])):
    t = time.process_time(); pred = m.predict(grey); best = min(best, time.process_time() - t)
print(json.dumps({"train_cpu_s": train, "predict_cpu_us": best / grey.size * 1e6,
                  "accuracy": float((pred - 1 == truth).mean()), "n_estimators": getattr(m, "classifier", getattr(m, "forest", None)).n_estimators,
                  "sigmas": list(m.feature_params["sigmas"])}))
"""


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


def _cpu(fn, repeat: int = 1):
    """Result and the smallest CPU time over ``repeat`` calls (the machine is shared: other
    processes slow this one down through caches and memory bandwidth, never speed it up)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return out, best


def litomo_row(grey, truth, scribbles, settings: ForestSettings, n_jobs: int, repeat: int, seed: int = 0) -> dict:
    from dataclasses import replace

    model, train_s = _cpu(lambda: train_forest(grey, scribbles, replace(settings, n_jobs=n_jobs, seed=seed)))
    model.predict(grey[:32, :32, :32], n_jobs=n_jobs)  # numba compile / load outside the timing
    pred, predict_s = _cpu(lambda: model.predict(grey, n_jobs=n_jobs), repeat)
    f = features_from_params(grey, model.feature_params)
    rows = np.ascontiguousarray(f.reshape(f.shape[0], -1).T)
    del f
    compiled = model.compiled_forest()
    if compiled is not None:
        _, clf_s = _cpu(lambda: compiled.predict_proba(rows), repeat)
    else:
        _, clf_s = _cpu(lambda: model.classifier.predict_proba(rows * model.feature_scale), repeat)
    return {"train_cpu_s": train_s, "predict_cpu_us": predict_s / grey.size * 1e6,
            "classifier_cpu_us": clf_s / grey.size * 1e6,
            "features_cpu_us": (predict_s - clf_s) / grey.size * 1e6, "n_estimators": settings.n_estimators,
            "sigmas": list(model.feature_params["sigmas"]),
            "accuracy": float((pred - 1 == truth).mean()), "validation_accuracy": model.validation_accuracy}


def old_row(commit: str, data: tuple, n_jobs: int, repeat: int) -> dict:
    """The same measurement with an earlier commit's code, in a subprocess (its own imports)."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "data.npz", grey=data[0], truth=data[1], scribbles=data[2])
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        out = subprocess.run([sys.executable, "-c", OLD_SNIPPET, str(Path(tmp) / "data.npz"), "", str(n_jobs),
                              str(repeat)], env=env, check=True, capture_output=True, text=True, cwd=tmp).stdout
    return json.loads(out.strip().splitlines()[-1])


def skimage_row(grey, truth, scribbles, n_jobs: int, repeat: int) -> dict:
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    f, feat_s = _cpu(lambda: multiscale_basic_features(grey, intensity=True, edges=False, texture=True,
                                                       sigma_min=1, sigma_max=16))
    rows = f.reshape(-1, f.shape[-1])
    mask = scribbles.ravel() > 0
    clf = RandomForestClassifier(n_estimators=50, n_jobs=n_jobs, max_depth=10, max_samples=0.05, random_state=0)
    _, train_s = _cpu(lambda: clf.fit(rows[mask], scribbles.ravel()[mask]))
    pred, clf_s = _cpu(lambda: clf.predict(rows), repeat)
    return {"train_cpu_s": train_s, "features_cpu_us": feat_s / grey.size * 1e6,
            "classifier_cpu_us": clf_s / grey.size * 1e6, "predict_cpu_us": (feat_s + clf_s) / grey.size * 1e6,
            "accuracy": float((pred.reshape(grey.shape) - 1 == truth).mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="128")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="prediction timings: smallest CPU time of N")
    ap.add_argument("--configs", default="default,rf30_s4,rf20_s3,skimage_gallery")
    ap.add_argument("--old", default="13456ec,6099144", help="earlier commits to run on the same data ('' = none)")
    ap.add_argument("--seed", type=int, default=0, help="phantom noise + scribbles and forest seed")
    args = ap.parse_args()
    out = {"machine": platform.node(), "cpus": os.cpu_count(), "sigmas": list(DEFAULT_SIGMAS),
           "load_start": os.getloadavg(), "results": []}
    for n in (int(s) for s in args.sizes.split(",")):
        grey, truth, scribbles = phantom(n, args.seed)
        row: dict = {"size": n, "seed": args.seed, "accuracy_multi_otsu": float((multi_otsu_labels(grey) == truth).mean())}
        for commit in filter(None, args.old.split(",")):
            row[f"old:{commit}"] = old_row(commit, (grey, truth, scribbles), args.n_jobs, args.repeat)
            print(f"old:{commit}", json.dumps(row[f"old:{commit}"]), flush=True)
        for name in args.configs.split(","):
            if name == "skimage_gallery":
                row[name] = skimage_row(grey, truth, scribbles, args.n_jobs, args.repeat)
            else:
                row[name] = litomo_row(grey, truth, scribbles, CONFIGS[name], args.n_jobs, args.repeat, args.seed)
            print(name, json.dumps(row[name]), flush=True)
        out["results"].append(row)
    out["load_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

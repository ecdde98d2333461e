"""Score a Li-mapping run against the ground truth of a synthetic phantom.

The truth lives on the raw grid (``truth/<state>/{li,labels,particles}.tif``, written by
:func:`litomo.phantom.writer.write_operando_phantom`); the run's Li maps live on the binned
grid. The comparison is made where both are defined:

- ``rmse_li``: root-mean-square difference between the run's x_Li and the block-mean true x_Li
  (:func:`litomo.phantom.operando.truth_on_binned_grid`, blocks at least half AM);
- class fractions: the fractions the run *reports* (its states table's ``frac_li_*``: since
  issue 16 deconvolved from the map's noise, fractions of the mapped AM volume) vs the true
  classes of the run's mapped bins (any AM, AM-weighted mean true x_Li, weighted by their true
  AM fraction), in percentage points; ``map_class_fraction_error_pp`` keeps the older score (the
  map's bins counted vs the binned truth over the bins at least half AM). Runs whose states
  table has no deconvolved fractions (no ``frac_li_poor_map`` column) are scored counted;
- total Li: the run's ``total_li_um3`` vs the true sum of x_Li x voxel volume over AM;
- per particle: run particles whose equivalent radius exceeds ``min_radius_vox`` binned voxels
  are matched to the true particle holding their centroid; the error is the difference of
  mean x_Li (run particle vs true particle mean over its raw voxels); reported for all of them
  and for the interior ones (not touching the volume boundary, where particles are truncated
  and, on the phantom, most often merged by the watershed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from litomo.errors import InputFileError
from litomo.io.rundir import RunLayout
from litomo.phantom.operando import truth_on_binned_grid
from litomo.xanes.threeenergy import class_fractions


@dataclass(frozen=True)
class StateTruth:
    """A phantom state's truth on the raw grid: ``li`` (NaN outside AM), ``labels`` (phase
    codes), ``particles`` (particle ids)."""

    li: np.ndarray
    labels: np.ndarray
    particles: np.ndarray


def score_state(li_run: np.ndarray, truth: StateTruth, particles_run: pd.DataFrame, *,
                factor: tuple[int, int, int], raw_voxel_size_um: float,
                total_li_run_um3: float, poor_max: float = 0.6, rich_min: float = 0.9,
                min_radius_vox: float = 2.0, reported_fractions: dict[str, float] | None = None) -> dict[str, Any]:
    """Accuracy figures of one state (see the module docstring); ``reported_fractions``: the
    states table's ``{"poor": .., "moderate": .., "rich": ..}`` (None: score the map's
    bins counted)."""
    truth_li, truth_particles = truth.li, truth.particles
    am = truth.labels == 1
    tb = truth_on_binned_grid(truth_li, am, factor)
    shape = tuple(min(a, b) for a, b in zip(tb.shape, li_run.shape, strict=True))
    tb = tb[: shape[0], : shape[1], : shape[2]]
    lr = li_run[: shape[0], : shape[1], : shape[2]]
    both = np.isfinite(tb) & np.isfinite(lr)
    err = lr[both] - tb[both]
    run_cls = class_fractions(lr[both], poor_max=poor_max, rich_min=rich_min)
    truth_cls = class_fractions(tb[both], poor_max=poor_max, rich_min=rich_min)
    map_err = {k: 100 * (run_cls[k] - truth_cls[k]) for k in run_cls}
    cls_err = map_err
    if reported_fractions is not None:
        truth_am = _truth_classes_am_weighted(truth_li, am, factor, lr, poor_max, rich_min)
        cls_err = {k: 100 * (float(reported_fractions[k]) - truth_am[k]) for k in truth_am}
    vox_um3 = raw_voxel_size_um**3
    # the run's grid covers only whole bins: compare with the truth over the same region
    crop = tuple(slice(0, (n // f) * f) for n, f in zip(truth_li.shape, factor, strict=True))
    total_truth = float(np.nansum(np.where(am[crop], truth_li[crop], 0.0)) * vox_um3)

    # per-particle means: true mean over each particle's raw voxels, looked up at run centroids
    ids = truth_particles.ravel()
    sums = np.bincount(ids, weights=np.nan_to_num(truth_li.ravel()) * am.ravel())
    counts = np.bincount(ids, weights=am.ravel().astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        true_mean = sums / counts
    binned_vs = raw_voxel_size_um * np.asarray(factor, float)
    perr, interior = [], []
    if len(particles_run):
        radius_vox = particles_run["eq_diameter_um"].to_numpy() / 2 / binned_vs.mean()
        keep = particles_run[radius_vox > min_radius_vox]
        for row in keep.itertuples():
            c = np.array([row.centroid_z_um, row.centroid_y_um, row.centroid_x_um]) / raw_voxel_size_um
            idx = tuple(np.clip(np.round(c).astype(int), 0, np.array(truth_particles.shape) - 1))
            pid = int(truth_particles[idx])
            if pid > 0 and counts[pid] > 0:
                perr.append(float(row.mean_li) - float(true_mean[pid]))
                interior.append(not bool(getattr(row, "touches_boundary", False)))
    perr_a = np.abs(np.asarray(perr))
    perr_i = perr_a[np.asarray(interior, bool)] if perr_a.size else perr_a
    return {
        "rmse_li": float(np.sqrt(np.mean(err**2))) if err.size else float("nan"),
        "bias_li": float(np.mean(err)) if err.size else float("nan"),
        "n_voxels_compared": int(both.sum()),
        "class_fractions_run": run_cls,
        "class_fractions_truth": truth_cls,
        "class_fraction_error_pp": cls_err,
        "map_class_fraction_error_pp": map_err,
        "total_li_truth_um3": total_truth,
        "total_li_run_um3": float(total_li_run_um3),
        "total_li_error_pct": 100 * (float(total_li_run_um3) - total_truth) / total_truth,
        "n_particles_scored": int(perr_a.size),
        "particle_mean_li_max_abs_error": float(perr_a.max()) if perr_a.size else float("nan"),
        "particle_mean_li_p90_abs_error": float(np.percentile(perr_a, 90)) if perr_a.size else float("nan"),
        "particle_mean_li_mean_abs_error": float(perr_a.mean()) if perr_a.size else float("nan"),
        # particles not touching the volume boundary (the table flags the others as truncated)
        "n_interior_particles_scored": int(perr_i.size),
        "interior_particle_mean_li_max_abs_error": float(perr_i.max()) if perr_i.size else float("nan"),
    }


def _truth_classes_am_weighted(truth_li: np.ndarray, am: np.ndarray, factor: tuple[int, int, int],
                               li_run: np.ndarray, poor_max: float, rich_min: float) -> dict[str, float]:
    """True class fractions of the run's mapped bins holding any AM, weighted by their AM fraction
    (what the states table's deconvolved fractions estimate: fractions of the mapped AM volume)."""
    from litomo.preprocess import bin_array

    tb = truth_on_binned_grid(truth_li, am, factor, min_am_fraction=1e-6)
    fa = bin_array(am.astype(np.float32), factor)
    sh = tuple(min(a, b) for a, b in zip(tb.shape, li_run.shape, strict=True))
    tb, fa, lr = (a[: sh[0], : sh[1], : sh[2]] for a in (tb, fa, li_run))
    ok = np.isfinite(tb) & np.isfinite(lr)
    t, w = tb[ok], fa[ok].astype(np.float64)
    total = float(w.sum())
    if total <= 0:
        return {k: float("nan") for k in ("poor", "moderate", "rich")}
    return {"poor": float(w[t <= poor_max].sum() / total),
            "moderate": float(w[(t > poor_max) & (t < rich_min)].sum() / total),
            "rich": float(w[t >= rich_min].sum() / total)}


def score_run(run_dir: str | Path, phantom_dir: str | Path) -> dict[str, Any]:
    """Score every state of a run in ``run_dir`` against the phantom in ``phantom_dir``.

    Returns per-state figures under ``"states"`` and the worst values over states at the top
    level (``rmse_li``, ``max_class_fraction_error_pp`` (reported fractions),
    ``max_map_class_fraction_error_pp`` (the map's bins counted), ``max_total_li_error_pct``,
    ``max_particle_mean_li_error``).
    """
    from litomo.io import read_ome_zarr, read_volume

    run_dir, phantom_dir = Path(run_dir), Path(phantom_dir)
    truth_file = phantom_dir / "truth" / "truth.json"
    if not truth_file.exists():
        raise InputFileError(f"{phantom_dir} has no truth/truth.json: not a litomo phantom")
    truth = json.loads(truth_file.read_text())
    lay = RunLayout(run_dir)
    run = json.loads(lay.record.read_text())
    factor = tuple(int(f) for f in np.broadcast_to(run["parameters"]["bin"], 3))
    p = run["parameters"]
    states = pd.read_csv(lay.table("states"))
    particles = pd.read_csv(lay.table("particles"))
    out: dict[str, Any] = {"states": {}}
    for row in states.itertuples():
        name = str(row.state)
        li_run = read_ome_zarr(lay.volume(name, "li")).numpy()
        tdir = phantom_dir / "truth" / name
        st_truth = StateTruth(li=read_volume(tdir / "li.tif").numpy(),
                              labels=read_volume(tdir / "labels.tif").numpy(),
                              particles=read_volume(tdir / "particles.tif").numpy().astype(np.int64))
        out["states"][name] = score_state(
            li_run, st_truth, particles[particles["state"].astype(str) == name],
            factor=factor, raw_voxel_size_um=float(truth["voxel_size_um"]),
            total_li_run_um3=float(row.total_li_um3), poor_max=p["li_poor_max"],
            rich_min=p["li_rich_min"],
            reported_fractions=({k: float(getattr(row, f"frac_li_{k}")) for k in ("poor", "moderate", "rich")}
                                if "frac_li_poor_map" in states.columns else None))
    s = out["states"].values()
    out["rmse_li"] = max(v["rmse_li"] for v in s)
    out["max_class_fraction_error_pp"] = max(max(abs(e) for e in v["class_fraction_error_pp"].values()) for v in s)
    out["max_map_class_fraction_error_pp"] = max(max(abs(e) for e in v["map_class_fraction_error_pp"].values())
                                                 for v in s)
    out["max_total_li_error_pct"] = max(abs(v["total_li_error_pct"]) for v in s)
    out["max_particle_mean_li_error"] = max(v["particle_mean_li_max_abs_error"] for v in s)
    out["max_interior_particle_mean_li_error"] = max(v["interior_particle_mean_li_max_abs_error"] for v in s)
    return out

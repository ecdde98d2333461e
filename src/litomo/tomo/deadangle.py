"""Dead-angle (missing-wedge) bias of three-energy Li maps.

A phantom state (attenuation at pre-edge, edge and post-edge energies, plus the true Li field) is
projected over limited angular ranges, reconstructed, and put through the Li-mapping maths of
:mod:`litomo.xanes.threeenergy`; the Li map is compared with the truth.

Geometry: parallel beam, rotation about the **z axis** (through-plane, the axis of an electrode
pillar, SPEC 1), so every z slice is an independent 2D problem. An angular range ``R`` means views
uniformly over ``[-R/2, R/2)`` (centred on 0). At view angle ``theta`` the rays run along
``(y, x) = (cos theta, sin theta)``; below 180 degrees the missing views are centred on 90 degrees,
i.e. the missing ray direction is the x axis. Each slice is zero-padded to its diagonal so the
square field of view is not truncated (the sample is a pillar in vacuum).

Orientation: each particle's long axis in the (y, x) rotation plane (principal axis of its voxel
coordinates) is reported as ``angle_to_missing_deg``, the angle between the long axis and the
missing ray direction (0 = elongated along the missing rays, 90 = across them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from litomo.errors import DataError, LitomoError
from litomo.particles import check_particle_labels, particle_table
from litomo.progress import ProgressCallback
from litomo.tomo.project import project_volume
from litomo.tomo.recon import METHODS, reconstruct_volume

log = logging.getLogger(__name__)

LI_CLASSES = ("poor", "moderate", "rich")


@dataclass
class DeadAngleResult:
    """Outcome of :func:`deadangle_study`.

    Attributes
    ----------
    summary : DataFrame
        One row per angular range: ``range_deg, n_views, rmse_li, bias_li, bias_poor, bias_moderate,
        bias_rich, particle_mean_li_bias, particle_mean_li_abs_error, masked_fraction``.
    particles : DataFrame
        One row per (range, particle): ``range_deg, particle, n_voxels, li_true, li_rec, li_error,
        angle_to_missing_deg, elongation``.
    orientation : DataFrame
        Mean per-particle Li error per range and orientation bin (0-30, 30-60, 60-90 degrees).
    true_class_fractions : dict
    """

    summary: pd.DataFrame
    particles: pd.DataFrame
    orientation: pd.DataFrame
    true_class_fractions: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON summary printed by ``litomo deadangle --json``."""
        s = self.summary
        key = [f"{r:g}" for r in s["range_deg"]]
        return {
            "rmse_by_range": dict(zip(key, s["rmse_li"], strict=True)),
            "bias_by_range": dict(zip(key, s["bias_li"], strict=True)),
            "class_fraction_bias_by_range": {
                k: {c: float(row[f"bias_{c}"]) for c in LI_CLASSES} for k, (_, row) in zip(key, s.iterrows(), strict=True)
            },
            "particle_mean_li_bias_by_range": dict(zip(key, s["particle_mean_li_bias"], strict=True)),
            "particle_mean_li_abs_error_by_range": dict(zip(key, s["particle_mean_li_abs_error"], strict=True)),
            "particle_error_by_orientation": {
                f"{r:g}": {b: float(v) for b, v in zip(g["orientation_bin"], g["mean_li_error"], strict=True)}
                for r, g in self.orientation.groupby("range_deg")
            },
            "true_class_fractions": self.true_class_fractions,
            "params": self.params,
        }


def angles_for_range(range_deg: float, n_views_per_180: int) -> np.ndarray:
    """View angles (degrees) uniformly over ``[-range/2, range/2)`` at the step of ``n_views_per_180``.

    Examples
    --------
    >>> a = angles_for_range(120, 90); a.size, float(a[0]), float(a[-1])
    (60, -60.0, 58.0)
    """
    if not 0 < range_deg <= 360:
        raise LitomoError(f"angular range must be in (0, 360] degrees, got {range_deg}")
    step = 180.0 / n_views_per_180
    n = max(2, int(round(range_deg / step)))
    return -range_deg / 2 + step * np.arange(n)


def particle_orientation(particles: np.ndarray, voxel_size_um: float = 1.0) -> pd.DataFrame:
    """The base particle table plus each particle's long-axis angle in the (y, x) plane.

    Adds ``angle_deg`` (from +y towards +x, in [0, 180)), ``angle_to_missing_deg`` (to the x
    axis, in [0, 90]) and ``elongation`` (ratio of the in-plane principal standard deviations,
    >= 1) to :func:`litomo.particles.particle_table`; NaN for particles of fewer than 3 voxels.

    Examples
    --------
    >>> p = np.zeros((3, 20, 20), np.int32); p[:, 9:11, 2:18] = 1   # long along x
    >>> round(float(particle_orientation(p)["angle_to_missing_deg"][0]), 1)
    0.0
    """
    lab = check_particle_labels(particles)
    table = particle_table(lab, voxel_size_um)
    objects = ndimage.find_objects(lab)
    cols = {"angle_deg": [], "angle_to_missing_deg": [], "elongation": []}
    for i in table["particle"].to_numpy():
        _, yy, xx = np.nonzero(lab[objects[i - 1]] == i)
        if yy.size < 3:
            for c in cols.values():
                c.append(np.nan)
            continue
        evals, evecs = np.linalg.eigh(np.cov(np.stack([yy, xx]).astype(float)))
        vy, vx = evecs[:, 1]
        ang = float(np.degrees(np.arctan2(vx, vy)) % 180.0)
        cols["angle_deg"].append(ang)
        cols["angle_to_missing_deg"].append(abs(90.0 - ang))  # long axis vs the x axis
        cols["elongation"].append(float(np.sqrt(evals[1] / max(evals[0], 1e-12))))
    for name, values in cols.items():
        table[name] = np.asarray(values, dtype=float)
    return table


def _class_fractions(x: np.ndarray, poor_max: float, rich_min: float) -> dict[str, float]:
    from litomo.xanes.threeenergy import classify_li

    cls = classify_li(x, poor_max=poor_max, rich_min=rich_min)
    valid = cls >= 0
    n = max(int(valid.sum()), 1)
    return {c: float(np.sum(cls == k) / n) for k, c in enumerate(LI_CLASSES)}


def li_map(
    mu_pre: np.ndarray,
    mu_edge: np.ndarray,
    mu_post: np.ndarray,
    r_pristine: float,
    r_charged: float,
    *,
    jump_threshold: float,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
) -> np.ndarray:
    """Three-energy Li map (SPEC 2.1) via :mod:`litomo.xanes.threeenergy`; NaN where masked."""
    from litomo.xanes.threeenergy import calibrate_li, edge_ratio

    r = edge_ratio(mu_pre, mu_edge, mu_post, jump_threshold=jump_threshold)
    x, _ = calibrate_li(r, r_pristine, r_charged, li_pristine=li_pristine, li_charged=li_charged, clip=(0.0, 1.2))
    return np.asarray(x)


@dataclass(frozen=True)
class DeadAngleSettings:
    """Settings of :func:`deadangle_study`.

    Parameters
    ----------
    ranges_deg : sequence of float
        Total angular ranges, centred on 0.
    method : {"fbp", "sirt", "tv"}
    n_views_per_180 : int, optional
        Angular sampling (default: ``ceil(pi/2 * padded width)``, the Nyquist number of views).
    projection_noise : float
        Gaussian noise std added to the projections, relative to the maximum post-edge projection.
    seed : int
        Seed of the projection noise.
    li_pristine, li_charged : float
        x_Li of the calibration end members.
    poor_max, rich_min : float
        Li class thresholds.
    jump_fraction : float
        Voxels count as AM when their reconstructed jump exceeds this fraction of the median true
        AM jump (the mask the Li maths uses).
    recon_kwargs : dict, optional
        Extra arguments for the reconstruction method (e.g. ``{"n_iter": 50}``).
    """

    ranges_deg: Sequence[float] = (180, 150, 120)
    method: str = "fbp"
    n_views_per_180: int | None = None
    projection_noise: float = 0.0
    seed: int = 0
    li_pristine: float = 1.0
    li_charged: float = 0.38
    poor_max: float = 0.6
    rich_min: float = 0.9
    jump_fraction: float = 0.5
    recon_kwargs: dict[str, Any] | None = None


def _check_study_inputs(mu: Sequence[np.ndarray], li_true: np.ndarray, particles: np.ndarray,
                        method: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    if len(mu) != 3:
        raise DataError(f"need three attenuation volumes (pre, edge, post), got {len(mu)}")
    vols = [np.asarray(m, dtype=np.float32) for m in mu]
    shape = vols[0].shape
    if any(v.shape != shape for v in vols) or len(shape) != 3 or shape[1] != shape[2]:
        raise DataError(f"attenuation volumes must share one (z, n, n) shape, got {[v.shape for v in vols]}")
    li_true = np.asarray(li_true, dtype=np.float32)
    particles = np.asarray(particles)
    if li_true.shape != shape or particles.shape != shape:
        raise DataError("li_true and particles must have the shape of the attenuation volumes")
    if method not in METHODS:
        raise LitomoError(f"unknown reconstruction method {method!r}; use one of {METHODS}")
    if not np.isfinite(li_true).any():
        raise DataError("li_true holds no active material (all NaN)")
    return vols, li_true, particles


def _particle_rows(range_deg: float, x: np.ndarray, ok: np.ndarray, li_true: np.ndarray,
                   particles: np.ndarray, orient: pd.DataFrame) -> list[dict[str, Any]]:
    """Per-particle mean true and reconstructed Li (particles with >= 10 mapped voxels)."""
    part = []
    for _, o in orient.iterrows():
        pid = int(o["particle"])
        sel = ok & (particles == pid)
        if sel.sum() < 10:
            continue
        lt, lr = float(li_true[sel].mean()), float(x[sel].mean())
        part.append({"range_deg": float(range_deg), "particle": pid, "n_voxels": int(sel.sum()), "li_true": lt,
                     "li_rec": lr, "li_error": lr - lt, "angle_to_missing_deg": float(o["angle_to_missing_deg"]),
                     "elongation": float(o["elongation"])})
    return part


def _orientation_table(parts: pd.DataFrame) -> pd.DataFrame:
    bins = [0, 30, 60, 90.001]
    names = ["0-30", "30-60", "60-90"]
    orows = []
    for r, g in parts.groupby("range_deg"):
        b = pd.cut(g["angle_to_missing_deg"], bins=bins, labels=names, include_lowest=True)
        for name in names:
            sel = g[b == name]
            orows.append({"range_deg": r, "orientation_bin": name, "n_particles": len(sel),
                          "mean_li_error": float(sel["li_error"].mean()) if len(sel) else float("nan"),
                          "mean_abs_li_error": float(sel["li_error"].abs().mean()) if len(sel) else float("nan")})
    return pd.DataFrame(orows)


def deadangle_study(
    mu: Sequence[np.ndarray],
    li_true: np.ndarray,
    particles: np.ndarray,
    *,
    voxel_size_um: float,
    r_pristine: float,
    r_charged: float,
    settings: DeadAngleSettings | None = None,
    progress: ProgressCallback | None = None,
) -> DeadAngleResult:
    """Li-map error versus the angular range of a parallel-beam scan.

    Parameters
    ----------
    mu : (mu_pre, mu_edge, mu_post)
        Noise-free attenuation volumes (1/um), ``(z, n, n)``; e.g. from
        :func:`litomo.phantom.operando.operando_state` (the CLI's source).
    li_true : ndarray (z, n, n)
        True Li content, NaN outside active material.
    particles : ndarray (z, n, n) of int
        True particle labels (0 = none).
    voxel_size_um : float
    r_pristine, r_charged : float
        Edge ratios of the end members (calibration, :func:`litomo.xanes.threeenergy.reference_ratios`
        or measured on standards).
    settings : DeadAngleSettings, optional
        Angular ranges, reconstruction method, noise, Li calibration and classes.
    progress : callable, optional
        ``progress(done, total, desc)``.

    Returns
    -------
    DeadAngleResult
        Errors are over true-AM voxels that the reconstruction also maps (finite Li).

    Examples
    --------
    >>> z = np.zeros((1, 16, 16), np.float32); li = np.full(z.shape, np.nan, np.float32)
    >>> li[0, 5:11, 5:11] = 0.7; am = np.isfinite(li)
    >>> mu = [z + 0.05 * am, z + 0.05 * am + 0.03 * am, z + 0.05 * am + 0.06 * am]
    >>> res = deadangle_study(mu, li, am.astype(np.int32), voxel_size_um=1.0, r_pristine=0.4,
    ...                       r_charged=0.6, settings=DeadAngleSettings(ranges_deg=(180,)))
    >>> res.summary["n_views"].tolist()  # Nyquist: ceil(pi/2 * padded width 26)
    [41]
    """
    st = settings or DeadAngleSettings()
    vols, li_true, particles = _check_study_inputs(mu, li_true, particles, st.method)
    am = np.isfinite(li_true)
    n = vols[0].shape[1]
    pad = int(np.ceil(n * (np.sqrt(2) - 1) / 2)) + 1
    npad = n + 2 * pad
    nv = st.n_views_per_180 or int(np.ceil(np.pi / 2 * npad))
    true_jump = float(np.median((vols[2] - vols[0])[am]))
    thr = st.jump_fraction * true_jump
    if not thr > 0:
        raise DataError("the true post-minus-pre jump in the active material is not positive")
    orient = particle_orientation(particles, voxel_size_um)
    true_frac = _class_fractions(np.where(am, li_true, np.nan), st.poor_max, st.rich_min)
    rng = np.random.default_rng(st.seed)
    rk = dict(st.recon_kwargs or {})
    summary, prow = [], []
    total = len(st.ranges_deg) * 3
    step = 0
    vox = float(voxel_size_um)
    pad_width = ((0, 0), (pad, pad), (pad, pad))
    for rng_deg in st.ranges_deg:
        theta = angles_for_range(float(rng_deg), nv)
        recs = []
        for k, v in enumerate(vols):
            proj = project_volume(np.pad(v * vox, pad_width), theta)  # per-pixel line integrals
            if st.projection_noise > 0:
                if k == 0:
                    scale = float(project_volume(np.pad(vols[2] * vox, pad_width)[:1], theta).max())
                proj = proj + rng.normal(0.0, st.projection_noise * scale, proj.shape).astype(np.float32)
            recs.append(reconstruct_volume(proj, theta, st.method, **rk)[:, pad : pad + n, pad : pad + n] / vox)
            step += 1
            if progress is not None:
                progress(step, total, "dead-angle study")
        x = li_map(*recs, r_pristine, r_charged, jump_threshold=thr, li_pristine=st.li_pristine,
                   li_charged=st.li_charged)
        ok = am & np.isfinite(x)
        err = x[ok] - li_true[ok]
        frac = _class_fractions(np.where(ok, x, np.nan), st.poor_max, st.rich_min)
        part = _particle_rows(float(rng_deg), x, ok, li_true, particles, orient)
        prow.extend(part)
        perr = np.array([p["li_error"] for p in part]) if part else np.array([np.nan])
        summary.append({
            "range_deg": float(rng_deg),
            "n_views": int(theta.size),
            "rmse_li": float(np.sqrt(np.mean(err**2))) if err.size else float("nan"),
            "bias_li": float(np.mean(err)) if err.size else float("nan"),
            **{f"bias_{c}": frac[c] - true_frac[c] for c in LI_CLASSES},
            "particle_mean_li_bias": float(np.mean(perr)),
            "particle_mean_li_abs_error": float(np.mean(np.abs(perr))),
            "masked_fraction": float(1 - ok.sum() / am.sum()),
        })
        log.info("range %g deg: rmse %.4f", rng_deg, summary[-1]["rmse_li"])
    parts = pd.DataFrame(prow, columns=["range_deg", "particle", "n_voxels", "li_true", "li_rec", "li_error",
                                        "angle_to_missing_deg", "elongation"])
    params = {"method": st.method, "n_views_per_180": nv, "rotation_axis": "z", "padded_width": npad,
              "projection_noise": st.projection_noise, "seed": st.seed, "jump_threshold_per_um": thr}
    return DeadAngleResult(pd.DataFrame(summary), parts, _orientation_table(parts), true_frac, params)

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


def particle_orientation(particles: np.ndarray) -> pd.DataFrame:
    """Long-axis angle of each particle in the (y, x) plane.

    Returns ``particle, angle_deg`` (from +y towards +x, in [0, 180)), ``angle_to_missing_deg``
    (to the x axis, in [0, 90]) and ``elongation`` (ratio of the in-plane principal standard
    deviations, >= 1).

    Examples
    --------
    >>> p = np.zeros((3, 20, 20), np.int32); p[:, 9:11, 2:18] = 1   # long along x
    >>> round(float(particle_orientation(p)["angle_to_missing_deg"][0]), 1)
    0.0
    """
    lab = np.asarray(particles)
    rows = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        _, yy, xx = np.nonzero(lab[sl] == i)
        if yy.size < 3:
            continue
        cov = np.cov(np.stack([yy, xx]).astype(float))
        evals, evecs = np.linalg.eigh(cov)
        vy, vx = evecs[:, 1]
        ang = float(np.degrees(np.arctan2(vx, vy)) % 180.0)
        to_x = abs(90.0 - ang)  # angle between the long axis and the x axis
        rows.append({"particle": i, "angle_deg": ang, "angle_to_missing_deg": to_x,
                     "elongation": float(np.sqrt(evals[1] / max(evals[0], 1e-12)))})
    return pd.DataFrame(rows, columns=["particle", "angle_deg", "angle_to_missing_deg", "elongation"])


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


def deadangle_study(
    mu: Sequence[np.ndarray],
    li_true: np.ndarray,
    particles: np.ndarray,
    *,
    voxel_size_um: float,
    r_pristine: float,
    r_charged: float,
    ranges_deg: Sequence[float] = (180, 150, 120),
    method: str = "fbp",
    n_views_per_180: int | None = None,
    projection_noise: float = 0.0,
    seed: int = 0,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
    poor_max: float = 0.6,
    rich_min: float = 0.9,
    jump_fraction: float = 0.5,
    recon_kwargs: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> DeadAngleResult:
    """Li-map error versus the angular range of a parallel-beam scan.

    Parameters
    ----------
    mu : (mu_pre, mu_edge, mu_post)
        Noise-free attenuation volumes (1/um), ``(z, n, n)``.
    li_true : ndarray (z, n, n)
        True Li content, NaN outside active material.
    particles : ndarray (z, n, n) of int
        True particle labels (0 = none).
    voxel_size_um : float
    r_pristine, r_charged : float
        Edge ratios of the end members (calibration, :func:`litomo.xanes.threeenergy.reference_ratios`
        or measured on standards).
    ranges_deg : sequence of float
        Total angular ranges, centred on 0.
    method : {"fbp", "sirt", "tv"}
    n_views_per_180 : int, optional
        Angular sampling (default: ``ceil(pi/2 * padded width)``, the Nyquist number of views).
    projection_noise : float
        Gaussian noise std added to the projections, relative to the maximum post-edge projection.
    seed : int
        Seed of the projection noise.
    jump_fraction : float
        Voxels count as AM when their reconstructed jump exceeds this fraction of the median true
        AM jump (the mask the Li maths uses).
    recon_kwargs : dict, optional
        Extra arguments for the reconstruction method (e.g. ``{"n_iter": 50}``).

    Returns
    -------
    DeadAngleResult
        Errors are over true-AM voxels that the reconstruction also maps (finite Li).
    """
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
    am = np.isfinite(li_true)
    if not am.any():
        raise DataError("li_true holds no active material (all NaN)")
    n = shape[1]
    pad = int(np.ceil(n * (np.sqrt(2) - 1) / 2)) + 1
    npad = n + 2 * pad
    nv = n_views_per_180 or int(np.ceil(np.pi / 2 * npad))
    true_jump = float(np.median((vols[2] - vols[0])[am]))
    thr = jump_fraction * true_jump
    if not thr > 0:
        raise DataError("the true post-minus-pre jump in the active material is not positive")
    orient = particle_orientation(particles)
    true_frac = _class_fractions(np.where(am, li_true, np.nan), poor_max, rich_min)
    rng = np.random.default_rng(seed)
    rk = dict(recon_kwargs or {})
    summary, prow = [], []
    total = len(ranges_deg) * 3
    step = 0
    vox = float(voxel_size_um)
    pad_width = ((0, 0), (pad, pad), (pad, pad))
    for rng_deg in ranges_deg:
        theta = angles_for_range(float(rng_deg), nv)
        recs = []
        for k, v in enumerate(vols):
            proj = project_volume(np.pad(v * vox, pad_width), theta)  # per-pixel line integrals
            if projection_noise > 0:
                if k == 0:
                    scale = float(project_volume(np.pad(vols[2] * vox, pad_width)[:1], theta).max())
                proj = proj + rng.normal(0.0, projection_noise * scale, proj.shape).astype(np.float32)
            rec = reconstruct_volume(proj, theta, method, **rk)[:, pad : pad + n, pad : pad + n] / vox
            recs.append(rec)
            step += 1
            if progress is not None:
                progress(step, total, "dead-angle study")
        x = li_map(*recs, r_pristine, r_charged, jump_threshold=thr, li_pristine=li_pristine, li_charged=li_charged)
        ok = am & np.isfinite(x)
        err = x[ok] - li_true[ok]
        frac = _class_fractions(np.where(ok, x, np.nan), poor_max, rich_min)
        part = []
        for _, o in orient.iterrows():
            pid = int(o["particle"])
            sel = ok & (particles == pid)
            if sel.sum() < 10:
                continue
            lt, lr = float(li_true[sel].mean()), float(x[sel].mean())
            part.append({"range_deg": float(rng_deg), "particle": pid, "n_voxels": int(sel.sum()), "li_true": lt,
                         "li_rec": lr, "li_error": lr - lt, "angle_to_missing_deg": float(o["angle_to_missing_deg"]),
                         "elongation": float(o["elongation"])})
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
    params = {"method": method, "n_views_per_180": nv, "rotation_axis": "z", "padded_width": npad,
              "projection_noise": projection_noise, "seed": seed, "jump_threshold_per_um": thr}
    return DeadAngleResult(pd.DataFrame(summary), parts, pd.DataFrame(orows), true_frac, params)


def operando_state(
    size: int = 40,
    *,
    state: int = 1,
    n_states: int = 2,
    seed: int = 0,
    voxel_size_um: float = 0.25,
) -> dict[str, Any]:
    """One noise-free, registered state of :func:`litomo.phantom.operando.make_operando_phantom`.

    Returns ``mu`` (pre, edge, post volumes in 1/um), ``li`` (NaN outside AM), ``particles``,
    ``voxel_size_um``, ``energies_ev`` and the end-member edge ratios ``r_pristine``, ``r_charged``
    computed from the phantom's own AM attenuation model (the calibration standards of this
    synthetic beamline), so the study isolates the reconstruction error.
    """
    from litomo.phantom.operando import am_attenuation, make_operando_phantom

    if not 0 <= state < n_states:
        raise LitomoError(f"state must be in [0, {n_states - 1}], got {state}")
    ph = make_operando_phantom(size, n_states, seed=seed, voxel_size_um=voxel_size_um, snr=0.0,
                               max_translation_vox=0.0, max_rotation_deg=0.0, deformation_vox=0.0,
                               state_translation_vox=0.0, state_rotation_deg=0.0)
    if len(ph.roles) != 3:
        raise LitomoError("the dead-angle study needs a three-energy phantom")
    mu = [ph.volume(state, role) for role in ph.roles]
    truth = ph.truth(state)
    e = ph.energies_ev

    def ratio(li: float) -> float:
        a = [float(am_attenuation(x, li, li_pristine=ph.li_pristine, li_charged=ph.li_charged)) for x in e]
        return (a[1] - a[0]) / (a[2] - a[0])

    return {"mu": mu, "li": truth["li"], "particles": truth["particles"], "voxel_size_um": ph.voxel_size_um,
            "energies_ev": e, "r_pristine": ratio(ph.li_pristine), "r_charged": ratio(ph.li_charged),
            "li_pristine": ph.li_pristine, "li_charged": ph.li_charged}

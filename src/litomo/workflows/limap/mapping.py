"""Stage ``map``: edge ratio -> x_Li (reference calibration), AM mask and AM fraction.

With ``processing.map_binning = "am_interior"`` the edge ratio comes from the
*particle-interior* means (stage ``warp``): the mean over the full-resolution voxels that lie
inside a particle, more than ``surface_erosion_vox`` voxels from its surface as seen on the
post-edge volume, the same voxels at all three energies. A plain bin mean mixes particle and
pore, and at a particle surface that mixture differs between energies by whatever
misregistration is left (a 0.05-voxel shift of a surface through a half-filled 7^3 bin moves
x_Li by ~0.03); the interior voxels see particle material at every energy, so the ratio no
longer depends on where exactly the surface is, and the pore voxels' noise stays out of the
average. The surface layer they leave out is restored per particle from its Li balance
(:func:`litomo.xanes.interior.interior_surface_li`, stage ``li``: :mod:`.li`). Measured on the phantom
(``benchmarks/bench_limap.py``, seed 0): x_Li RMSE 0.033 with plain bins -> 0.028.

The ratio removes the active material's non-resonant background with the run's background law
(:attr:`Calibration.background`: an explicit ``background_exponent``, else tabulated for
``[sample] composition``, else none); how much the law moved the state's mean x_Li is kept
(``background_li_shift``, run.json ``background``). The state's mean x_Li is also computed from
the registered images summed over the AM and two bins around it (``mean_li_global``): a sum
over a whole region does not depend on where (mis)registered surfaces lie, and the ratio of
sums is the jump- (= AM-) weighted mean x_Li exactly for a linear mixture (forward models of
issue 16: total Li +3.3 / -2.4 % from the map's bins; see docs/benchmarks.md).

The background correction needs volumes of absolute attenuation: unlike the plain ratio it does
not cancel an offset common to the three energies (uint16 files rescaled with an offset, a
reconstruction's lost DC level). Pores (electrolyte, air) and binder attenuate ~1e-3 /um, so the
bins without AM show such an offset; :func:`offset_check` says how far it would move the mean
x_Li, and the stage warns above :data:`OFFSET_WARN_LI` (a 0.05 /um offset on the operando
phantom: x_Li of a pristine state 0.946 instead of 1.0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from litomo.errors import LitomoError
from litomo.manifest import ProcessingSpec, StateSpec
from litomo.workflows.limap.calibration import Calibration
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.stage import StateStage
from litomo.workflows.limap.warp import Warped

ROLES = ("pre_edge", "edge", "post_edge")
#: |mean x_Li shift| an offset of the volumes would cause, above which the map stage warns
OFFSET_WARN_LI = 0.01


def am_fraction_from_jump(jump: np.ndarray, am: np.ndarray) -> tuple[np.ndarray, float]:
    """AM volume fraction of each binned voxel from its edge jump, and the full-voxel jump.

    The Ni K-edge jump is proportional to the amount of Ni in a voxel, so ``jump / J_full``
    (``J_full`` = median jump of voxels well inside particles: the AM mask eroded by one voxel)
    is the AM fraction of partially filled voxels, including the surface voxels whose jump is
    below the mapping threshold. Not clipped, so that noise averages out in sums.

    Examples
    --------
    >>> jump = np.full((5, 5, 5), 2.0)
    >>> frac, j_full = am_fraction_from_jump(jump, np.ones((5, 5, 5), bool))
    >>> j_full, float(frac.max())
    (2.0, 1.0)
    """
    from scipy import ndimage

    core = ndimage.binary_erosion(am)
    ref = jump[core] if core.sum() >= 20 else jump[am]
    j_full = float(np.median(ref)) if ref.size else float("nan")
    if not j_full > 0:
        return np.zeros(jump.shape, np.float32), j_full
    # NaN/inf input voxels (already warned about) contribute no AM volume
    return np.nan_to_num(jump / j_full, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), j_full


@dataclass
class Mapped:
    """Output of :class:`MapStage` (map grid)."""

    #: x_Li from the plain bin means, NaN outside the AM mask (not clipped)
    li_plain: np.ndarray
    #: x_Li from the particle-interior means (None unless map_binning = "am_interior")
    li_interior: np.ndarray | None
    #: interior voxels per bin (None unless map_binning = "am_interior")
    interior_count: np.ndarray | None
    am: np.ndarray
    am_fraction: np.ndarray
    jump_threshold: float
    #: median edge jump of full-AM bins (the jump of an AM fraction of 1)
    j_full: float = float("nan")
    #: mean x_Li over the AM with the background law minus without it
    background_li_shift: float = 0.0
    #: the state's AM-weighted mean x_Li from the images summed over the AM region
    mean_li_global: float = float("nan")
    #: median pre-edge attenuation of the bins without AM (/um; pores and binder: ~1e-3)
    non_am_level_per_um: float = float("nan")
    #: mean x_Li over the AM minus that with ``non_am_level_per_um`` subtracted from every energy
    offset_li_shift: float = float("nan")
    warnings: list[str] = field(default_factory=list)


def denoised(p: ProcessingSpec, plain: tuple[np.ndarray, ...],
              inner: tuple[np.ndarray, ...] | None) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...] | None]:
    """Each energy filtered on its own (``processing.denoise``), on the registered bins."""
    if p.denoise == "none":
        return plain, inner
    from litomo.denoise import denoise_pipeline

    def dn(a: np.ndarray) -> np.ndarray:
        return np.asarray(denoise_pipeline(a, (p.denoise,)), dtype=np.float32)

    if inner is not None:  # bins without interior voxels are filled for the filter only
        inner = tuple(np.where(np.isnan(a), np.nan, dn(np.where(np.isnan(a), b, a)))
                      for a, b in zip(inner, plain, strict=True))
    return tuple(dn(a) for a in plain), inner


def map_li(plain: dict[str, np.ndarray], interior: dict[str, np.ndarray], p: ProcessingSpec,
           cal: Calibration, li_pristine: float, li_charged: float) -> Mapped:
    """Edge ratio, x_Li and AM mask of registered bin means (``interior`` may be empty)."""
    from litomo.xanes import threeenergy as te

    (pre, edge, post), inner = denoised(p, tuple(plain[r] for r in ROLES),
                                         tuple(interior[r] for r in ROLES) if interior else None)
    thr = te.jump_threshold(pre, post) if p.jump_threshold == "auto" else float(p.jump_threshold)
    law = cal.background

    def li_of(mu_pre: np.ndarray, mu_edge: np.ndarray, mu_post: np.ndarray, plain: bool = False) -> np.ndarray:
        if law.law != "none" and not plain:
            if p.sign_convention != "conventional":
                raise LitomoError("a background law (background_exponent or sample.composition) needs "
                                  "sign_convention = 'conventional'")
            r = te.background_corrected_ratio(mu_pre, mu_edge, mu_post, energies_ev=cal.energies_ev,
                                              background_exponent=0.0, background_factors=law.factors[1:],
                                              reference_levels=cal.levels, jump_threshold=thr)
        else:
            r = te.edge_ratio(mu_pre, mu_edge, mu_post, jump_threshold=thr, sign_convention=p.sign_convention)
        return te.calibrate_li(r, cal.r_pristine, cal.r_charged, li_pristine=li_pristine,
                               li_charged=li_charged, clip=None)[0]

    x = li_of(pre, edge, post)
    am = np.asarray(te.am_mask_from_jump(pre, post, threshold=thr)) & np.isfinite(x)
    am_fraction, j_full = am_fraction_from_jump(post - pre, am)
    shift = 0.0
    if am.any() and law.law != "none":
        shift = float(np.nanmean(x[am]) - np.nanmean(li_of(pre, edge, post, plain=True)[am]))
    level, off_shift = offset_check(li_of, x, am, am_fraction, (pre, edge, post))
    warn = []
    if abs(off_shift) > OFFSET_WARN_LI:
        warn.append(f"the bins without active material read {level:.4f} /um at the pre-edge energy (pores and "
                    f"binder: ~0.001); if the volumes carry that as an offset (rescaled integers, a "
                    f"reconstruction's DC level), the background correction moves the mean x_Li by "
                    f"{off_shift:+.3f}: give zero-offset attenuation volumes")
    return Mapped(np.where(am, x, np.nan), li_of(*inner) if inner is not None else None,
                  interior["count"] if interior else None, am, am_fraction, float(thr), float(j_full),
                  shift, _mean_li_global(li_of, am, (pre, edge, post)), level, off_shift, warn)


def offset_check(li_of: Callable[..., np.ndarray], x: np.ndarray, am: np.ndarray, am_fraction: np.ndarray,
                 images: tuple[np.ndarray, ...]) -> tuple[float, float]:
    """Median pre-edge level of the bins without AM, and the mean x_Li shift it would cause as an offset.

    The shift is the mean x_Li over ``am`` of ``x`` (``li_of(*images)``) minus the same with the
    level subtracted from all three images; NaN when fewer than 1 % of the bins (and fewer than
    50) are free of AM.

    Examples
    --------
    >>> li_of = lambda pre, edge, post: (edge - pre) / (post - pre + 0.1 * pre)  # not offset-free
    >>> am = np.zeros((10, 10, 10), bool); am[:5] = True
    >>> imgs = tuple(np.where(am, v, 0.0) + 0.05 for v in (1.0, 1.5, 2.0))
    >>> level, shift = offset_check(li_of, li_of(*imgs), am, am.astype(float), imgs)
    >>> round(level, 3), shift != 0
    (0.05, True)
    """
    pre = images[0]
    empty = ~am & (am_fraction < 0.05) & np.isfinite(pre)
    if not am.any() or empty.sum() < max(50, 0.01 * pre.size):
        return float("nan"), float("nan")
    level = float(np.median(pre[empty]))
    with np.errstate(invalid="ignore", divide="ignore"):
        x1 = li_of(*(a - np.float32(level) for a in images))[am]
    return level, float(np.nanmean(x[am]) - np.nanmean(x1))


def _mean_li_global(li_of: Callable[..., np.ndarray], am: np.ndarray, images: tuple[np.ndarray, ...]) -> float:
    """x_Li of the images summed over the AM and two bins around it (see the module docstring)."""
    from scipy import ndimage

    region = ndimage.binary_dilation(am, iterations=2)
    for a in images:
        region &= np.isfinite(a)
    if not region.any():
        return float("nan")
    sums = [np.array([float(a[region].sum(dtype=np.float64))]) for a in images]
    return float(li_of(*sums)[0])


class MapStage(StateStage):
    """Edge ratio, calibration to x_Li and the AM mask on the map grid (:func:`map_li`)."""

    name = "map"
    needs = ("warp",)
    output = Mapped

    energies = "three"  # N-energy runs: litomo.workflows.limap.spectral

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p, c, x = ctx.manifest.processing, ctx.calibration, ctx.manifest.xanes
        return {"denoise": p.denoise, "jump_threshold": p.jump_threshold, "sign_convention": p.sign_convention,
                "background_exponent": p.background_exponent, "background_law": list(c.background.factors),
                "composition": ctx.manifest.sample.composition, "r_pristine": c.r_pristine,
                "r_charged": c.r_charged, "energies_ev": c.energies_ev, "levels": c.levels,
                "li_pristine": x.li_pristine, "li_charged": x.li_charged}

    def run(self, ctx: RunContext, state: StateSpec, *, warp: Warped) -> Mapped:
        x = ctx.manifest.xanes
        return map_li(warp.plain, warp.interior, ctx.manifest.processing, ctx.calibration,
                      x.li_pristine, x.li_charged)

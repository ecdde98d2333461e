"""Stage ``li``: the final x_Li map of a state.

With ``map_binning = "am_interior"`` the surface layer the interior means leave out is restored
per particle from its Li balance (:func:`litomo.xanes.interior.interior_surface_li`; the offset
shrunk by its reliability, and each bin's weight on its own interior value passed on to the noise
variance: session 10). Then
(issue 16) the noise variance of each bin is estimated from the background bins
(:func:`litomo.xanes.noise.li_noise_variance`) and scaled down where neighbouring full bins of
one particle differ by less than it predicts (an upper bound on the noise:
:func:`litomo.xanes.noise.interior_pair_noise_ratio`), with ``li_shrinkage = "constrained_bayes"`` each
particle's bins are shrunk towards its mean by the noise share of their spread (the particle's
true spread is kept, :func:`litomo.xanes.noise.constrained_bayes`), and the share of bins noise
can put into the other Li class is computed from that variance by the statistics stage
(``li_class_uncertainty``, run.json
``li_map_regime``). Last, x_Li is clipped to ``processing.clip_li`` (a few percent clipped: a
warning; more: refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.manifest import StateSpec
from litomo.preprocess import bin_factors
from litomo.workflows.limap.mapping import ROLES, Mapped, denoised
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.particles import Particles
from litomo.workflows.limap.stage import StateStage
from litomo.workflows.limap.warp import Warped
from litomo.xanes.interior import interior_surface_li


@dataclass
class LiMap:
    """Output of :class:`LiStage`: the state's x_Li map (float32, NaN outside AM)."""

    li: np.ndarray
    clipped_fraction: float
    warnings: list[str]
    #: median noise (standard deviation) of x_Li in full-AM bins, after the shrinkage
    li_noise_sigma_full_bin: float = float("nan")
    #: noise variance of x_Li per bin (after the shrinkage); the statistics stage turns it into
    #: the share of mapped bins that noise can put in the other Li class, so that a changed
    #: class threshold reruns the statistics only
    li_variance: np.ndarray | None = None
    #: the active material's non-resonant level over its edge jump, measured (median over the
    #: full AM bins) and predicted from ``[sample] composition`` (NaN without one)
    background_level_measured: float = float("nan")
    background_level_predicted: float = float("nan")
    #: robust variance of differences of adjacent full bins of one particle over their predicted
    #: variance (an upper bound on true / predicted noise); ``li_variance`` is scaled by it where
    #: it is below 1 (session 9)
    noise_pair_ratio: float = float("nan")


class LiStage(StateStage):
    """The final x_Li map: surface layer restored per particle (am_interior), then clipped."""

    name = "li"
    needs = ("map", "particles", "warp")
    output = LiMap

    energies = "three"  # N-energy runs: litomo.workflows.limap.spectral

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p = ctx.manifest.processing
        # "outputs": LiMap's fields, so that a stored stage without the session-9 fields reruns
        return {"clip_li": p.clip_li, "bin": bin_factors(p.bin), "li_shrinkage": p.li_shrinkage,
                "outputs": 3, "restoration": "offset_shrunk+own_weight_noise+observed_share+no_zero_pair_bound"}

    def run(self, ctx: RunContext, state: StateSpec, *, map: Mapped, particles: Particles,
            warp: Warped) -> LiMap:
        from litomo.xanes import threeenergy as te
        from litomo.xanes.noise import (
            constrained_bayes,
            interior_pair_noise_ratio,
            li_noise_variance,
        )

        p, xs, cal = ctx.manifest.processing, ctx.manifest.xanes, ctx.calibration
        x = map.li_plain
        bin_voxels = int(np.prod(bin_factors(p.bin)))
        own = None
        if map.li_interior is not None:
            # the surface share of a bin is counted against its voxels observed at every energy:
            # against all of them, a full bin on a volume face that a shifted energy did not
            # image reads as particle surface and takes part of its particle's surface offset
            # (forward model no_background S1: 2.36 -> 1.07 pp; session 11, docs/science.md
            # "Bins on the volume faces")
            x, own = interior_surface_li(map.li_interior, x, map.interior_count, map.am_fraction,
                                         particles.labels, warp.interior["observed"], return_weight=True)
        # the map stage's (denoised) images again: recomputed rather than stored twice
        (pre, edge, post), _ = denoised(p, tuple(warp.plain[r] for r in ROLES), None)
        v = li_noise_variance(pre, edge, post, x, map.am, jump_threshold=map.jump_threshold,
                              calibration=(cal.r_pristine, cal.r_charged, xs.li_pristine, xs.li_charged),
                              interior=None if map.interior_count is None
                              else (map.interior_count, bin_voxels, map.j_full), interior_weight=own)
        # the background bins' image noise is uncertain by 10-20 % in a small volume (and the
        # deconvolved class fractions are sensitive to it: shifted_spectra S2 2.9 pp with it,
        # 2.1 pp with the true noise); neighbouring full bins bound it from above
        full_bins = (map.interior_count >= 0.9 * bin_voxels if map.interior_count is not None
                     else map.am & (map.am_fraction > 0.95))
        pair_ratio = interior_pair_noise_ratio(x, v, particles.labels, full_bins)
        if pair_ratio < 1.0:
            v = v * pair_ratio
        if p.li_shrinkage == "constrained_bayes":
            x, c = constrained_bayes(x, particles.labels, v, map.am_fraction, local=True, return_factor=True)
            v = v * c**2
        full = map.am & (map.am_fraction > 0.95)
        sigma = float(np.sqrt(np.nanmedian(v[full]))) if full.any() else float("nan")
        x, clipped = te.clip_li(x, tuple(p.clip_li) if p.clip_li else None)
        measured, predicted, level_msg = _background_level(ctx, state, pre, post, full)
        # more than a few percent clipped: a swapped/inverted volume or wrong references
        msgs = [w for w in (te.check_clipped_fraction(clipped, p.clip_li, f"state {state.name}"), level_msg) if w]
        return LiMap(np.asarray(x, dtype=np.float32), float(clipped), msgs, sigma,
                     np.asarray(v, dtype=np.float32), measured, predicted, pair_ratio)


def _background_level(ctx: RunContext, state: StateSpec, pre: np.ndarray, post: np.ndarray,
                      full: np.ndarray) -> tuple[float, float, str | None]:
    """Measured and predicted non-resonant level / jump of the AM, and a warning when they disagree."""
    from litomo.xanes import background as bg

    cal = ctx.calibration
    measured = bg.measured_level_ratio(pre, post, full, cal.background.factors[-1], cal.levels)
    comp = cal.background.composition
    if comp is None:
        return measured, float("nan"), None
    predicted = bg.predicted_level_ratio(comp, cal.energies_ev[0])
    return measured, predicted, bg.level_warning(measured, predicted, comp, f"state {state.name}")

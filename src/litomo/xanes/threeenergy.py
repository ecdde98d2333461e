"""Three-energy Li map (SPEC 2.1): edge ratio, active-material mask, calibration, classes.

For attenuation volumes at a pre-edge, an edge and a post-edge energy::

    R = (mu_edge - mu_pre) / (mu_post - mu_pre)

Voxels whose jump ``mu_post - mu_pre`` is below a noise threshold (pores, carbon/binder) are NaN,
never divided. R is converted to Li content by linear interpolation between the two reference
spectra evaluated at the same energies. All element-wise functions accept numpy or dask arrays
(lazy in, lazy out); the threshold estimators compute on a subsample.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.xanes.background import level_and_jump
from litomo.xanes.spectra import Spectrum

log = logging.getLogger(__name__)

SIGN_CONVENTIONS = ("conventional", "printed")
_MAX_SAMPLE = 2_000_000  # voxels used to estimate global thresholds


def _is_dask(a) -> bool:
    return type(a).__module__.startswith("dask")


def _sample(a, max_n: int = _MAX_SAMPLE) -> np.ndarray:
    """A finite 1-D numpy sample (regular stride) of a numpy/dask array for global statistics."""
    flat = a.ravel() if _is_dask(a) else np.asarray(a).ravel()
    step = max(1, int(np.ceil(flat.size / max_n)))
    s = flat[::step]
    if _is_dask(s):
        s = s.compute()
    s = np.asarray(s, dtype=float)
    return s[np.isfinite(s)]


def _where(cond, a, b):
    """``where`` for numpy or dask operands (lazy when any is dask)."""
    if any(_is_dask(x) for x in (cond, a, b)):
        import dask.array as da

        return da.where(cond, a, b)
    return np.where(cond, a, b)


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    if values.size < 2 or np.ptp(values) == 0:
        raise DataError(
            "cannot split the edge jump into background and active material: it is constant"
        )
    return float(threshold_otsu(values, nbins=512))


def jump_threshold(mu_pre, mu_post, method: str = "auto", *, k_sigma: float = 5.0) -> float:
    """Edge-jump threshold separating active material from background (units of mu).

    Parameters
    ----------
    mu_pre, mu_post : array (numpy or dask)
        Attenuation at the pre- and post-edge energies.
    method : {"auto", "noise", "otsu"}
        ``"otsu"``: Otsu's threshold on the jump ``mu_post - mu_pre``.
        ``"noise"`` (= ``"auto"``): Otsu first splits background from material; the threshold is
        then ``median_bg + k_sigma * sigma_bg`` with ``sigma_bg`` = 1.4826 x MAD of the jump in
        the background. Because the background has no Ni, its jump is pure noise, so the threshold
        sits ``k_sigma`` noise standard deviations above zero jump: R is never formed from a
        denominator comparable to the noise. It is capped at the midpoint between the
        background and material medians (with a warning) so that a very noisy map keeps its
        material voxels.
    k_sigma : float
        Multiple of the background noise for the ``"noise"`` method.

    Returns
    -------
    float
        Threshold on ``mu_post - mu_pre``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pre = rng.normal(0, 0.01, 10000)
    >>> post = pre + np.r_[np.zeros(5000), np.ones(5000)] + rng.normal(0, 0.01, 10000)
    >>> 0.03 < jump_threshold(pre, post) < 0.2
    True
    """
    if method not in ("auto", "noise", "otsu"):
        raise DataError(f"unknown jump threshold method '{method}' (auto, noise, otsu)")
    # voxels with exactly zero attenuation at both energies are padding or masked-out space
    # (a zero-padded detector margin, a field-of-view mask written as 0), not measurements: no
    # real reconstruction is exactly 0.0 at two energies. Left in, they make the background's
    # median and MAD exactly 0 when they dominate it, and the threshold 0
    jump = _sample(_where((mu_pre == 0) & (mu_post == 0), np.nan, mu_post - mu_pre))
    if jump.size < 10:
        raise DataError("fewer than 10 finite voxels: cannot estimate a jump threshold")
    t_otsu = _otsu(jump)
    if method == "otsu":
        return t_otsu
    bg = jump[jump < t_otsu]
    am = jump[jump >= t_otsu]
    med = float(np.median(bg))
    sigma = 1.4826 * float(np.median(np.abs(bg - med)))
    t_noise = med + k_sigma * sigma
    # Otsu's criterion is flat across an empty gap (it returns the gap's lower end), so the cap
    # is the midpoint between the class medians rather than the Otsu value itself
    cap = 0.5 * (med + float(np.median(am)))
    if sigma == 0.0:
        # noise-free data (a simulation): ``med + k sigma`` is the background level itself, which
        # the ``>=`` test would admit. The rule's limit for vanishing noise is "anything above the
        # background": kept 1e-3 of the class separation above it so float round-off in bin means
        # of the background does not pass (bins with < 0.1 % material are left out)
        t_clean = med + 1e-3 * (float(np.median(am)) - med)
        log.info("edge jump without measurable background noise; threshold %.3g just above the background", t_clean)
        return float(t_clean)
    if t_noise > cap:
        # at the midpoint a Gaussian background passes as material with probability
        # sf = 1 - Phi((cap - med) / sigma); that many background voxels then sit in the AM mask
        # and move its class fractions by up to as many percentage points. Warn above 2 % of the
        # mask; less is information (the 192^3 demo: 2.2-2.4 sigma, 0.5-1.0 % of the mask; the
        # 64^3 demo: 1.7 sigma, ~3 %)
        margin = (cap - med) / sigma if sigma > 0 else math.inf
        tail = 0.5 * math.erfc(margin / math.sqrt(2.0))
        contamination = bg.size * tail / max(am.size, 1)
        level = logging.WARNING if contamination > 0.02 else logging.INFO
        log.log(
            level,
            "edge-jump noise (sigma %.3g) is large compared with the material/background "
            "separation; using the midpoint between the classes, %.3g (%.1f sigma above the "
            "background: about %.1f%% of the active-material mask may be background)",
            sigma,
            cap,
            margin,
            100.0 * contamination,
        )
    return float(min(t_noise, cap))


def am_mask_from_jump(mu_pre, mu_post, *, threshold: float | None = None, method: str = "auto"):
    """Active-material mask: voxels whose edge jump ``mu_post - mu_pre`` exceeds the threshold.

    Only Ni-bearing material (the cathode active material) has a Ni K-edge jump, so the jump is
    a composition-specific AM indicator independent of density; the threshold comes from
    :func:`jump_threshold` unless given.

    Examples
    --------
    >>> am_mask_from_jump(np.zeros(3), np.array([0.0, 0.5, 1.0]), threshold=0.25).tolist()
    [False, True, True]
    """
    if threshold is None:
        threshold = jump_threshold(mu_pre, mu_post, method)
    return (mu_post - mu_pre) >= threshold


def edge_ratio(
    mu_pre,
    mu_edge,
    mu_post,
    *,
    jump_threshold: float,
    sign_convention: str = "conventional",
):
    """Jump-normalised edge absorption R per voxel; NaN where the jump is below the threshold.

    Parameters
    ----------
    mu_pre, mu_edge, mu_post : arrays (numpy or dask), same shape
        Attenuation at the three energies (registered).
    jump_threshold : float
        Minimum ``mu_post - mu_pre`` (> 0) for a voxel to be computed (see :func:`jump_threshold`).
    sign_convention : {"conventional", "printed"}
        ``"conventional"``: ``(edge - pre) / (post - pre)`` (SPEC 2.1).
        ``"printed"``: the seed paper's ``(edge - pre) / (pre - post)``, i.e. ``-R``; only when
        explicitly asked for (it is a sign slip in the paper).

    Returns
    -------
    array
        float64 R; NaN for masked voxels.

    Examples
    --------
    >>> edge_ratio(np.array([0.0, 0.0]), np.array([0.5, 0.01]), np.array([1.0, 0.02]),
    ...            jump_threshold=0.1).tolist()
    [0.5, nan]
    """
    if sign_convention not in SIGN_CONVENTIONS:
        raise DataError(
            f"sign_convention must be one of {SIGN_CONVENTIONS}, got '{sign_convention}'"
        )
    if not (np.isfinite(jump_threshold) and jump_threshold > 0):
        raise DataError(f"jump_threshold must be a positive number, got {jump_threshold}")
    shapes = {tuple(np.shape(a)) for a in (mu_pre, mu_edge, mu_post)}
    if len(shapes) != 1:
        raise DataError(f"mu_pre, mu_edge, mu_post must have the same shape, got {sorted(shapes)}")
    jump = mu_post - mu_pre
    ok = jump >= jump_threshold
    # the denominator is replaced before dividing, so masked voxels never see a small number
    denom = np.where(ok, jump, 1.0)
    r = np.where(ok, (mu_edge - mu_pre) / denom, np.nan)
    if sign_convention == "printed":
        r = -r
    return r


def background_corrected_ratio(
    mu_pre,
    mu_edge,
    mu_post,
    *,
    energies_ev: tuple[float, float, float],
    background_exponent: float,
    reference_levels: tuple[float, float],
    jump_threshold: float,
    background_factors: tuple[float, float] | None = None,
):
    """Edge ratio R after removing a power-law (Victoreen-type) non-resonant background.

    The plain ratio of SPEC 2.1 assumes the non-resonant absorption of the matrix is the same
    at the three energies. Photo-absorption of the other elements falls roughly as
    ``E**-p`` (p ~ 2.8 around 8 keV), so between a pre-edge at 8330 eV and a post-edge at
    8430 eV it drops by ~3 %, which biases R (and x_Li by ~0.04 for NMC). Modelling each voxel
    as ``mu(E) = b (E / E_pre)**-p + J n(E)``, with ``n`` the normalised edge (``n_pre``,
    ``n_post`` from the references), the pre- and post-edge values give ``b`` and ``J``
    exactly, and ``n_edge = (mu_edge - b f_edge) / J``; ``R = (n_edge - n_pre) / (n_post - n_pre)``
    is then directly comparable with R of the normalised references. ``background_exponent=0``
    reduces exactly to the plain ratio.

    Parameters
    ----------
    mu_pre, mu_edge, mu_post : arrays (numpy or dask)
        Attenuation at the three energies (registered).
    energies_ev : (pre, edge, post)
        Energies in eV (foil-corrected).
    background_exponent : float
        ``p`` of the ``E**-p`` background; 0 gives SPEC 2.1's plain ratio.
    reference_levels : (n_pre, n_post)
        Normalised absorption of the references at the pre- and post-edge energies (mean of
        the two references; ~0 and ~1 for well-normalised spectra).
    jump_threshold : float
        Voxels with ``mu_post - mu_pre`` below it are NaN (not active material).
    background_factors : (f_edge, f_post), optional
        The background's shape ``f(E) / f(E_pre)`` at the edge and post-edge energies, e.g. from
        the tabulated law of :func:`litomo.xanes.background.background_law`; replaces the
        power law (``background_exponent`` is then ignored).

    Examples
    --------
    >>> e = (8330.0, 8345.0, 8430.0); f = [(x / e[0]) ** -2.8 for x in e]
    >>> mu = [0.05 * fi + 0.06 * ni for fi, ni in zip(f, (0.0, 0.7, 1.0))]
    >>> r = background_corrected_ratio(*[np.array([m]) for m in mu], energies_ev=e,
    ...     background_exponent=2.8, reference_levels=(0.0, 1.0), jump_threshold=0.01)
    >>> round(float(r[0]), 6)
    0.7
    """
    if not (np.isfinite(jump_threshold) and jump_threshold > 0):
        raise DataError(f"jump_threshold must be a positive number, got {jump_threshold}")
    e_pre, e_edge, e_post = (float(v) for v in energies_ev)
    if background_factors is None:
        p = float(background_exponent)
        f_edge, f_post = (e_edge / e_pre) ** -p, (e_post / e_pre) ** -p
    else:
        f_edge, f_post = (float(v) for v in background_factors)
    n_pre, n_post = (float(v) for v in reference_levels)
    det = n_post - f_post * n_pre
    if not abs(n_post - n_pre) > 1e-6 or not abs(det) > 1e-9:
        raise DataError(f"reference levels {reference_levels} give no edge jump")
    ok = (mu_post - mu_pre) >= jump_threshold
    b, jump = level_and_jump(mu_pre, mu_post, f_post, (n_pre, n_post))
    safe = np.where(ok & (jump > 0), jump, 1.0)
    n_edge = (mu_edge - b * f_edge) / safe
    return np.where(ok & (jump > 0), (n_edge - n_pre) / (n_post - n_pre), np.nan)


def reference_levels(pristine: Spectrum, charged: Spectrum, pre_ev: float, post_ev: float) -> tuple[float, float]:
    """Mean normalised absorption of the two references at the pre- and post-edge energies."""
    a = pristine.at([pre_ev, post_ev])
    b = charged.at([pre_ev, post_ev])
    return float((a[0] + b[0]) / 2), float((a[1] + b[1]) / 2)


def _ratio_1d(s: Spectrum, pre: float, edge: float, post: float) -> float:
    m_pre, m_edge, m_post = s.at([pre, edge, post])
    jump = m_post - m_pre
    if not abs(jump) > 1e-6 * max(abs(m_post), abs(m_pre), 1e-12):
        raise DataError(
            f"reference '{s.name}' has no edge jump between {pre} and {post} eV; "
            "check the pre/post-edge energies"
        )
    return float((m_edge - m_pre) / jump)


def reference_ratios(
    pristine: Spectrum,
    charged: Spectrum,
    energies_ev: tuple[float, float, float],
    *,
    energy_shift_ev: float = 0.0,
) -> tuple[float, float]:
    """R of the two reference spectra at the (pre, edge, post) energies.

    Parameters
    ----------
    pristine, charged : Spectrum
        Reference spectra (Li-rich and delithiated end members).
    energies_ev : (pre, edge, post)
        Nominal (monochromator) energies of the images in eV.
    energy_shift_ev : float
        Calibration shift, same sign as the manifest's: ``E_true = E_nominal + energy_shift_ev``;
        the references are evaluated at the true energies.

    Returns
    -------
    (r_pristine, r_charged)

    Raises
    ------
    DataError
        If a reference does not cover the energies or has no jump.
    """
    pre, edge, post = (float(v) + float(energy_shift_ev) for v in energies_ev)
    if not pre < post:
        raise DataError(f"pre-edge energy {pre} eV must be below the post-edge energy {post} eV")
    return _ratio_1d(pristine, pre, edge, post), _ratio_1d(charged, pre, edge, post)


def calibrate_li(
    r,
    r_pristine: float,
    r_charged: float,
    *,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
    clip: tuple[float, float] | None = (0.0, 1.2),
):
    """Li content by linear interpolation between the references (SPEC 2.1).

    ``x_Li = li_pristine + (R - r_pristine) * (li_charged - li_pristine) / (r_charged - r_pristine)``

    Parameters
    ----------
    r : array (numpy or dask)
        Edge ratio (NaN = masked, stays NaN).
    r_pristine, r_charged : float
        R of the references (:func:`reference_ratios`).
    li_pristine, li_charged : float
        Li content of the references.
    clip : (low, high) or None
        Physical range; values outside are clipped.

    Returns
    -------
    (x_li, clipped_fraction)
        ``clipped_fraction`` = fraction of finite voxels that were clipped (a 0-d dask array when
        ``r`` is lazy; ``float()`` computes it).

    Examples
    --------
    >>> x, f = calibrate_li(np.array([0.5, 0.3, 0.1]), 0.5, 0.3, clip=(0.0, 1.2))
    >>> [round(v, 2) for v in x.tolist()], round(f, 3)
    ([1.0, 0.38, 0.0], 0.333)
    """
    dr = float(r_charged) - float(r_pristine)
    if not np.isfinite(dr) or abs(dr) < 1e-9:
        raise DataError(
            f"the references give the same edge ratio (R_pristine={r_pristine:.4g}, "
            f"R_charged={r_charged:.4g}): this edge energy cannot distinguish Li contents; "
            "choose another (litomo advise-energies)"
        )
    x = li_pristine + (r - r_pristine) * ((li_charged - li_pristine) / dr)
    return clip_li(x, clip)


def clip_li(x, clip: tuple[float, float] | None):
    """Clip Li contents to a physical range; returns ``(clipped, fraction_of_finite_clipped)``.

    Examples
    --------
    >>> x, f = clip_li(np.array([-0.1, 0.5, np.nan, 1.5]), (0.0, 1.2))
    >>> x.tolist()[:2], round(f, 3)
    ([0.0, 0.5], 0.667)
    """
    if clip is None:
        return x, 0.0
    lo, hi = clip
    if not lo < hi:
        raise DataError(f"clip must be (low, high), got {clip}")
    finite = np.isfinite(x)
    outside = finite & ((x < lo) | (x > hi))
    n_fin = finite.sum()
    frac = outside.sum() / np.maximum(n_fin, 1)
    if not _is_dask(frac):
        frac = float(frac)
    return np.clip(x, lo, hi), frac


#: above this fraction of clipped active-material voxels the map is refused: a negated or
#: swapped energy volume, a wrong sign convention or wrong references put most voxels outside
#: the physical range (the trial's negated edge volume: x_Li = 0 everywhere, 100 % clipped).
#: Unregistered data (``--no-register``) clip 10-20 % at particle surfaces, which stays a warning.
MAX_CLIPPED_FRACTION = 0.5
#: above this fraction the warning names the likely causes
LOUD_CLIPPED_FRACTION = 0.05


def check_clipped_fraction(fraction: float, clip: tuple[float, float] | None, what: str, *,
                           warn_above: float = 0.01,
                           fail_above: float = MAX_CLIPPED_FRACTION) -> str | None:
    """Refuse a Li map with most voxels clipped; a warning line (with the fraction) for a few.

    Parameters
    ----------
    fraction : float
        Fraction of active-material voxels outside ``clip`` (from :func:`clip_li`).
    clip : (low, high) or None
        The physical range (for the message).
    what : str
        Names the state.
    warn_above, fail_above : float
        Fractions above which a warning is returned / :class:`DataError` raised. Above
        :data:`LOUD_CLIPPED_FRACTION` the warning also names the likely causes.

    Returns
    -------
    str or None
        A warning line, or None.

    Examples
    --------
    >>> check_clipped_fraction(0.002, (0.0, 1.2), "state I") is None
    True
    >>> check_clipped_fraction(0.03, (0.0, 1.2), "state I")
    'state I: 3.0% of AM voxels had x_Li outside (0.0, 1.2) and were clipped'
    """
    frac = float(fraction)
    causes = ("an energy volume swapped or inverted, misregistration, or sign_convention / "
              "reference spectra that do not match the data")
    if frac > fail_above:
        raise DataError(f"{what}: {frac:.1%} of active-material voxels have x_Li outside {clip} "
                        f"(more than {fail_above:.0%}): {causes}")
    if frac > LOUD_CLIPPED_FRACTION:
        return f"{what}: {frac:.1%} of AM voxels had x_Li outside {clip} and were clipped; check for {causes}"
    if frac > warn_above:
        return f"{what}: {frac:.1%} of AM voxels had x_Li outside {clip} and were clipped"
    return None


def classify_li(x, *, poor_max: float = 0.6, rich_min: float = 0.9):
    """Li classes: 0 poor (``x <= poor_max``), 1 moderate, 2 rich (``x >= rich_min``), -1 masked.

    The classes do not overlap (SPEC 2.1: "0.9 <= x" is rich).

    Examples
    --------
    >>> classify_li(np.array([0.6, 0.61, 0.9, np.nan])).tolist()
    [0, 1, 2, -1]
    """
    if not poor_max < rich_min:
        raise DataError(f"poor_max ({poor_max}) must be below rich_min ({rich_min})")
    cls = np.where(x <= poor_max, 0, np.where(x >= rich_min, 2, 1))
    cls = np.where(np.isfinite(x), cls, -1)
    return cls.astype(np.int8)


def class_fractions(x: Any, *, poor_max: float = 0.6, rich_min: float = 0.9) -> dict[str, float]:
    """Fractions of the finite voxels of ``x`` in each Li class (NaN for all if none is finite).

    Examples
    --------
    >>> class_fractions(np.array([0.5, 0.7, 0.95, 1.0, np.nan]))
    {'poor': 0.25, 'moderate': 0.25, 'rich': 0.5}
    """
    cls = classify_li(np.asarray(x), poor_max=poor_max, rich_min=rich_min)
    counts = np.bincount(cls[cls >= 0].astype(np.intp).ravel(), minlength=3)
    n = int(counts.sum())
    if n == 0:
        return {"poor": math.nan, "moderate": math.nan, "rich": math.nan}
    return {"poor": float(counts[0] / n), "moderate": float(counts[1] / n), "rich": float(counts[2] / n)}

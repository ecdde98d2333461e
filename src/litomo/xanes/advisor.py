"""Edge-energy advisor (SPEC 2.3): how fast R changes with Li content at a given edge energy.

At the Ni K-edge white-line peak (~8349-8352 eV) the pristine and delithiated spectra nearly
coincide, so R hardly depends on Li; on the steep rising edge (~8340-8347 eV) the edge shift of
the oxidised Ni moves R several times faster. The advisor evaluates

    dR/dx_Li = (R_charged - R_pristine) / (li_charged - li_pristine)

from the reference spectra for the configured edge energy and for every candidate in a search
range, and reports the most sensitive one.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from litomo.errors import DataError
from litomo.xanes.spectra import Spectrum
from litomo.xanes.threeenergy import reference_ratios

log = logging.getLogger(__name__)


def edge_sensitivity(
    pristine: Spectrum,
    charged: Spectrum,
    pre_ev: float,
    edge_ev: float,
    post_ev: float,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
    *,
    energy_shift_ev: float = 0.0,
) -> float:
    """dR/dx_Li at the given (pre, edge, post) energies, from the reference spectra.

    Examples
    --------
    >>> e = np.linspace(8300, 8400, 201)
    >>> p = Spectrum(e, 1 / (1 + np.exp(-(e - 8340) / 2)), "p")
    >>> c = Spectrum(e, 1 / (1 + np.exp(-(e - 8342) / 2)), "c")
    >>> edge_sensitivity(p, c, 8310, 8341, 8390) > 0
    True
    """
    if li_pristine == li_charged:
        raise DataError("li_pristine and li_charged must differ")
    rp, rc = reference_ratios(
        pristine, charged, (pre_ev, edge_ev, post_ev), energy_shift_ev=energy_shift_ev
    )
    return (rc - rp) / (li_charged - li_pristine)


def advise_edge_energy(
    pristine: Spectrum,
    charged: Spectrum,
    pre_ev: float,
    post_ev: float,
    *,
    edge_ev: float | None = None,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
    search: tuple[float, float] = (8330.0, 8360.0),
    step_ev: float = 0.5,
    energy_shift_ev: float = 0.0,
) -> dict:
    """Scan edge energies and report the one that maximises |dR/dx_Li|.

    Parameters
    ----------
    pristine, charged : Spectrum
        Reference spectra.
    pre_ev, post_ev : float
        Pre- and post-edge energies (eV), fixed.
    edge_ev : float, optional
        The configured (planned) edge energy; its sensitivity and the gain are reported.
    li_pristine, li_charged : float
        Li content of the references.
    search : (lo, hi)
        Edge energies to scan (eV); clipped to the references' common range.
    step_ev : float
        Scan step (eV).
    energy_shift_ev : float
        Calibration shift (``E_true = E_nominal + energy_shift_ev``, as in the manifest); all
        energies here are nominal.

    Returns
    -------
    dict
        ``best_edge_ev``, ``best_sensitivity`` (dR/dx_Li there), ``configured_edge_ev``,
        ``configured_sensitivity`` (None without a configured energy), ``ratio``
        (|best| / |configured|), ``table`` (list of dicts: edge_ev, r_pristine, r_charged,
        dr_dx).

    Examples
    --------
    >>> from importlib.resources import files
    >>> from litomo.xanes.spectra import read_spectrum
    >>> d = files("litomo.xanes") / "data"
    >>> adv = advise_edge_energy(read_spectrum(d / "ni_kedge_NiO.csv"),
    ...                          read_spectrum(d / "ni_kedge_LiNiO2.csv"), 8300, 8400,
    ...                          edge_ev=8350)
    >>> best = max(adv["table"], key=lambda row: abs(row["dr_dx"]))
    >>> adv["best_edge_ev"] == best["edge_ev"], adv["ratio"] >= 1
    (True, True)
    """
    if step_ev <= 0:
        raise DataError(f"step_ev must be positive, got {step_ev}")
    # search energies are nominal; the references are read at nominal + shift
    lo = max(
        search[0], pristine.range_ev[0] - energy_shift_ev, charged.range_ev[0] - energy_shift_ev
    )
    hi = min(
        search[1], pristine.range_ev[1] - energy_shift_ev, charged.range_ev[1] - energy_shift_ev
    )
    if not lo < hi:
        raise DataError(f"search range {search} eV is not covered by both reference spectra")
    table = []
    for edge in np.arange(lo, hi + 1e-9, step_ev):
        rp, rc = reference_ratios(
            pristine, charged, (pre_ev, edge, post_ev), energy_shift_ev=energy_shift_ev
        )
        table.append(
            {
                "edge_ev": float(edge),
                "r_pristine": rp,
                "r_charged": rc,
                "dr_dx": (rc - rp) / (li_charged - li_pristine),
            }
        )
    best = max(table, key=lambda row: abs(row["dr_dx"]))
    configured = None
    if edge_ev is not None:
        configured = edge_sensitivity(
            pristine,
            charged,
            pre_ev,
            edge_ev,
            post_ev,
            li_pristine,
            li_charged,
            energy_shift_ev=energy_shift_ev,
        )
    ratio = None
    if configured is not None:
        ratio = abs(best["dr_dx"]) / abs(configured) if configured != 0 else float("inf")
    return {
        "best_edge_ev": best["edge_ev"],
        "best_sensitivity": best["dr_dx"],
        "configured_edge_ev": edge_ev,
        "configured_sensitivity": configured,
        "ratio": ratio,
        "pre_edge_ev": float(pre_ev),
        "post_edge_ev": float(post_ev),
        "table": table,
    }


def check_edge_sensitivity(
    r_pristine: float,
    r_charged: float,
    r_noise: float,
    *,
    pristine: Spectrum | None = None,
    charged: Spectrum | None = None,
    energies_ev: tuple[float, float, float] | None = None,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
    k: float = 3.0,
) -> str | None:
    """Warn when the references' R difference is small compared with the noise in R.

    Parameters
    ----------
    r_pristine, r_charged : float
        Reference ratios at the configured energies.
    r_noise : float
        Noise (standard deviation) of R in the data, e.g. from repeats or a uniform region.
    pristine, charged, energies_ev : optional
        When given, the message names the edge energy with the largest dR/dx_Li
        (:func:`litomo.xanes.advisor.advise_edge_energy`).
    k : float
        Warn when ``|r_charged - r_pristine| < k * r_noise``.

    Returns
    -------
    str or None
        The warning text (also issued as a ``UserWarning`` and logged), or None when sensitive.
    """
    diff = abs(float(r_charged) - float(r_pristine))
    if diff >= k * float(r_noise):
        return None
    msg = (
        f"edge energy is insensitive to Li: |R_charged - R_pristine| = {diff:.3g} is below "
        f"{k:g} x the noise in R ({r_noise:.3g})"
    )
    if pristine is not None and charged is not None and energies_ev is not None:
        adv = advise_edge_energy(
            pristine,
            charged,
            energies_ev[0],
            energies_ev[2],
            edge_ev=energies_ev[1],
            li_pristine=li_pristine,
            li_charged=li_charged,
        )
        msg += (
            f"; an edge energy of {adv['best_edge_ev']:.1f} eV would be "
            f"{adv['ratio']:.1f}x more sensitive (dR/dx_Li {adv['best_sensitivity']:.3g})"
        )
    log.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=2)
    return msg

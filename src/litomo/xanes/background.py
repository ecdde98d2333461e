"""Non-resonant background of the active material from tabulated cross-sections (issue 16).

Around a K edge, every voxel's attenuation is ``mu(E) = b * f(E) + J * n(E)``: the edge
element's resonant absorption ``J n(E)`` (``n`` = normalised spectrum) on top of the
non-resonant absorption of everything else, whose *shape* ``f(E)`` (``f(E_pre) = 1``) is fixed
by the composition. :func:`litomo.xanes.threeenergy.background_corrected_ratio` solves ``b`` and
``J`` per voxel from the pre- and post-edge images, so only the shape is needed, and it comes
from the Elam tables (xraydb, total attenuation incl. scattering):

- every element other than the edge element contributes its tabulated attenuation, weighted by
  its mass fraction;
- the edge element contributes its absorption by the shells *other than* the K shell (the L
  and M shells), which the tables give below the edge only: it is extended above the edge by
  the power law ``mu ~ E^-q`` fitted to the tabulated values 80-250 eV below the edge (the
  post-edge fall of the K-shell absorption itself is part of the normalised spectrum's
  flattening, not of the background).

For NMC811 this gives ``f(8430 eV) / f(8330 eV)`` = 0.969, an effective exponent of 2.65
(photo-absorption alone would give ~2.8: coherent and Compton scattering fall more slowly).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.errors import DataError

log = logging.getLogger(__name__)

#: K-edge element of the Li maps (Ni K edge, 8333 eV)
EDGE_ELEMENT = "Ni"


@dataclass(frozen=True)
class BackgroundLaw:
    """Shape of the non-resonant background at the map's energies.

    Attributes
    ----------
    law : {"none", "power", "tabulated"}
        ``"none"``: no background term (SPEC 2.1's plain ratio); ``"power"``: ``(E/E_pre)^-p``
        with the manifest's ``background_exponent``; ``"tabulated"``: from ``composition``.
    factors : tuple of float
        ``f(E) / f(E_pre)`` at each energy (first = 1).
    effective_exponent : float
        ``p`` of the power law with the same first-to-last ratio.
    composition : str or None
        The formula the tabulated law was computed for.
    """

    law: str
    factors: tuple[float, ...]
    effective_exponent: float
    composition: str | None = None


def parse_composition(formula: str, *, edge_element: str = EDGE_ELEMENT) -> dict[str, float]:
    """Atoms per formula unit of a chemical formula, e.g. ``"LiNi0.8Mn0.1Co0.1O2"``.

    Raises
    ------
    DataError
        If the formula does not parse, names an unknown element, has a non-positive amount or
        does not contain the edge element.

    Examples
    --------
    >>> parse_composition("LiNi0.8Mn0.1Co0.1O2")
    {'Li': 1.0, 'Ni': 0.8, 'Mn': 0.1, 'Co': 0.1, 'O': 2.0}
    """
    import xraydb

    if not isinstance(formula, str) or not formula.strip():
        raise DataError(f"expected a chemical formula like 'LiNi0.8Mn0.1Co0.1O2', got {formula!r}")
    try:
        atoms = xraydb.chemparse(formula.strip())
    except (ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read the formula {formula!r}: {first}") from None
    if not atoms:
        raise DataError(f"the formula {formula!r} names no element")
    out = {str(k): float(v) for k, v in atoms.items()}
    bad = [k for k, v in out.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        raise DataError(f"the formula {formula!r} gives a non-positive amount of {', '.join(bad)}")
    if edge_element not in out:
        raise DataError(f"the formula {formula!r} has no {edge_element}: no {edge_element} K edge to map")
    return out


def _mu(element: str, energies_ev: np.ndarray) -> np.ndarray:
    import xraydb

    return np.asarray(xraydb.mu_elam(element, energies_ev, kind="total"), dtype=float)


def matrix_background(composition: str, energies_ev, *, edge_element: str = EDGE_ELEMENT) -> np.ndarray:
    """Non-resonant mass attenuation (cm^2/g) of ``composition`` at ``energies_ev``.

    Everything but the edge element's K shell (see the module docstring).

    Examples
    --------
    >>> f = matrix_background("LiNi0.8Mn0.1Co0.1O2", [8330.0, 8430.0])
    >>> round(float(-np.log(f[1] / f[0]) / np.log(8430 / 8330)), 2)
    2.65
    """
    import xraydb

    atoms = parse_composition(composition, edge_element=edge_element)
    e = np.atleast_1d(np.asarray(energies_ev, dtype=float))
    mass = {k: v * xraydb.atomic_mass(k) for k, v in atoms.items()}
    total = sum(mass.values())
    edge_ev = float(xraydb.xray_edge(edge_element, "K").energy)
    below = edge_ev - np.array([250.0, 200.0, 150.0, 100.0, 80.0])
    q, c = np.polyfit(np.log(below), np.log(_mu(edge_element, below)), 1)
    out = mass[edge_element] / total * np.exp(c + q * np.log(e))
    for el, m in mass.items():
        if el != edge_element:
            out = out + m / total * _mu(el, e)
    return out


def background_law(energies_ev, *, composition: str | None = None,
                   exponent: float | None = None) -> BackgroundLaw:
    """The background law a map uses: the exponent if given, else tabulated for the composition, else none.

    Parameters
    ----------
    energies_ev : sequence of float
        The map's energies (foil-corrected), increasing; factors are relative to the first.
    composition : str, optional
        Chemical formula of the active material (``[sample] composition``).
    exponent : float, optional
        ``[processing] background_exponent``: an explicit power law overrides the composition.

    Examples
    --------
    >>> law = background_law([8330.0, 8345.0, 8430.0], composition="LiNi0.8Mn0.1Co0.1O2")
    >>> law.law, round(law.factors[2], 3)
    ('tabulated', 0.969)
    >>> background_law([8330.0, 8430.0]).law
    'none'
    """
    e = np.asarray(energies_ev, dtype=float)
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
        raise DataError(f"energies must be at least two increasing values, got {list(e)}")
    span = math.log(e[-1] / e[0])
    if exponent is not None:
        p = float(exponent)
        return BackgroundLaw("power" if p else "none", tuple(float(v) for v in (e / e[0]) ** -p), p)
    if composition is None:
        return BackgroundLaw("none", (1.0,) * e.size, 0.0)
    mu = matrix_background(composition, e)
    f = mu / mu[0]
    p_eff = -math.log(float(f[-1])) / span
    log.info("background of %s: f(E_last)/f(E_first) = %.4f (E^-%.2f)", composition, f[-1], p_eff)
    return BackgroundLaw("tabulated", tuple(float(v) for v in f), p_eff, composition.strip())


#: measured / predicted non-resonant level outside this band: the map stage warns (session 8)
LEVEL_RATIO_BAND = (0.5, 2.0)


def predicted_level_ratio(composition: str, pre_ev: float, *, edge_element: str = EDGE_ELEMENT) -> float:
    """Non-resonant attenuation at the pre-edge energy over the K-edge jump, from the tables.

    A material constant of the active material (density cancels): ``b / J`` of
    ``mu(E) = b f(E) + J n(E)``, the matrix of :func:`matrix_background` at ``pre_ev`` over the
    edge element's K-shell jump (Elam tables, 0.5 eV either side of the edge) times its mass
    fraction.

    Examples
    --------
    >>> round(predicted_level_ratio("LiNi0.8Mn0.1Co0.1O2", 8330.0), 2)
    0.41
    """
    import xraydb

    atoms = parse_composition(composition, edge_element=edge_element)
    mass = {k: v * xraydb.atomic_mass(k) for k, v in atoms.items()}
    e0 = float(xraydb.xray_edge(edge_element, "K").energy)
    below, above = _mu(edge_element, np.array([e0 - 0.5, e0 + 0.5]))
    jump = mass[edge_element] / sum(mass.values()) * float(above - below)
    return float(matrix_background(composition, [float(pre_ev)], edge_element=edge_element)[0] / jump)


def level_and_jump(mu_pre: Any, mu_post: Any, f_post: float,
                   reference_levels: tuple[float, float]) -> tuple[Any, Any]:
    """Non-resonant level ``b`` and edge jump ``J`` of ``mu(E) = b f(E) + J n(E)`` per voxel or bin.

    Solved exactly from the pre- and post-edge values (``f(E_pre) = 1``, ``f_post`` the law's
    factor at the post-edge energy, ``n_pre, n_post`` the references' normalised levels); numpy
    or dask operands.

    Examples
    --------
    >>> b, j = level_and_jump(np.array([0.05]), np.array([0.05 * 0.9 + 0.06]), 0.9, (0.0, 1.0))
    >>> round(float(b[0]), 6), round(float(j[0]), 6)
    (0.05, 0.06)
    """
    n_pre, n_post = (float(v) for v in reference_levels)
    det = n_post - f_post * n_pre
    return (mu_pre * n_post - mu_post * n_pre) / det, (mu_post - f_post * mu_pre) / det


def measured_level_ratio(mu_pre: np.ndarray, mu_post: np.ndarray, full: np.ndarray, f_post: float,
                         reference_levels: tuple[float, float]) -> float:
    """Median ``b / J`` over the bins ``full`` (active material only), solved per bin as the map does.

    ``b`` and ``J`` solve ``mu_pre = b + J n_pre``, ``mu_post = b f_post + J n_post``
    (:func:`level_and_jump`). NaN with fewer than 20 bins.

    Examples
    --------
    >>> j, b = np.full(50, 0.064), np.full(50, 0.026)
    >>> round(measured_level_ratio(b, 0.97 * b + j, np.ones(50, bool), 0.97, (0.0, 1.0)), 3)
    0.406
    """
    pre, post = np.asarray(mu_pre, np.float64)[full], np.asarray(mu_post, np.float64)[full]
    ok = np.isfinite(pre) & np.isfinite(post)
    if ok.sum() < 20:
        return float("nan")
    b, jump = level_and_jump(pre[ok], post[ok], f_post, reference_levels)
    return float(np.median(b) / np.median(jump))


def level_warning(measured: float, predicted: float, composition: str, what: str) -> str | None:
    """A warning line when the data's non-resonant level disagrees with the composition's.

    The map solves the level ``b`` per bin and uses only the law's *shape*, so a different
    amount (no background in simulated data, another density of heavy elements) does not move
    x_Li; an offset ``c`` common to the three energies does (it adds ``c (1 - f_post)`` to the
    jump: -0.05 in x_Li for 0.05 /um on NMC811), and it shows here as a level above the
    prediction.

    Examples
    --------
    >>> level_warning(0.40, 0.41, "NMC", "state I") is None
    True
    >>> level_warning(1.2, 0.41, "NMC", "state I").startswith("state I: the active material")
    True
    """
    if not (np.isfinite(measured) and np.isfinite(predicted) and predicted > 0):
        return None
    q = measured / predicted
    lo, hi = LEVEL_RATIO_BAND
    if lo <= q <= hi:
        return None
    cause = ("an offset in the volumes ([data] mu_offset_per_um: it biases x_Li) or a heavier matrix than "
             f"{composition!r}" if q > hi else
             f"no non-resonant absorption in the data (a simulation) or a lighter matrix than {composition!r}; "
             "the map uses only the background's shape, so x_Li is not affected by the amount")
    return (f"{what}: the active material's non-resonant level over its edge jump is {measured:.3f} in the data, "
            f"{predicted:.3f} for {composition!r} ({q:.1f}x): {cause}")

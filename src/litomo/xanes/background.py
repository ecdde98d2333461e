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

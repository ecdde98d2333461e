"""Edge features of normalised XANES spectra: half-jump edge energy and white line (SPEC 2.2).

Split from :mod:`litomo.xanes.normalize` (which re-exports them); energy is axis 0 of ``norm``,
numpy or dask.
"""

from __future__ import annotations

import numpy as np

from litomo.errors import DataError


def check_energy_ev(energy_ev, n: int) -> np.ndarray:
    """The energy axis of ``n`` spectra as floats (eV), or a :class:`DataError` naming what is wrong.

    Examples
    --------
    >>> check_energy_ev([8330, 8340, 8350, 8360], 4).tolist()
    [8330.0, 8340.0, 8350.0, 8360.0]
    """
    e = np.asarray(energy_ev, dtype=float)
    if e.ndim != 1 or e.size != n:
        raise DataError(f"energy_ev must be 1-D with {n} values (mu axis 0), got shape {e.shape}")
    if e.size < 4:
        raise DataError(f"full-spectrum analysis needs at least 4 energies, got {e.size}")
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise DataError("energy_ev must be finite and strictly increasing")
    if e.max() < 100:
        raise DataError("energies look like keV; convert to eV (multiply by 1000)")
    return e



def edge_energy_half(energy_ev, norm):
    """Energy (eV) where the normalised spectrum first rises through 0.5, linearly interpolated.

    Parameters
    ----------
    energy_ev : array (E,)
    norm : array (E, ...), numpy or dask (energy axis whole)

    Returns
    -------
    array (...)
        NaN where the spectrum never crosses 0.5 (or is NaN).

    Examples
    --------
    >>> float(edge_energy_half(np.array([8330., 8340., 8350., 8360.]), np.array([0., 0.2, 0.8, 1.])))
    8345.0
    """
    if type(norm).__module__.startswith("dask"):
        import dask.array as da

        n = norm.rechunk({0: -1})
        e = check_energy_ev(energy_ev, n.shape[0])
        return da.map_blocks(
            lambda b: _half_np(e, b)[None], n, chunks=((1,),) + n.chunks[1:], dtype=float
        )[0]
    norm = np.asarray(norm, dtype=float)
    e = check_energy_ev(energy_ev, norm.shape[0])
    return _half_np(e, norm)


def _half_np(e: np.ndarray, norm: np.ndarray):
    norm = np.asarray(norm, dtype=float)
    cross = (norm[1:] >= 0.5) & (norm[:-1] < 0.5)
    i = np.argmax(cross, axis=0) + 1
    found = cross.any(axis=0)
    n_hi = np.take_along_axis(norm, i[None], axis=0)[0]
    n_lo = np.take_along_axis(norm, (i - 1)[None], axis=0)[0]
    e_hi, e_lo = e[i], e[i - 1]
    out = e_lo + (0.5 - n_lo) * (e_hi - e_lo) / np.where(found, n_hi - n_lo, 1.0)
    out = np.where(found, out, np.nan)
    return float(out) if out.ndim == 0 else out


def white_line(energy_ev, norm, *, search_ev: tuple[float, float] | None = None):
    """White-line position (eV) and height: maximum of the normalised spectrum.

    The maximum grid point is refined by the vertex of the parabola through it and its two
    neighbours (exact for non-uniform grids), so the position is not quantised to the energy step.

    Parameters
    ----------
    energy_ev : array (E,)
    norm : array (E, ...)
    search_ev : (float, float), optional
        Only look for the maximum between these energies (eV).

    Returns
    -------
    (energy_ev, height) : arrays (...)

    Examples
    --------
    >>> e = np.arange(8340.0, 8361.0)
    >>> pos, h = white_line(e, 1.0 + 0.5 * np.exp(-((e - 8349.3) / 3) ** 2))
    >>> round(float(pos), 1), round(float(h), 2)
    (8349.3, 1.5)
    """
    norm = np.asarray(norm, dtype=float)
    e = check_energy_ev(energy_ev, norm.shape[0])
    sel = np.ones(e.size, bool) if search_ev is None else (e >= search_ev[0]) & (e <= search_ev[1])
    if sel.sum() < 3:
        raise DataError(f"white-line search range {search_ev} holds fewer than 3 energies")
    work = np.where(sel.reshape((-1,) + (1,) * (norm.ndim - 1)), norm, -np.inf)
    work = np.where(np.isnan(work), -np.inf, work)
    i = np.clip(np.argmax(work, axis=0), 1, e.size - 2)
    y0 = np.take_along_axis(norm, (i - 1)[None], axis=0)[0]
    y1 = np.take_along_axis(norm, i[None], axis=0)[0]
    y2 = np.take_along_axis(norm, (i + 1)[None], axis=0)[0]
    x0, x1, x2 = e[i - 1], e[i], e[i + 1]
    # parabola through three points: vertex of y = a(x-x1)^2 + b(x-x1) + y1
    d0, d2 = x0 - x1, x2 - x1
    den = d0 * d2 * (d0 - d2)
    a = ((y0 - y1) * d2 - (y2 - y1) * d0) / np.where(den == 0, np.nan, den)
    b = ((y2 - y1) * d0**2 - (y0 - y1) * d2**2) / np.where(den == 0, np.nan, den)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = np.where(a < 0, -b / (2 * a), 0.0)
    dx = np.clip(np.nan_to_num(dx), d0, d2)
    pos = x1 + dx
    height = np.where(a < 0, y1 + a * dx**2 + b * dx, y1)
    allnan = ~np.isfinite(norm).any(axis=0)
    pos = np.where(allnan, np.nan, pos)
    height = np.where(allnan, np.nan, height)
    if pos.ndim == 0:
        return float(pos), float(height)
    return pos, height

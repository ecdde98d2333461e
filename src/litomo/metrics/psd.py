"""Per-particle summaries the seed papers show: a laser-diffraction-style volume PSD (with the
boundary-exclusion bias corrected), the comparison with a supplier's D10/D50/D90, surface
coverage against particle size, and the representative particle.

Input is the particle table of :func:`litomo.metrics.particles.shape_table` (columns
``eq_diameter_um``, ``volume_um3``, ``touches_boundary``, ``sphericity``, ``coverage_*``).

Why the edge correction: particles cut by the volume boundary are excluded from size
statistics, and a large particle is more likely to be cut than a small one, so the inner
particles under-represent the large sizes. Each inner particle is weighted by the inverse of
the probability that a particle of its size lies wholly inside the box (Miles-Lantuejoul,
``prod_i L_i / (L_i - d)`` with the equivalent diameter ``d`` standing in for the particle's
extent along each axis: exact for spheres, an approximation for elongated particles).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from litomo.errors import DataError
from litomo.metrics.particles import weighted_quantile

#: the supplier's values are volume-based (laser diffraction measures a volume distribution)
D_NAMES = ("d10", "d50", "d90")


def edge_weights(diameters_um: np.ndarray, box_um: Sequence[float]) -> np.ndarray:
    """Miles-Lantuejoul weights ``prod L_i / (L_i - d)`` (NaN where ``d`` does not fit).

    Examples
    --------
    >>> edge_weights(np.array([0.0, 5.0]), (10.0, 10.0, 10.0)).tolist()
    [1.0, 8.0]
    """
    d = np.asarray(diameters_um, float)[:, None]
    box = np.asarray(box_um, float)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.prod(box / (box - d), axis=1)
    return np.where(np.all(d < box, axis=1), w, np.nan)


def volume_psd(diameters_um: np.ndarray, volumes_um3: np.ndarray, weights: np.ndarray | None = None, *,
               classes_per_decade: int = 20) -> pd.DataFrame:
    """Volume-weighted size distribution on geometric size classes, as laser diffraction reports it.

    Parameters
    ----------
    diameters_um, volumes_um3 : 1-D arrays
        Equivalent-sphere diameter and volume of each particle.
    weights : 1-D array, optional
        Extra per-particle weights (e.g. :func:`edge_weights`).
    classes_per_decade : int
        Geometric size classes per decade of diameter.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``size_low_um, size_high_um, size_mid_um`` (geometric centre),
        ``q3_percent`` (volume % in the class), ``Q3_percent`` (cumulative volume % below
        ``size_high_um``) and ``q3_density_per_ln`` (``q3 / ln(high / low)``, a density that does
        not depend on the class width).

    Examples
    --------
    >>> t = volume_psd(np.array([1.0, 2.0]), np.array([1.0, 3.0]), classes_per_decade=5)
    >>> float(t["q3_percent"].sum()), float(t["Q3_percent"].iloc[-1])
    (100.0, 100.0)
    """
    d = np.asarray(diameters_um, float)
    v = np.asarray(volumes_um3, float) * (1.0 if weights is None else np.asarray(weights, float))
    ok = np.isfinite(d) & (d > 0) & np.isfinite(v) & (v > 0)
    if not ok.any():
        return pd.DataFrame(columns=["size_low_um", "size_high_um", "size_mid_um", "q3_percent", "Q3_percent",
                                     "q3_density_per_ln"])
    d, v = d[ok], v[ok]
    lo = math.floor(math.log10(d.min()) * classes_per_decade)
    hi = math.floor(math.log10(d.max()) * classes_per_decade) + 1
    edges = 10.0 ** (np.arange(lo, hi + 1) / classes_per_decade)
    hist, _ = np.histogram(d, bins=edges, weights=v)
    q3 = 100.0 * hist / hist.sum()
    return pd.DataFrame({
        "size_low_um": edges[:-1], "size_high_um": edges[1:], "size_mid_um": np.sqrt(edges[:-1] * edges[1:]),
        "q3_percent": q3, "Q3_percent": np.cumsum(q3), "q3_density_per_ln": q3 / np.log(edges[1:] / edges[:-1]),
    })


def d_values(psd: pd.DataFrame) -> dict[str, float]:
    """D10/D50/D90 from the cumulative curve of :func:`volume_psd` (log-linear interpolation
    between class edges, as laser-diffraction software does).

    Examples
    --------
    >>> t = volume_psd(np.array([1.0, 2.0]), np.array([1.0, 1.0]), classes_per_decade=5)
    >>> round(d_values(t)["d50_um"], 3)  # the edge between the two classes
    1.585
    """
    if psd.empty:
        return {f"{n}_um": math.nan for n in D_NAMES}
    edges = np.concatenate([[psd["size_low_um"].iloc[0]], psd["size_high_um"].to_numpy()])
    cum = np.concatenate([[0.0], psd["Q3_percent"].to_numpy()])
    keep = np.concatenate([[True], np.diff(cum) > 0])  # flat stretches would make the inverse ambiguous
    out = {}
    for name, q in zip(D_NAMES, (10.0, 50.0, 90.0), strict=True):
        out[f"{name}_um"] = float(10.0 ** np.interp(q, cum[keep], np.log10(edges[keep])))
    return out


def particle_psd(table: pd.DataFrame, box_um: Sequence[float], *, classes_per_decade: int = 20,
                 supplier_um: Sequence[float] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Edge-corrected volume PSD of the inner particles and its D-values (+ supplier comparison).

    Parameters
    ----------
    table : pandas.DataFrame
        Particle table (``eq_diameter_um``, ``volume_um3``, ``touches_boundary``).
    box_um : (z, y, x)
        Edge lengths of the analysed volume in um.
    classes_per_decade : int
    supplier_um : (D10, D50, D90), optional
        A supplier's volume-based values (laser diffraction) to compare with.

    Returns
    -------
    (pandas.DataFrame, dict)
        The :func:`volume_psd` table and ``{d10_um, d50_um, d90_um}`` (edge-corrected, from the
        classes), ``d*_uncorrected_um`` (the same without the correction) and, with
        ``supplier_um``, ``d*_supplier_um`` and ``d*_ratio`` (measured / supplier).

    Examples
    --------
    >>> t = pd.DataFrame({"eq_diameter_um": [2.0, 4.0], "volume_um3": [4.19, 33.5],
    ...                   "touches_boundary": [False, False]})
    >>> psd, d = particle_psd(t, (20.0, 20.0, 20.0), supplier_um=(2.0, 4.0, 4.5))
    >>> sorted(k for k in d if k.startswith("d50"))
    ['d50_ratio', 'd50_supplier_um', 'd50_um', 'd50_uncorrected_um']
    """
    if supplier_um is not None:
        s = [float(x) for x in supplier_um]
        if len(s) != 3 or not all(x > 0 for x in s) or not s[0] <= s[1] <= s[2]:
            raise DataError(f"--supplier-psd must be three increasing positive numbers D10,D50,D90 in um, got {s}")
    inner = table[~table["touches_boundary"].astype(bool)]
    d = inner["eq_diameter_um"].to_numpy(float)
    vol = inner["volume_um3"].to_numpy(float)
    w = edge_weights(d, box_um)
    psd = volume_psd(d, vol, np.nan_to_num(w, nan=0.0), classes_per_decade=classes_per_decade)
    out = d_values(psd)
    raw = weighted_quantile(d, np.array([0.1, 0.5, 0.9]), vol) if d.size else np.full(3, math.nan)
    for name, val in zip(D_NAMES, raw, strict=True):
        out[f"{name}_uncorrected_um"] = float(val)
    if supplier_um is not None:
        for name, val in zip(D_NAMES, s, strict=True):
            out[f"{name}_supplier_um"] = val
            out[f"{name}_ratio"] = out[f"{name}_um"] / val
    return psd, out


def coverage_vs_size(table: pd.DataFrame, n_classes: int = 5) -> tuple[pd.DataFrame, dict[str, float]]:
    """Surface coverage by CBD and by other AM (contacts) against particle size.

    Returns the median coverage per size class (number quantiles of the inner particles'
    diameters) and the Spearman rank correlation of each coverage with the diameter.

    Examples
    --------
    >>> t = pd.DataFrame({"eq_diameter_um": [1.0, 2, 3, 4], "coverage_cbd": [0.1, 0.2, 0.3, 0.4],
    ...                   "coverage_am": [0.4, 0.3, 0.2, 0.1], "touches_boundary": [False] * 4})
    >>> _, rho = coverage_vs_size(t, 2)
    >>> rho["coverage_cbd"], rho["coverage_am"]
    (1.0, -1.0)
    """
    from scipy.stats import spearmanr

    inner = table[~table["touches_boundary"].astype(bool)]
    cols = [c for c in ("coverage_cbd", "coverage_am", "coverage_pore") if c in inner]
    rho: dict[str, float] = {}
    for c in cols:
        x, y = inner["eq_diameter_um"].to_numpy(float), inner[c].to_numpy(float)
        ok = np.isfinite(y)
        varies = ok.sum() > 2 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0  # else rho is undefined
        rho[c] = float(spearmanr(x[ok], y[ok]).statistic) if varies else math.nan
    if inner.empty:
        return pd.DataFrame(columns=["size_class", "d_low_um", "d_high_um", "n", *cols]), rho
    edges = np.quantile(inner["eq_diameter_um"], np.linspace(0, 1, n_classes + 1))
    cls = np.clip(np.searchsorted(edges, inner["eq_diameter_um"], side="right") - 1, 0, n_classes - 1)
    g = inner.assign(size_class=cls).groupby("size_class")
    out = g[cols].median().reset_index()
    out.insert(1, "d_low_um", edges[out["size_class"]])
    out.insert(2, "d_high_um", edges[out["size_class"] + 1])
    out.insert(3, "n", g.size().to_numpy())
    return out, rho


def representative_particle(table: pd.DataFrame,
                            features: Sequence[str] = ("eq_diameter_um", "sphericity", "coverage_cbd",
                                                       "coverage_am")) -> int:
    """Id of the inner particle nearest the population median in robust units.

    Each feature is centred on the inner particles' median and scaled by its interquartile
    range (the diameter on a log scale); the particle with the smallest Euclidean distance wins.
    Features absent from the table, or not finite for a particle, are left out for it.
    Returns -1 when there is no inner particle.

    Examples
    --------
    >>> t = pd.DataFrame({"particle": [1, 2, 3], "eq_diameter_um": [1.0, 4.0, 9.0],
    ...                   "sphericity": [0.6, 0.8, 0.9], "touches_boundary": [False] * 3})
    >>> representative_particle(t)
    2
    """
    inner = table[~table["touches_boundary"].astype(bool)]
    if inner.empty:
        return -1
    dist = np.zeros(len(inner))
    for f in features:
        if f not in inner:
            continue
        x = inner[f].to_numpy(float)
        x = np.log(x) if f == "eq_diameter_um" else x
        q1, med, q3 = np.nanpercentile(x, [25, 50, 75]) if np.isfinite(x).any() else (0.0, 0.0, 0.0)
        z = (x - med) / (q3 - q1 if q3 > q1 else 1.0)
        dist += np.nan_to_num(z, nan=0.0) ** 2
    return int(inner["particle"].to_numpy()[int(np.argmin(dist))])

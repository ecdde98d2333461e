"""Crack-chemistry correlation: per-particle damage against the particle's Li content.

The damage volume (``litomo damage``) and the Li map (``litomo run``) are different volumes of
the same electrode on different grids, so particles are paired by centroid (um, same frame):
mutual nearest neighbours no further apart than ``max_distance_um`` (default half the damage
particle's equivalent diameter, so a pair is the same particle seen twice, not a neighbour).
Unpaired particles are counted, not guessed. The correlation is Spearman's rank correlation
(monotone, robust to the different scales of the metrics) with its two-sided p-value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from litomo.errors import DataError

DAMAGE_COLUMNS = ("damage_index", "crack_fraction", "edge_density_per_um", "cbd_detached_fraction")
LI_COLUMNS = ("mean_li", "std_li", "li_rich_fraction", "surface_activity")
#: damage classes carried into the pair table beside the metrics (not correlated: categorical)
CLASS_COLUMNS = ("damage_class", "edge_damage_class")
_XYZ = ("centroid_z_um", "centroid_y_um", "centroid_x_um")


def match_by_centroid(a: pd.DataFrame, b: pd.DataFrame, max_distance_um: float | np.ndarray | None = None
                      ) -> pd.DataFrame:
    """Mutual nearest-neighbour pairs of two particle tables by centroid.

    Returns ``particle_a, particle_b, distance_um`` for the pairs within ``max_distance_um``
    (a number, or one per row of ``a``; default half of ``a``'s ``eq_diameter_um``).

    Examples
    --------
    >>> a = pd.DataFrame({"particle": [1, 2], "centroid_z_um": [0.0, 10], "centroid_y_um": [0.0, 0],
    ...                   "centroid_x_um": [0.0, 0], "eq_diameter_um": [4.0, 4.0]})
    >>> b = a.assign(particle=[7, 8], centroid_x_um=[0.5, 9.0])
    >>> match_by_centroid(a, b)[["particle_a", "particle_b"]].values.tolist()
    [[1, 7]]
    """
    from scipy.spatial import cKDTree

    for name, t in (("damage", a), ("Li", b)):
        missing = [c for c in ("particle", *_XYZ) if c not in t]
        if missing:
            raise DataError(f"the {name} particle table lacks column(s) {', '.join(missing)} (--li-run)")
    if len(a) == 0 or len(b) == 0:
        return pd.DataFrame({"particle_a": [], "particle_b": [], "distance_um": []})
    pa, pb = a[list(_XYZ)].to_numpy(float), b[list(_XYZ)].to_numpy(float)
    d_ab, j = cKDTree(pb).query(pa)
    _, i_back = cKDTree(pa).query(pb)
    limit = 0.5 * a["eq_diameter_um"].to_numpy(float) if max_distance_um is None else np.broadcast_to(
        np.asarray(max_distance_um, float), d_ab.shape)
    ok = (i_back[j] == np.arange(len(a))) & (d_ab <= limit)
    return pd.DataFrame({"particle_a": a["particle"].to_numpy()[ok], "particle_b": b["particle"].to_numpy()[j[ok]],
                         "distance_um": d_ab[ok]})


def crack_li_table(damage: pd.DataFrame, li: pd.DataFrame, *, state: str | None = None,
                   max_distance_um: float | None = None) -> pd.DataFrame:
    """Paired particles: the damage metrics beside the Li columns of one state.

    Parameters
    ----------
    damage : pandas.DataFrame
        Per-particle damage table (``particle``, centroids, ``eq_diameter_um`` and any of
        :data:`DAMAGE_COLUMNS`).
    li : pandas.DataFrame
        ``tables/particles.csv`` of a Li run (a ``state`` column selects the rows of ``state``;
        default the last state in the file).
    state : str, optional
    max_distance_um : float, optional
        See :func:`match_by_centroid`.

    Returns
    -------
    pandas.DataFrame
        ``particle`` (damage id), ``particle_li``, ``distance_um``, the damage columns and the
        Li columns present.

    Examples
    --------
    >>> d = pd.DataFrame({"particle": [1], "centroid_z_um": [1.0], "centroid_y_um": [1.0], "centroid_x_um": [1.0],
    ...                   "eq_diameter_um": [3.0], "damage_index": [0.4]})
    >>> li = d.drop(columns="damage_index").assign(particle=5, mean_li=0.7, state="s1")
    >>> crack_li_table(d, li)[["particle", "particle_li", "damage_index", "mean_li"]].values.tolist()
    [[1.0, 5.0, 0.4, 0.7]]
    """
    if "state" in li:
        states = list(dict.fromkeys(li["state"].astype(str)))
        pick = states[-1] if state is None else state
        if pick not in states:
            raise DataError(f"--li-state {pick!r} is not in the Li run (states: {', '.join(states)})")
        li = li[li["state"].astype(str) == pick]
    pairs = match_by_centroid(damage, li, max_distance_um)
    dcols = ["particle", *[c for c in (*DAMAGE_COLUMNS, *CLASS_COLUMNS) if c in damage]]
    lcols = ["particle", *[c for c in LI_COLUMNS if c in li]]
    out = pairs.rename(columns={"particle_a": "particle", "particle_b": "particle_li"})
    out = out.merge(damage[dcols], on="particle", how="left")
    return out.merge(li[lcols].rename(columns={"particle": "particle_li"}), on="particle_li", how="left")


def crack_li_correlation(table: pd.DataFrame, damage_columns: Sequence[str] = DAMAGE_COLUMNS,
                         li_columns: Sequence[str] = LI_COLUMNS) -> pd.DataFrame:
    """Spearman rank correlation of every damage metric with every Li metric.

    Returns one row per pair present: ``damage_metric, li_metric, n, spearman_rho, p_value``
    (NaN with fewer than 3 finite pairs or a constant column).

    Examples
    --------
    >>> t = pd.DataFrame({"damage_index": [0.1, 0.2, 0.5, 0.9], "mean_li": [0.9, 0.8, 0.6, 0.5]})
    >>> crack_li_correlation(t)[["damage_metric", "li_metric", "spearman_rho"]].values.tolist()
    [['damage_index', 'mean_li', -1.0]]
    """
    from scipy.stats import spearmanr

    rows = []
    for dc in [c for c in damage_columns if c in table]:
        for lc in [c for c in li_columns if c in table]:
            x, y = table[dc].to_numpy(float), table[lc].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            rho = p = np.nan
            if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
                res = spearmanr(x[ok], y[ok])
                rho, p = float(res.statistic), float(res.pvalue)
            rows.append({"damage_metric": dc, "li_metric": lc, "n": int(ok.sum()), "spearman_rho": rho,
                         "p_value": p})
    return pd.DataFrame(rows, columns=["damage_metric", "li_metric", "n", "spearman_rho", "p_value"])

"""Across-state analysis of an operando series: particle tracking, Li evolution, difference maps.

All states are assumed registered onto the first (reference) state
(:func:`litomo.register.register_pair` / :func:`litomo.register.apply_transform` with
``order=0`` for label volumes), so a particle occupies nearly the same voxels in every
state. Particles are matched by overlap (intersection over union, optimal one-to-one
assignment with the Hungarian algorithm); particles left over fall back to centroid
distance, which catches particles that shifted more than their own overlap allows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from litomo.errors import DataError
from litomo.particles import check_particle_labels, particle_table
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)

_MATCH_COLUMNS = [
    "particle_ref", "particle_other", "overlap_fraction", "centroid_shift_um",
    "shift_z_um", "shift_y_um", "shift_x_um", "status",
]


def _centroids(lab: np.ndarray, vs: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, volumes in voxels, centroids (n, 3) in um) of the labels present."""
    t = particle_table(lab, vs)
    return (t["particle"].to_numpy(), t["n_voxels"].to_numpy(np.float64),
            t[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy())


def match_particles(
    labels_ref: Any,
    labels_other: Any,
    *,
    voxel_size_um: Any,
    max_distance_um: float | None = None,
    min_iou: float = 0.1,
    moved_threshold_um: float | None = None,
) -> pd.DataFrame:
    """Match particles of another state to those of the reference state.

    Parameters
    ----------
    labels_ref, labels_other : array_like of int, (z, y, x)
        Particle labels (0 = background) of the reference state and of the other state,
        on the same (registered) grid.
    voxel_size_um : float or (z, y, x)
        Voxel size in um.
    max_distance_um : float, optional
        Largest centroid distance for the fallback matching of particles without enough
        overlap (default: the reference particle's equivalent-sphere diameter; spheres
        that overlap by less than ``min_iou`` are already about a radius apart).
    min_iou : float
        Smallest intersection-over-union for an overlap match.
    moved_threshold_um : float, optional
        Matched pairs whose centroids are further apart than this are reported as
        ``"moved"`` (default: two of the largest voxel edges, above typical residual
        misregistration and centroid noise of digitised particles).

    Returns
    -------
    pandas.DataFrame
        One row per reference particle and per unmatched other particle:
        ``particle_ref, particle_other`` (nullable ints, <NA> where absent),
        ``overlap_fraction`` (IoU), ``centroid_shift_um`` and its ``shift_z/y/x_um``
        components (other minus reference), ``status``: ``"matched"`` (overlap match, shift
        below ``moved_threshold_um``), ``"moved"`` (larger shift, or found only by centroid
        distance), ``"vanished"`` (reference particle with no partner), ``"appeared"``
        (other particle with no partner). See :func:`match_summary`.

    Examples
    --------
    >>> ref = np.zeros((6, 6, 6), np.int32); ref[1:3, 1:3, 1:3] = 1; ref[4:6, 4:6, 4:6] = 2
    >>> other = np.where(ref == 1, 7, 0).astype(np.int32)  # particle 2 gone, 1 renamed 7
    >>> m = match_particles(ref, other, voxel_size_um=1.0)
    >>> m["status"].tolist(), int(m["particle_other"][0]), bool(pd.isna(m["particle_other"][1]))
    (['matched', 'vanished'], 7, True)
    """
    ref = check_particle_labels(labels_ref, name="labels_ref")
    oth = check_particle_labels(labels_other, name="labels_other")
    if ref.shape != oth.shape:
        raise DataError(
            f"label volumes differ in shape ({ref.shape} vs {oth.shape}); register the state onto the reference first"
        )
    if not 0 < min_iou <= 1:
        raise DataError(f"min_iou must be in (0, 1], got {min_iou}")
    vs = as_voxel_size(voxel_size_um)
    moved_thr = 2.0 * max(vs) if moved_threshold_um is None else float(moved_threshold_um)
    r = _centroids(ref, vs)
    o = _centroids(oth, vs)
    keys, inter, base, pr, po, iou = _overlaps(ref, oth, r, o, min_iou)
    partner_r, pair_iou = _assign_by_overlap(pr, po, iou, r[0].size, o[0].size)
    used_o = np.zeros(o[0].size, dtype=bool)
    used_o[partner_r[partner_r >= 0]] = True
    via_distance = _assign_by_distance(partner_r, used_o, r, o, vs, max_distance_um)
    ids_r, vol_r, cen_r = r
    ids_o, vol_o, cen_o = o
    has = partner_r >= 0
    shift = np.full((ids_r.size, 3), np.nan)
    shift[has] = cen_o[partner_r[has]] - cen_r[has]
    dist = np.linalg.norm(shift, axis=1)
    status = np.where(~has, "vanished", np.where(via_distance | (dist > moved_thr), "moved", "matched"))
    iou_col = np.where(has, pair_iou, 0.0)
    # a centroid-fallback pair may still overlap a little (below min_iou): report that
    if via_distance.any():
        lut = {(int(a), int(b)): float(c) for a, b, c in zip(keys // base, keys % base, inter, strict=True)}
        for k in np.flatnonzero(via_distance):
            j = partner_r[k]
            i = lut.get((int(ids_r[k]), int(ids_o[j])), 0.0)
            iou_col[k] = i / (vol_r[k] + vol_o[j] - i)

    appeared = np.flatnonzero(~used_o)
    nan_app = np.full(appeared.size, np.nan)
    out = pd.DataFrame(
        {
            "particle_ref": pd.array(np.r_[ids_r, np.zeros(appeared.size, np.int64)], dtype="Int64"),
            "particle_other": pd.array(
                np.r_[np.where(has, ids_o[np.maximum(partner_r, 0)] if ids_o.size else 0, 0), ids_o[appeared]],
                dtype="Int64",
            ),
            "overlap_fraction": np.r_[np.where(has, iou_col, np.nan), nan_app],
            "centroid_shift_um": np.r_[dist, nan_app],
            "shift_z_um": np.r_[shift[:, 0], nan_app],
            "shift_y_um": np.r_[shift[:, 1], nan_app],
            "shift_x_um": np.r_[shift[:, 2], nan_app],
            "status": np.r_[status, np.full(appeared.size, "appeared")],
        },
        columns=_MATCH_COLUMNS,
    )
    out.loc[out["status"] == "vanished", "particle_other"] = pd.NA
    out.loc[out["status"] == "appeared", "particle_ref"] = pd.NA
    return out


Centroids = tuple[np.ndarray, np.ndarray, np.ndarray]  # ids, voxel counts, centroids (um)


def _overlaps(ref: np.ndarray, oth: np.ndarray, r: Centroids, o: Centroids, min_iou: float) -> tuple[Any, ...]:
    """Sparse overlap table from the voxels labelled in both states, and its pairs above ``min_iou``
    (as positions into ``r``/``o``)."""
    pos_r = {int(i): k for k, i in enumerate(r[0])}
    pos_o = {int(i): k for k, i in enumerate(o[0])}
    both = (ref > 0) & (oth > 0)
    base = int(oth.max()) + 1
    keys, inter = np.unique(ref[both].astype(np.int64) * base + oth[both].astype(np.int64), return_counts=True)
    pr = np.array([pos_r[int(k)] for k in keys // base], dtype=np.intp)
    po = np.array([pos_o[int(k)] for k in keys % base], dtype=np.intp)
    iou = inter / (r[1][pr] + o[1][po] - inter) if keys.size else np.zeros(0)
    good = iou >= min_iou
    return keys, inter, base, pr[good], po[good], iou[good]


def _assign_by_overlap(pr: np.ndarray, po: np.ndarray, iou: np.ndarray, nr: int,
                       no: int) -> tuple[np.ndarray, np.ndarray]:
    """Partner position (-1: none) and IoU of each reference particle, maximising total IoU.

    Hungarian assignment per connected component of the overlap graph: components are tiny (a
    particle overlaps a few neighbours), a dense n_ref x n_other matrix is not.
    """
    partner_r = np.full(nr, -1, dtype=np.intp)
    pair_iou = np.zeros(nr)
    if not pr.size:
        return partner_r, pair_iou
    graph = sparse.coo_matrix((np.ones(pr.size), (pr, nr + po)), shape=(nr + no, nr + no))
    _, comp = connected_components(graph, directed=False)
    order = np.argsort(comp[pr], kind="stable")
    pr, po, iou = pr[order], po[order], iou[order]
    bounds = np.flatnonzero(np.diff(comp[pr])) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, pr.size], strict=True):
        if b - a == 1:
            partner_r[pr[a]], pair_iou[pr[a]] = po[a], iou[a]
            continue
        ur, ir = np.unique(pr[a:b], return_inverse=True)
        uo, io = np.unique(po[a:b], return_inverse=True)
        cost = np.zeros((ur.size, uo.size))
        cost[ir, io] = -iou[a:b]
        rows, cols = linear_sum_assignment(cost)
        for r_, c_ in zip(rows, cols, strict=True):
            if cost[r_, c_] < 0:
                partner_r[ur[r_]], pair_iou[ur[r_]] = uo[c_], -cost[r_, c_]
    return partner_r, pair_iou


def _assign_by_distance(partner_r: np.ndarray, used_o: np.ndarray, r: Centroids, o: Centroids,
                        vs: tuple[float, float, float], max_distance_um: float | None) -> np.ndarray:
    """Pair the still unmatched particles by centroid distance within the gate (in place);
    returns which reference particles were paired this way."""
    via_distance = np.zeros(partner_r.size, dtype=bool)
    free_r = np.flatnonzero(partner_r < 0)
    free_o = np.flatnonzero(~used_o)
    if not (free_r.size and free_o.size):
        return via_distance
    d = np.linalg.norm(r[2][free_r, None, :] - o[2][None, free_o, :], axis=-1)
    vv = float(np.prod(vs))
    gate = (np.full(free_r.size, float(max_distance_um)) if max_distance_um is not None
            else (6.0 * r[1][free_r] * vv / np.pi) ** (1.0 / 3.0))
    big = 1e12
    cost = np.where(d <= gate[:, None], d, big)
    rows, cols = linear_sum_assignment(cost)
    for r_, c_ in zip(rows, cols, strict=True):
        if cost[r_, c_] < big:
            partner_r[free_r[r_]] = free_o[c_]
            via_distance[free_r[r_]] = True
            used_o[free_o[c_]] = True
    return via_distance


def match_summary(matches: pd.DataFrame) -> dict[str, Any]:
    """Counts from :func:`match_particles`.

    Returns
    -------
    dict
        ``n_ref, n_other, n_matched, n_moved, n_vanished, n_appeared`` and
        ``matched_fraction`` = (matched + moved) / n_ref (NaN-free: 0 when n_ref is 0),
        plus ``median_shift_um`` of the tracked pairs.

    Examples
    --------
    >>> m = pd.DataFrame({"status": ["matched", "moved", "vanished", "appeared"],
    ...                   "centroid_shift_um": [0.1, 2.0, np.nan, np.nan]})
    >>> s = match_summary(m); s["matched_fraction"], s["n_other"]
    (0.6666666666666666, 3)
    """
    counts = matches["status"].value_counts()
    c = {k: int(counts.get(k, 0)) for k in ("matched", "moved", "vanished", "appeared")}
    n_ref = c["matched"] + c["moved"] + c["vanished"]
    tracked = matches.loc[matches["status"].isin(["matched", "moved"]), "centroid_shift_um"]
    return {
        "n_ref": n_ref,
        "n_other": c["matched"] + c["moved"] + c["appeared"],
        "n_matched": c["matched"],
        "n_moved": c["moved"],
        "n_vanished": c["vanished"],
        "n_appeared": c["appeared"],
        "matched_fraction": (c["matched"] + c["moved"]) / n_ref if n_ref else 0.0,
        "median_shift_um": float(tracked.median()) if len(tracked) else None,
    }


def evolution_table(
    particle_tables: Mapping[str, pd.DataFrame],
    matches: Mapping[str, pd.DataFrame],
    *,
    columns: tuple[str, ...] = ("mean_li", "li_rich_fraction", "surface_activity", "volume_um3"),
) -> pd.DataFrame:
    """Li evolution of every reference particle across states (long format).

    Parameters
    ----------
    particle_tables : mapping state -> DataFrame
        Each state's own per-particle table (:func:`litomo.statistics.li_particle_table` on that
        state's map and labels, i.e. its ``particles.csv``), in state order; the first state is
        the reference. The carried columns keep their meaning: ``mean_li`` here is the same
        number as in that state's ``particles.csv``. The matches' ``particle_other`` ids must
        be ids of these tables (nearest-neighbour resampling of a label volume keeps its ids).
    matches : mapping state -> DataFrame
        :func:`match_particles` (reference labels vs that state's labels) for every state but
        the reference (an entry for the reference is ignored).
    columns : tuple of str
        Particle-table columns to carry; each gets a ``delta_<column>`` (state minus
        reference) as well. Columns missing from the tables are skipped.

    Returns
    -------
    pandas.DataFrame
        One row per (reference particle, state): ``particle_ref, state, particle`` (the
        particle's label in that state, <NA> if vanished), ``status`` (``"reference"``,
        ``"matched"``, ``"moved"``, ``"vanished"``), the columns and their deltas. Pivot
        with ``df.pivot(index="particle_ref", columns="state", values="mean_li")``.

    Examples
    --------
    >>> t0 = pd.DataFrame({"particle": [1, 2], "mean_li": [1.0, 0.9]})
    >>> t1 = pd.DataFrame({"particle": [5], "mean_li": [0.7]})
    >>> m1 = pd.DataFrame({"particle_ref": pd.array([1, 2], dtype="Int64"),
    ...                    "particle_other": pd.array([5, None], dtype="Int64"),
    ...                    "status": ["matched", "vanished"]})
    >>> e = evolution_table({"s0": t0, "s1": t1}, {"s1": m1}, columns=("mean_li",))
    >>> e.loc[e.state == "s1", "delta_mean_li"].round(3).tolist()
    [-0.3, nan]
    """
    if not particle_tables:
        raise DataError("evolution_table needs at least one state's particle table")
    states = list(particle_tables)
    ref_state = states[0]
    ref_tab = particle_tables[ref_state]
    if "particle" not in ref_tab:
        raise DataError(f"particle table of state {ref_state!r} has no 'particle' column")
    cols = [c for c in columns if c in ref_tab.columns]
    ref_vals = ref_tab.set_index("particle")[cols]
    frames = []
    for state in states:
        tab = particle_tables[state]
        if state == ref_state:
            df = pd.DataFrame({"particle_ref": ref_tab["particle"].astype("Int64").to_numpy(),
                               "particle": ref_tab["particle"].astype("Int64").to_numpy(),
                               "status": "reference"})
        else:
            if state not in matches:
                raise DataError(f"no particle matches given for state {state!r}")
            m = matches[state]
            m = m[m["particle_ref"].notna()]
            df = pd.DataFrame({"particle_ref": m["particle_ref"].astype("Int64").to_numpy(),
                               "particle": m["particle_other"].astype("Int64").to_numpy(),
                               "status": m["status"].to_numpy()})
        df.insert(1, "state", state)
        vals = tab.set_index("particle")[[c for c in cols if c in tab.columns]]
        joined = df.join(vals, on="particle")
        ref_join = df[["particle_ref"]].join(ref_vals, on="particle_ref")
        for c in cols:
            if c not in joined:
                joined[c] = np.nan
            joined[f"delta_{c}"] = joined[c].to_numpy(dtype=float) - ref_join[c].to_numpy(dtype=float)
        frames.append(joined)
    out = pd.concat(frames, ignore_index=True)
    out["_order"] = out["state"].map({s: i for i, s in enumerate(states)})
    out = out.sort_values(["particle_ref", "_order"], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def difference_map(x_state: Any, x_first: Any) -> np.ndarray:
    """Voxel-wise change of Li content, ``x_state - x_first``, NaN where either is NaN.

    Parameters
    ----------
    x_state, x_first : array_like of float
        Registered Li maps (NaN outside the AM) of a state and of the reference state.

    Returns
    -------
    numpy.ndarray
        float32 difference map.

    Examples
    --------
    >>> difference_map(np.array([0.5, np.nan, 0.9]), np.array([1.0, 1.0, np.nan])).tolist()
    [-0.5, nan, nan]
    """
    a = np.asarray(x_state)
    b = np.asarray(x_first)
    if a.shape != b.shape:
        raise DataError(f"Li maps differ in shape ({a.shape} vs {b.shape}); register them onto one grid first")
    for name, v in (("x_state", a), ("x_first", b)):
        if not np.issubdtype(v.dtype, np.floating):
            raise DataError(f"{name} must be a float Li map (NaN outside the AM), got dtype {v.dtype}")
    return (a.astype(np.float32) - b.astype(np.float32)).astype(np.float32)

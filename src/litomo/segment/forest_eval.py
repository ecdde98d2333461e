"""Evaluate a fitted scikit-learn random forest on feature blocks with a numba tree walk.

``RandomForestClassifier.predict_proba`` walks each tree over all rows (``apply``), then
builds an ``(n, classes)`` float64 array per tree and adds it under a lock, on rows already
multiplied by the model's per-feature scale (another copy). Here the fitted trees are
flattened into one array of 16-byte nodes, the scale is folded into the thresholds, and one
numba loop walks every tree for a run of voxels and sums the leaves' class fractions in
float64 in tree order, as scikit-learn does: the probabilities agree to rounding. Written by
hand because neither scikit-learn nor a maintained library here (treelite/hummingbird need a
compiler toolchain or torch) evaluates a fitted forest on float32 blocks without those copies.

The walk advances six voxels through a tree in lockstep and picks each child by an indexed
load (``children[node, x <= t]``), not a branch: a per-voxel branchy walk mispredicts about
every other split of these fully grown trees (two thirds of its time, measured), while six
independent chains of loads hide each other's latency. Leaves point to themselves, so a
group stops when all six have reached a leaf (docs/benchmarks.md, session 9: 1.4x the
branchy walk, same probabilities bit for bit).

Thresholds: scikit-learn compares ``x * s <= t`` (float32 feature times float32 scale, float64
threshold). ``fl32(x * s)`` is monotone in ``x``, so the same decision for every float32
``x`` is ``x <= t'`` with ``t'`` the largest float32 whose scaled value is ``<= t``
(:func:`fold_scale`); NaN goes right, as in scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from litomo.errors import DataError

#: voxels per parallel work item: their feature rows (~100 bytes each, 48 KiB) stay in L1/L2
#: while every tree walks them (runs of 480-960 measured fastest)
_RUN = 512
#: columns of a node record (uint32): feature, threshold bits (float32; leaf index at a
#: leaf), child taken when ``x <= threshold`` is false (right), child when true (left)
_FEATURE, _THRESHOLD, _RIGHT, _LEFT = 0, 1, 2, 3


@dataclass(frozen=True)
class CompiledForest:
    """A fitted random forest as one flat node table (all trees concatenated).

    Attributes
    ----------
    nodes : ndarray (n_nodes, 4) uint32
        Per node: feature index (0 at leaves), threshold (float32 bits: the largest float32
        ``t'`` with ``fl32(t' * scale) <= t``; at a leaf its row of ``leaf_proba``), right and
        left child (global indices; a leaf's children are itself).
    leaf_proba : ndarray (n_leaves, n_classes) float64
        Class fractions of each leaf, normalised as ``DecisionTreeClassifier.predict_proba``
        normalises them.
    roots : ndarray (n_trees,) uint64
        Index of each tree's root node.
    """

    nodes: np.ndarray
    leaf_proba: np.ndarray
    roots: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.leaf_proba.shape[1])

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities ``(C, n)`` float32 of unscaled feature rows ``(n, F)``.

        Any strides: the transposed view ``f.reshape(F, -1).T`` of a feature block
        ``(F, z, y, x)`` is read as it is (each run of voxels is gathered into a small
        row-major buffer inside the walk, no copy of the block).
        """
        x = rows if isinstance(rows, np.ndarray) and rows.dtype == np.float32 else np.asarray(rows, np.float32)
        if x.ndim != 2:
            raise DataError(f"feature rows must be 2D (voxels, features), got shape {x.shape}")
        if x.shape[0] and x.shape[1] <= int(self.nodes[:, _FEATURE].max()):
            raise DataError(f"feature rows have {x.shape[1]} columns; the forest uses more")
        out = np.empty((self.n_classes, x.shape[0]), dtype=np.float32)
        _walk(x, self.nodes, self.leaf_proba, self.roots, out)
        return out


def fold_scale(threshold: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Largest float32 ``x`` with ``fl32(x * scale) <= threshold`` (float64), element-wise.

    A bisection over the ordered float32 bit patterns (33 steps, every element at once): the
    answer can lie many ulps from ``threshold / scale`` where the product underflows to zero.

    Examples
    --------
    >>> s = np.float32(1 / 3)
    >>> x = fold_scale(np.array([0.3]), np.array([s]))[0]
    >>> bool(float(x * s) <= 0.3), bool(float(np.nextafter(x, np.float32(np.inf)) * s) <= 0.3)
    (True, False)
    """
    t = np.asarray(threshold, np.float64)
    s = np.asarray(scale, np.float32)

    def as_float(key: np.ndarray) -> np.ndarray:  # ordered key -> float32 (negative keys: sign bit set)
        bits = np.where(key >= 0, key, (-key) | 0x80000000).astype(np.uint32)
        return bits.view(np.float32)

    def fits(key: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return (as_float(key) * s).astype(np.float64) <= t

    inf_key = np.int64(np.float32(np.inf).view(np.uint32))
    lo = np.full(np.broadcast(t, s).shape, -inf_key)  # -inf always fits (finite t), +inf never
    hi = np.full(lo.shape, inf_key)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        ok = fits(mid)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return np.where(t >= np.inf, np.float32(np.inf), as_float(lo))


def compile_forest(forest: Any, feature_scale: np.ndarray | None = None) -> CompiledForest | None:
    """Flatten a fitted ``RandomForestClassifier`` (features multiplied by ``feature_scale``
    before it, as :class:`~litomo.segment.model.SegmentationModel` does); None for anything else.

    None also where a tree is not numbered depth-first (left child = parent + 1), which
    scikit-learn's best-first builder (``max_leaf_nodes``) does not guarantee, or the forest
    is larger than 2^32 nodes: the caller then keeps ``predict_proba``.

    Examples
    --------
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4)).astype(np.float32); y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    >>> p = compile_forest(rf).predict_proba(np.asfortranarray(X))  # the layout of a block's view
    >>> bool(np.abs(p.T - rf.predict_proba(X)).max() < 1e-6)
    True
    """
    from sklearn.ensemble import RandomForestClassifier

    if not isinstance(forest, RandomForestClassifier) or not hasattr(forest, "estimators_"):
        return None
    trees = [est.tree_ for est in forest.estimators_]
    if sum(t.node_count for t in trees) >= 2**32:
        return None
    scale = np.ones(forest.n_features_in_, np.float32) if feature_scale is None else np.asarray(feature_scale)
    parts, proba, roots, thresholds = [], [], [], []
    base = n_leaves = 0
    for t in trees:
        split = t.children_left >= 0
        if not np.array_equal(t.children_left[split], np.flatnonzero(split) + 1):
            return None
        idx = np.arange(base, base + t.node_count, dtype=np.uint32)
        nodes = np.zeros((t.node_count, 4), np.uint32)
        nodes[:, _FEATURE] = np.where(split, t.feature, 0)
        nodes[~split, _THRESHOLD] = n_leaves + np.arange(int((~split).sum()), dtype=np.uint32)
        nodes[:, _RIGHT] = np.where(split, t.children_right + base, idx)
        nodes[:, _LEFT] = np.where(split, idx + 1, idx)
        parts.append(nodes)
        thresholds.append(t.threshold)
        value = np.asarray(t.value[~split, 0, :], dtype=np.float64)
        norm = value.sum(axis=1, keepdims=True)
        proba.append(value / np.where(norm == 0, 1.0, norm))
        roots.append(base)
        base += t.node_count
        n_leaves += value.shape[0]
    nodes = np.concatenate(parts)
    split = nodes[:, _RIGHT] != np.arange(nodes.shape[0])  # leaves are their own children
    # one bisection over every tree's thresholds at once (per tree it was 20 x 33 numpy passes:
    # ~55 ms a call, 2 % of predicting 128^3)
    folded = fold_scale(np.concatenate(thresholds)[split], scale[nodes[split, _FEATURE]])
    nodes[split, _THRESHOLD] = folded.view(np.uint32)
    return CompiledForest(nodes=nodes, leaf_proba=np.ascontiguousarray(np.concatenate(proba)),
                          roots=np.asarray(roots, dtype=np.uint64))


@njit(cache=True, fastmath=False, inline="always")
def _step(flat, ri, rf, off, node):  # pragma: no cover (compiled)
    # one split, no branch: the child is loaded from the column that the comparison selects
    b = node * np.uint64(4)
    left = np.uint64(flat[off + np.uint64(ri[b])] <= rf[b + np.uint64(1)])
    return np.uint64(ri[b + np.uint64(2) + left])


@njit(cache=True, fastmath=False)
def _leaf_row(ri, node):  # pragma: no cover (compiled)
    return ri[node * np.uint64(4) + np.uint64(1)]


@njit(cache=True, fastmath=False)
def _walk_one(flat, ri, rf, off, node):  # pragma: no cover (compiled)
    while True:
        child = _step(flat, ri, rf, off, node)
        if child == node:
            return node
        node = child


@njit(cache=True, fastmath=False)
def _gather_run(rows, a, m):  # pragma: no cover (compiled)
    # the run's rows, row-major and contiguous, whatever the input's strides
    buf = np.empty((m, rows.shape[1]), np.float32)
    if rows.strides[0] < rows.strides[1]:  # feature-major (a block's (F, n) view): read along voxels,
        for i0 in range(0, m, 32):  # 32 voxels at a time, so that the rows written stay in L1
            for k in range(rows.shape[1]):
                for i in range(i0, min(i0 + 32, m)):
                    buf[i, k] = rows[a + i, k]
    else:  # a loop, not ``buf[:] = rows[a:a+m]``: the slice copy compiles numba's shape checks (~10 s)
        for i in range(m):
            for k in range(rows.shape[1]):
                buf[i, k] = rows[a + i, k]
    return buf.ravel()


@njit(cache=True, parallel=True, fastmath=False)
def _walk(rows, nodes, leaf_proba, roots, out):  # pragma: no cover (compiled)
    # six lanes in named scalars (registers: an array of lanes would live in memory); a
    # group ends when no lane moved; leftovers of a run walk alone
    n, n_feat = rows.shape
    n_cls = leaf_proba.shape[1]
    ri = nodes.ravel()
    rf = nodes.view(np.float32).ravel()
    uf = np.uint64(n_feat)
    for r in prange((n + _RUN - 1) // _RUN):
        a = r * _RUN
        m = min(a + _RUN, n) - a
        flat = _gather_run(rows, a, m)
        acc = np.zeros((m, n_cls))
        for t in range(roots.size):  # tree order as scikit-learn sums them
            q = 0
            while q < m:
                lanes = 6 if q + 6 <= m else 1
                o0 = np.uint64(q) * uf
                o1 = o0 + uf
                o2, o3, o4, o5 = o1 + uf, o1 + uf + uf, o1 + uf + uf + uf, o1 + uf + uf + uf + uf
                n0 = n1 = n2 = n3 = n4 = n5 = roots[t]
                if lanes == 1:
                    n0 = _walk_one(flat, ri, rf, o0, n0)
                else:
                    while True:
                        c0, c1 = _step(flat, ri, rf, o0, n0), _step(flat, ri, rf, o1, n1)
                        c2, c3 = _step(flat, ri, rf, o2, n2), _step(flat, ri, rf, o3, n3)
                        c4, c5 = _step(flat, ri, rf, o4, n4), _step(flat, ri, rf, o5, n5)
                        if (c0 == n0) & (c1 == n1) & (c2 == n2) & (c3 == n3) & (c4 == n4) & (c5 == n5):
                            break
                        n0, n1, n2, n3, n4, n5 = c0, c1, c2, c3, c4, c5
                ends = (n0, n1, n2, n3, n4, n5)
                for lane in range(lanes):
                    leaf = _leaf_row(ri, ends[lane])
                    for c in range(n_cls):
                        acc[q + lane, c] += leaf_proba[leaf, c]
                q += lanes
        for i in range(m):
            for c in range(n_cls):
                out[c, a + i] = acc[i, c] / roots.size

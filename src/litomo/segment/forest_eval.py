"""Evaluate a fitted scikit-learn random forest on feature blocks with a numba tree walk.

``RandomForestClassifier.predict_proba`` walks each tree over all rows (``apply``), then
builds an ``(n, classes)`` float64 array per tree and adds it under a lock, on rows already
multiplied by the model's per-feature scale (another copy). Here the fitted trees are
flattened into one array of 16-byte nodes and one numba loop walks every tree for a run of
voxels, scales the features on the fly (the same float32 product) and sums the leaves'
class fractions in float64 in tree order, as scikit-learn does: the probabilities agree to
rounding. Written by hand because neither scikit-learn nor a maintained library here
(treelite/hummingbird need a compiler toolchain or torch) evaluates a fitted forest on
float32 blocks without those copies; measured 0.8 vs 1.2-1.3 us per voxel (docs/benchmarks.md).

scikit-learn compares a float32 feature with a float64 threshold (``x <= t``); storing the
largest float32 not above ``t`` gives the same decision for every float32 ``x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

#: voxels per parallel work item: their feature rows (~100 bytes each) stay in L2 while
#: every tree walks them, one tree's nodes stay in L1
_RUN = 4096

#: one split node in 16 bytes (a quarter of scikit-learn's ``Node``): four per cache line
NODE_DTYPE = np.dtype([("feature", np.int32), ("threshold", np.float32), ("right", np.uint32),
                       ("pad", np.int32)], align=True)


@dataclass(frozen=True)
class CompiledForest:
    """A fitted random forest as one flat node array (all trees concatenated).

    Attributes
    ----------
    nodes : ndarray (n_nodes,) of :data:`NODE_DTYPE`
        ``feature`` (-1 at leaves), ``threshold`` (largest float32 not above scikit-learn's
        float64 one), ``right`` (global index of the right child; the left child of node
        ``i`` is ``i + 1``, as scikit-learn's depth-first builder numbers them).
    leaf_proba : ndarray (n_nodes, n_classes) float64
        Class fractions of each node (used at leaves), normalised as
        ``DecisionTreeClassifier.predict_proba`` normalises them.
    roots : ndarray (n_trees,) uint64
        Index of each tree's root node.
    """

    nodes: np.ndarray
    leaf_proba: np.ndarray
    roots: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.leaf_proba.shape[1])

    def predict_proba(self, rows: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities ``(C, n)`` float32 of feature rows ``(n, F)``.

        ``scale`` (float32 per feature) multiplies each feature before the comparisons, in
        float32, as ``rows * scale`` does before ``predict_proba``.
        """
        x = np.ascontiguousarray(rows, dtype=np.float32)
        s = np.ones(x.shape[1], np.float32) if scale is None else np.ascontiguousarray(scale, np.float32)
        out = np.empty((self.n_classes, x.shape[0]), dtype=np.float32)
        _walk(x, s, self.nodes, self.leaf_proba, self.roots, out)
        return out


def compile_forest(forest: Any) -> CompiledForest | None:
    """Flatten a fitted ``RandomForestClassifier``; None for anything else.

    None also where a tree is not numbered depth-first (left child = parent + 1), which
    scikit-learn's best-first builder (``max_leaf_nodes``) does not guarantee: the caller
    then keeps ``predict_proba``.

    Examples
    --------
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4)).astype(np.float32); y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    >>> p = compile_forest(rf).predict_proba(X)
    >>> bool(np.abs(p.T - rf.predict_proba(X)).max() < 1e-6)
    True
    """
    from sklearn.ensemble import RandomForestClassifier

    if not isinstance(forest, RandomForestClassifier) or not hasattr(forest, "estimators_"):
        return None
    parts, proba, roots = [], [], []
    base = 0
    for est in forest.estimators_:
        t = est.tree_
        split = t.children_left >= 0
        if not np.array_equal(t.children_left[split], np.flatnonzero(split) + 1):
            return None
        nodes = np.zeros(t.node_count, NODE_DTYPE)
        nodes["feature"] = np.where(split, t.feature, -1)
        thr = t.threshold.astype(np.float32)
        nodes["threshold"] = np.where(thr.astype(np.float64) > t.threshold, np.nextafter(thr, np.float32(-np.inf)), thr)
        nodes["right"] = np.where(split, t.children_right + base, 0)
        parts.append(nodes)
        value = np.asarray(t.value[:, 0, :], dtype=np.float64)
        norm = value.sum(axis=1, keepdims=True)
        proba.append(value / np.where(norm == 0, 1.0, norm))
        roots.append(base)
        base += t.node_count
    return CompiledForest(nodes=np.concatenate(parts), leaf_proba=np.ascontiguousarray(np.concatenate(proba)),
                          roots=np.asarray(roots, dtype=np.uint64))


@njit(cache=True, parallel=True, fastmath=False)
def _walk(rows, scale, nodes, leaf_proba, roots, out):  # pragma: no cover (compiled)
    # written so that LLVM keeps a real branch per split ("node + 1" vs a load): spatially
    # neighbouring voxels take the same path, so the branch predictor runs ahead; a
    # branch-free select (what "children[node, x > t]" compiles to) was 3x slower
    n = rows.shape[0]
    n_cls = leaf_proba.shape[1]
    n_trees = roots.size
    for r in prange((n + _RUN - 1) // _RUN):
        a = r * _RUN
        b = min(a + _RUN, n)
        acc = np.zeros((b - a, n_cls))
        for t in range(n_trees):  # tree order as scikit-learn sums them
            root = roots[t]
            for i in range(a, b):
                node = root
                while True:
                    nd = nodes[node]
                    k = nd.feature
                    if k < 0:
                        break
                    if rows[i, k] * scale[k] <= nd.threshold:
                        node = node + np.uint64(1)
                    else:
                        node = np.uint64(nd.right)
                for c in range(n_cls):
                    acc[i - a, c] += leaf_proba[node, c]
        for i in range(a, b):
            for c in range(n_cls):
                out[c, i] = acc[i - a, c] / n_trees

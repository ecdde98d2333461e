"""The grid multigrid solver (litomo.transport.multigrid) against a direct sparse solve."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from litomo.transport import multigrid


def _assembled(wz, wy, wx, dirichlet):
    """The same operator as a scipy matrix on the cells with a non-zero diagonal."""
    diag = dirichlet + wz + wy + wx + np.roll(wz, 1, 0) + np.roll(wy, 1, 1) + np.roll(wx, 1, 2)
    active = diag > 0
    index = np.full(diag.shape, -1)
    index[active] = np.arange(active.sum())
    rows, cols, vals = [index[active]], [index[active]], [diag[active]]
    for d, w in enumerate((wz, wy, wx)):
        nb = np.roll(index, -1, axis=d)
        ok = (index >= 0) & (nb >= 0) & (w > 0)
        rows += [index[ok], nb[ok]]
        cols += [nb[ok], index[ok]]
        vals += [-w[ok], -w[ok]]
    n = int(active.sum())
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return A, active


@pytest.mark.parametrize("periodic", [False, True])
def test_multigrid_cg_matches_direct_solve(periodic):
    """Random conductances on a random (not connected) 45 % phase, odd sizes, several levels."""
    rng = np.random.default_rng(3)
    shape = (23, 21, 19)  # odd: uneven last blocks, and odd periodic wraps
    phase = rng.random(shape) < 0.45
    ws = []
    for d in range(3):
        w = rng.uniform(0.5, 2.0, shape) * phase * np.roll(phase, -1, axis=d)
        if not (periodic and d > 0):  # z has Dirichlet faces, so never wraps
            sl = [slice(None)] * 3
            sl[d] = -1
            w[tuple(sl)] = 0.0
        ws.append(w)
    dirichlet = np.zeros(shape)
    dirichlet[0] = 2.0 * phase[0]
    dirichlet[-1] = 3.0 * phase[-1]
    b = np.zeros(shape)
    b[0] = dirichlet[0]
    A, active = _assembled(*ws, dirichlet)
    # Cells in clusters that touch neither Dirichlet face make A singular: keep the reachable ones.
    n_comp, lab = sp.csgraph.connected_components(A, directed=False)
    touching = np.unique(lab[dirichlet[active] > 0])
    keep_cells = np.zeros(shape, bool)
    keep_cells[active] = np.isin(lab, touching)
    ws = [w * keep_cells * np.roll(keep_cells, -1, axis=d) for d, w in enumerate(ws)]
    dirichlet *= keep_cells
    b *= keep_cells
    # the solver gets float32 grids, the dtype of litomo's weighted stencils (transport.multiphase):
    # the kernels then reuse the signatures the library compiles anyway (each new dtype combination
    # costs ~15 s of numba compilation in a clean clone); the reference matrix is assembled in
    # float64 from the same float32 values, so both solve exactly the same operator
    ws = [w.astype(np.float32) for w in ws]
    dirichlet, b = dirichlet.astype(np.float32), b.astype(np.float32)
    A, active = _assembled(*(np.asarray(w, np.float64) for w in (*ws, dirichlet)))
    expected = spla.spsolve(A.tocsc(), b[active].astype(np.float64))

    levels = multigrid.build_hierarchy(multigrid.Faces(*ws, dirichlet))
    assert len(levels) >= 2 and levels[1].faces.shape == (12, 11, 10)
    x, iterations, rel = multigrid.pcg(levels, b, np.zeros(shape), rtol=1e-10, maxiter=200)
    assert rel <= 1e-10
    np.testing.assert_allclose(x[active], expected, rtol=0, atol=1e-8)
    assert np.all(x[~active] == 0.0)  # non-unknowns stay untouched
    assert iterations < 100  # plain CG needs 435 and Jacobi-PCG 327 here (measured)


def test_coarse_operator_is_galerkin():
    """The coarse stencil equals P^T A P for piecewise-constant P on 2x2x2 blocks."""
    rng = np.random.default_rng(0)
    shape = (17, 18, 19)
    ws = [rng.uniform(0, 1, shape).astype(np.float32) for _ in range(3)]  # float32: see above
    for d, w in enumerate(ws):
        sl = [slice(None)] * 3
        sl[d] = -1
        w[tuple(sl)] = 0.0
    dirichlet = np.zeros(shape, np.float32)
    dirichlet[0] = 1.0
    levels = multigrid.build_hierarchy(multigrid.Faces(*ws, dirichlet))
    A, _ = _assembled(*(np.asarray(w, np.float64) for w in (*ws, dirichlet)))
    blocks = np.ravel_multi_index(np.indices(shape) // 2, levels[1].faces.shape).ravel()
    P = sp.csr_matrix((np.ones(blocks.size), (np.arange(blocks.size), blocks)))
    Ac_expected = (P.T @ A @ P).toarray()
    c = levels[1].faces
    Ac, _ = _assembled(*(np.asarray(w, np.float64) for w in (c.wz, c.wy, c.wx, c.dirichlet)))
    # coarse levels are float32: rounding of sums of up to 8 values in [0, 1]
    np.testing.assert_allclose(Ac.toarray(), Ac_expected, rtol=0, atol=4e-6)


def test_right_hand_side_dtype_adds_no_numba_signature():
    """The same 0/1 right-hand side as uint8, float32 and float64 gives the same solution, and the
    kernels compile nothing new for it (each parallel signature costs ~2-4 s in a fresh checkout)."""
    rng = np.random.default_rng(5)
    perc = rng.random((14, 13, 12)) < 0.7
    ws = []
    for d in range(3):
        w = (perc & np.roll(perc, -1, axis=d)).astype(np.uint8)
        sl = [slice(None)] * 3
        sl[d] = -1
        w[tuple(sl)] = 0
        ws.append(w)
    dirichlet = np.zeros(perc.shape, np.uint8)
    dirichlet[0] = perc[0]
    b = dirichlet.copy()
    levels = multigrid.build_hierarchy(multigrid.Faces(*ws, dirichlet, (1.0, 1.0, 1.0, 2.0)))
    x8, it8, rel8 = multigrid.pcg(levels, b, np.zeros(perc.shape), 1e-9, 200, b_scale=2.0)
    kernels = [getattr(multigrid, k) for k in dir(multigrid) if hasattr(getattr(multigrid, k), "signatures")]
    compiled = {k: len(k.signatures) for k in kernels}
    for dtype in (np.float32, np.float64):
        x, it, rel = multigrid.pcg(levels, b.astype(dtype), np.zeros(perc.shape), 1e-9, 200, b_scale=2.0)
        np.testing.assert_array_equal(x, x8)
        assert (it, rel) == (it8, rel8) and rel8 <= 1e-9
    assert {k: len(k.signatures) for k in kernels} == compiled

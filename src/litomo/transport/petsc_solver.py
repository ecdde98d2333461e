"""Distributed diffusion tortuosity on PETSc (petsc4py + mpi4py), run as ``mpiexec -n N``.

The volume is split into z-slabs by a PETSc DMDA (``proc_sizes = (1, 1, N)``), and each rank
reads only its own slab (plus nothing else: neighbouring planes are exchanged over MPI). With a
z-only split PETSc's global ordering is the natural ``(z, y, x)`` order, so each rank assembles
its rows of the same finite-volume system as :func:`litomo.transport.diffusion.tortuosity`
(TauFactor's reservoir convention, conductances ``area / length``) directly as CSR with global
column indices. Percolation is decided globally: each rank labels its slab (6-connectivity),
the labels on slab boundary planes and on the two faces normal to the transport axis are
gathered on rank 0, joined there (scipy connected components on the label graph, a few
thousand nodes) and the kept labels broadcast. Cells outside the percolating phase are identity
rows with a zero right-hand side. The system is solved by PETSc's CG preconditioned with GAMG
(algebraic multigrid), with the residual tightened until the inlet/outlet flux balance is met,
as in the native solver. Options can be passed to PETSc through ``PETSC_OPTIONS``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.sparse.csgraph import connected_components

from litomo.errors import DataError, LitomoError
from litomo.progress import ProgressCallback
from litomo.transport.diffusion import TortuosityResult, axis_index, conductances, phase_mask
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)


def import_petsc() -> tuple[Any, Any]:
    """``(PETSc, MPI)`` modules, initialised; a one-line error when they are not installed."""
    try:
        import petsc4py
        from mpi4py import MPI
    except ImportError as exc:
        raise LitomoError(f"--backend petsc needs petsc4py and mpi4py ({exc})") from exc
    petsc4py.init()
    from petsc4py import PETSc

    return PETSc, MPI


def _global_percolation(mask: np.ndarray, ax: int, first: bool, last: bool, comm: Any) -> np.ndarray:
    """Percolating voxels of this rank's slab (clusters joined across slabs on rank 0)."""
    lab, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 1))
    offset = comm.exscan(n) or 0
    glab = np.where(lab > 0, lab.astype(np.int64) + offset, 0)
    del lab
    inlet = np.take(glab, 0, axis=ax) if (ax != 0 or first) else glab[:0, 0]
    outlet = np.take(glab, -1, axis=ax) if (ax != 0 or last) else glab[:0, 0]
    parts = comm.gather((glab[0], glab[-1], np.unique(inlet), np.unique(outlet)), root=0)
    total = comm.allreduce(n)
    keep = None
    if comm.rank == 0:
        a = np.concatenate([parts[r][1].ravel() for r in range(len(parts) - 1)] or [np.zeros(0, np.int64)])
        b = np.concatenate([parts[r + 1][0].ravel() for r in range(len(parts) - 1)] or [np.zeros(0, np.int64)])
        ok = (a > 0) & (b > 0)
        graph = sp.coo_matrix((np.ones(int(ok.sum()), np.int8), (a[ok], b[ok])), shape=(total + 1, total + 1))
        _, root = connected_components(graph, directed=False)
        ins = np.concatenate([p[2] for p in parts])
        outs = np.concatenate([p[3] for p in parts])
        both = np.intersect1d(root[ins[ins > 0]], root[outs[outs > 0]])
        keep = np.isin(root, both)
        keep[0] = False
    keep = comm.bcast(keep, root=0)
    return keep[glab]


def _exchange_planes(arr: np.ndarray, comm: Any) -> tuple[np.ndarray, np.ndarray]:
    """The plane below this slab and the plane above it (zeros at the volume's ends)."""
    lo = np.zeros_like(arr[0])
    hi = np.zeros_like(arr[0])
    rank, size = comm.rank, comm.size
    if rank + 1 < size:  # send my last plane up, receive the next rank's first plane
        comm.Sendrecv(np.ascontiguousarray(arr[-1]), dest=rank + 1, recvbuf=hi, source=rank + 1)
    if rank > 0:
        comm.Sendrecv(np.ascontiguousarray(arr[0]), dest=rank - 1, recvbuf=lo, source=rank - 1)
    return lo, hi


def _assemble(perc, ax, g, gb, z0, shape, first, last, comm):
    """CSR rows of this slab (global columns), right-hand side and the slab's Dirichlet planes."""
    nz, ny, nx = shape
    zl = perc.shape[0]
    lo, hi = _exchange_planes(perc, comm)
    pe = np.concatenate([lo[None], perc, hi[None]])
    base = z0 * ny * nx
    gidx = base + np.arange(zl * ny * nx, dtype=np.int64).reshape(zl, ny, nx)
    diag = np.where(perc, 0.0, 1.0)
    rows, cols, vals = [], [], []
    steps = {0: ny * nx, 1: nx, 2: 1}
    for d in range(3):
        for sgn in (1, -1):
            if d == 0:
                nb = pe[2:] if sgn > 0 else pe[:-2]
            else:
                nb = np.zeros_like(perc)
                src = [slice(None)] * 3
                dst = [slice(None)] * 3
                src[d] = slice(1, None) if sgn > 0 else slice(None, -1)
                dst[d] = slice(None, -1) if sgn > 0 else slice(1, None)
                nb[tuple(dst)] = perc[tuple(src)]
            m = perc & nb
            diag += g[d] * m
            rows.append(gidx[m] - base)
            cols.append(gidx[m] + sgn * steps[d])
            vals.append(np.full(rows[-1].size, -g[d]))
    b = np.zeros(perc.shape)
    sl_in = [slice(None)] * 3
    sl_in[ax] = 0
    sl_out = [slice(None)] * 3
    sl_out[ax] = -1
    has_in, has_out = (ax != 0 or first), (ax != 0 or last)
    if has_in:
        diag[tuple(sl_in)] += gb * perc[tuple(sl_in)]
        b[tuple(sl_in)] = gb * perc[tuple(sl_in)]
    if has_out:
        diag[tuple(sl_out)] += gb * perc[tuple(sl_out)]
    nloc = perc.size
    rows.append(np.arange(nloc, dtype=np.int64))
    cols.append(gidx.ravel())
    vals.append(diag.ravel())
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(nloc, nz * ny * nx))
    A.sort_indices()
    return A, b, (tuple(sl_in) if has_in else None), (tuple(sl_out) if has_out else None)


def _make_ksp(PETSc: Any, A: Any, comm: Any, rtol: float, desc: str, bnorm: float,
              progress: ProgressCallback | None) -> Any:
    """CG + GAMG on ``A``, true-residual norm, progress in residual decades on rank 0."""
    ksp = PETSc.KSP().create(comm)
    ksp.setOperators(A)
    ksp.setType("cg")
    ksp.getPC().setType("gamg")
    ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
    ksp.setInitialGuessNonzero(True)
    if progress is not None and comm.rank == 0:
        total = max(1, math.ceil(-math.log10(rtol) - 1e-9))
        progress(0, total, desc)

        def monitor(_ksp: Any, it: int, rnorm: float) -> None:
            progress(min(total - 1, max(0, int(-math.log10(max(rnorm / bnorm, 1e-300))))), total, desc)

        ksp.setMonitor(monitor)
    ksp.setFromOptions()  # PETSC_OPTIONS may override the above
    return ksp


def _solve(ksp: Any, A: Any, b: Any, x: Any, bnorm: float, fluxes: Any, rtol: float, flux_tol: float,
           maxiter: int) -> tuple[int, float, float, float, float, bool]:
    """Solve, tightening the tolerance 10x until the inlet/outlet flux balance is met too."""
    tol, iters = rtol, 0
    r = b.duplicate()
    while True:
        ksp.setTolerances(rtol=tol, atol=0.0, max_it=max(maxiter - iters, 1))
        ksp.solve(b, x)
        iters += ksp.getIterationNumber()
        A.mult(x, r)
        r.aypx(-1.0, b)
        rel = r.norm() / bnorm
        f_in, f_out = fluxes()
        bal = abs(f_in - f_out) / max(0.5 * (f_in + f_out), 1e-300)
        if bal < flux_tol and rel <= rtol * 1.0001:
            return iters, rel, f_in, f_out, bal, True
        if tol <= 1e-13 or iters >= maxiter:
            return iters, rel, f_in, f_out, bal, False
        tol *= 0.1


def _petsc_system(PETSc: Any, da: Any, perc: np.ndarray, ax: int, voxel: tuple[float, float, float],
                  z0: int, shape: tuple[int, int, int], comm: Any) -> tuple:
    """PETSc matrix, right-hand side and linear-profile start of this rank's rows."""
    first, last = z0 == 0, z0 + perc.shape[0] == shape[0]
    g = conductances(voxel)
    gb = 2.0 * g[ax]
    A_loc, b_loc, sl_in, sl_out = _assemble(perc, ax, g, gb, z0, shape, first, last, comm)
    nloc, ntot = A_loc.shape
    A = PETSc.Mat().createAIJ(size=((nloc, ntot), (nloc, ntot)),
                              csr=(A_loc.indptr.astype(PETSc.IntType), A_loc.indices.astype(PETSc.IntType),
                                   A_loc.data), comm=comm)
    A.assemble()
    del A_loc
    b = da.createGlobalVec()
    b.setArray(b_loc.ravel())
    x = da.createGlobalVec()
    coord = np.arange(shape[ax], dtype=float)
    if ax == 0:
        coord = coord[z0:z0 + perc.shape[0]]
    shape1 = [1, 1, 1]
    shape1[ax] = coord.size
    x.setArray(np.where(perc, (1.0 - (coord + 0.5) / shape[ax]).reshape(shape1), 0.0).ravel())
    bnorm = b.norm() or 1.0
    return A, b, x, bnorm, gb, sl_in, sl_out


def tortuosity_petsc(
    path: str | Path,
    phase: str = "pore",
    axis: str | int = "z",
    *,
    voxel_size_um: float | tuple[float, float, float] | None = None,
    mapping: dict[str, int] | None = None,
    rtol: float = 1e-6,
    flux_tol: float = 1e-3,
    maxiter: int = 2000,
    progress: ProgressCallback | None = None,
) -> TortuosityResult:
    """Tortuosity factor of one phase of the label volume at ``path``, solved by PETSc over MPI.

    Call it on every rank of ``MPI.COMM_WORLD`` (``mpiexec -n N``); every rank returns the same
    result. Each rank reads its own z-slab. Parameters as :func:`litomo.transport.diffusion.tortuosity`
    (no periodic sides, no flux map; ``stagnant_flux_fraction`` is not computed: NaN).
    """
    from litomo.io import read_volume
    from litomo.io.guards import require_voxel_size

    t0 = time.perf_counter()
    PETSc, MPI = import_petsc()
    comm = MPI.COMM_WORLD
    if not (0.0 < rtol < 1.0 and 0.0 < flux_tol < 1.0 and maxiter >= 1):
        raise DataError(f"tortuosity: rtol and flux_tol must lie in (0, 1) and maxiter >= 1, got "
                        f"rtol={rtol:g}, flux_tol={flux_tol:g}, maxiter={maxiter}")
    ax = axis_index(axis)
    ax_name = "zyx"[ax]
    vol = require_voxel_size(read_volume(path, lazy=True, voxel_size_um=voxel_size_um))
    shape = tuple(int(s) for s in vol.array.shape)
    nz, ny, nx = shape
    if nz < comm.size:
        raise DataError(f"--backend petsc: {nz} z-planes cannot be split over {comm.size} ranks")
    if shape[ax] < 2:
        raise DataError(f"tortuosity: the volume needs at least 2 voxels along axis {ax_name}")
    voxel = as_voxel_size(vol.voxel_size_um)
    da = PETSc.DMDA().create(dim=3, sizes=(nx, ny, nz), proc_sizes=(1, 1, comm.size), dof=1,
                             stencil_width=1, stencil_type=PETSc.DMDA.StencilType.STAR, comm=comm)
    (_, _), (_, _), (z0, z1) = da.getRanges()
    first, last = z0 == 0, z1 == nz
    mask = phase_mask(np.asarray(vol.array[z0:z1]), phase, mapping)
    n_phase = comm.allreduce(int(np.count_nonzero(mask)))
    eps = n_phase / math.prod(shape)
    perc = _global_percolation(mask, ax, first, last, comm)
    n_perc = comm.allreduce(int(np.count_nonzero(perc)))
    if n_perc == 0:
        return TortuosityResult(tau=math.inf, eps=eps, deff=0.0, mcmullin=math.inf, converged=True,
                                stagnant_flux_fraction=1.0 if n_phase else 0.0, axis=ax_name,
                                reason=f"no face-connected path of the phase joins the two faces normal to {ax_name}",
                                elapsed_s=time.perf_counter() - t0)
    A, b, x, bnorm, gb, sl_in, sl_out = _petsc_system(PETSc, da, perc, ax, voxel, z0, shape, comm)

    ksp = _make_ksp(PETSc, A, comm, rtol, f"tortuosity {ax_name} (petsc): residual decades", bnorm, progress)

    def fluxes() -> tuple[float, float]:
        c = x.getArray(readonly=True).reshape(perc.shape)
        fi = float(gb * np.sum((1.0 - c[sl_in])[perc[sl_in]])) if sl_in is not None else 0.0
        fo = float(gb * np.sum(c[sl_out][perc[sl_out]])) if sl_out is not None else 0.0
        return comm.allreduce(fi), comm.allreduce(fo)

    iters, rel, f_in, f_out, bal, ok = _solve(ksp, A, b, x, bnorm, fluxes, rtol, flux_tol, maxiter)
    f_mean = 0.5 * (f_in + f_out)
    box_len = shape[ax] * voxel[ax]
    box_area = math.prod(shape[k] * voxel[k] for k in range(3) if k != ax)
    deff = f_mean * box_len / box_area
    tau = eps / deff if deff > 0 else math.inf
    if progress is not None and comm.rank == 0:
        total = max(1, math.ceil(-math.log10(rtol) - 1e-9))
        progress(total, total, f"tortuosity {ax_name} (petsc): residual decades")
    reason = "" if ok else (f"not converged after {iters} iterations: residual {rel:.2e} (rtol {rtol:g}), "
                            f"flux balance {bal:.2e} (flux_tol {flux_tol:g})")
    return TortuosityResult(
        tau=float(tau), eps=float(eps), deff=float(deff), mcmullin=float(tau / eps), converged=ok,
        flux_in=f_in, flux_out=f_out, flux_balance=float(bal), iterations=int(iters), residual=float(rel),
        elapsed_s=time.perf_counter() - t0, percolating_fraction=n_perc / n_phase,
        stagnant_flux_fraction=math.nan, reason=reason, axis=ax_name,
    )

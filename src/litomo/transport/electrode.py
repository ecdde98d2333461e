"""Electrode tortuosity factor ``tau_e`` (SPEC 4; Nguyen et al., npj Comput. Mater. 6, 123 (2020)).

Model: a blocking symmetric cell. The electrolyte (conducting phase, conductivity 1) fills the
pores; the separator side of the electrode is the box face at index 0 along the transport axis
(fixed potential, applied at the voxel face half a voxel from the first voxel centre); the
current-collector face at the far end and the side faces carry no ionic current. Every face
between a conducting voxel and a reactive (active-material) voxel is a double-layer capacitor
(capacitance per area ``c_dl = 1``) to the solid, which is held at potential 0. The impedance of
this network is that of a (generally inhomogeneous) transmission line; at low frequency

    Z(w) = 1 / (j w C) + R_ion,eff / 3 + O(w),

and for a homogeneous line of the same porosity ``R_ion / 3 = L / (3 sigma eps A)``. The electrode
tortuosity factor is the ratio of the two low-frequency real parts:

    tau_e = Re Z_sim(w -> 0) / Re Z_hom(w -> 0).

The limit is computed exactly: expanding the potential as ``phi = 1 + j w psi`` gives one real
SPD solve ``L psi = -c`` (``c`` the capacitance of each voxel) and
``Re Z(0) = c^T L^-1 c / C^2``. The homogeneous reference is the same finite-volume line with N
voxels (``Re Z_hom = (L_vox / (eps A)) (N/3 + 1/(6N))``), so straight through-pores with uniform
walls give ``tau_e = 1`` to solver precision. :func:`electrode_impedance` solves the complex
system at finite frequencies (GMRES preconditioned with AMG of the real part) for spectra.

Differences to TauFactor's ElectrodeSolver (kept on purpose, documented so values can be
compared): TauFactor 1.2.x treats the box sides and the current collector as capacitive walls and
iterates at a small finite frequency; later versions homogenise a steady reaction problem slice by
slice. Here only faces to the reactive phase are capacitive and the w -> 0 limit is exact.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage

from litomo.errors import DataError
from litomo.progress import ProgressCallback
from litomo.transport import multigrid
from litomo.transport.diffusion import (
    amg_hierarchy,
    amg_preconditioner,
    axis_index,
    conductances,
    grid_system,
    neighbour_pairs,
    phase_mask,
)
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)


@dataclass
class ElectrodeTortuosityResult:
    """Result of :func:`electrode_tortuosity`.

    Attributes
    ----------
    tau_e : float
        Electrode tortuosity factor (1 for straight through-pores; ``inf`` if no pore reaches
        the separator face or there is no capacitive interface).
    eps : float
        Volume fraction of the conducting phase in the whole box.
    specific_area_per_um : float
        Conducting/reactive interfacial area per box volume (1/um), of the separator-connected part.
    resistance : float
        ``Re Z(w -> 0)`` of the structure (units 1/(sigma um) with sigma = 1).
    resistance_homogeneous : float
        The same for the homogeneous transmission line of porosity ``eps``.
    connected_fraction : float
        Fraction of the conducting voxels connected to the separator face.
    converged : bool
    iterations : int
    residual : float
    elapsed_s : float
    reason : str
    axis : str
    frequencies : numpy.ndarray or None
        Angular frequencies (rad per unit time with ``sigma = c_dl = 1``) of ``impedance``.
    impedance, impedance_homogeneous : numpy.ndarray or None
        Complex impedance spectra of the structure and of the homogeneous line.
    mcmullin : float
        (property) electrode McMullin number ``N_M,e = tau_e / eps``.
    """

    tau_e: float
    eps: float
    specific_area_per_um: float
    resistance: float
    resistance_homogeneous: float
    connected_fraction: float
    converged: bool
    iterations: int = 0
    residual: float = 0.0
    elapsed_s: float = 0.0
    reason: str = ""
    axis: str = "z"
    frequencies: np.ndarray | None = field(default=None, repr=False)
    impedance: np.ndarray | None = field(default=None, repr=False)
    impedance_homogeneous: np.ndarray | None = field(default=None, repr=False)

    @property
    def mcmullin(self) -> float:
        """Electrode McMullin number ``tau_e / eps`` (inf without a connected pore network)."""
        return self.tau_e / self.eps if self.eps > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        """Scalar fields as a dict (spectra omitted), with the electrode McMullin number."""
        skip = {"frequencies", "impedance", "impedance_homogeneous"}
        return {**{k: v for k, v in self.__dict__.items() if k not in skip}, "mcmullin": self.mcmullin}


def _as_masks(
    labels_or_masks: Any, conductive: str | int, reactive: str | int, mapping: dict[str, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(labels_or_masks, (tuple, list)) and len(labels_or_masks) == 2:
        cond = np.asarray(labels_or_masks[0]).astype(bool)
        reac = np.asarray(labels_or_masks[1]).astype(bool)
        if cond.shape != reac.shape:
            raise DataError(f"conductive and reactive masks differ in shape: {cond.shape} vs {reac.shape}")
        if np.any(cond & reac):
            raise DataError("conductive and reactive masks overlap")
    else:
        labels = np.asarray(labels_or_masks)
        if isinstance(conductive, str) or isinstance(reactive, str) or mapping is not None:
            cond = phase_mask(labels, conductive, mapping)
            reac = phase_mask(labels, reactive, mapping)
        else:  # raw label values, e.g. a binary image with conductive=1, reactive=0
            cond = labels == conductive
            reac = labels == reactive
    if cond.ndim == 2:  # a 2D (axis, x) image: one voxel thick in y
        cond, reac = cond[:, None, :], reac[:, None, :]
    if cond.ndim != 3:
        raise DataError(f"electrode_tortuosity needs a 2D or 3D volume, got shape {cond.shape}")
    return cond, reac


def _system(
    cond: np.ndarray, reac: np.ndarray, ax: int, voxel: tuple[float, float, float], *, with_matrix: bool = True
) -> tuple[sp.csr_matrix | None, np.ndarray, np.ndarray, int, int, np.ndarray]:
    """Laplacian with the separator Dirichlet face, capacitance per unknown, inlet indices,
    unknown and conducting-voxel counts, and the grid mask of the unknowns (raster order).

    The sparse Laplacian is only needed for impedance spectra (the resistance is solved on the
    grid): ``with_matrix=False`` returns None for it and skips its assembly.
    """
    labels, nlab = ndimage.label(cond, structure=ndimage.generate_binary_structure(3, 1))
    front = np.unique(np.take(labels, 0, axis=ax))
    front = front[front > 0]
    keep = np.zeros(nlab + 1, bool)
    keep[front] = True
    conn = keep[labels]
    del labels
    n = int(np.count_nonzero(conn))
    index = np.full(cond.shape, -1, np.int32)
    index[conn] = np.arange(n, dtype=np.int32)
    g = conductances(voxel)
    areas = (voxel[1] * voxel[2], voxel[0] * voxel[2], voxel[0] * voxel[1])
    diag = np.zeros(n)
    cap = np.zeros(n)
    rows, cols, vals = [], [], []
    for d in range(3):
        if with_matrix:
            i, j = neighbour_pairs(index, d, periodic_wrap=False)
            diag += (np.bincount(i, minlength=n) + np.bincount(j, minlength=n)) * g[d]
            rows += [i, j]
            cols += [j, i]
            vals.append(np.full(2 * i.size, -g[d]))
        # capacitive faces: conducting (connected) voxel next to a reactive voxel
        nd = cond.shape[d]
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[d] = slice(0, nd - 1)
        hi[d] = slice(1, nd)
        a_idx, b_idx = index[tuple(lo)], index[tuple(hi)]
        a_re, b_re = reac[tuple(lo)], reac[tuple(hi)]
        cap += np.bincount(a_idx[(a_idx >= 0) & b_re], minlength=n) * areas[d]
        cap += np.bincount(b_idx[(b_idx >= 0) & a_re], minlength=n) * areas[d]
    inlet = np.take(index, 0, axis=ax).ravel()
    inlet = inlet[inlet >= 0]
    A = None
    if with_matrix:
        diag[inlet] += 2.0 * g[ax]
        idx = np.arange(n, dtype=np.int32)
        A = sp.csr_matrix(
            (np.concatenate([*vals, diag]), (np.concatenate([*rows, idx]), np.concatenate([*cols, idx]))),
            shape=(n, n),
        )
    return A, cap, inlet, n, int(np.count_nonzero(cond)), conn


def _homogeneous_resistance(n_vox: int, r_vox: float) -> float:
    """Re Z(w -> 0) of the discrete homogeneous line: ``r_vox (N/3 + 1/(6N))`` (see module doc)."""
    return r_vox * (n_vox / 3.0 + 1.0 / (6.0 * n_vox))


def _homogeneous_impedance(n_vox: int, r_vox: float, c_vox: float, omegas: np.ndarray) -> np.ndarray:
    """Impedance of the discrete homogeneous line (N voxels, half-voxel inlet) by a ladder recursion."""
    out = np.empty(omegas.size, complex)
    for k, w in enumerate(omegas):
        y = 1j * w * c_vox  # admittance of the last voxel's capacitor
        z = 1.0 / y
        for _ in range(n_vox - 1):
            z = 1.0 / (1j * w * c_vox + 1.0 / (r_vox + z))
        out[k] = z + 0.5 * r_vox
    return out


def electrode_tortuosity(
    labels_or_masks: Any,
    axis: str | int = "z",
    *,
    conductive: str | int = "pore",
    reactive: str | int = "am",
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    mapping: dict[str, int] | None = None,
    rtol: float = 1e-8,
    frequencies: np.ndarray | list[float] | None = None,
    progress: ProgressCallback | None = None,
) -> ElectrodeTortuosityResult:
    """Electrode tortuosity factor ``tau_e`` of the conducting phase (Nguyen et al. 2020).

    Parameters
    ----------
    labels_or_masks : array or (conductive_mask, reactive_mask)
        A label volume (phases named by ``conductive``/``reactive`` via ``mapping``; or raw
        label values when both are ints and no mapping is given), or two boolean masks. 2D
        images ``(axis, x)`` are treated as one voxel thick.
    axis : {"z", "y", "x"}
        Through-plane direction; the separator face is at index 0, the current collector at the end.
    conductive, reactive : str or int
        Electrolyte-filled phase and the phase whose interface with it is capacitive.
    voxel_size_um : float or (z, y, x) tuple
        Voxel size in um.
    rtol : float
        Relative residual for the real low-frequency solve.
    frequencies : sequence of float, optional
        Also compute the complex impedance at these angular frequencies (``sigma = c_dl = 1``).
    progress : callable, optional

    Returns
    -------
    ElectrodeTortuosityResult

    Examples
    --------
    >>> img = np.zeros((40, 1, 12), np.uint8); img[:, :, 5] = 1   # straight pore, walls of 0
    >>> r = electrode_tortuosity(img, "z", conductive=1, reactive=0)
    >>> round(r.tau_e, 6)
    1.0
    """
    t0 = time.perf_counter()
    cond, reac = _as_masks(labels_or_masks, conductive, reactive, mapping)
    ax = axis_index(axis)
    ax_name = "zyx"[ax]
    voxel = as_voxel_size(voxel_size_um)
    eps = float(np.count_nonzero(cond)) / cond.size
    n_ax = cond.shape[ax]
    box_area = math.prod(cond.shape[k] * voxel[k] for k in range(3) if k != ax)
    box_vol = box_area * n_ax * voxel[ax]
    if progress is not None:
        progress(0, 3, "electrode tortuosity")
    A, cap, inlet, n, n_cond, conn = _system(cond, reac, ax, voxel, with_matrix=frequencies is not None)
    C = float(cap.sum())

    def _fail(reason: str) -> ElectrodeTortuosityResult:
        log.info("electrode tortuosity: %s", reason)
        return ElectrodeTortuosityResult(
            tau_e=math.inf, eps=eps, specific_area_per_um=C / box_vol, resistance=math.inf,
            resistance_homogeneous=math.nan, connected_fraction=n / n_cond if n_cond else 0.0,
            converged=True, reason=reason, axis=ax_name, elapsed_s=time.perf_counter() - t0,
        )

    if n == 0:
        return _fail(f"no conducting voxel touches the separator face (index 0 along {ax_name})")
    if C == 0:
        return _fail("no capacitive interface between the conducting and reactive phases")
    if progress is not None:
        progress(1, 3, "electrode tortuosity")
    # the real (w -> 0) problem on the voxel grid by multigrid-CG, like the diffusion solve
    faces, _, _ = grid_system(conn, ax, conductances(voxel), False, outlet=False)
    levels = multigrid.build_hierarchy(faces)
    del faces
    cap_grid = np.zeros(conn.shape)
    cap_grid[conn] = cap
    x, iterations, rel = multigrid.pcg(levels, cap_grid, np.zeros(conn.shape), rtol, 2000)
    del levels, cap_grid
    psi = x[conn]
    del x
    converged = rel <= rtol * 10
    r_sim = float(cap @ psi) / C**2
    r_vox = voxel[ax] / (eps * box_area)  # one voxel of the homogeneous line
    r_hom = _homogeneous_resistance(n_ax, r_vox)
    tau_e = r_sim / r_hom
    if progress is not None:
        progress(2, 3, "electrode tortuosity")

    omegas = z_sim = z_hom = None
    if frequencies is not None:
        omegas = np.asarray(frequencies, float)
        z_sim = electrode_impedance_from_system(A, cap, inlet, 2.0 * conductances(voxel)[ax], omegas)
        z_hom = _homogeneous_impedance(n_ax, r_vox, C / n_ax, omegas)
    reason = "" if converged else f"residual {rel:.2e} above rtol {rtol:g}"
    if progress is not None:
        progress(3, 3, "electrode tortuosity")
    return ElectrodeTortuosityResult(
        tau_e=float(tau_e), eps=eps, specific_area_per_um=C / box_vol, resistance=r_sim,
        resistance_homogeneous=r_hom, connected_fraction=n / n_cond, converged=bool(converged),
        iterations=int(iterations), residual=rel, elapsed_s=time.perf_counter() - t0,
        reason=reason, axis=ax_name, frequencies=omegas, impedance=z_sim, impedance_homogeneous=z_hom,
    )


def electrode_impedance_from_system(
    A: sp.csr_matrix,
    cap: np.ndarray,
    inlet: np.ndarray,
    g_inlet: float,
    omegas: np.ndarray,
    ml: Any = None,
    rtol: float = 1e-10,
) -> np.ndarray:
    """Complex impedance ``V / I`` (V = 1 at the separator face) at angular frequencies ``omegas``.

    Solves ``(L + j w diag(c)) phi = b`` by GMRES preconditioned with AMG of the real part ``L``
    (an excellent preconditioner while ``w c`` is small against the face conductances).
    """
    if ml is None:
        ml = amg_hierarchy(A)
    M = amg_preconditioner(ml, A.shape)
    b = np.zeros(A.shape[0], complex)
    b[inlet] = g_inlet
    out = np.empty(len(omegas), complex)
    for k, w in enumerate(omegas):
        K = (A + sp.diags(1j * w * cap)).tocsr()
        Mc = spla.LinearOperator(K.shape, matvec=lambda v: M @ v.real + 1j * (M @ v.imag), dtype=complex)
        phi, info = spla.gmres(K, b, M=Mc, rtol=rtol, restart=50, maxiter=200)
        if info != 0:
            log.warning("impedance solve at w=%g did not converge (info %d)", w, info)
        # The capacitive current sum avoids the cancellation in g * sum(1 - phi) at low w.
        current = 1j * w * np.sum(cap * phi)
        out[k] = 1.0 / current
    return out

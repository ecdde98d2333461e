"""Stage ``warp``: apply the registration at full resolution, slab by slab, and bin.

Resampling the *binned* moving volume would mix the partial-volume content of neighbouring
bins at every particle surface, so each transform is evaluated at full resolution and each
warped slab is binned at once (:func:`warp_and_bin`); memory stays at a few slabs whatever
the volume size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from litomo.manifest import StateSpec
from litomo.preprocess import bin_factors
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.read import Binned, open_slabbed
from litomo.workflows.limap.registration import MOVING, Registration
from litomo.workflows.limap.stage import StateStage

#: above this many voxels per volume the full-resolution warp samples trilinearly instead of
#: with cubic B-splines (both in litomo.resample.warp_bin_field; cubic: scipy's whole-volume
#: map_coordinates(order=3) to ~1e-15, about 1.7x the trilinear kernel's time per voxel plus the
#: spline prefilter): cubic is slightly more accurate at particle surfaces (phantom x_Li RMSE
#: 0.037 vs 0.041) but would add an estimated 1-2 CPU-minutes per state at 1024^3 (not measured)
CUBIC_WARP_MAX_VOXELS = 512**3

#: how the cubic warp computes its spline coefficients (part of the warp's resume key: stored
#: warps of the slab-wise prefilter, whose seams at every slab boundary were up to a few % of
#: the data range, are recomputed)
CUBIC_SPLINE = "whole_volume"

#: what the am_interior mask thresholds: the 3x3x3 box mean of the fixed volume
#: (:func:`litomo.resample.box_mean`), not its voxels, which would select on their own noise: a
#: particle voxel whose noise puts it below the threshold leaves the interior with its 6
#: neighbours, and the interior mean of the same voxels is biased high (issue 16; docs/science.md,
#: "Interior mask on the box mean"). A change of it invalidates stored warps.
INTERIOR_ON = "box3_mean"

log = logging.getLogger(__name__)


def _rows(lazy: Any, a: int, b: int) -> np.ndarray:
    block = lazy[a:b]
    if hasattr(block, "compute"):  # dask: read in this thread, no nested distributed compute
        block = block.compute(scheduler="synchronous")
    return np.asarray(block)


def _observed_per_bin(valid: np.ndarray | None, factor: tuple[int, int, int]) -> np.ndarray:
    """Voxels of each bin observed at every energy (``valid``: a slab of whole bins; None: all)."""
    fz, fy, fx = factor
    if valid is None:
        return np.float32(fz * fy * fx)
    nz, ny, nx = (n // f for n, f in zip(valid.shape, factor, strict=True))
    bins = valid.view(np.uint8).reshape(nz, fz, ny, fy, nx, fx)
    # one axis at a time, the contiguous x last but one, in narrow integers: ~4x one sum over
    # axes (1, 3, 5) (14 vs 58 ms for a 3-bin slab of a 1024^3 state)
    return bins.sum(axis=1, dtype=np.uint16).sum(axis=4, dtype=np.uint32).sum(axis=2, dtype=np.uint32
                                                                              ).astype(np.float32)


class _SlabWarp:
    """The state of one :func:`warp_and_bin` call; :meth:`slab` fills bins ``k:k1``."""

    def __init__(self, lazy: dict[str, Any], results: dict[str, Any], binned: dict[str, np.ndarray],
                 binned_vs: tuple[float, float, float], raw_vs: tuple[float, float, float],
                 factor: tuple[int, int, int], fixed: str, interior: tuple[float, int] | None,
                 cubic: bool):
        from litomo.register import displacement_field

        shape = binned[fixed].shape
        self.lazy, self.roles, self.fixed, self.interior, self.cubic = lazy, tuple(results), fixed, interior, cubic
        self.binned_vs, self.raw_vs, self.factor = binned_vs, raw_vs, factor
        self.fields = {r: displacement_field(res, shape, voxel_size_um=binned_vs)
                       for r, res in results.items() if res is not None}
        self.out_yx = (shape[1] * factor[1], shape[2] * factor[2])
        self.n_raw = int(lazy[fixed].shape[0])
        self.plain = {r: (np.empty(shape, np.float32) if r in self.fields else binned[r].copy())
                      for r in results}
        self.inner = ({r: np.empty(shape, np.float32) for r in (*results, "count", "observed")}
                      if interior else None)

    def _masks(self, z0: int, z1: int) -> tuple[Any, Any, Any, Any]:
        """Observed voxels (None: all), interior voxels (None: none wanted, or packed in the
        bits), fixed rows, and for the fused kernel both selections packed (:func:`selection_bits`)."""
        from litomo.preprocess import interior_mask
        from litomo.resample import box_mean, interior_bits, observed_mask, selection_bits

        crop = (slice(None), slice(0, self.out_yx[0]), slice(0, self.out_yx[1]))
        valid = None
        for role, fld in self.fields.items():
            seen = observed_mask(fld, self.binned_vs, self.raw_vs, (z0, z1), self.out_yx, self.lazy[role].shape)
            valid = seen if valid is None else valid & seen
        if valid is not None and valid.all():
            valid = None
        mask, fixed_rows, bits = None, None, None
        shape = (z1 - z0, *self.out_yx)
        if self.interior is not None:
            thr, ero = self.interior
            # one row beyond what the erosion reads: the box mean of those rows is then the
            # whole volume's, whatever the slab bounds
            a, b = max(0, z0 - ero - 1), min(self.n_raw, z1 + ero + 1)
            halo = _rows(self.lazy[self.fixed], a, b)
            fixed_rows = halo[z0 - a : z0 - a + z1 - z0]  # read once: the mask and the fixed bins
            lo, hi = max(0, z0 - ero) - a, min(self.n_raw, z1 + ero) - a
            smooth = box_mean(halo)[lo:hi]
            off = z0 - a - lo
            if ero == 1:  # the common case in one parallel pass
                return valid, None, fixed_rows, interior_bits(smooth, off, thr, shape, valid)
            mask = interior_mask(smooth, thr, ero)[off : off + z1 - z0][crop]
            if valid is not None:
                mask &= valid
        if valid is not None or mask is not None:
            bits = selection_bits(shape, valid, mask)  # once for all volumes of the slab
        return valid, mask, fixed_rows, bits

    def _unwarped(self, role: str, k: int, k1: int, valid: Any, mask: Any, fixed_rows: Any, bits: Any) -> None:
        from litomo.preprocess import bin_masked
        from litomo.resample import bin_selected

        if valid is None and mask is None and bits is None:
            return
        z0, z1 = k * self.factor[0], k1 * self.factor[0]
        crop = (slice(None), slice(0, self.out_yx[0]), slice(0, self.out_yx[1]))
        rows = fixed_rows if role == self.fixed and fixed_rows is not None else _rows(self.lazy[role], z0, z1)
        block = rows[crop]
        if bits is not None:  # both selections in one pass (it crops to the bins itself: no copy)
            plain, inner, count = bin_selected(rows, bits, self.factor)
            if valid is not None:
                self.plain[role][k:k1] = plain
            if self.inner is not None:
                self.inner[role][k:k1], self.inner["count"][k:k1] = inner, count
            return
        if valid is not None:
            self.plain[role][k:k1] = bin_masked(block, valid, self.factor)[0]
        if mask is not None:
            self.inner[role][k:k1], count = bin_masked(block, mask, self.factor)
            self.inner["count"][k:k1] = count

    def _warped(self, role: str, k: int, k1: int, bits: Any, rows: Any = None) -> None:
        from litomo.resample import warp_bin_field

        z0, z1 = k * self.factor[0], k1 * self.factor[0]
        moving = self.lazy[role] if rows is None else rows  # rows: read (and prefiltered) by prepare()
        got = warp_bin_field(moving, self.fields[role], self.binned_vs, self.raw_vs, (z0, z1),
                             self.out_yx, self.factor, bits=bits)
        if bits is None:
            self.plain[role][k:k1] = got
        elif self.inner is None:
            self.plain[role][k:k1] = got[0]
        else:
            self.plain[role][k:k1], self.inner[role][k:k1] = got

    def _moving_rows(self, role: str, z0: int, z1: int) -> Any:
        """The rows the warp of output rows ``z0:z1`` samples: spline coefficients (cubic), or
        the volume's rows (trilinear, and a cubic slab whose rows hold NaN/inf: the spline would
        spread them along whole lines)."""
        from litomo.resample import read_moving_rows, read_spline_rows

        args = (self.fields[role], self.binned_vs, self.raw_vs, (z0, z1), self.out_yx)
        rows = read_spline_rows(self.lazy[role], *args) if self.cubic else None
        return read_moving_rows(self.lazy[role], *args) if rows is None else rows

    def prepare(self, k: int, k1: int) -> tuple[Any, Any, Any, Any]:
        """The selections of bins ``k:k1`` (and the bins of the volumes nothing moves).

        Runs in a helper thread one slab ahead of :meth:`warp` (numpy releases the GIL, the
        warp kernel too), so this serial work overlaps the parallel kernel.
        """
        z0, z1 = k * self.factor[0], k1 * self.factor[0]
        valid, mask, fixed_rows, bits = self._masks(z0, z1)
        if self.inner is not None:
            self.inner["observed"][k:k1] = _observed_per_bin(valid, self.factor)
        for role in self.roles:
            if role not in self.fields:
                self._unwarped(role, k, k1, valid, mask, fixed_rows, bits)
        # the moving rows too (file reads and the spline prefilter overlap the kernel as well)
        return valid, mask, bits, {r: self._moving_rows(r, z0, z1) for r in self.fields}

    def warp(self, k: int, k1: int, prepared: tuple[Any, Any, Any, Any]) -> None:
        _, _, bits, rows = prepared
        for role in self.roles:
            if role in self.fields:
                self._warped(role, k, k1, bits, rows.get(role))


def warp_and_bin(lazy: dict[str, Any], results: dict[str, Any], binned: dict[str, np.ndarray],
                 binned_vs: tuple[float, float, float], raw_vs: tuple[float, float, float],
                 factor: tuple[int, int, int], *, fixed: str = "post_edge",
                 interior: tuple[float, int] | None = None, slab_bins: int = 2,
                 cubic: bool | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Apply transforms estimated on binned data to the full-resolution volumes, then bin.

    Resampling the *binned* moving volume would mix the partial-volume content of
    neighbouring bins at every particle surface (a 0.4-bin shift changes the AM fraction of a
    surface bin differently at each energy, and R of those bins goes wrong; measured on the
    phantom: x_Li RMSE 0.29 vs 0.04). So each transform (``results[role]``; ``None`` for the
    fixed volume or when nothing was registered) is evaluated at full resolution, slab by
    slab, and each warped slab is binned at once: memory stays at a few slabs whatever the
    volume size. ``cubic=None`` picks cubic interpolation (scipy's ``map_coordinates(order=3,
    mode="nearest")`` of the whole volume) up to :data:`CUBIC_WARP_MAX_VOXELS` and trilinear
    above; both run in the fused kernel :func:`litomo.resample.warp_bin_field`.

    Voxels that a transform maps outside its moving volume (a layer along the faces of the
    field of view, as thick as the shift) were not imaged at that energy: they are left out
    of every bin mean, at all energies (:func:`litomo.resample.observed_mask`), instead of being
    filled with copies of the edge plane.

    ``interior=(threshold, erosion_vox)`` also gives, per bin, the mean over the voxels of the
    *interior* of the fixed volume's bright phase (above ``threshold``, more than
    ``erosion_vox`` voxels inside its surface: :func:`litomo.preprocess.interior_mask`), the
    same voxels at every energy. See :class:`~litomo.workflows.limap.mapping.MapStage` for why the map uses these.

    Parameters
    ----------
    binned : dict
        The plain bin means of every role (from :class:`~litomo.workflows.limap.read.BinStage`), used where nothing is
        warped and every voxel was observed.

    Returns
    -------
    plain : dict
        Bin means of every role over the observed voxels.
    interior : dict or None
        Interior means of every role (NaN in bins without interior voxels), under ``"count"``
        the number of interior voxels of each bin and under ``"observed"`` the number of its
        voxels observed at every energy.
    """
    from concurrent.futures import ThreadPoolExecutor

    if cubic is None:
        cubic = float(np.prod(lazy[fixed].shape)) <= CUBIC_WARP_MAX_VOXELS
    w = _SlabWarp(lazy, results, binned, binned_vs, raw_vs, factor, fixed, interior, cubic)
    nz_b = binned[fixed].shape[0]
    # numba-parallel inside each slab: slabs one after the other, each slab's selections, rows
    # and spline coefficients prepared in a helper thread while the kernel warps the one
    # before; 3 bins deep, so the two slabs in flight hold less than one 10-bin slab did
    step = max(slab_bins, 3)
    bounds = [(k, min(k + step, nz_b)) for k in range(0, nz_b, step)]
    with ThreadPoolExecutor(max_workers=1) as ex:
        ahead = ex.submit(w.prepare, *bounds[0]) if bounds else None
        for i, (k, k1) in enumerate(bounds):
            prepared = ahead.result()
            if i + 1 < len(bounds):
                ahead = ex.submit(w.prepare, *bounds[i + 1])
            w.warp(k, k1, prepared)
    return w.plain, w.inner


def qa_row(state: str, moving: str, fixed: str, mode: str, *, ncc_before: float, ncc_after: float,
           translation_vox: Any = (np.nan,) * 3, rotation_deg: float = np.nan,
           elapsed_s: float = np.nan) -> dict[str, Any]:
    """One row of ``tables/registration.csv``."""
    t = list(translation_vox)
    return {"state": state, "moving": moving, "fixed": fixed, "mode": mode,
            "ncc_before": float(ncc_before), "ncc_after": float(ncc_after),
            "translation_z_vox": float(t[0]), "translation_y_vox": float(t[1]),
            "translation_x_vox": float(t[2]), "rotation_deg": float(rotation_deg),
            "elapsed_s": float(elapsed_s)}


@dataclass
class Warped:
    """Output of :class:`WarpStage`: registered bin means on the map grid."""

    #: bin means of each role over the observed voxels
    plain: dict[str, np.ndarray]
    #: particle-interior means of each role and, under ``"count"`` and ``"observed"``, the
    #: interior voxels and the voxels observed at every energy per bin (empty unless
    #: ``processing.map_binning = "am_interior"``)
    interior: dict[str, np.ndarray]
    #: registration QA rows of this state (NCC before/after, translation, rotation)
    qa: pd.DataFrame


class WarpStage(StateStage):
    """Apply the stored transforms to the full-resolution volumes and bin them (:func:`warp_and_bin`)."""

    name = "warp"
    needs = ("read", "register", "reconstruct")
    # the registration-grid volumes (192 MiB at 1024^3) are released before the warp (issue 22)
    reads = {"read": ("map_grid", "raw_voxel_size_um")}
    output = Warped

    energies = "three"  # N-energy runs: litomo.workflows.limap.spectral

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p = ctx.manifest.processing
        return {"map_binning": p.map_binning, "surface_erosion_vox": p.surface_erosion_vox,
                "interior_on": INTERIOR_ON, "cubic_spline": CUBIC_SPLINE, "observed_per_bin": True}

    def run(self, ctx: RunContext, state: StateSpec, *, read: Binned, register: Registration,
            reconstruct: Any = None) -> Warped:
        import time

        from litomo.register import ncc

        p = ctx.manifest.processing
        factor = bin_factors(p.bin)
        raw_vs = read.raw_voxel_size_um
        map_vs = tuple(s * f for s, f in zip(raw_vs, factor, strict=True))
        results = {"post_edge": None, **{r: register.maps.get(r) for r in MOVING}}
        interior = (register.threshold, int(p.surface_erosion_vox)) if p.map_binning == "am_interior" else None
        lazy, _ = open_slabbed(ctx, state, reconstruct.volumes if reconstruct is not None else None)
        t0 = time.perf_counter()
        plain, inner = warp_and_bin(lazy, results, read.map_grid, map_vs, raw_vs, factor, interior=interior)
        log.info("state %s: full-resolution warp + bin %.1f s", state.name, time.perf_counter() - t0)
        fixed = read.map_grid["post_edge"]
        rows = []
        for role in MOVING:
            moving = read.map_grid[role]
            if role not in register.maps:
                rows.append(qa_row(state.name, role, "post_edge", "none", ncc_before=ncc(fixed, moving),
                                   ncc_after=ncc(fixed, moving), translation_vox=(0.0,) * 3,
                                   rotation_deg=0.0, elapsed_s=0.0))
                continue
            rows.append(qa_row(state.name, role, "post_edge", register.role_mode.get(role, register.mode),
                               ncc_before=ncc(fixed, moving), ncc_after=ncc(fixed, plain[role]),
                               translation_vox=register.translation_vox[role],
                               rotation_deg=register.rotation_deg[role], elapsed_s=register.elapsed_s[role]))
        qa = pd.DataFrame(rows)
        # the deformation test that chose rigid or B-spline (registration.deformation_beyond_rigid)
        qa["deformation_rms_vox"], qa["deformation_max_vox"] = (float(v) for v in register.deformation_vox)
        qa["deformation_misfit_gain"] = float(register.misfit_gain)
        return Warped(plain, inner or {}, qa)

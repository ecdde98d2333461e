"""N-energy stages of ``litomo run`` (issue 16): a state imaged at 20-100 energies across the edge.

A state is either three-energy (``pre_edge``/``edge``/``post_edge``) or N-energy (``[xanes]
energies_ev`` with one volume per energy, or a state's own ``energies_ev``/``volumes``). In an
N-energy run these stages take the place of the three-energy stages of the same name
(:meth:`StateStage.active`); ``reconstruct``, ``read`` and ``particles`` are shared:

=============  ===========================================================================
``read``       every energy binned for the map and the registration, slab by slab (shared)
``register``   each energy onto the highest one, **rigid only** (:class:`SpectralRegisterStage`):
               a B-spline would absorb the Li contrast that differs between energies
``warp``       the transforms at full resolution, one slab of one energy at a time, binned
               (:class:`SpectralWarpStage`)
``map``        the binned (E, z, y, x) stack through :func:`litomo.xanes.nenergy.map_li_spectra`:
               per-voxel normalisation, half-jump edge energy, LCF x_Li with R-factor and bad-fit
               mask (:class:`SpectralMapStage`)
``particles``  particles from the top energy (shared)
``li``         clipping of the map (:class:`SpectralLiStage`)
``statistics`` the three-energy tables plus ``bad_fit_fraction``, ``e0_ev``, ``r_factor_max``
               and the median edge energy and R-factor per state (:class:`SpectralStatisticsStage`)
=============  ===========================================================================

Not carried over from the three-energy path (documented in docs/science.md): particle-interior
means (``map_binning``), ``denoise``, a numeric ``jump_threshold`` (the mask uses the automatic
threshold on the mean pre-/post-edge images), the background law (the pre-edge line of the
normalisation removes it) and the noise estimate / shrinkage of the ``li`` stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.errors import DataError, LitomoError, ManifestError
from litomo.manifest import Manifest, StateSpec
from litomo.preprocess import bin_factors
from litomo.workflows.limap.calibration import Calibration
from litomo.workflows.limap.li import LiMap
from litomo.workflows.limap.mapping import Mapped, am_fraction_from_jump
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.read import Binned, fixed_role, open_slabbed, roles_of
from litomo.workflows.limap.registration import (
    RegisterStage,
    Registration,
    estimate,
    interior_threshold,
    store_estimate,
)
from litomo.workflows.limap.stage import StateStage
from litomo.workflows.limap.stats import StateTables, StatisticsStage
from litomo.workflows.limap.warp import CUBIC_SPLINE, Warped, WarpStage, qa_row, warp_and_bin

log = logging.getLogger(__name__)

#: the state-table columns (and run.json ``nenergy`` entries) an N-energy run adds
SPECTRAL_COLUMNS = ("bad_fit_fraction", "e0_ev", "r_factor_max", "edge_ev_median", "r_factor_median")


def _energy_field(manifest: Manifest, i: int) -> str:
    """The manifest field a state's energies come from."""
    return "xanes.energies_ev" if manifest.xanes.energies_ev is not None else f"states[{i}].energies_ev"


def check_spectral_manifest(manifest: Manifest) -> Calibration:
    """Validate an N-energy experiment before anything is read; returns its (spectral) calibration.

    Refuses a manifest mixing three-energy and N-energy states, a ``[reconstruction]`` section,
    missing reference spectra, and an energy list (after ``energy_shift_ev``) that has duplicates,
    is out of order, does not cover the edge (:func:`litomo.xanes.nenergy.check_energy_list`), has
    a stack count different from its length or reaches outside a reference spectrum: each a
    :class:`~litomo.errors.ManifestError` naming the field.
    """
    from litomo.xanes.background import BackgroundLaw
    from litomo.xanes.nenergy import check_energy_list, reference_e0
    from litomo.xanes.spectra import read_spectrum

    x, path = manifest.xanes, str(manifest.path)
    modes = {s.three_energy for s in manifest.states}
    if len(modes) > 1:
        i = next(i for i, s in enumerate(manifest.states) if s.three_energy)
        raise ManifestError("a run is either three-energy or N-energy: this state gives pre_edge/edge/post_edge "
                            "while others list energies_ev", path=path, field=f"states[{i}]")
    if manifest.reconstruction is not None:
        raise ManifestError("N-energy runs read reconstructed volumes; reconstruct each energy first "
                            "(`litomo reconstruct`)", path=path, field="reconstruction")
    for key in ("reference_pristine", "reference_charged"):
        if getattr(x, key) is None:
            raise ManifestError("missing required field (an N-energy map fits the two reference spectra)",
                                path=path, field=f"xanes.{key}")
    refs = [read_spectrum(r, energy_unit=x.energy_unit) for r in (x.reference_pristine, x.reference_charged)]
    e0 = reference_e0(*refs)
    for i, st in enumerate(manifest.states):
        where = _energy_field(manifest, i)
        try:
            e = check_energy_list(x.calibrated_ev(st.energies_ev), e0_ev=e0, n_stacks=len(st.volumes))
        except DataError as exc:
            raise ManifestError(f"state {st.name!r}: {exc}", path=path, field=where) from None
        for ref, name in zip(refs, (x.reference_pristine, x.reference_charged), strict=True):
            lo, hi = ref.range_ev
            if e[0] < lo or e[-1] > hi:
                raise ManifestError(f"reference spectrum {name} covers {lo:.2f}-{hi:.2f} eV but the energies "
                                    f"(after energy_shift_ev) span {e[0]:.2f}-{e[-1]:.2f} eV", path=path, field=where)
    e = x.calibrated_ev(manifest.states[0].energies_ev)
    nan = float("nan")
    return Calibration(nan, nan, (e[0], e0, e[-1]), nan, {"e0_ev": e0}, (nan, nan),
                       BackgroundLaw("none", (1.0, 1.0, 1.0), 0.0))


class _Spectral:
    """Active in N-energy runs only (the three-energy stage of the same name runs otherwise)."""

    energies = "spectral"


class SpectralRegisterStage(_Spectral, RegisterStage):
    """Every energy registered rigidly onto the highest one on the registration grid (itk-elastix)."""

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        return {"register": ctx.do_register, "mode": "rigid"}

    def run(self, ctx: RunContext, state: StateSpec, *, read: Binned) -> Registration:
        from litomo.register import RegistrationParams

        rf = read.register_factor
        reg_vs = tuple(s * f for s, f in zip(read.raw_voxel_size_um, rf, strict=True))
        top = fixed_role(state)
        fixed = read.reg_grid[top]
        out = Registration("rigid" if ctx.do_register else "none", {}, {}, {}, {}, interior_threshold(fixed),
                           fixed, rf, reg_vs)
        moving = [r for r in roles_of(state) if r != top]
        if not ctx.do_register:
            return out
        params = RegistrationParams(mode="rigid", spatial_samples=8192)
        for i, role in enumerate(moving, start=1):
            store_estimate(out, role, estimate(fixed, read.reg_grid[role], params, reg_vs))
            ctx.report(i, len(moving), f"{state.name}: register")
        return out


class SpectralWarpStage(_Spectral, WarpStage):
    """Every energy warped onto the highest one at full resolution and binned (plain bin means)."""

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        # the cubic-spline scheme is part of the key: a warp cached under the old per-slab prefilter is redone
        return {"map_binning": "mean", "cubic_spline": CUBIC_SPLINE}

    def run(self, ctx: RunContext, state: StateSpec, *, read: Binned, register: Registration,
            reconstruct: Any = None) -> Warped:
        import pandas as pd

        from litomo.register import ncc

        factor = bin_factors(ctx.manifest.processing.bin)
        raw_vs = read.raw_voxel_size_um
        map_vs = tuple(s * f for s, f in zip(raw_vs, factor, strict=True))
        top = fixed_role(state)
        results = {r: register.maps.get(r) for r in roles_of(state)}
        lazy, _ = open_slabbed(ctx, state, None)
        # the warp reads one z-slab of one energy at a time: never the whole stack at full resolution
        plain, _ = warp_and_bin(lazy, results, read.map_grid, map_vs, raw_vs, factor, fixed=top)
        fixed = read.map_grid[top]
        rows = []
        for role in results:
            if role == top:
                continue
            before = ncc(fixed, read.map_grid[role])
            if role in register.maps:
                rows.append(qa_row(state.name, role, top, register.mode, ncc_before=before,
                                   ncc_after=ncc(fixed, plain[role]), translation_vox=register.translation_vox[role],
                                   rotation_deg=register.rotation_deg[role], elapsed_s=register.elapsed_s[role]))
            else:
                rows.append(qa_row(state.name, role, top, "none", ncc_before=before, ncc_after=before,
                                   translation_vox=(0.0,) * 3, rotation_deg=0.0, elapsed_s=0.0))
        return Warped(plain, {}, pd.DataFrame(rows))


@dataclass
class SpectralMapped(Mapped):
    """Output of :class:`SpectralMapStage`: :class:`Mapped` plus the N-energy maps (map grid)."""

    #: half-jump edge energy (eV, foil-corrected); NaN outside the active material
    edge_ev: np.ndarray | None = None
    #: LCF R-factor, sum(resid^2) / sum(data^2) over the fit window; NaN outside the active material
    r_factor: np.ndarray | None = None
    #: active-material voxels whose fit was rejected (NaN in x_Li)
    bad_fit: np.ndarray | None = None
    e0_ev: float = float("nan")
    r_factor_max: float = float("nan")
    bad_fit_fraction: float = float("nan")


def stack_jump(energies_ev: np.ndarray, mu: np.ndarray, e0_ev: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean pre-edge and mean post-edge image of an (E, ...) stack (the windows of the map).

    Examples
    --------
    >>> e = np.array([8300.0, 8310, 8340, 8380, 8400])
    >>> pre, post = stack_jump(e, np.arange(5.0)[:, None] * np.ones((5, 2)), 8333.0)
    >>> float(pre[0]), float(post[0])
    (0.5, 3.5)
    """
    from litomo.xanes.nenergy import POST_EDGE_GAP_EV, PRE_EDGE_GAP_EV

    pre = mu[energies_ev <= e0_ev - PRE_EDGE_GAP_EV].mean(axis=0)
    post = mu[energies_ev >= e0_ev + POST_EDGE_GAP_EV].mean(axis=0)
    return pre, post


def map_spectral(energies_ev: np.ndarray, plain: dict[str, np.ndarray], roles: tuple[str, ...], ctx: RunContext,
                 ) -> SpectralMapped:
    """x_Li, edge energy, R-factor and bad fits of the registered bin means of one state."""
    from litomo.xanes.nenergy import map_li_spectra
    from litomo.xanes.spectra import read_spectrum
    from litomo.xanes.threeenergy import jump_threshold

    x = ctx.manifest.xanes
    refs = [read_spectrum(r, energy_unit=x.energy_unit) for r in (x.reference_pristine, x.reference_charged)]
    mu = np.stack([np.asarray(plain[r], np.float32) for r in roles])
    m = map_li_spectra(energies_ev, mu, *refs, li_pristine=x.li_pristine, li_charged=x.li_charged,
                       e0_ev=ctx.calibration.energies_ev[1])  # classes: the statistics stage's thresholds
    pre, post = stack_jump(energies_ev, mu, m.e0_ev)
    fin = np.isfinite(pre) & np.isfinite(post)
    thr = float(jump_threshold(pre[fin], post[fin]))
    frac, j_full = am_fraction_from_jump(post - pre, m.am)
    return SpectralMapped(m.x_li, None, None, m.am, frac, thr, float(j_full), 0.0, float("nan"),
                          edge_ev=m.edge_ev, r_factor=m.r_factor, bad_fit=m.bad_fit, e0_ev=float(m.e0_ev),
                          r_factor_max=float(m.r_factor_max), bad_fit_fraction=float(m.bad_fit_fraction))


class SpectralMapStage(_Spectral, StateStage):
    """The binned stack through :func:`litomo.xanes.nenergy.map_li_spectra` (:func:`map_spectral`)."""

    name = "map"
    needs = ("warp",)
    output = SpectralMapped

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        x = ctx.manifest.xanes
        return {"energies_ev": list(x.calibrated_ev(state.energies_ev)), "e0_ev": ctx.calibration.energies_ev[1],
                "references": [ctx.checksums.get(str(r)) for r in (x.reference_pristine, x.reference_charged)],
                "li_pristine": x.li_pristine, "li_charged": x.li_charged}

    def run(self, ctx: RunContext, state: StateSpec, *, warp: Warped) -> SpectralMapped:
        e = np.asarray(ctx.manifest.xanes.calibrated_ev(state.energies_ev), float)
        out = map_spectral(e, warp.plain, roles_of(state), ctx)
        if not out.am.any():
            raise DataError(f"state {state.name!r}: no voxel shows a Ni K-edge jump above the threshold; "
                            "check that the volumes are ordered like xanes.energies_ev")
        return out


class SpectralLiStage(_Spectral, StateStage):
    """The final x_Li map of an N-energy state: the LCF map, clipped to ``processing.clip_li``."""

    name = "li"
    needs = ("map",)
    output = LiMap

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        return {"clip_li": ctx.manifest.processing.clip_li}

    def run(self, ctx: RunContext, state: StateSpec, *, map: SpectralMapped) -> LiMap:
        from litomo.xanes import threeenergy as te

        p = ctx.manifest.processing
        x, clipped = te.clip_li(map.li_plain, tuple(p.clip_li) if p.clip_li else None)
        msgs = []
        warning = te.check_clipped_fraction(clipped, p.clip_li, f"state {state.name}")
        if warning:
            msgs.append(warning)
        if map.bad_fit_fraction > 0.05:
            msgs.append(f"state {state.name}: {map.bad_fit_fraction:.1%} of the active-material voxels are fitted "
                        "badly by the two references (R-factor above "
                        f"{map.r_factor_max:.3g}): left unmapped; check the references and the registration")
        return LiMap(np.asarray(x, dtype=np.float32), float(clipped), msgs)


class SpectralStatisticsStage(_Spectral, StatisticsStage):
    """The three-energy tables plus the N-energy columns :data:`SPECTRAL_COLUMNS` in ``states``."""

    def run(self, ctx: RunContext, state: StateSpec, *, li: LiMap, map: SpectralMapped,
            particles: Any, warp: Any) -> StateTables:
        map = map
        out = super().run(ctx, state, li=li, map=map, particles=particles, warp=warp)
        am = map.am & ~map.bad_fit
        with np.errstate(all="ignore"):
            extra = {"bad_fit_fraction": map.bad_fit_fraction, "e0_ev": map.e0_ev, "r_factor_max": map.r_factor_max,
                     "edge_ev_median": float(np.nanmedian(map.edge_ev[am])) if am.any() else float("nan"),
                     "r_factor_median": float(np.nanmedian(map.r_factor[am])) if am.any() else float("nan")}
        for k, v in extra.items():
            out.states[k] = v
        return out


def spectral_record(states: Any) -> dict[str, Any]:
    """run.json ``nenergy``: the N-energy columns of the states table, per state."""
    return {str(row["state"]): {k: float(row[k]) for k in SPECTRAL_COLUMNS if k in row}
            for _, row in states.iterrows()}


def write_spectral_volumes(rd: Any, state: str, cache: Any, voxel_size_um: Any, *, tiff: bool) -> None:
    """``volumes/<state>/{edge_ev, r_factor, bad_fit}.ome.zarr`` (and TIFF copies with ``tiff``)."""
    from litomo.io import write_ome_zarr, write_tiff
    from litomo.volume import Volume

    vdir = rd.volumes(state).relative_to(rd.root)
    for name in ("edge_ev", "r_factor", "bad_fit"):
        arr = cache.field(state, "map", SpectralMapped, name)
        if arr is None:
            raise LitomoError(f"state {state}: the stored map stage has no {name} volume; rerun without --resume")
        arr = arr.astype(np.uint8) if name == "bad_fit" else arr.astype(np.float32)
        vol = Volume(arr, voxel_size_um, {"name": name, "state": state})
        write_ome_zarr(rd.output(vdir / f"{name}.ome.zarr"), vol)
        if tiff:
            write_tiff(rd.output(vdir / f"{name}.tif"), vol)


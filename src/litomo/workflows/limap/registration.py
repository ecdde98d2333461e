"""Stage ``register``: estimate the pre-edge -> post-edge and edge -> post-edge transforms.

The transforms (rigid, then B-spline) are estimated on the volumes binned by
``processing.register_bin`` (finer than the map's bin: a 7x7x7 grid is too coarse to place
particle surfaces to the ~0.1 voxel the edge ratio needs) and stored as elastix parameter
maps; stage ``warp`` applies them at full resolution.

The edge image is not B-spline-registered onto the post-edge image itself: its contrast
depends on the Li content the map is to measure, and a B-spline free to deform at the
particle scale absorbs that contrast (issue 16). It is registered onto a *predicted* edge
image instead (:func:`predicted_edge`), which already carries the Li contrast measured after a
rigid-only registration, so the deformation no longer gains anything by moving Li.

Even so, a B-spline of the edge image moves within-bin Li contrast at particle surfaces. The
pre-edge image carries no Li contrast: unless its B-spline deforms it by at least
:data:`DEFORMATION_LEVEL_VOX` beyond its rigid part (:func:`deformation_beyond_rigid`) *and*
removes at least :data:`MISFIT_GAIN_LEVEL` of its misfit to the post-edge image
(:func:`misfit_gain`), the data shows no deformation between energies and both moving images
keep their rigid transforms only (docs/science.md, "Deformation test before the edge B-spline").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from litomo.errors import DataError, LitomoError
from litomo.manifest import StateSpec
from litomo.workflows.limap.edge_target import predicted_edge, warp_cubic
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.read import Binned
from litomo.workflows.limap.stage import StateStage

log = logging.getLogger(__name__)

#: the moving volumes, each registered onto the post-edge volume
MOVING = ("pre_edge", "edge")
#: what the edge image's B-spline is registered onto (a change of it invalidates stored runs)
EDGE_TARGET = "predicted"
#: predictions of the edge image, the first from the rigidly registered edge, each next one
#: from the previous B-spline registration; a second one drifted back towards the bias
#: (forward-model fronts: class fractions 2.6 / 3.0 -> 3.4 / 3.2 pp, RMSE 0.029 -> 0.031)
EDGE_PREDICTIONS = 1
#: elastix pyramid levels of the rigid and of the following B-spline stage. Each level costs a
#: fixed ~4 s of CPU at a 256^3 grid whatever its iterations (issue 22); on the 512^3 seed-5
#: phantom 3 + 3 levels (36 s) and 2 + 1 (19 s) give the pre-edge transform within 0.086 and
#: 0.089 raw voxels rms of the truth (docs/scale.md, "Registration cost (session 7)")
LEVELS = (2, 1)
#: rms displacement (registration voxels, over the particles) of the pre-edge image's B-spline
#: beyond its rigid part below which the data shows no deformation between energies. Measured
#: (docs/science.md): undeformed forward-model suite 0.021-0.035 (elastix's noise; max 0.06-0.14),
#: except no_background 0.62-0.68 (a pre-edge image with almost no structure, NCC 0.15); the
#: benchmark phantom (random B-spline deformation <= 1 raw voxel per energy) 0.165-0.173
DEFORMATION_LEVEL_VOX = 0.08
#: share of the pre-edge image's misfit to the post-edge one (1 - NCC) that its B-spline must
#: remove beyond its rigid part to count as a deformation. Measured: suite -1 % to +0.2 %,
#: no_background +0.3 / +0.6 % (its B-spline fits noise), benchmark phantom 9.1 / 12.2 %
MISFIT_GAIN_LEVEL = 0.03
#: samples of elastix's B-spline step-size estimate (``NumberOfJacobianMeasurements``; litomo's
#: general default 8192). Its memory grows with the B-spline parameter count: 4.5 um control
#: spacing is 9 voxels of the 1024^3 state's 256^3 grid, 98 304 parameters, and the elastix
#: worker peaked at 1570 MiB, 1487 MiB with 2048. Truth rms (raw voxels, pre-edge / edge): 1024^3
#: 0.196 / 0.302 -> 0.187 / 0.296; 512^3 0.0885 / 0.1672 -> 0.0881 / 0.1670 (docs/scale.md, session 9)
JACOBIAN_MEASUREMENTS = 2048


def estimate(fixed: np.ndarray, moving: np.ndarray, params: Any, reg_vs: tuple[float, ...],
             initial_maps: Any = None, fixed_mask: np.ndarray | None = None) -> Any:
    """One registration on the estimation grid (transform only, no resampled image)."""
    from litomo.register import register_pair

    return register_pair(fixed, moving, params=params, voxel_size_um=reg_vs, resample=False, initial_maps=initial_maps,
                         fixed_mask=fixed_mask)


#: bins between the edge of the measured region and the registration mask (shifts between
#: energies on the registration grid stay below this)
MASK_MARGIN_BINS = 4


def filled_grid(grid: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The registration grid with its unmeasured (NaN) bins filled, and the mask of measured bins.

    A reconstruction's field-of-view mask leaves NaN outside the circle every view saw; elastix
    needs finite images, so those bins take the volume's median and the fixed mask keeps the
    metric on measured bins only, :data:`MASK_MARGIN_BINS` inside the edge of the measured
    region: a fixed bin mapped into the moving volume's filled region pulls the transform
    towards identity (a 1.5-bin shift was found as 1.38 with the plain mask, 1.500 with this
    margin: ``tests/test_register_nan.py``). The mask is None when every bin is measured.

    Examples
    --------
    >>> v = np.ones((1, 1, 12), np.float32); v[..., 0] = np.nan
    >>> filled, mask = filled_grid({"post_edge": v, "pre_edge": v, "edge": v})
    >>> float(filled["post_edge"][0, 0, 0]), int(np.argmax(mask[0, 0]))
    (1.0, 5)
    """
    finite = {r: np.isfinite(g) for r, g in grid.items()}
    if all(f.all() for f in finite.values()):
        return grid, None
    out = {}
    for r, g in grid.items():
        if not finite[r].any():
            raise DataError(f"the {r} volume has no measured (finite) value on the registration grid")
        out[r] = np.where(finite[r], g, np.float32(np.median(g[finite[r]]))).astype(g.dtype, copy=False)
    measured = finite["post_edge"] & finite["pre_edge"] & finite["edge"]
    return out, ndi.binary_erosion(measured, iterations=MASK_MARGIN_BINS, border_value=1)


def store_estimate(out: Registration, role: str, res: Any) -> None:
    """Keep the latest transform of ``role`` in ``out`` (shifts in raw voxels); elapsed times add up."""
    rf = out.register_factor
    out.maps[role] = res.parameter_maps
    out.translation_vox[role] = tuple(float(t * f) for t, f in zip(res.translation_vox, rf, strict=True))
    out.rotation_deg[role] = float(np.max(np.abs(res.rotation_deg)))
    out.elapsed_s[role] = out.elapsed_s.get(role, 0.0) + float(res.elapsed_s)


def deformation_beyond_rigid(maps: Any, post: np.ndarray, threshold: float, reg_vs: tuple[float, ...],
                              step: int = 2) -> tuple[float, float]:
    """RMS and largest displacement of a rigid + B-spline transform beyond its rigid part.

    ``maps`` ends with the B-spline map; the displacement of the whole transform minus that of
    the maps before it, in voxels of the registration grid, over the particle voxels
    (``post > threshold``), evaluated on every ``step``-th voxel (the field is smooth on the
    control spacing, >= 8 voxels).

    Examples
    --------
    >>> rigid = {"Transform": ["TranslationTransform"], "TransformParameters": ["0.5", "0", "0"],
    ...          "FixedImageDimension": ["3"]}
    >>> post = np.ones((8, 8, 8))
    >>> deformation_beyond_rigid([rigid, rigid], post, 0.5, (0.5, 1.0, 1.0))  # 0.5 um in x = 0.5 voxels
    (0.5, 0.5)
    """
    from litomo.register import displacement_field

    shape = np.shape(post)
    coarse = tuple(-(-n // step) for n in shape)
    cvs = tuple(float(n * s / m) for n, s, m in zip(shape, reg_vs, coarse, strict=True))
    d = displacement_field(maps, coarse, voxel_size_um=cvs)
    d -= displacement_field(maps[:-1], coarse, voxel_size_um=cvs)
    d /= np.asarray(reg_vs, np.float32).reshape(-1, *([1] * len(shape)))
    norm = np.sqrt((d * d).sum(axis=0))[np.asarray(post)[tuple(slice(None, None, step) for _ in shape)] > threshold]
    if norm.size == 0:
        raise DataError("no particle voxels to measure the deformation over")
    return float(np.sqrt(np.mean(norm.astype(np.float64) ** 2))), float(norm.max())


def misfit_gain(grid: dict[str, np.ndarray], maps: Any, reg_vs: tuple[float, ...], *,
                moved: np.ndarray | None = None) -> float:
    """Share of the pre-edge image's misfit ``1 - NCC`` to the post-edge image that the last map
    of ``maps`` (its B-spline) removes beyond the maps before it (its rigid part).

    ``moved``: the pre-edge image already warped by ``maps`` (:func:`warp_cubic`), if at hand.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = rng.random((12, 12, 12)).astype(np.float32)
    >>> m = {"Transform": ["TranslationTransform"], "TransformParameters": ["0", "0", "0"],
    ...      "FixedImageDimension": ["3"]}
    >>> misfit_gain({"post_edge": img, "pre_edge": img + rng.random(img.shape)}, [m, m], (1, 1, 1))
    0.0
    """
    from litomo.register import ncc

    post = grid["post_edge"]
    before = 1.0 - ncc(post, warp_cubic(grid["pre_edge"], maps[:-1], reg_vs))
    after = 1.0 - ncc(post, warp_cubic(grid["pre_edge"], maps, reg_vs) if moved is None else moved)
    return float((before - after) / before) if before > 0 else 0.0


def interior_threshold(post_binned: np.ndarray) -> float:
    """Threshold between the particles and the rest on post-edge attenuation (Otsu).

    Taken from the registration-binned post-edge volume (a few M voxels): above the edge, the
    Ni-bearing active material absorbs several times more than the carbon-binder domain and
    the electrolyte-filled pores, and the class means do not depend on the binning.

    Examples
    --------
    >>> a = np.r_[np.full(50, 1.0), np.full(50, 3.0)]
    >>> 1.0 < interior_threshold(a) < 3.0
    True
    """
    from skimage.filters import threshold_otsu

    vals = np.asarray(post_binned, np.float32)
    vals = vals[np.isfinite(vals)]
    if vals.size < 2 or np.ptp(vals) == 0:
        raise DataError("the post-edge volume is constant: no particles to map")
    return float(threshold_otsu(vals, nbins=512))


@dataclass
class Registration:
    """Output of :class:`RegisterStage` (empty ``maps`` when registration is off)."""

    mode: str
    #: elastix parameter maps of each registered role (moving onto post-edge)
    maps: dict[str, Any]
    #: translation of each registered role in full-resolution voxels (z, y, x)
    translation_vox: dict[str, Any]
    rotation_deg: dict[str, float]
    elapsed_s: dict[str, float]
    #: particle / rest threshold on post-edge attenuation (:func:`interior_threshold`)
    threshold: float
    #: the registration-grid post-edge volume, on which particles are separated
    separation_grid: np.ndarray
    register_factor: tuple[int, int, int]
    register_voxel_size_um: tuple[float, float, float]
    #: the pre-edge B-spline's displacement beyond its rigid part over the particles, rms and
    #: max, in registration voxels (:func:`deformation_beyond_rigid`; NaN when not measured)
    deformation_vox: tuple[float, float] = (float("nan"), float("nan"))
    #: the share of the pre-edge misfit its B-spline removed (:func:`misfit_gain`; NaN when
    #: not measured: not needed below :data:`DEFORMATION_LEVEL_VOX`)
    misfit_gain: float = float("nan")
    #: the transform kept for each moving role ("rigid" when no deformation was shown)
    role_mode: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass
class EstimationSetup:
    """What every estimate of :class:`RegisterStage` reads."""

    #: the registration grid of each role, unmeasured (NaN) bins filled (:func:`filled_grid`)
    grid: dict[str, np.ndarray]
    #: elastix's fixed mask of measured bins (None: every bin measured)
    measured: np.ndarray | None
    #: :class:`litomo.register.RegistrationParams` of the pre-edge estimate
    params: Any
    register_voxel_size_um: tuple[float, float, float]


class FirstEstimates:
    """The two estimates that need no other: pre-edge onto post-edge (rigid [+ B-spline]) and edge
    onto post-edge (rigid; the same estimate whichever way the edge image is then registered).

    Begun in the elastix worker by :meth:`RegisterStage.start` (``futures``), else computed here
    when :meth:`get` asks for them.
    """

    def __init__(self, setup: EstimationSetup, futures: dict[str, Any] | None = None):
        self.setup, self._futures = setup, dict(futures or {})

    def get(self, which: str) -> Any:
        """The estimate ``"pre_edge"`` or ``"edge_rigid"`` (waits for the worker when begun there)."""
        if which in self._futures:
            return self._futures.pop(which).result()
        return _first_estimate(self.setup, which)


def _first_estimate(setup: EstimationSetup, which: str, worker: Any = None) -> Any:
    if worker is not None:
        # the volumes go to the worker once it has loaded itk: sent earlier, they would wait in
        # this process (128 MiB at a 256^3 grid) while it separates the particles
        worker.wait_ready()
        from litomo import register_worker

        if register_worker.active() is not worker:  # the run stopped (an error) and closed the worker:
            raise LitomoError("the registration begun early was cancelled")  # not elastix in this process
    g, params = setup.grid, setup.params
    if which == "edge_rigid":
        g, params = {**g, "pre_edge": g["edge"]}, dataclasses.replace(params, mode="rigid")
    return estimate(g["post_edge"], g["pre_edge"], params, setup.register_voxel_size_um, fixed_mask=setup.measured)


class RegisterStage(StateStage):
    """Register pre-edge and edge onto post-edge on the registration grid (itk-elastix)."""

    name = "register"
    needs = ("read",)
    output = Registration
    reads = {"read": ("reg_grid", "register_factor", "raw_voxel_size_um")}

    energies = "three"  # N-energy runs: litomo.workflows.limap.spectral

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p = ctx.manifest.processing
        return {"register": ctx.do_register, "bspline": p.bspline,
                "bspline_spacing_um": p.bspline_spacing_um, "edge_target": EDGE_TARGET,
                "edge_predictions": EDGE_PREDICTIONS, "levels": list(LEVELS), "edge_rigid_reused": True,
                "deformation_level_vox": DEFORMATION_LEVEL_VOX, "misfit_gain_level": MISFIT_GAIN_LEVEL,
                "jacobian_measurements": JACOBIAN_MEASUREMENTS, "bin": tuple(np.broadcast_to(p.bin, 3).tolist())}

    @staticmethod
    def setup(ctx: RunContext, read: Binned) -> EstimationSetup:
        """Grid, mask, elastix parameters and voxel size of the estimates (checks the B-spline spacing)."""
        from litomo.manifest import check_bspline_spacing
        from litomo.register import RegistrationParams

        p = ctx.manifest.processing
        reg_vs = tuple(s * f for s, f in zip(read.raw_voxel_size_um, read.register_factor, strict=True))
        if p.bspline and ctx.do_register:  # too fine a grid hangs or crashes elastix (issue #20)
            check_bspline_spacing(p.bspline_spacing_um, reg_vs)
        params = RegistrationParams(mode="rigid+bspline" if p.bspline else "rigid", spatial_samples=8192,
                                    resolutions=LEVELS[0], bspline_resolutions=LEVELS[1],
                                    bspline_grid_spacing_vox=p.bspline_spacing_um / min(reg_vs),
                                    jacobian_measurements=JACOBIAN_MEASUREMENTS)
        grid, measured = filled_grid(read.reg_grid)
        return EstimationSetup(grid, measured, params, reg_vs)

    def start(self, ctx: RunContext, state: StateSpec, *, read: Binned) -> FirstEstimates | None:
        """Hand the :class:`FirstEstimates` to the elastix worker now, so that they run while this
        process separates the particles (issue 22); None without a worker (in-process elastix holds
        the GIL: nothing would overlap)."""
        from concurrent.futures import ThreadPoolExecutor

        from litomo import register_worker

        worker = register_worker.active()
        # a subclass with its own run() (the N-energy stage) has other estimates
        if worker is None or not ctx.do_register or type(self).run is not RegisterStage.run:
            return None
        try:
            setup = self.setup(ctx, read)
        except LitomoError:
            return None  # raised again by run(), as this stage's error
        # one thread, the two estimates in turn: the worker takes one call at a time
        pool = ThreadPoolExecutor(1, thread_name_prefix="litomo-register")
        futures = {w: pool.submit(_first_estimate, setup, w, worker) for w in ("pre_edge", "edge_rigid")}
        pool.shutdown(wait=False)
        return FirstEstimates(setup, futures)

    def run(self, ctx: RunContext, state: StateSpec, *, read: Binned,
            started: FirstEstimates | None = None) -> Registration:
        first = started or FirstEstimates(self.setup(ctx, read))
        setup = first.setup
        mode = "rigid+bspline" if ctx.manifest.processing.bspline else "rigid"
        post = setup.grid["post_edge"]
        out = Registration(mode if ctx.do_register else "none", {}, {}, {}, {}, interior_threshold(post), post,
                           read.register_factor, setup.register_voxel_size_um)
        if not ctx.do_register:
            ctx.report(len(MOVING), len(MOVING), f"{state.name}: register")
            return out
        from litomo import register_worker

        # elastix in a worker process: its itk import and working memory leave with it
        with register_worker.session():
            self._register_all(ctx, state, first, out)
        return out

    def _register_all(self, ctx: RunContext, state: StateSpec, first: FirstEstimates, out: Registration) -> None:
        p, rf = ctx.manifest.processing, out.register_factor
        grid, reg_vs, measured = first.setup.grid, out.register_voxel_size_um, first.setup.measured
        pre = first.get("pre_edge")
        store_estimate(out, "pre_edge", pre)
        ctx.report(1, len(MOVING), f"{state.name}: register")
        moved: dict[str, np.ndarray] = {}  # the pre-edge image through its whole transform, warped once
        deformed = p.bspline and self._deformed(state, grid, out, pre.parameter_maps, moved)
        out.role_mode = dict.fromkeys(MOVING, out.mode if deformed else "rigid")
        # the edge's rigid estimate (begun in the worker meanwhile, when there is one)
        res = rigid = first.get("edge_rigid")
        if p.bspline and not deformed:
            # the edge's B-spline would move within-bin Li contrast and gain nothing (issue 16);
            # the pre-edge's is elastix's noise: its rigid part is kept
            out.maps["pre_edge"] = pre.parameter_maps[:-1]
        elif p.bspline:
            # map bin in registration voxels: Li contrast on coarser scales stays in the target
            sigma = 0.5 * min(b / f for b, f in zip(np.broadcast_to(p.bin, 3), rf, strict=True))
            # the B-spline onto the target starts from the rigid transform: no second rigid stage
            bspline = dataclasses.replace(first.setup.params, mode="bspline", resolutions=LEVELS[1])
            edge_maps = rigid.parameter_maps
            for _ in range(EDGE_PREDICTIONS):
                target = self._edge_target(grid, out, edge_maps, reg_vs, max(sigma, 1.0), moved["pre_edge"])
                res = estimate(target, grid["edge"], bspline, reg_vs, initial_maps=rigid.parameter_maps,
                               fixed_mask=measured)
                edge_maps = res.parameter_maps
        store_estimate(out, "edge", res)
        ctx.report(2, len(MOVING), f"{state.name}: register")

    @staticmethod
    def _deformed(state: StateSpec, grid: dict[str, np.ndarray], out: Registration, maps: Any,
                  moved: dict[str, np.ndarray]) -> bool:
        """Does the pre-edge image's B-spline (``maps[-1]``) show a deformation between energies?

        ``moved`` receives the pre-edge image warped by ``maps`` when computed (the edge target's too).
        """
        reg_vs = out.register_voxel_size_um
        out.deformation_vox = deformation_beyond_rigid(maps, grid["post_edge"], out.threshold, reg_vs)
        deformed = out.deformation_vox[0] >= DEFORMATION_LEVEL_VOX
        if deformed:  # two cubic warps of the pre-edge grid: only where the displacement is large
            moved["pre_edge"] = warp_cubic(grid["pre_edge"], maps, reg_vs)
            out.misfit_gain = misfit_gain(grid, maps, reg_vs, moved=moved["pre_edge"])
            deformed = out.misfit_gain >= MISFIT_GAIN_LEVEL
        log.info("state %s: pre-edge B-spline beyond rigid: rms %.3f, max %.3f registration voxels, misfit "
                 "gain %.3f: %s", state.name, *out.deformation_vox, out.misfit_gain,
                 "deformed" if deformed else "no deformation shown, rigid only")
        return deformed

    @staticmethod
    def _edge_target(grid: dict[str, np.ndarray], out: Registration, edge_maps: Any,
                     reg_vs: tuple[float, ...], sigma_vox: float, moved_pre: np.ndarray) -> np.ndarray:
        """:func:`predicted_edge` from the registered pre-edge and the edge registered by ``edge_maps``.

        ``moved_pre``: the pre-edge image warped by its whole transform, as the deformation test
        warped it (a deformed state always went through that test: the same resampling, done once).
        """
        post = grid["post_edge"]
        return predicted_edge(moved_pre, warp_cubic(grid["edge"], edge_maps, reg_vs), post, post > out.threshold,
                              sigma_vox)

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

from litomo.errors import DataError
from litomo.manifest import StateSpec
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


def misfit_gain(grid: dict[str, np.ndarray], maps: Any, reg_vs: tuple[float, ...]) -> float:
    """Share of the pre-edge image's misfit ``1 - NCC`` to the post-edge image that the last map
    of ``maps`` (its B-spline) removes beyond the maps before it (its rigid part).

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
    after = 1.0 - ncc(post, warp_cubic(grid["pre_edge"], maps, reg_vs))
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


def predicted_edge(pre: np.ndarray, edge: np.ndarray, post: np.ndarray, interior: np.ndarray,
                   sigma_vox: float) -> np.ndarray:
    """The edge image the pre- and post-edge images predict, with the edge's own Li contrast.

    At each voxel the edge attenuation lies between pre- and post-edge ones,
    ``edge = pre + r * (post - pre)``, with the edge fraction ``r`` set by the Li content. ``r``
    is estimated as a ratio of Gaussian-smoothed sums, ``G(edge - pre) / G(post - pre)``: a
    jump-weighted mean, so the Ni-bearing particles dominate it at their partial-volume
    surfaces too, and noise in ``post - pre`` does not bias it as a mean of per-voxel ratios
    would. Where the smoothed jump is small (pores, binder: no Ni, nothing to predict) the
    state's mean fraction over ``interior`` is used. The prediction ``pre + r_s * (post - pre)``
    keeps the Li contrast on scales above ``sigma_vox``, so a B-spline registration of the
    measured edge image onto it is not rewarded for moving Li between particles, shells and
    cores; what remains below ``sigma_vox`` moves Li only inside a map bin.

    Parameters
    ----------
    pre, edge, post : numpy.ndarray
        Pre-edge, edge and post-edge images on one grid (pre-edge already registered; edge
        registered at least rigidly).
    interior : numpy.ndarray of bool
        Active-material voxels (post-edge above :func:`interior_threshold`).
    sigma_vox : float
        Gaussian sigma of the smoothing of ``r``, in voxels of the grid.

    Returns
    -------
    numpy.ndarray
        float32 predicted edge image.

    Examples
    --------
    >>> pre = np.ones((8, 8, 8)); post = 3 * pre; inside = np.ones((8, 8, 8), bool)
    >>> edge = pre + 0.25 * (post - pre)
    >>> bool(np.allclose(predicted_edge(pre, edge, post, inside, 1.0), 1.5))
    True
    """
    from scipy import ndimage as ndi

    inside = np.asarray(interior, bool)
    if not inside.any():
        raise DataError("no particle voxels to predict the edge image from")
    # float32 in place (scipy's filters accumulate in float64; sums below too): at a 256^3 grid
    # each temporary is 64 MiB, and the float64 version took ~500 MiB more (issue 22)
    pre = np.asarray(pre, np.float32)
    jump = np.subtract(post, pre, dtype=np.float32)
    num = np.subtract(edge, pre, dtype=np.float32)  # the rise, then its smoothed sum
    r_mean = num[inside].sum(dtype=np.float64) / jump[inside].sum(dtype=np.float64)
    jump_mean = jump[inside].mean(dtype=np.float64)
    num = ndi.gaussian_filter(num, sigma_vox, output=num)
    den = ndi.gaussian_filter(jump, sigma_vox)
    ok = den > 0.25 * jump_mean
    r = np.divide(num, den, out=num, where=ok)  # the edge fraction r, in num's memory
    r[~ok] = r_mean
    del den, ok
    r *= jump
    r += pre
    return r


def warp_cubic(volume: np.ndarray, maps: Any, voxel_size_um: tuple[float, ...], *, field_step_vox: int = 4,
               slab: int = 16) -> np.ndarray:
    """``volume`` resampled through the transform ``maps`` onto its own grid (cubic B-spline).

    What transformix's order-3 resampling gives, without itk: the displacement is evaluated with
    numpy (:func:`litomo.register.displacement_field`) on a grid ``field_step_vox`` times coarser
    and upsampled linearly (exact for the rigid part; the B-spline part varies on the control
    spacing, >= 8 voxels, so the linear error is a few thousandths of a voxel), then sampled
    by :func:`litomo.resample.map_coordinates_cubic`. Points mapped outside take the nearest edge
    value (transformix: a fill value); this feeds only a registration target. 256^3: 5.4 s of CPU
    per volume where transformix took 18.3 s (its first call; issue 22). ``slab`` z-planes at a
    time: the float64 source coordinates of a slab are its largest temporary (16 planes: 24 MiB at
    256^2; the edge target's peak went +492 -> +323 MiB from 64 to 16 planes, same output and CPU).

    Examples
    --------
    >>> m = {"Transform": ["TranslationTransform"], "TransformParameters": ["1", "0", "0"],
    ...      "FixedImageDimension": ["3"]}
    >>> v = np.arange(6.0)[None, None, :] * np.ones((6, 6, 1))
    >>> warp_cubic(v, [m], (1.0, 1.0, 1.0))[0, 0, :5].tolist()  # content shifted by +1 in x
    [1.0, 2.0, 3.0, 4.0, 5.0]
    """
    from litomo.register import displacement_field
    from litomo.resample import cubic_prefilter_z, map_coordinates_cubic, source_coordinates

    vol = np.asarray(volume, np.float32)
    shape, vs = vol.shape, np.asarray(voxel_size_um, float)
    fshape = tuple(max(2, -(-n // field_step_vox)) for n in shape)
    fvs = tuple(float(n * s / m) for n, s, m in zip(shape, vs, fshape, strict=True))
    field = displacement_field(maps, fshape, voxel_size_um=fvs)
    coef_z = cubic_prefilter_z(vol)  # once for the whole volume, not once per slab
    out = np.empty(shape, np.float32)
    for z0 in range(0, shape[0], slab):
        z1 = min(shape[0], z0 + slab)
        src = source_coordinates(field, fvs, vs, (z0, z1), shape[1:])
        out[z0:z1] = map_coordinates_cubic(vol, src, coef_z=coef_z)
    return out


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
                "bin": tuple(np.broadcast_to(p.bin, 3).tolist())}

    def run(self, ctx: RunContext, state: StateSpec, *, read: Binned) -> Registration:
        from litomo.manifest import check_bspline_spacing
        from litomo.register import RegistrationParams

        p = ctx.manifest.processing
        mode = "rigid+bspline" if p.bspline else "rigid"
        rf = read.register_factor
        reg_vs = tuple(s * f for s, f in zip(read.raw_voxel_size_um, rf, strict=True))
        if p.bspline and ctx.do_register:  # too fine a grid hangs or crashes elastix (issue #20)
            check_bspline_spacing(p.bspline_spacing_um, reg_vs)
        params = RegistrationParams(mode=mode, spatial_samples=8192, resolutions=LEVELS[0], bspline_resolutions=LEVELS[1],
                                    bspline_grid_spacing_vox=p.bspline_spacing_um / min(reg_vs))
        grid, measured = filled_grid(read.reg_grid)
        out = Registration(mode if ctx.do_register else "none", {}, {}, {}, {},
                           interior_threshold(grid["post_edge"]), grid["post_edge"], rf, reg_vs)
        if not ctx.do_register:
            ctx.report(len(MOVING), len(MOVING), f"{state.name}: register")
            return out
        from litomo import register_worker

        # elastix in a worker process: its itk import and working memory leave with it
        with register_worker.session():
            self._register_all(ctx, state, grid, out, params, measured)
        return out

    def _register_all(self, ctx: RunContext, state: StateSpec, grid: dict[str, np.ndarray], out: Registration,
                      params: Any, measured: np.ndarray | None = None) -> None:
        p, rf, reg_vs = ctx.manifest.processing, out.register_factor, out.register_voxel_size_um
        pre = estimate(grid["post_edge"], grid["pre_edge"], params, reg_vs, fixed_mask=measured)
        store_estimate(out, "pre_edge", pre)
        ctx.report(1, len(MOVING), f"{state.name}: register")
        fixed = grid["post_edge"]
        deformed = p.bspline and self._deformed(state, grid, out, pre.parameter_maps)
        out.role_mode = dict.fromkeys(MOVING, out.mode if deformed else "rigid")
        if p.bspline and not deformed:
            # the edge's B-spline would move within-bin Li contrast and gain nothing (issue 16);
            # the pre-edge's is elastix's noise: its rigid part is kept
            out.maps["pre_edge"] = pre.parameter_maps[:-1]
            res = estimate(fixed, grid["edge"], dataclasses.replace(params, mode="rigid"), reg_vs, fixed_mask=measured)
        elif p.bspline:
            # map bin in registration voxels: Li contrast on coarser scales stays in the target
            sigma = 0.5 * min(b / f for b, f in zip(np.broadcast_to(p.bin, 3), rf, strict=True))
            rigid = estimate(grid["post_edge"], grid["edge"], dataclasses.replace(params, mode="rigid"),
                             reg_vs, fixed_mask=measured).parameter_maps
            # the B-spline onto the target starts from this rigid transform: no second rigid stage
            bspline = dataclasses.replace(params, mode="bspline", resolutions=LEVELS[1])
            edge_maps = rigid
            for _ in range(EDGE_PREDICTIONS):
                fixed = self._edge_target(grid, out, edge_maps, reg_vs, max(sigma, 1.0))
                res = estimate(fixed, grid["edge"], bspline, reg_vs, initial_maps=rigid, fixed_mask=measured)
                edge_maps = res.parameter_maps
        else:
            res = estimate(fixed, grid["edge"], params, reg_vs, fixed_mask=measured)
        store_estimate(out, "edge", res)
        ctx.report(2, len(MOVING), f"{state.name}: register")

    @staticmethod
    def _deformed(state: StateSpec, grid: dict[str, np.ndarray], out: Registration, maps: Any) -> bool:
        """Does the pre-edge image's B-spline (``maps[-1]``) show a deformation between energies?"""
        reg_vs = out.register_voxel_size_um
        out.deformation_vox = deformation_beyond_rigid(maps, grid["post_edge"], out.threshold, reg_vs)
        deformed = out.deformation_vox[0] >= DEFORMATION_LEVEL_VOX
        if deformed:  # two cubic warps of the pre-edge grid: only where the displacement is large
            out.misfit_gain = misfit_gain(grid, maps, reg_vs)
            deformed = out.misfit_gain >= MISFIT_GAIN_LEVEL
        log.info("state %s: pre-edge B-spline beyond rigid: rms %.3f, max %.3f registration voxels, misfit "
                 "gain %.3f: %s", state.name, *out.deformation_vox, out.misfit_gain,
                 "deformed" if deformed else "no deformation shown, rigid only")
        return deformed

    @staticmethod
    def _edge_target(grid: dict[str, np.ndarray], out: Registration, edge_maps: Any,
                     reg_vs: tuple[float, ...], sigma_vox: float) -> np.ndarray:
        """:func:`predicted_edge` from the registered pre-edge and the edge registered by ``edge_maps``."""
        moved = {role: warp_cubic(grid[role], maps, reg_vs)
                 for role, maps in (("pre_edge", out.maps["pre_edge"]), ("edge", edge_maps))}
        post = grid["post_edge"]
        return predicted_edge(moved["pre_edge"], moved["edge"], post, post > out.threshold, sigma_vox)

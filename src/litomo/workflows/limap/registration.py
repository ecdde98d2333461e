"""Stage ``register``: estimate the pre-edge -> post-edge and edge -> post-edge transforms.

The transforms (rigid, then B-spline) are estimated on the volumes binned by
``processing.register_bin`` (finer than the map's bin: a 7x7x7 grid is too coarse to place
particle surfaces to the ~0.1 voxel the edge ratio needs) and stored as elastix parameter
maps; stage ``warp`` applies them at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.manifest import StateSpec
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.read import Binned
from litomo.workflows.limap.stage import StateStage

#: the moving volumes, each registered onto the post-edge volume
MOVING = ("pre_edge", "edge")


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


class RegisterStage(StateStage):
    """Register pre-edge and edge onto post-edge on the registration grid (itk-elastix)."""

    name = "register"
    needs = ("read",)
    output = Registration

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p = ctx.manifest.processing
        return {"register": ctx.do_register, "bspline": p.bspline,
                "bspline_spacing_um": p.bspline_spacing_um}

    def run(self, ctx: RunContext, state: StateSpec, *, read: Binned) -> Registration:
        from litomo.manifest import check_bspline_spacing
        from litomo.register import RegistrationParams, register_pair

        p = ctx.manifest.processing
        mode = "rigid+bspline" if p.bspline else "rigid"
        rf = read.register_factor
        reg_vs = tuple(s * f for s, f in zip(read.raw_voxel_size_um, rf, strict=True))
        if p.bspline and ctx.do_register:  # too fine a grid hangs or crashes elastix (issue #20)
            check_bspline_spacing(p.bspline_spacing_um, reg_vs)
        params = RegistrationParams(mode=mode, spatial_samples=8192,
                                    bspline_grid_spacing_vox=p.bspline_spacing_um / min(reg_vs))
        out = Registration(mode if ctx.do_register else "none", {}, {}, {}, {},
                           interior_threshold(read.reg_grid["post_edge"]), read.reg_grid["post_edge"],
                           rf, reg_vs)
        for i, role in enumerate(MOVING, start=1):
            if ctx.do_register:
                res = register_pair(read.reg_grid["post_edge"], read.reg_grid[role], params=params,
                                    voxel_size_um=reg_vs, resample=False)
                out.maps[role] = res.parameter_maps
                out.translation_vox[role] = tuple(float(t * f) for t, f in zip(res.translation_vox, rf, strict=True))
                out.rotation_deg[role] = float(np.max(np.abs(res.rotation_deg)))
                out.elapsed_s[role] = float(res.elapsed_s)
            ctx.report(i, len(MOVING), f"{state.name}: register")
        return out



"""Stage ``particles``: separate the active material of a state into particles.

On the 7^3-binned map grid a 4.7 um particle is ~5 voxels across and the distance-transform
watershed merges most touching particles, so particles are separated on the finer
registration grid and carried to the map grid (:func:`particles_from_finer_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.manifest import StateSpec
from litomo.preprocess import bin_factors
from litomo.workflows.limap.mapping import Mapped
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.read import Binned, fixed_role
from litomo.workflows.limap.registration import interior_threshold
from litomo.workflows.limap.stage import StateStage


def particles_from_finer_grid(post_fine: np.ndarray, threshold: float, fine_factor: tuple[int, int, int],
                              fine_voxel_size_um: tuple[float, float, float], am: np.ndarray,
                              factor: tuple[int, int, int]) -> np.ndarray:
    """Particles of the map grid, separated on the finer registration grid.

    On the 7^3-binned grid a 4.7 um particle is ~5 voxels across and the distance-transform
    watershed merges most touching particles (phantom: run particles made of several true ones,
    purity p10 0.27); on the 2^3-binned grid it separates them (p10 0.88). The post-edge
    volume of that grid (``post_fine``, binned by ``fine_factor``) is thresholded and separated
    (:func:`separate_fine`), then carried to the map grid (binned by ``factor``) and restricted
    to the map's AM mask ``am`` (:func:`carry_to_map_grid`).
    """
    fine = separate_fine(post_fine, threshold, fine_voxel_size_um)
    return carry_to_map_grid(fine, fine_factor, am, factor)


def separate_fine(post_fine: np.ndarray, threshold: float,
                  fine_voxel_size_um: tuple[float, float, float]) -> np.ndarray:
    """Particles (int32 labels) of the registration grid: post-edge above ``threshold``, separated.

    Needs nothing but the post-edge volume, so the run computes it before the registration
    (:class:`SeparateStage`).
    """
    import fill_voids
    from scipy import ndimage

    from litomo.segment.particles import separate_particles

    # internal pores and cracks would give the distance map one maximum per fragment, but a
    # cracked particle is still one particle: close one-voxel gaps (a crack open at the field of
    # view's face is no enclosed hole) and fill enclosed voids. Phantom (state III, 2^3 grid):
    # true particles split below 80 % completeness 22 -> 8 (holes filled) -> 0 (closed too),
    # run particles below 80 % purity 12 -> 1.
    mask = np.asarray(post_fine) > threshold
    closed = ndimage.binary_closing(mask, ndimage.generate_binary_structure(3, 1)) | mask
    # fill_voids fills what scipy's binary_fill_holes does (background not 6-connected to the
    # faces; equal on the 128^3 and 256^3 phantom grids) with ~2x less CPU
    solid = fill_voids.fill(closed, in_place=True)
    return separate_particles(solid, voxel_size_um=fine_voxel_size_um)


def carry_to_map_grid(fine: np.ndarray, fine_factor: tuple[int, int, int], am: np.ndarray,
                      factor: tuple[int, int, int]) -> np.ndarray:
    """Fine-grid particles carried to the map grid and restricted to its AM mask ``am``.

    Majority vote over each map bin (:func:`~litomo.particles.coarsen_labels`); AM voxels that
    no fine particle reached take the nearest particle's label; ids sequential, int32.
    """
    from scipy import ndimage
    from skimage.segmentation import relabel_sequential

    from litomo.particles import coarsen_labels

    lab = coarsen_labels(fine, fine_factor, factor, am.shape)
    lab[~am] = 0
    missing = am & (lab == 0)
    if missing.any() and (lab > 0).any():
        _, ind = ndimage.distance_transform_edt(lab == 0, return_indices=True)
        lab[missing] = lab[tuple(i[missing] for i in ind)]
    return relabel_sequential(lab)[0].astype(np.int32)


@dataclass
class Separation:
    """Output of :class:`SeparateStage`: particles of the registration grid."""

    #: int32 particle labels of the registration grid (0 = none)
    labels: np.ndarray
    #: binning of the registration grid relative to the full-resolution volume
    register_factor: tuple[int, int, int]


class SeparateStage(StateStage):
    """Separate the particles on the registration grid (:func:`separate_fine`).

    Needs only the binned volumes, not the transforms: the run computes it before the
    registration, while the elastix worker loads itk (:func:`litomo.workflows.limap.run.run_state`).
    """

    name = "separate"
    needs = ("read",)
    output = Separation
    reads = {"read": ("reg_grid", "register_factor", "raw_voxel_size_um")}

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        return {"fixed": fixed_role(state)}

    def run(self, ctx: RunContext, state: StateSpec, *, read: Binned) -> Separation:
        import logging
        import time

        t0 = time.perf_counter()
        rf = read.register_factor
        grid = read.reg_grid[fixed_role(state)]
        fine = separate_fine(grid, interior_threshold(grid),
                             tuple(s * f for s, f in zip(read.raw_voxel_size_um, rf, strict=True)))
        logging.getLogger(__name__).info("state %s: %d particles on the registration grid in %.1f s",
                                         state.name, int(fine.max()), time.perf_counter() - t0)
        return Separation(fine, rf)


@dataclass
class Particles:
    """Output of :class:`ParticlesStage`: particle labels of the map grid (int32, 0 = none)."""

    labels: np.ndarray
    #: ids of the particles that touch the field of view's faces
    boundary_ids: np.ndarray


class ParticlesStage(StateStage):
    """Particles of the map grid: those of :class:`SeparateStage` carried to it (:func:`carry_to_map_grid`)."""

    name = "particles"
    needs = ("separate", "map")
    output = Particles

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        return {"bin": bin_factors(ctx.manifest.processing.bin)}

    def run(self, ctx: RunContext, state: StateSpec, *, separate: Separation, map: Mapped) -> Particles:
        from litomo.particles import boundary_touching

        labels = carry_to_map_grid(separate.labels, separate.register_factor, map.am,
                                   bin_factors(ctx.manifest.processing.bin))
        return Particles(labels, np.asarray(boundary_touching(labels)))

"""Forward projection, reconstruction (FBP / SIRT / TV, slice by slice on the CPU), projection
correction and the dead-angle (missing-wedge) study."""

from litomo.tomo.correct import (
    center_from_opposite_views,
    find_center,
    flat_dark_correct,
    shift_sinogram,
)
from litomo.tomo.deadangle import DeadAngleResult, DeadAngleSettings, deadangle_study
from litomo.tomo.project import Projector2D, default_backend, project_volume
from litomo.tomo.recon import (
    angular_weights,
    reconstruct_fbp,
    reconstruct_sirt,
    reconstruct_slice,
    reconstruct_tv,
    reconstruct_volume,
)

#: alias named in docs/design.md
project = project_volume

__all__ = [
    "DeadAngleResult",
    "DeadAngleSettings",
    "Projector2D",
    "angular_weights",
    "center_from_opposite_views",
    "deadangle_study",
    "default_backend",
    "find_center",
    "flat_dark_correct",
    "project",
    "project_volume",
    "reconstruct_fbp",
    "reconstruct_sirt",
    "reconstruct_slice",
    "reconstruct_tv",
    "reconstruct_volume",
    "shift_sinogram",
]

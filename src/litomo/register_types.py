"""Typed settings and results of :mod:`litomo.register` (re-exported there).

:class:`RegistrationParams` is what a caller chooses (transform model, metric, sampling,
pyramid levels), :class:`RegistrationResult` what a registration returns (elastix parameter
maps in micrometres plus the linear stage in litomo's ``(z, y, x)`` terms). They live apart
from the elastix calls so that importing them loads neither itk nor the worker machinery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from litomo.elastix import ParameterMaps
from litomo.errors import LitomoError

MODES = ("rigid+bspline", "rigid", "similarity", "similarity+bspline", "translation", "bspline")
_METRIC_ALIASES = {
    "ncc": "AdvancedNormalizedCorrelation",
    "advancednormalizedcorrelation": "AdvancedNormalizedCorrelation",
    "mi": "AdvancedMattesMutualInformation",
    "mattes": "AdvancedMattesMutualInformation",
    "advancedmattesmutualinformation": "AdvancedMattesMutualInformation",
    "msd": "AdvancedMeanSquares",
    "advancedmeansquares": "AdvancedMeanSquares",
}
_SAMPLERS = ("RandomCoordinate", "Random", "Full", "Grid")


@dataclass
class RegistrationParams:
    """Settings for :func:`register_pair`.

    Parameters
    ----------
    mode : str
        One of ``"rigid+bspline"``, ``"rigid"``, ``"similarity"``, ``"similarity+bspline"``,
        ``"translation"``, ``"bspline"``. Stages run in that order (linear first).
    bspline_grid_spacing_vox : float
        Final B-spline control-point spacing, in voxels of the fixed image (converted to um).
    bending_weight : float
        Weight of elastix's bending-energy penalty for the B-spline stage (0 = none).
    iterations : int
        Optimiser iterations per resolution level.
    resolutions : int
        Number of pyramid levels (Gaussian smoothing pyramid).
    bspline_resolutions, bspline_iterations : int or None
        Pyramid levels and iterations per level of the B-spline stage when it follows a linear
        one (None = ``resolutions`` / ``iterations``).
    metric : str
        ``"AdvancedNormalizedCorrelation"`` (alias ``"ncc"``, default),
        ``"AdvancedMattesMutualInformation"`` (``"mi"``) or ``"AdvancedMeanSquares"``
        (``"msd"``; only for images of identical contrast). NCC and MI are insensitive to a
        linear (NCC) or any monotone (MI) contrast change, e.g. pre- vs post-edge images.
    sampler : str
        elastix ``ImageSampler``: ``"RandomCoordinate"`` (default, fast), ``"Random"``,
        ``"Grid"`` or ``"Full"`` (every voxel, slow but sampling-free).
    spatial_samples : int
        Samples per iteration for the random samplers.
    seed : int
        elastix ``RandomSeed``; the same inputs and seed give the same transform.
    final_order : int
        Interpolation order (0, 1 or 3) of the returned ``moved`` image.
    fill_value : float
        Value of ``moved`` where the transform maps outside the moving image.
    threads : int or None
        elastix threads (None = elastix default).
    jacobian_measurements : int or None
        Cap on the samples elastix's optimiser uses to estimate the B-spline stage's step size
        (``NumberOfJacobianMeasurements``). elastix's default, max(1000, number of B-spline
        parameters), grows with the grid: on a 256^3 grid with ~66 000 of them the estimate took 25 of the
        stage's 40 s; 8192 measurements took 7 s and moved the final transform by 0.002 um rms
        (0.02 raw voxel of the 1024^3 phantom). None = elastix's default.
    """

    mode: str = "rigid+bspline"
    bspline_grid_spacing_vox: float = 16.0
    bending_weight: float = 0.0
    iterations: int = 200
    resolutions: int = 3
    bspline_resolutions: int | None = None
    bspline_iterations: int | None = None
    metric: str = "AdvancedNormalizedCorrelation"
    sampler: str = "RandomCoordinate"
    spatial_samples: int = 2048
    seed: int = 0
    final_order: int = 1
    fill_value: float = 0.0
    threads: int | None = None
    jacobian_measurements: int | None = 8192

    def validated(self) -> RegistrationParams:
        """A copy with the metric name canonicalised; raises :class:`LitomoError` on bad values."""
        if self.mode not in MODES:
            raise LitomoError(f"registration mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        metric = _METRIC_ALIASES.get(str(self.metric).lower())
        if metric is None:
            raise LitomoError(
                f"registration metric must be AdvancedNormalizedCorrelation (ncc), "
                f"AdvancedMattesMutualInformation (mi) or AdvancedMeanSquares (msd); got {self.metric!r}"
            )
        if self.sampler not in _SAMPLERS:
            raise LitomoError(f"registration sampler must be one of {', '.join(_SAMPLERS)}; got {self.sampler!r}")
        if min(int(self.iterations), int(self.resolutions), int(self.bspline_resolutions or 1),
               int(self.bspline_iterations or 1)) < 1 or int(self.spatial_samples) < 64:
            raise LitomoError("registration needs iterations >= 1, resolutions >= 1 and spatial_samples >= 64")
        if not self.bspline_grid_spacing_vox > 0:
            raise LitomoError(f"bspline_grid_spacing_vox must be positive, got {self.bspline_grid_spacing_vox}")
        if self.jacobian_measurements is not None and int(self.jacobian_measurements) < 100:
            raise LitomoError(f"jacobian_measurements must be >= 100 (or None), got {self.jacobian_measurements}")
        if self.final_order not in (0, 1, 3):
            raise LitomoError(f"final_order must be 0, 1 or 3, got {self.final_order}")
        return RegistrationParams(**{**asdict(self), "metric": metric})


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_pair`.

    Attributes
    ----------
    moved : numpy.ndarray or None
        The moving image resampled onto the fixed grid (float32); None with ``resample=False``.
    parameter_maps : list of dict
        elastix transform parameter maps (``{name: [str, ...]}``), JSON-serialisable, in the
        order elastix applies them; feed them to :func:`apply_transform`.
    mode : str
        The registration mode used.
    translation_vox : tuple of float
        Displacement ``(z, y, x)`` in fixed-image voxels of the moving content relative to
        the fixed one, measured at the centre of the fixed grid, from the linear stage.
    rotation_deg : tuple of float
        Rotation of the linear stage: 3D, the rotation vector (degrees) in the ``(z, y, x)``
        array frame (component i ~ rotation about array axis i for small angles); 2D, one
        angle ``a`` of the rotation matrix ``[[cos a, -sin a], [sin a, cos a]]`` acting on
        ``(y, x)`` coordinates.
    rotation_angle_deg : float
        Total rotation angle (degrees) of the linear stage.
    scale : float
        Isotropic scale of the linear stage (1 unless a similarity transform).
    affine_vox : numpy.ndarray
        ``(ndim+1, ndim+1)`` homogeneous matrix of the linear stage mapping a fixed voxel
        index to a moving voxel index (what :func:`scipy.ndimage.affine_transform` expects).
    ncc_before, ncc_after : float
        Normalised cross-correlation of fixed vs moving and fixed vs moved, over the fixed mask
        (if any) and the voxels where the moved image has data.
    elapsed_s : float
        Wall time of the elastix registration in seconds.
    voxel_size_um : tuple of float
        Voxel size of the fixed image ``(z, y, x)`` (or ``(y, x)``) in um.
    """

    moved: np.ndarray | None
    parameter_maps: ParameterMaps
    mode: str
    translation_vox: tuple[float, ...]
    rotation_deg: tuple[float, ...]
    rotation_angle_deg: float
    scale: float
    affine_vox: np.ndarray
    ncc_before: float
    ncc_after: float
    elapsed_s: float
    voxel_size_um: tuple[float, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, include_maps: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary (for ``run.json``); the ``moved`` array is left out."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "translation_vox": [float(v) for v in self.translation_vox],
            "rotation_deg": [float(v) for v in self.rotation_deg],
            "rotation_angle_deg": float(self.rotation_angle_deg),
            "scale": float(self.scale),
            "affine_vox": np.asarray(self.affine_vox, dtype=float).tolist(),
            "ncc_before": float(self.ncc_before),
            "ncc_after": float(self.ncc_after),
            "elapsed_s": float(self.elapsed_s),
            "voxel_size_um": [float(v) for v in self.voxel_size_um],
            "params": dict(self.params),
        }
        if include_maps:
            out["parameter_maps"] = [dict(m) for m in self.parameter_maps]
        return out

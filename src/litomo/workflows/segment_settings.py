"""What ``litomo segment`` does: its settings (one field per CLI option) and their checks.

Split from :mod:`litomo.workflows.segment` (which re-exports both names) so the workflow
module holds the workflow only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from litomo.errors import DataError
from litomo.phases import PHASE_CODES
from litomo.segment.forest import CLASSIFIERS

METHODS = ("forest", "multi-otsu")
DENOISE_STEPS = ("nlm", "unsharp", "median")


@dataclass(frozen=True)
class SegmentSettings:
    """What ``litomo segment`` does (each field names its CLI option).

    Attributes
    ----------
    method : {"forest", "multi-otsu"}
        ``--method``.
    classifier : {"hgb", "random-forest"}
        ``--classifier`` (forest method; see :class:`litomo.segment.forest.ForestSettings`).
    denoise : tuple of str
        Denoising steps before segmentation, from nlm, unsharp, median (``--denoise``); with a
        saved model, empty means "the model's own".
    voxel_size_um : float, optional
        Overrides the file's voxel size (``--voxel-size-um``).
    scribble_values : mapping
        Scribble value of each phase (``--scribble-values``); 0 means unlabelled.
    phase_order : tuple of str
        multi-otsu: phases by increasing grey value (``--phase-order``).
    sigmas : tuple of float, optional
        Feature scales in voxels (``--sigmas``).
    n_estimators, max_samples_per_class, chunks, memory_mb, n_jobs, seed
        ``--n-estimators``, ``--max-samples-per-class``, ``--chunks``, ``--memory-mb``,
        ``--n-jobs``, ``--seed``.
    majority : bool
        ``--majority``: a strict 3x3x3 majority vote on the labels after classification
        (:func:`litomo.segment.cleanup.majority_filter`); the probability maps stay the
        classifier's own.
    """

    method: str = "forest"
    classifier: str = "random-forest"
    denoise: tuple[str, ...] = ()
    voxel_size_um: float | None = None
    scribble_values: Mapping[str, int] = field(default_factory=lambda: {"pore": 1, "am": 2, "cbd": 3})
    phase_order: tuple[str, ...] = ("pore", "cbd", "am")
    sigmas: tuple[float, ...] | None = None
    n_estimators: int = 20
    max_samples_per_class: int = 20000
    chunks: int | None = None
    memory_mb: float = 512.0
    n_jobs: int = -1
    seed: int = 0
    majority: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DataError(f"--method must be 'forest' or 'multi-otsu', got {self.method!r}")
        if self.classifier not in CLASSIFIERS:
            raise DataError(f"--classifier must be one of {', '.join(CLASSIFIERS)}, got {self.classifier!r}")
        bad = [s for s in self.denoise if s not in DENOISE_STEPS]
        if bad:
            raise DataError(f"--denoise: unknown step(s) {', '.join(bad)}; choose from {', '.join(DENOISE_STEPS)}")
        order = self.phase_order
        if any(p not in PHASE_CODES for p in order) or len(set(order)) != len(order) or len(order) < 2:
            raise DataError(f"--phase-order: expected 2 or 3 distinct phases from {', '.join(PHASE_CODES)} "
                            f"by increasing grey value, got {','.join(order)!r}")
        if 0 in self.scribble_values.values():
            raise DataError("--scribble-values: 0 means 'unlabelled' in scribbles; give each phase a non-zero value")
        if self.n_estimators < 1 or self.max_samples_per_class < 1:
            raise DataError("--n-estimators and --max-samples-per-class must be at least 1")



def check_options(settings: SegmentSettings, scribbles_path: Path | None, model_path: Path | None) -> None:
    """Refuse option combinations that cannot work, before anything is read.

    Examples
    --------
    >>> check_options(SegmentSettings(), None, None)
    Traceback (most recent call last):
    ...
    litomo.errors.DataError: --method forest needs scribbles (--labels SCRIBBLES.tif) or a trained --model
    """
    if settings.method == "forest" and model_path is None and scribbles_path is None:
        raise DataError("--method forest needs scribbles (--labels SCRIBBLES.tif) or a trained --model")
    if model_path is not None and scribbles_path is not None:
        raise DataError("give either --labels (train a new model) or --model (apply one), not both")
    if model_path is not None and settings.method != "forest":
        raise DataError("--model applies a random forest; drop --method multi-otsu")

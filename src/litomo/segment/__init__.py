"""Segmentation: global thresholds, random-forest pixel classification, particle separation.

- :mod:`litomo.segment.threshold`: ``otsu_mask``, ``multi_otsu_labels`` (canonical codes)
- :mod:`litomo.segment.features`: multi-scale 3D filter features with a known halo
- :mod:`litomo.segment.forest`: ``train_forest(grey, scribbles, ForestSettings)`` ->
  ``SegmentationModel`` (validation accuracy), ``am_fraction_sensitivity``
- :mod:`litomo.segment.model`: ``SegmentationModel`` (chunk-wise predict, probabilities
  streamed to zarr, save with a JSON header)
- :mod:`litomo.segment.forest_eval`: the numba walk of a fitted random forest
- :mod:`litomo.segment.blocks`: how a volume is cut into blocks with the features' halo
- :mod:`litomo.segment.model_file`: ``load_model`` (header checked before unpickling)
- :mod:`litomo.segment.particles`: ``separate_particles``, ``tune_separation`` (particle ids,
  sizes and boundary flags: :mod:`litomo.particles`)
"""

from __future__ import annotations

from litomo.segment.features import feature_halo, filter_features
from litomo.segment.forest import (
    ForestSettings,
    SegmentationModel,
    am_fraction_sensitivity,
    train_forest,
)
from litomo.segment.model_file import load_model
from litomo.segment.particles import separate_particles, tune_separation
from litomo.segment.threshold import multi_otsu_labels, otsu_mask

__all__ = [
    "ForestSettings",
    "SegmentationModel",
    "am_fraction_sensitivity",
    "feature_halo",
    "filter_features",
    "load_model",
    "multi_otsu_labels",
    "otsu_mask",
    "separate_particles",
    "train_forest",
    "tune_separation",
]

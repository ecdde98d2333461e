"""Segmentation: global thresholds, random-forest pixel classification, particle separation.

- :mod:`litomo.segment.threshold`: ``otsu_mask``, ``multi_otsu_labels`` (canonical codes)
- :mod:`litomo.segment.features`: multi-scale 3D filter features with a known halo
- :mod:`litomo.segment.forest`: ``train_forest`` -> ``SegmentationModel`` (chunk-wise predict,
  OOB accuracy, save/load), ``am_fraction_sensitivity``
- :mod:`litomo.segment.particles`: ``separate_particles``, ``boundary_touching``, ``tune_separation``
"""

from __future__ import annotations

from litomo.segment.features import feature_halo, filter_features
from litomo.segment.forest import (
    SegmentationModel,
    am_fraction_sensitivity,
    load_model,
    train_forest,
)
from litomo.segment.particles import boundary_touching, separate_particles, tune_separation
from litomo.segment.threshold import multi_otsu_labels, otsu_mask

__all__ = [
    "SegmentationModel",
    "am_fraction_sensitivity",
    "boundary_touching",
    "feature_halo",
    "filter_features",
    "load_model",
    "multi_otsu_labels",
    "otsu_mask",
    "separate_particles",
    "train_forest",
    "tune_separation",
]

"""Holotomography: cone-beam geometry, distance alignment and phase retrieval.

* :mod:`litomo.holo.geometry` -- :class:`HoloGeometry` (magnification, effective propagation
  distance and pixel, Fresnel scaling to a common pixel).
* :mod:`litomo.holo.align` -- rescaling of every distance to the common grid, shift and scale
  refinement with QA (:class:`DistanceAlignment`).
* :mod:`litomo.holo.retrieve` -- Paganin, multi-distance Paganin-like and multi-distance CTF
  (:class:`PhaseRetriever`).
* :mod:`litomo.holo.recursive` -- recursive Paganin (:class:`RecursivePaganin`), residual
  corrections with the exact Fresnel model.
* :mod:`litomo.holo.axis` -- automatic rotation centre and half-acquisition stitching.
* :mod:`litomo.holo.io` -- reading scans (litomo HDF5 layout, NXtomo or ESRF EDF folders per
  distance).

The chain to a volume is :func:`litomo.workflows.phase.run_phase` (``litomo phase``).
"""

from litomo.holo.align import DistanceAlignment, estimate_alignment, to_common_grid
from litomo.holo.geometry import HoloGeometry, wavelength_um
from litomo.holo.io import HoloScan, read_holo_hdf5, write_holo_hdf5
from litomo.holo.recursive import RecursivePaganin, build_retriever
from litomo.holo.retrieve import METHODS, PhaseRetriever, RetrievalSettings, retrieve_phase

__all__ = [
    "METHODS",
    "DistanceAlignment",
    "HoloGeometry",
    "HoloScan",
    "PhaseRetriever",
    "RecursivePaganin",
    "RetrievalSettings",
    "build_retriever",
    "estimate_alignment",
    "read_holo_hdf5",
    "retrieve_phase",
    "to_common_grid",
    "wavelength_um",
    "write_holo_hdf5",
]

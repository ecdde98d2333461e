"""XANES analysis: three-energy Li maps (SPEC 2.1), full spectra (2.2), energy advice (2.3).

Modules
-------
spectra      ``Spectrum``, ``read_spectrum`` (XDI, Athena .prj, CSV, two-column text)
threeenergy  ``edge_ratio``, ``jump_threshold``, ``am_mask_from_jump``, ``reference_ratios``,
             ``calibrate_li``, ``classify_li``, ``background_corrected_ratio``
interior     ``interior_surface_li`` (binned Li from interior values + a surface layer)
advisor      ``edge_sensitivity``, ``advise_edge_energy``, ``check_edge_sensitivity``
normalize    ``normalize_spectra``, ``find_e0``, ``edge_energy_half``, ``white_line``
lcf          ``lcf_fit`` (closed-form linear-combination fitting)
decompose    ``pca_spectra``, ``nmf_spectra``
txm          ``optical_density``, ``edge_jump_map``, ``contrast_to_noise``, ``noise_from_repeats``,
             ``photon_transfer``, ``expected_od_noise``
align        ``align_energy_stack`` (itk-elastix, via ``litomo.register``)
"""

from litomo.xanes.advisor import advise_edge_energy, check_edge_sensitivity, edge_sensitivity
from litomo.xanes.lcf import LcfResult, lcf_fit
from litomo.xanes.normalize import (
    NormResult,
    edge_energy_half,
    find_e0,
    normalize_spectra,
    white_line,
)
from litomo.xanes.spectra import Spectrum, read_spectrum
from litomo.xanes.threeenergy import (
    am_mask_from_jump,
    calibrate_li,
    classify_li,
    edge_ratio,
    jump_threshold,
    reference_ratios,
)

__all__ = [
    "LcfResult",
    "NormResult",
    "Spectrum",
    "advise_edge_energy",
    "am_mask_from_jump",
    "calibrate_li",
    "check_edge_sensitivity",
    "classify_li",
    "edge_energy_half",
    "edge_ratio",
    "edge_sensitivity",
    "find_e0",
    "jump_threshold",
    "lcf_fit",
    "normalize_spectra",
    "read_spectrum",
    "reference_ratios",
    "white_line",
]

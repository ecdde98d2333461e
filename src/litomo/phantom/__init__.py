"""Synthetic electrodes and operando XANES datasets with ground truth.

- :mod:`litomo.phantom.electrode`: NMC particle packing, CBD at necks, pores (:func:`make_electrode`;
  :class:`ElectrodeStream` paints the same electrode row by row for volumes that do not fit in memory).
- :mod:`litomo.phantom.lithium`: Li content per state from spherical diffusion (:class:`LithiumModel`).
- :mod:`litomo.phantom.operando`: attenuation volumes at the imaging energies from the bundled
  real Ni K-edge spectra, misregistration, noise, writing a complete dataset
  (:func:`make_operando_phantom`, :func:`write_operando_phantom`, :func:`truth_on_binned_grid`);
  :func:`write_operando_phantom` streams slab by slab with bounded memory above ``STREAM_ABOVE_SIZE``.
"""

from litomo.phantom.electrode import (
    DEFAULT_VOXEL_SIZE_UM,
    Electrode,
    ElectrodeStream,
    make_electrode,
)
from litomo.phantom.lithium import LithiumModel, li_schedule
from litomo.phantom.operando import (
    DEFAULT_ENERGIES_EV,
    STREAM_ABOVE_SIZE,
    OperandoPhantom,
    make_operando_phantom,
    make_streamed_phantom,
    reference_spectrum,
    truth_on_binned_grid,
    write_operando_phantom,
)

__all__ = [
    "DEFAULT_ENERGIES_EV",
    "DEFAULT_VOXEL_SIZE_UM",
    "Electrode",
    "ElectrodeStream",
    "LithiumModel",
    "OperandoPhantom",
    "STREAM_ABOVE_SIZE",
    "li_schedule",
    "make_electrode",
    "make_operando_phantom",
    "make_streamed_phantom",
    "reference_spectrum",
    "truth_on_binned_grid",
    "write_operando_phantom",
]

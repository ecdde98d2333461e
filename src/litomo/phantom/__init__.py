"""Synthetic electrodes and operando XANES datasets with ground truth.

- :mod:`litomo.phantom.electrode`: NMC particle packing, CBD at necks, pores (:func:`make_electrode`;
  :class:`ElectrodeStream` paints the same electrode row by row for volumes that do not fit in memory).
- :mod:`litomo.phantom.lithium`: Li content per state from spherical diffusion (:class:`LithiumModel`).
- :mod:`litomo.phantom.spectra`: attenuation at the imaging energies from the bundled real Ni
  K-edge spectra (:func:`am_attenuation`, :func:`reference_spectrum`).
- :mod:`litomo.phantom.motion`: known misregistration and state motion (:class:`Transform`).
- :mod:`litomo.phantom.operando`: the lazily evaluated dataset (:class:`OperandoSettings`,
  :func:`make_operando_phantom`, :func:`truth_on_binned_grid`, :func:`operando_state`).
- :mod:`litomo.phantom.writer`: :func:`write_operando_phantom` writes a complete dataset (streams
  slab by slab with bounded memory above ``STREAM_ABOVE_SIZE``).
- :mod:`litomo.phantom.cracks`: cracked particles for the damage analysis.
- :mod:`litomo.phantom.scoring`: scores a Li-mapping run against a phantom's truth.

A leaf, like PoreSpy's generators: nothing in litomo imports it except the ``phantom``, ``demo``
and ``deadangle`` commands of the CLI.
"""

from litomo.phantom.electrode import (
    DEFAULT_VOXEL_SIZE_UM,
    Electrode,
    ElectrodeStream,
    make_electrode,
)
from litomo.phantom.lithium import LithiumModel, li_schedule
from litomo.phantom.operando import (
    STREAM_ABOVE_SIZE,
    OperandoPhantom,
    OperandoSettings,
    build_operando_phantom,
    make_operando_phantom,
    make_streamed_phantom,
    operando_state,
    truth_on_binned_grid,
)
from litomo.phantom.spectra import DEFAULT_ENERGIES_EV, am_attenuation, reference_spectrum
from litomo.phantom.writer import write_operando_phantom

__all__ = [
    "DEFAULT_ENERGIES_EV",
    "DEFAULT_VOXEL_SIZE_UM",
    "Electrode",
    "ElectrodeStream",
    "LithiumModel",
    "OperandoPhantom",
    "OperandoSettings",
    "STREAM_ABOVE_SIZE",
    "am_attenuation",
    "build_operando_phantom",
    "li_schedule",
    "make_electrode",
    "make_operando_phantom",
    "make_streamed_phantom",
    "operando_state",
    "reference_spectrum",
    "truth_on_binned_grid",
    "write_operando_phantom",
]

"""The calibration of a run: reference ratios at the manifest's energies, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from litomo.errors import DataError, ManifestError
from litomo.manifest import Manifest
from litomo.xanes.background import BackgroundLaw, background_law


@dataclass
class Calibration:
    """Reference ratios for the configured energies and what the advisor says about them."""

    r_pristine: float
    r_charged: float
    energies_ev: tuple[float, float, float]
    sensitivity: float
    advice: dict[str, Any]
    levels: tuple[float, float]
    #: the non-resonant background law of the map (explicit exponent > tabulated for
    #: ``[sample] composition`` > none; :func:`litomo.xanes.background.background_law`)
    background: BackgroundLaw = field(default_factory=lambda: BackgroundLaw("none", (1.0, 1.0, 1.0), 0.0))


def calibration_for(manifest: Manifest) -> Calibration:
    """R of the two reference spectra at the (foil-shifted) manifest energies, plus advice."""
    from litomo.xanes.advisor import advise_edge_energy
    from litomo.xanes.spectra import read_spectrum
    from litomo.xanes.threeenergy import reference_levels, reference_ratios

    x = manifest.xanes
    energies = x.calibrated_ev((x.pre_edge_ev, x.edge_ev, x.post_edge_ev))
    pristine = read_spectrum(x.reference_pristine, energy_unit=x.energy_unit)
    charged = read_spectrum(x.reference_charged, energy_unit=x.energy_unit)
    r_p, r_c = reference_ratios(pristine, charged, energies)
    advice = advise_edge_energy(pristine, charged, energies[0], energies[2],
                                edge_ev=energies[1], li_pristine=x.li_pristine,
                                li_charged=x.li_charged)
    sens = (r_p - r_c) / (x.li_pristine - x.li_charged)
    levels = reference_levels(pristine, charged, energies[0], energies[2])
    try:
        law = background_law(energies, composition=manifest.sample.composition,
                             exponent=manifest.processing.background_exponent)
    except DataError as exc:
        raise ManifestError(str(exc), path=str(manifest.path), field="sample.composition") from None
    return Calibration(float(r_p), float(r_c), energies, float(sens), advice, levels, law)


def check_reference_coverage(manifest: Manifest) -> None:
    """Refuse energies (after the foil shift) outside either reference spectrum's range.

    Part of the input validation: the message names the reference file, its energy range and
    the energy that falls outside, before any volume is read.
    """
    from litomo.xanes.spectra import read_spectrum

    x = manifest.xanes
    roles = ("pre_edge_ev", "edge_ev", "post_edge_ev")
    energies = x.calibrated_ev(getattr(x, r) for r in roles)
    for ref in (x.reference_pristine, x.reference_charged):
        e = np.asarray(read_spectrum(ref, energy_unit=x.energy_unit).energy_ev, float)
        for role, en in zip(roles, energies, strict=True):
            if not e[0] <= en <= e[-1]:
                shift = f" (incl. energy_shift_ev {x.energy_shift_ev:+g})" if x.energy_shift_ev else ""
                raise DataError(
                    f"reference spectrum {ref} covers {e[0]:.2f}-{e[-1]:.2f} eV but xanes.{role} is "
                    f"{en:.2f} eV{shift}; use references that span the three energies"
                )

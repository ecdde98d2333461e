"""Cone-beam holotomography geometry and its parallel-beam equivalent (Fresnel scaling).

A point focus at distance ``z1`` from the sample and ``z12 = z1 + z2`` from the detector
magnifies the sample by ``M = z12 / z1``. By the Fresnel scaling theorem the hologram on the
detector equals, up to the magnification, the parallel-beam hologram at the *effective
propagation distance* ``D = z1 z2 / z12`` sampled at the *effective pixel* ``p / M``
(Paganin, *Coherent X-ray Optics*, 2006, sec. 2.6; Mokso et al., Appl. Phys. Lett. 90, 2007).
The four focus-to-sample distances of a holotomography scan therefore give four
magnifications; the images are brought to the effective pixel of the first (most magnified)
distance before any retrieval (:mod:`litomo.holo.align`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from litomo.errors import DataError

#: h c in keV * um: wavelength_um = HC_KEV_UM / energy_kev.
HC_KEV_UM = 1.239841984e-3

#: Energies outside this range (keV) are taken for a unit mix-up (eV given, or MeV).
ENERGY_RANGE_KEV = (1.0, 200.0)


def wavelength_um(energy_kev: float) -> float:
    """X-ray wavelength in micrometres.

    Examples
    --------
    >>> round(wavelength_um(29.6) * 1e6, 1)  # picometres
    41.9
    """
    return HC_KEV_UM / float(energy_kev)


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise DataError(f"{name} must be a positive number, got {value!r}")
    return v


@dataclass(frozen=True)
class HoloGeometry:
    """Holotomography geometry: energy, focus-to-sample distances, focus-to-detector distance.

    Parameters
    ----------
    energy_kev : float
        Photon energy in keV (1-200; a value in eV is refused).
    z1_mm : sequence of float
        Focus-to-sample distance of each acquisition distance, strictly increasing (mm).
    z12_mm : float
        Focus-to-detector distance ``z1 + z2`` (mm), larger than every ``z1``.
    pixel_um : float
        Detector pixel size (um).
    angles_deg : sequence of float, optional
        Rotation angle of each projection (degrees).

    Examples
    --------
    >>> g = HoloGeometry(29.6, (50.0, 55.0, 65.0, 80.0), 1000.0, 7.8)
    >>> [round(m, 2) for m in g.magnification]
    [20.0, 18.18, 15.38, 12.5]
    >>> round(g.propagation_distance_mm[0], 2), round(g.effective_pixel_um[0], 3)
    (47.5, 0.39)
    >>> [round(s, 3) for s in g.scale_to_common]
    [1.0, 1.1, 1.3, 1.6]
    """

    energy_kev: float
    z1_mm: tuple[float, ...]
    z12_mm: float
    pixel_um: float
    angles_deg: tuple[float, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        e = float(self.energy_kev)
        lo, hi = ENERGY_RANGE_KEV
        if not np.isfinite(e) or e <= 0:
            raise DataError(f"--energy-kev must be a positive number, got {self.energy_kev!r}")
        if e > hi:
            raise DataError(f"--energy-kev {e:g} is above {hi:g} keV: was the energy given in eV "
                            f"(use {e / 1000:g})?")
        if e < lo:
            raise DataError(f"--energy-kev {e:g} is below {lo:g} keV: hard X-ray holotomography "
                            "expects keV (was it given in MeV?)")
        z1 = tuple(float(z) for z in np.atleast_1d(self.z1_mm))
        if not z1 or not all(np.isfinite(z) and z > 0 for z in z1):
            raise DataError(f"--z1-mm must be positive focus-to-sample distances, got {self.z1_mm!r}")
        if any(b <= a for a, b in zip(z1, z1[1:], strict=False)):
            raise DataError(f"--z1-mm distances must strictly increase, got {list(z1)}")
        z12 = _positive("--z12-mm", self.z12_mm)
        if max(z1) >= z12:
            raise DataError(f"--z1-mm {max(z1):g} is not smaller than the focus-to-detector "
                            f"distance --z12-mm {z12:g}: the sample must lie between focus and detector")
        object.__setattr__(self, "energy_kev", e)
        object.__setattr__(self, "z1_mm", z1)
        object.__setattr__(self, "z12_mm", z12)
        object.__setattr__(self, "pixel_um", _positive("--pixel-um", self.pixel_um))
        if self.angles_deg is not None:
            a = np.asarray(self.angles_deg, dtype=float).ravel()
            if a.size == 0 or not np.all(np.isfinite(a)):
                raise DataError("angles must be finite numbers (degrees)")
            object.__setattr__(self, "angles_deg", tuple(a.tolist()))

    @property
    def n_distances(self) -> int:
        """Number of acquisition distances."""
        return len(self.z1_mm)

    @property
    def wavelength_um(self) -> float:
        """Wavelength in micrometres."""
        return wavelength_um(self.energy_kev)

    @property
    def magnification(self) -> tuple[float, ...]:
        """Geometric magnification ``M = z12 / z1`` per distance."""
        return tuple(self.z12_mm / z for z in self.z1_mm)

    @property
    def propagation_distance_mm(self) -> tuple[float, ...]:
        """Effective (parallel-beam) propagation distance ``D = z1 z2 / z12`` per distance (mm)."""
        return tuple(z * (self.z12_mm - z) / self.z12_mm for z in self.z1_mm)

    @property
    def effective_pixel_um(self) -> tuple[float, ...]:
        """Pixel size in the sample plane, ``pixel / M``, per distance (um)."""
        return tuple(self.pixel_um / m for m in self.magnification)

    @property
    def common_pixel_um(self) -> float:
        """The effective pixel all distances are rescaled to: that of the first distance."""
        return self.effective_pixel_um[0]

    @property
    def scale_to_common(self) -> tuple[float, ...]:
        """Zoom factor bringing each distance to :attr:`common_pixel_um` (``M_0 / M_j >= 1``)."""
        m0 = self.magnification[0]
        return tuple(m0 / m for m in self.magnification)

    @property
    def fresnel_number(self) -> tuple[float, ...]:
        """Fresnel number ``p_eff^2 / (lambda D)`` per distance at the common pixel."""
        p = self.common_pixel_um
        return tuple(p * p / (self.wavelength_um * d * 1e3) for d in self.propagation_distance_mm)


def check_delta_beta(delta_beta: float) -> float:
    """Validate a delta/beta ratio (> 0).

    Examples
    --------
    >>> check_delta_beta(137)
    137.0
    """
    v = float(delta_beta)
    if not np.isfinite(v) or v <= 0:
        raise DataError(f"--delta-beta must be a positive number (e.g. 137), got {delta_beta!r}")
    return v


def material_delta_beta(formula: str, density_g_cm3: float, energy_kev: float) -> tuple[float, float]:
    """``(delta, beta)`` of a material from xraydb (tabulated scattering factors).

    Parameters
    ----------
    formula : str
        Chemical formula, e.g. ``"LiNi0.6Mn0.2Co0.2O2"``.
    density_g_cm3 : float
    energy_kev : float

    Examples
    --------
    >>> d, b = material_delta_beta("LiNi0.6Mn0.2Co0.2O2", 4.75, 29.6)
    >>> round(d / b)  # NMC622 at 29.6 keV; the seed papers use 137 for their NMC
    121
    """
    import xraydb

    _positive("density", density_g_cm3)
    e = HoloGeometry(energy_kev, (1.0,), 2.0, 1.0).energy_kev  # same unit checks as the geometry
    try:
        d, b, _ = xraydb.xray_delta_beta(formula, float(density_g_cm3), e * 1e3)
    except Exception as exc:  # xraydb raises plain ValueError/KeyError on unknown formulas
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"--material: cannot compute delta/beta of {formula!r}: {first}") from None
    return float(d), float(b)

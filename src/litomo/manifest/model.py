"""The manifest's typed, immutable description of an experiment (what parsing produces)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import ManifestError

#: The three image roles of a three-energy state, in energy order.
ENERGY_ROLES: tuple[str, str, str] = ("pre_edge", "edge", "post_edge")
#: ``[sample] separator_side``: the z face of the volumes on the separator side (depth is measured from it)
SEPARATOR_SIDES: tuple[str, str] = ("z_min", "z_max")

@dataclass(frozen=True)
class SampleSpec:
    """``[sample]``: name, voxel size ``(z, y, x)`` in um, optional expected metric values."""

    name: str
    voxel_size_um: tuple[float, float, float]
    expected: Mapping[str, float] = field(default_factory=dict)
    #: chemical formula of the active material, e.g. "LiNi0.8Mn0.1Co0.1O2": sets the tabulated
    #: non-resonant background law of the Li map (litomo.xanes.background)
    composition: str | None = None
    #: the z face on the separator side, "z_min" (z = 0) or "z_max": depth profiles start there
    separator_side: str = "z_min"
    #: optional phase label volume on the full-resolution grid of every state's post-edge (highest
    #: energy) volume, e.g. from `litomo segment`: its ``cbd_value`` voxels are the carbon-binder
    #: domain of the Li-versus-CBD contact analysis (otherwise a post-edge threshold, issue 16)
    labels: Path | None = None
    cbd_value: int = 2


@dataclass(frozen=True)
class XanesSpec:
    """``[xanes]``: nominal energies (eV), reference spectra, Li content of the two references."""

    pre_edge_ev: float | None = None
    edge_ev: float | None = None
    post_edge_ev: float | None = None
    reference_pristine: Path | None = None
    reference_charged: Path | None = None
    li_pristine: float = 1.0
    li_charged: float = 0.38
    energy_shift_ev: float = 0.0
    #: unit of the reference spectra's energy column when the files do not say ("eV"/"keV")
    energy_unit: str | None = None
    #: N-energy mode: the energies (eV) shared by every state's ``volumes`` list (issue 16)
    energies_ev: tuple[float, ...] | None = None

    @property
    def three_energies_ev(self) -> tuple[float, float, float] | None:
        """``(pre, edge, post)`` nominal energies in eV, or None when not given."""
        if self.pre_edge_ev is None or self.edge_ev is None or self.post_edge_ev is None:
            return None
        return (self.pre_edge_ev, self.edge_ev, self.post_edge_ev)

    def calibrated_ev(self, energies_ev: Any) -> tuple[float, ...]:
        """Nominal energies plus ``energy_shift_ev`` (the energies to compare with references)."""
        return tuple(float(e) + self.energy_shift_ev for e in energies_ev)


@dataclass(frozen=True)
class ProcessingSpec:
    """``[processing]``: options of the analysis pipeline (all optional, defaults shown)."""

    bin: tuple[int, int, int] = (7, 7, 7)
    register: bool = True
    bspline: bool = True
    denoise: str = "none"
    jump_threshold: str | float = "auto"
    sign_convention: str = "conventional"
    li_poor_max: float = 0.6
    li_rich_min: float = 0.9
    clip_li: tuple[float, float] | None = (0.0, 1.2)
    histogram_bins: int = 50
    #: p of an E**-p non-resonant background removed before the ratio (0 = SPEC 2.1's plain R);
    #: None (not given): the tabulated law of [sample] composition, or none without a composition;
    #: see litomo.xanes.threeenergy.background_corrected_ratio, litomo.xanes.background
    background_exponent: float | None = None
    #: binning of the volumes the registration is estimated on (applied at full resolution);
    #: "auto": the smallest factor >= 2 giving at most ~17 M voxels (256^3)
    register_bin: int | tuple[int, int, int] | str = "auto"
    #: B-spline control-point spacing of the non-rigid registration stage (um)
    bspline_spacing_um: float = 4.5
    #: what the edge ratio of a bin is computed from: "am_interior" = the mean over the
    #: full-resolution voxels inside the particles (see litomo.workflows.limap.mapping), "mean" =
    #: the plain block mean of every voxel (SPEC 2.1 read literally)
    map_binning: str = "am_interior"
    #: voxels of each particle's surface left out of the "am_interior" means
    surface_erosion_vox: int = 1
    #: per-particle noise shrinkage of the Li map: "none" (default) or "constrained_bayes" (noise
    #: removed, each particle's true spread kept; litomo.xanes.noise). Not the default: it made
    #: one forward-model case (partial_volume) 2.7 -> 14.7 pp and the 64^3 demo 0.2 -> 1.1 pp
    li_shrinkage: str = "none"


@dataclass(frozen=True)
class DataSpec:
    """``[data]``: the linear encoding of the volume files' values, ``mu = value * scale - offset``.

    Integer volumes (uint16 TIFF from a reconstruction) hold ``(mu + offset) / scale``; the
    background correction of the Li map needs absolute attenuation (an offset common to the
    three energies moves x_Li, issue 16), so the encoding is undone at read time.

    Examples
    --------
    >>> enc = DataSpec(mu_scale_per_count=1e-5, mu_offset_per_um=0.05)
    >>> [round(float(v), 6) for v in enc.to_mu(np.array([15000, 25000], np.uint16))]
    [0.1, 0.2]
    >>> DataSpec().identity
    True
    """

    #: attenuation (1/um) per unit of the stored value
    mu_scale_per_count: float = 1.0
    #: attenuation (1/um) subtracted after scaling
    mu_offset_per_um: float = 0.0

    @property
    def identity(self) -> bool:
        """True when the files already hold attenuation in 1/um."""
        return self.mu_scale_per_count == 1.0 and self.mu_offset_per_um == 0.0

    def to_mu(self, values: Any) -> Any:
        """Attenuation (float32, 1/um) of stored values (numpy or dask; lazy stays lazy)."""
        if self.identity:
            return values
        return values.astype(np.float32) * np.float32(self.mu_scale_per_count) - np.float32(self.mu_offset_per_um)


@dataclass(frozen=True)
class StateSpec:
    """One electrochemical state: its images and their nominal energies (eV, increasing).

    In three-energy mode ``energies_ev`` is ``(pre, edge, post)`` from ``[xanes]`` and
    ``volumes`` the matching images; :meth:`volume_for` looks one up by role.
    """

    name: str
    energies_ev: tuple[float, ...]
    volumes: tuple[Path, ...]
    label: str | None = None
    voltage_v: float | None = None
    expected_li: float | None = None
    note: str | None = None
    three_energy: bool = True

    def volume_for(self, role: str) -> Path:
        """The image path for ``role`` in ``("pre_edge", "edge", "post_edge")``.

        Examples
        --------
        >>> s = StateSpec("I", (8330.0, 8345.0, 8430.0), (Path("a"), Path("b"), Path("c")))
        >>> s.volume_for("edge").name
        'b'
        """
        if role not in ENERGY_ROLES:
            raise ValueError(f"role must be one of {ENERGY_ROLES}, got {role!r}")
        if not self.three_energy:
            raise ManifestError(
                f"state {self.name!r} is an energy-list state ({len(self.volumes)} energies); "
                "it has no pre_edge/edge/post_edge roles"
            )
        return self.volumes[ENERGY_ROLES.index(role)]


@dataclass(frozen=True)
class Manifest:
    """A validated experiment manifest; all paths are absolute."""

    path: Path
    sample: SampleSpec
    xanes: XanesSpec
    processing: ProcessingSpec
    states: list[StateSpec]
    #: the ``[reconstruction]`` table as written: when present, the states' image paths are
    #: projection series (parsed by ``litomo.workflows.reconstruct.ReconstructionConfig``)
    reconstruction: Mapping[str, Any] | None = None
    #: ``[data]``: linear encoding of the volume files (identity unless given)
    data: DataSpec = field(default_factory=DataSpec)

    def state(self, name: str) -> StateSpec:
        """The state called ``name``."""
        for s in self.states:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def three_energy(self) -> bool:
        """True when every state is a three-energy (pre/edge/post) state."""
        return all(s.three_energy for s in self.states)

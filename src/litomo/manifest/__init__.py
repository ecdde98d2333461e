"""The experiment manifest: a TOML file describing one operando XANES tomography experiment.

:func:`load_manifest` turns the file into a validated, immutable :class:`Manifest`;
:func:`write_manifest` writes one back (atomically). Every problem raises
:class:`litomo.errors.ManifestError` naming the file and the field path (``states[1].edge``,
0-based state index) so a scientist can fix it without reading code.

A minimal manifest::

    [sample]
    name = "MX-A"
    voxel_size_um = 0.03            # or [z, y, x]
    expected = {am = 0.6, cbd = 0.1, pore = 0.3}   # optional reference values
    [xanes]
    pre_edge_ev = 8330.0            # a bare number must be eV; "8.33 keV" is accepted
    edge_ev = 8345.0
    post_edge_ev = 8430.0
    energy_shift_ev = 0.0           # optional foil calibration, see below
    reference_pristine = "refs/pristine.csv"   # columns: energy_ev, mu (normalised)
    reference_charged = "refs/charged.csv"
    li_pristine = 1.0
    li_charged = 0.38
    [processing]
    bin = 7
    [data]                          # optional: the files hold (mu + offset) / scale (e.g. uint16)
    mu_scale_per_count = 1.0        # 1/um per stored unit
    mu_offset_per_um = 0.0          # mu = value * mu_scale_per_count - mu_offset_per_um
    [[states]]
    name = "I"
    pre_edge = "I/pre_edge.tif"
    edge = "I/edge.tif"
    post_edge = "I/post_edge.tif"

Energy-list mode (full spectra): a state gives ``energies_ev = [...]`` and ``volumes = [...]``
instead of ``pre_edge``/``edge``/``post_edge``; then the ``[xanes]`` three energies are optional.

**Energy calibration sign.** ``energy_shift_ev`` is *added* to the nominal (monochromator)
energies of the images before they are compared with the reference spectra:
``E_true = E_nominal + energy_shift_ev``. If the Ni foil edge measured on the beamline appears at
8331.0 eV while its tabulated value is 8333.0 eV, the shift is +2.0 eV.
"""


from __future__ import annotations

from litomo.manifest.fields import parse_energy_ev
from litomo.manifest.model import (
    ENERGY_ROLES,
    DataSpec,
    Manifest,
    ProcessingSpec,
    SampleSpec,
    StateSpec,
    XanesSpec,
)
from litomo.manifest.parse import check_bspline_spacing, load_manifest
from litomo.manifest.write import write_manifest

__all__ = [
    "ENERGY_ROLES",
    "DataSpec",
    "Manifest",
    "ProcessingSpec",
    "SampleSpec",
    "StateSpec",
    "XanesSpec",
    "check_bspline_spacing",
    "load_manifest",
    "parse_energy_ev",
    "write_manifest",
]

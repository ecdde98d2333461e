"""Transport in electrode microstructures (SPEC 4).

* :func:`tortuosity` / :func:`phase_tortuosity`: diffusion tortuosity factor, ``D_eff / D_0``,
  McMullin number, flux map and dead-end fraction from a steady-state finite-volume solve.
* :func:`electrode_tortuosity`: electrode tortuosity factor ``tau_e`` (transmission-line method
  of Nguyen et al., npj Comput. Mater. 2020).
"""

from litomo.transport.diffusion import (
    TortuosityResult,
    percolating_mask,
    phase_mask,
    phase_tortuosity,
    tortuosity,
)
from litomo.transport.electrode import (
    ElectrodeTortuosityResult,
    electrode_impedance_from_system,
    electrode_tortuosity,
)

__all__ = [
    "ElectrodeTortuosityResult",
    "TortuosityResult",
    "electrode_impedance_from_system",
    "electrode_tortuosity",
    "percolating_mask",
    "phase_mask",
    "phase_tortuosity",
    "tortuosity",
]

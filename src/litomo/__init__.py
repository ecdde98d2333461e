"""litomo: quantitative 3D analysis of X-ray nano-tomography of Li-ion battery electrodes.

Arrays are indexed ``(z, y, x)`` with z the through-plane axis (normal to the current
collector). Lengths are in micrometres, energies in eV. See ``SPEC.md`` in the project docs.
"""

from litomo.errors import LitomoError
from litomo.volume import Volume

__version__ = "0.1.0"

__all__ = ["LitomoError", "Volume", "__version__"]

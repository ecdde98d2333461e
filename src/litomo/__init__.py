"""litomo: quantitative 3D analysis of X-ray nano-tomography of Li-ion battery electrodes.

Arrays are indexed ``(z, y, x)`` with z the through-plane axis (normal to the current
collector). Lengths are in micrometres, energies in eV. ``docs/science.md`` defines what is computed.
"""

from typing import Any

from litomo.errors import LitomoError

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `litomo.Volume` on first use: importing numpy at `import litomo` would slow every CLI
    # start, including `litomo --help` (issue #21 item 7)
    if name == "Volume":
        from litomo.volume import Volume

        return Volume
    raise AttributeError(f"module 'litomo' has no attribute {name!r}")

__all__ = ["LitomoError", "Volume", "__version__"]

"""Microstructure metrics of three-phase label volumes (SPEC 3).

All functions take canonical labels (``uint8``: 0 pore, 1 AM, 2 CBD; convert stored values
with :func:`litomo.phases.to_canonical`) and ``voxel_size_um`` (a float or ``(z, y, x)``).
"""

from litomo.metrics.fractions import am_fraction_bracket, volume_fractions, z_profile_fractions
from litomo.metrics.particles import shape_table, size_statistics
from litomo.metrics.percolation import percolation
from litomo.metrics.rev import rev_curve, two_point_correlation
from litomo.metrics.summary import microstructure_report, seed_table
from litomo.metrics.surface import interfacial_area, specific_surface_area, surface_areas
from litomo.metrics.tpb import tpb_density, tpb_per_particle, tpb_stats

__all__ = [
    "am_fraction_bracket", "interfacial_area", "microstructure_report", "percolation", "shape_table",
    "rev_curve", "seed_table", "size_statistics", "specific_surface_area", "surface_areas", "tpb_density",
    "tpb_per_particle", "tpb_stats", "two_point_correlation", "volume_fractions", "z_profile_fractions",
]

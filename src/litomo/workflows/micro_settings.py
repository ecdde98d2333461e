"""The typed settings and result of the microstructure workflow (:mod:`litomo.workflows.micro`).

:class:`MicroSettings` is what ``litomo micro`` computes (one field per CLI option, validated
on construction); :class:`MicroResult` is what :func:`litomo.workflows.micro.analyse_microstructure`
returns and :func:`litomo.workflows.micro.run_micro` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from litomo.errors import DataError

AXES = ("z", "y", "x")
#: volumes with more voxels go out of core (the in-memory metrics need ~20 bytes per voxel)
CHUNKED_ABOVE_VOXELS = 2**28
DEFAULT_CHUNK_VOX = 128


@dataclass(frozen=True)
class MicroSettings:
    """What ``litomo micro`` computes.

    Attributes
    ----------
    voxel_size_um : float or (z, y, x)
        Voxel edge length(s) in um (``--voxel-size-um``).
    label_mapping : mapping, optional
        Stored value of each phase, e.g. ``{"pore": 0, "am": 85, "cbd": 170}`` (``--labels``;
        default pore=0, am=1, cbd=2).
    axes : tuple of str
        Percolation and S2 axes (``--axes``: ``("z",)`` or ``("z", "y", "x")``).
    transport : bool
        Tortuosity solves for pore and CBD along z (``--no-transport`` turns them off).
    close_cracks : bool
        Close one-voxel cracks and fill enclosed voids before separating particles, so a
        cracked particle stays one (``--no-close-cracks`` turns it off).
    expected : mapping, optional
        Expected volume fractions shown beside the data (``--expected``).
    seed : int
        Seed of the random REV sub-volumes (``--seed``).
    pore_sizes : bool
        Continuous and simulated-MIP pore size distributions, constrictivity and the pore
        radius maps (``--no-pore-sizes`` turns them off; ~20 s CPU at 256^3).
    rev_tolerance : float
        Relative tolerance of the REV size criterion (``--rev-tolerance``).
    figures : bool
        Draw figures and ``report.html`` (``--no-figures`` turns them off).
    supplier_psd_um : (D10, D50, D90), optional
        A supplier's volume-based (laser diffraction) D-values in um, compared with the
        edge-corrected volume PSD of the particles (``--supplier-psd``).
    cbd_porosity : float, optional
        The CBD's own nano-porosity: also solve the pore + porous-CBD tortuosity along z
        (``summary["multiphase_tortuosity_z"]``; ``--cbd-porosity``).
    tile_um : float, optional
        Edge of the tiles of the local property maps (fractions, specific surfaces, pore
        tortuosity along z per tile; ``--tile-um``); None skips them.
    chunk_vox : int, optional
        Compute out of core in blocks of this edge (``--chunk-size``); volumes above
        :data:`CHUNKED_ABOVE_VOXELS` voxels go out of core in blocks of
        :data:`DEFAULT_CHUNK_VOX` anyway (see :func:`analyse_microstructure_chunked`).
    """

    voxel_size_um: float | tuple[float, float, float]
    label_mapping: Mapping[str, int] | None = None
    axes: tuple[str, ...] = ("z",)
    transport: bool = True
    close_cracks: bool = True
    expected: Mapping[str, float] | None = None
    seed: int = 0
    pore_sizes: bool = True
    rev_tolerance: float = 0.05
    figures: bool = True
    supplier_psd_um: tuple[float, float, float] | None = None
    tile_um: float | None = None
    chunk_vox: int | None = None
    cbd_porosity: float | None = None

    def __post_init__(self) -> None:
        from litomo.volume import as_voxel_size

        object.__setattr__(self, "voxel_size_um", as_voxel_size(self.voxel_size_um))
        bad = [a for a in self.axes if a not in AXES]
        if bad or not self.axes:
            raise DataError(f"--axes must be z or all (z, y, x), got {self.axes!r}")
        if self.chunk_vox is not None and int(self.chunk_vox) < 16:
            raise DataError(f"--chunk-size must be at least 16 voxels, got {self.chunk_vox!r}")
        if self.tile_um is not None and not self.tile_um > 0:
            raise DataError(f"--tile-um must be a positive length in um, got {self.tile_um!r}")
        if self.cbd_porosity is not None and not 0.0 <= self.cbd_porosity <= 1.0:
            raise DataError(f"--cbd-porosity must lie in [0, 1], got {self.cbd_porosity!r}")
        if not 0 < self.rev_tolerance < 1:
            raise DataError(f"--rev-tolerance must be in (0, 1), got {self.rev_tolerance!r}")


@dataclass
class MicroResult:
    """What :func:`analyse_microstructure` returns (and :func:`run_micro` writes).

    Attributes
    ----------
    summary : dict
        The JSON summary (``tables/microstructure.json``; keys and their meaning in
        :func:`litomo.metrics.summary.microstructure_report` and ``summary["definitions"]``).
    particles : pandas.DataFrame
        One row per AM particle (``tables/particles.csv``).
    z_profile, rev, s2, metrics_table : pandas.DataFrame
        Phase fractions per z-slice, REV curve, two-point correlations, the seed-style table.
    rev_size, psd : pandas.DataFrame
        REV size per quantity and the pore size distributions (empty without ``pore_sizes``).
    particle_psd, coverage_by_size : pandas.DataFrame
        Laser-diffraction-style volume PSD of the particles (edge-corrected) and the median
        surface coverage per size class (:mod:`litomo.metrics.psd`).
    local_maps, local_profile : pandas.DataFrame
        Per-tile properties and their z-profile (:mod:`litomo.metrics.local`; empty without
        ``tile_um``).
    pore_maps : dict of str to ndarray
        Pore radius maps in um (``pore_radius_local_um``, ``pore_radius_mip_<axis>_um``).
    out_dir : Path or None
        The output folder (set by :func:`run_micro`).
    files : list of Path
        Files written, in order (the completion record last).
    """

    summary: dict[str, Any]
    particles: pd.DataFrame
    z_profile: pd.DataFrame
    rev: pd.DataFrame
    s2: pd.DataFrame
    metrics_table: pd.DataFrame
    rev_size: pd.DataFrame = field(default_factory=pd.DataFrame)
    psd: pd.DataFrame = field(default_factory=pd.DataFrame)
    particle_psd: pd.DataFrame = field(default_factory=pd.DataFrame)
    coverage_by_size: pd.DataFrame = field(default_factory=pd.DataFrame)
    local_maps: pd.DataFrame = field(default_factory=pd.DataFrame)
    local_profile: pd.DataFrame = field(default_factory=pd.DataFrame)
    pore_maps: dict[str, np.ndarray] = field(default_factory=dict)
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)

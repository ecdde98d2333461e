"""Internal pores of particles: voids enclosed by one particle, empty or filled with CBD.

A void is internal to a particle when it is a 6-connected component of non-particle voxels
that the particle alone encloses (``scipy.ndimage.binary_fill_holes`` of the particle in its
bounding box). Its voxels are pore or CBD; the holotomography seed paper reports both, so
``internal_pore_volume_um3`` counts every enclosed void voxel (CBD-filled parts included) and
``internal_pore_cbd_volume_um3`` the CBD part. A void enclosed only by several touching
particles together, or cut open by the volume boundary, is not internal to any particle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from litomo.errors import DataError
from litomo.phases import PHASE_CODES
from litomo.volume import as_voxel_size

COLUMNS = ("particle", "internal_pore_volume_um3", "internal_pore_cbd_volume_um3",
           "internal_pore_empty_volume_um3", "internal_porosity")


def internal_pore_table(particle_labels: np.ndarray, phase_labels: np.ndarray,
                        voxel_size_um: float | tuple[float, float, float] = 1.0) -> pd.DataFrame:
    """Enclosed void volume of each particle, split into CBD-filled and empty (pore) parts.

    Parameters
    ----------
    particle_labels : ndarray of int, (z, y, x)
        Particle ids (0 = no particle), e.g. from :func:`litomo.segment.particles.separate_particles`.
    phase_labels : ndarray of uint8, (z, y, x)
        Canonical phases (0 pore, 1 AM, 2 CBD).
    voxel_size_um : float or (z, y, x)

    Returns
    -------
    pandas.DataFrame
        ``particle, internal_pore_volume_um3`` (all enclosed void), ``internal_pore_cbd_volume_um3``,
        ``internal_pore_empty_volume_um3`` and ``internal_porosity`` (void / (particle + void)).

    Examples
    --------
    >>> ph = np.zeros((7, 7, 7), np.uint8); ph[1:6, 1:6, 1:6] = 1; ph[3, 3, 3] = 2
    >>> t = internal_pore_table((ph == 1).astype(np.int32), ph)
    >>> t[["internal_pore_volume_um3", "internal_pore_cbd_volume_um3"]].values.tolist()
    [[1.0, 1.0]]
    """
    plab = np.asarray(particle_labels)
    phases = np.asarray(phase_labels)
    if plab.shape != phases.shape:
        raise DataError(f"particle labels {plab.shape} and phase labels {phases.shape} differ in shape")
    vv = float(np.prod(as_voxel_size(voxel_size_um)))
    rows = []
    for i, sl in enumerate(ndi.find_objects(plab)):
        if sl is None:
            continue
        own = plab[sl] == i + 1
        # the crop's outer faces count as outside: a void cut by the volume boundary is open
        holes = ndi.binary_fill_holes(np.pad(own, 1))[1:-1, 1:-1, 1:-1] & ~own & (plab[sl] == 0)
        cbd = int(np.count_nonzero(holes & (phases[sl] == PHASE_CODES["cbd"])))
        n = int(np.count_nonzero(holes))
        rows.append((i + 1, n * vv, cbd * vv, (n - cbd) * vv, n / (n + int(own.sum()))))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def internal_pore_totals(table: pd.DataFrame, am_volume_um3: float) -> dict[str, float]:
    """Totals over particles: ``internal_pore_volume_um3``, ``internal_pore_cbd_volume_um3``,
    ``internal_pore_empty_volume_um3`` and ``internal_pore_fraction`` (void / (AM + void)).

    Examples
    --------
    >>> t = pd.DataFrame({"internal_pore_volume_um3": [2.0, 0.0], "internal_pore_cbd_volume_um3": [1.0, 0.0],
    ...                   "internal_pore_empty_volume_um3": [1.0, 0.0]})
    >>> internal_pore_totals(t, 8.0)["internal_pore_fraction"]
    0.2
    """
    out = {k: float(table[k].sum()) for k in COLUMNS[1:4]}
    total = am_volume_um3 + out["internal_pore_volume_um3"]
    out["internal_pore_fraction"] = out["internal_pore_volume_um3"] / total if total > 0 else float("nan")
    return out


def internal_void_labels(particle_labels: np.ndarray) -> np.ndarray:
    """Label every internal void voxel with the id of the particle that alone encloses it.

    The same voids as :func:`internal_pore_table` (6-connected non-particle voxels inside one
    particle, not cut by the volume boundary), as a volume: the voxels next to a particle's
    own pores and enclosed cracks can then be found (e.g. :func:`litomo.xanes.li_context.pore_proximity_li`).

    Parameters
    ----------
    particle_labels : ndarray of int, (z, y, x)
        Particle ids (0 = no particle).

    Returns
    -------
    ndarray of int32, (z, y, x)
        The enclosing particle's id on its void voxels, 0 elsewhere. A void inside a hollow
        particle that itself sits in another particle's void takes the inner particle's id.

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), np.int32); lab[1:4, 1:4, 1:4] = 3; lab[2, 2, 2] = 0
    >>> v = internal_void_labels(lab)
    >>> int(v[2, 2, 2]), int((v > 0).sum())
    (3, 1)
    """
    plab = np.asarray(particle_labels)
    out = np.zeros(plab.shape, np.int32)
    # larger particles first, so that a particle nested in another's void writes its own voids last
    objs = [(i + 1, sl) for i, sl in enumerate(ndi.find_objects(plab)) if sl is not None]
    objs.sort(key=lambda o: -int(np.prod([s.stop - s.start for s in o[1]])))
    for pid, sl in objs:
        own = plab[sl] == pid
        holes = ndi.binary_fill_holes(np.pad(own, 1))[1:-1, 1:-1, 1:-1] & ~own & (plab[sl] == 0)
        out[sl][holes] = pid
    return out


__all__ = ["internal_pore_table", "internal_pore_totals", "internal_void_labels"]

"""Core-shell Li profile: mean x_Li versus distance from each particle's own surface (SPEC 2.4).

Split from :mod:`litomo.statistics` (one concept per module): the distance is taken inside each
particle separately, so touching particles do not see into each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from litomo.errors import DataError
from litomo.particles import check_particle_labels
from litomo.statistics import check_li_map
from litomo.volume import as_voxel_size


def particle_surface_distance_um(particles: Any, *, voxel_size_um: Any) -> np.ndarray:
    """Distance (um) of each particle voxel from its own particle's surface; NaN elsewhere.

    The Euclidean distance transform is taken inside each particle separately (touching
    particles do not see into each other), from the voxel centre to the nearest voxel
    centre outside the particle, minus half a voxel (the surface lies on the voxel face),
    so surface voxels sit at half a voxel. Voxels beyond the volume edge count as outside.

    Examples
    --------
    >>> lab = np.zeros((7, 7, 7), int); lab[1:6, 1:6, 1:6] = 1
    >>> particle_surface_distance_um(lab, voxel_size_um=1.0)[3, 3].tolist()
    [nan, 0.5, 1.5, 2.5, 1.5, 0.5, nan]
    """
    lab = np.asarray(particles)
    vs = as_voxel_size(voxel_size_um)
    dist = np.full(lab.shape, np.nan, dtype=np.float64)
    # one EDT per particle on its bounding box (padded by one voxel of "outside"): a single
    # EDT of all particles would let touching particles share an interior
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        sub = np.pad(lab[sl] == i, 1)
        d = ndi.distance_transform_edt(sub, sampling=vs)[1:-1, 1:-1, 1:-1]
        own = lab[sl] == i
        dist[sl][own] = d[own]
    return dist - 0.5 * min(vs)


def core_shell_profile(
    x_li: Any,
    particles: Any,
    *,
    voxel_size_um: Any,
    bin_width_um: float | None = None,
    per_particle: bool = False,
) -> pd.DataFrame:
    """Mean x_Li versus distance from the particle surface (SPEC 2.4 core-shell profile).

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM (NaN voxels are skipped).
    particles : array_like of int, (z, y, x)
        Particle labels, 0 = background.
    voxel_size_um : float or (z, y, x)
        Voxel size in um.
    bin_width_um : float, optional
        Distance bin width in um (default: the smallest voxel edge).
    per_particle : bool
        Also return one profile per particle (rows after the ``"all"`` rows).

    Returns
    -------
    pandas.DataFrame
        ``particle`` (``"all"`` or a label), ``distance_um`` (bin centre; bins
        ``[k w, (k+1) w)`` of the distance defined in :func:`particle_surface_distance_um`),
        ``mean_li, std_li, n_voxels``. Empty bins are left out.

    Examples
    --------
    >>> lab = np.zeros((7, 7, 7), np.int32); lab[1:6, 1:6, 1:6] = 1
    >>> shell = particle_surface_distance_um(lab, voxel_size_um=1.0) < 1  # outer voxel layer
    >>> x = np.where(lab > 0, np.where(shell, 1.0, 0.5), np.nan)
    >>> core_shell_profile(x, lab, voxel_size_um=1.0)["mean_li"].tolist()
    [1.0, 0.5, 0.5]
    """
    x = check_li_map(x_li)
    lab = check_particle_labels(particles, shape=x.shape)
    vs = as_voxel_size(voxel_size_um)
    w = float(min(vs) if bin_width_um is None else bin_width_um)
    if not (np.isfinite(w) and w > 0):
        raise DataError(f"bin_width_um must be positive, got {bin_width_um!r}")
    dist = particle_surface_distance_um(lab, voxel_size_um=vs)
    keep = np.isfinite(dist) & np.isfinite(x)
    if not keep.any():
        raise DataError("no particle voxel has a Li value; cannot build a core-shell profile")
    k = np.floor(dist[keep] / w).astype(np.intp)
    v = x[keep].astype(np.float64)
    nb = int(k.max()) + 1

    def profile(bins: np.ndarray, vals: np.ndarray, nbins: int) -> tuple[np.ndarray, ...]:
        n = np.bincount(bins, minlength=nbins).astype(np.float64)
        s1 = np.bincount(bins, weights=vals, minlength=nbins)
        s2 = np.bincount(bins, weights=vals * vals, minlength=nbins)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        return n, mean, std

    n, mean, std = profile(k, v, nb)
    occ = n > 0
    frames = [
        pd.DataFrame(
            {
                "particle": ["all"] * int(occ.sum()),
                "distance_um": (np.nonzero(occ)[0] + 0.5) * w,
                "mean_li": mean[occ],
                "std_li": std[occ],
                "n_voxels": n[occ].astype(np.int64),
            }
        )
    ]
    if per_particle:
        pid = lab[keep].astype(np.intp)
        combo = pid * nb + k
        nlab = int(pid.max()) + 1
        n2, mean2, std2 = profile(combo, v, nlab * nb)
        occ2 = np.nonzero(n2 > 0)[0]
        frames.append(
            pd.DataFrame(
                {
                    "particle": (occ2 // nb).astype(np.int64),
                    "distance_um": (occ2 % nb + 0.5) * w,
                    "mean_li": mean2[occ2],
                    "std_li": std2[occ2],
                    "n_voxels": n2[occ2].astype(np.int64),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    out["particle"] = out["particle"].astype(object)
    return out

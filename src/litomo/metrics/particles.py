"""Per-particle metrics of separated active-material particles (SPEC 3).

Input: a particle label image (0 = not a particle, 1..N = particles), e.g. from
:func:`litomo.segment.particles.separate_particles`, plus optionally the canonical phase
labels so that each particle's surface can be split into faces touching pore, CBD and
other AM. Face statistics are vectorised over all faces with :func:`numpy.bincount`; the
marching-cubes area for the sphericity runs per particle on its own small crop.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from litomo.errors import DataError
from litomo.metrics.fractions import check_labels
from litomo.metrics.surface import DEFAULT_SMOOTH_SIGMA_VOX, mesh_area_volume
from litomo.metrics.tpb import tpb_per_particle
from litomo.particles import check_particle_labels, particle_table
from litomo.progress import ProgressCallback
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)

# neighbour categories for surface faces
_PORE, _AM, _CBD, _UNKNOWN = 0, 1, 2, 3

#: particles with fewer voxels get no mesh area and no sphericity: a surface smoothed by
#: 0.7 voxel says little about the shape of an object 4 voxels across (a 4^3 cube meshes to
#: psi 0.96 instead of 0.81; docs/science.md, "Sphericity", has the bias-vs-size table)
MIN_SPHERICITY_VOXELS = 64


def _face_category_areas(particle_labels: np.ndarray, phase_labels: np.ndarray | None,
                         v: tuple[float, float, float], n: int) -> np.ndarray:
    """Face areas (um^2) per particle and neighbour category, shape (n + 1, 4)."""
    out = np.zeros((n + 1) * 4)
    face_areas = (v[1] * v[2], v[0] * v[2], v[0] * v[1])
    for ax in range(3):
        m = particle_labels.shape[ax]
        if m < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, m - 1), slice(1, m)
        a, b = particle_labels[tuple(lo)], particle_labels[tuple(hi)]
        diff = a != b
        pa, pb = a[diff].astype(np.intp), b[diff].astype(np.intp)
        if phase_labels is not None:
            la, lb = phase_labels[tuple(lo)][diff], phase_labels[tuple(hi)][diff]
        else:
            la = lb = np.full(pa.shape, _UNKNOWN, np.uint8)
        # the neighbour is "AM" when it is another particle, else its phase
        cat_b = np.where(pb > 0, _AM, lb).astype(np.intp)
        cat_a = np.where(pa > 0, _AM, la).astype(np.intp)
        sel = pa > 0
        out += np.bincount(pa[sel] * 4 + cat_b[sel], minlength=(n + 1) * 4) * face_areas[ax]
        sel = pb > 0
        out += np.bincount(pb[sel] * 4 + cat_a[sel], minlength=(n + 1) * 4) * face_areas[ax]
    return out.reshape(n + 1, 4)


def shape_table(
    particle_labels: np.ndarray,
    phase_labels: np.ndarray | None = None,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    *,
    smooth_sigma_vox: float = DEFAULT_SMOOTH_SIGMA_VOX,
    mesh: bool = True,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """The base particle table plus shape, surface coverage and TPB length.

    Parameters
    ----------
    particle_labels : ndarray of int
        0 = background, 1..N = particles (labels without voxels are skipped).
    phase_labels : ndarray of uint8, optional
        Canonical phase labels (0 pore, 1 AM, 2 CBD) of the same shape; needed for the
        surface split into pore / CBD / AM and for the TPB length.
    voxel_size_um : float or (z, y, x)
    smooth_sigma_vox : float
        Smoothing before marching cubes (see :mod:`litomo.metrics.surface`).
    mesh : bool
        Mesh each particle of at least :data:`MIN_SPHERICITY_VOXELS` voxels for
        ``area_mc_um2`` and ``sphericity`` (about 1-2 ms of CPU per particle of ~25^3 voxels,
        dominated by ``skimage.measure.marching_cubes``); ``False`` leaves both NaN and keeps
        only the vectorised statistics.
    progress : callable, optional
        ``progress(done, total, description)``.

    Returns
    -------
    pandas.DataFrame
        :func:`litomo.particles.particle_table`'s columns (``particle, n_voxels, volume_um3,
        eq_diameter_um, centroid_{z,y,x}_um, touches_boundary``) and
        ``area_mc_um2, sphericity`` (``pi^(1/3) (6V)^(2/3) / A`` with A and V the area and the
        enclosed volume of one closed marching-cubes surface of the particle's own crop, so
        0 < psi <= 1; NaN below :data:`MIN_SPHERICITY_VOXELS` voxels), ``area_face_um2`` and its split
        ``area_{pore,cbd,am}_face_um2`` (voxel faces; ``am`` = other particles / unlabelled
        AM), ``coverage_{pore,cbd,am}`` (fractions of the particle's surface faces),
        ``a_{pore,cbd}_per_volume_um-1`` (face area / particle volume) and
        ``tpb_length_um`` (NaN without ``phase_labels``).

    Examples
    --------
    >>> z, y, x = np.ogrid[:40, :40, :40]
    >>> ball = ((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 15 ** 2).astype(np.int32)
    >>> t = shape_table(ball, voxel_size_um=0.5)
    >>> round(float(t["eq_diameter_um"][0]), 1), round(float(t["sphericity"][0]), 2)
    (15.0, 0.99)
    """
    p = check_particle_labels(particle_labels)
    if phase_labels is not None:
        phase_labels = check_labels(phase_labels)
        if phase_labels.shape != p.shape:
            raise DataError(f"particle labels {p.shape} and phase labels {phase_labels.shape} differ in shape")
    v = as_voxel_size(voxel_size_um)
    table = particle_table(p, v)
    ids = table["particle"].to_numpy()
    counts = table["n_voxels"].to_numpy()
    volume = table["volume_um3"].to_numpy()
    n = int(ids.max()) if ids.size else 0
    faces = _face_category_areas(p, phase_labels, v, n)[ids] if ids.size else np.zeros((0, 4))
    total_face = faces.sum(axis=1)
    area_mc = np.full(ids.size, np.nan)
    volume_mc = np.full(ids.size, np.nan)
    if mesh:
        objects = ndi.find_objects(p)
        for k, lab in enumerate(ids):
            if counts[k] >= MIN_SPHERICITY_VOXELS:
                # the crop holds only this particle; closing its mesh at the crop edge is what we want
                a, vol = mesh_area_volume(p[objects[lab - 1]] == lab, v, smooth_sigma_vox=smooth_sigma_vox)
                if a > 0:
                    area_mc[k], volume_mc[k] = a, vol
            if progress is not None and (k % 50 == 49 or k == ids.size - 1):
                progress(k + 1, ids.size, "particles")
    elif progress is not None:
        progress(ids.size, ids.size, "particles")
    with np.errstate(divide="ignore", invalid="ignore"):
        # V from the same mesh as A (not the voxel count): smoothing shrinks a small object's
        # surface, and voxel volume over that area gave psi up to 1.5 for 3^3 cubes
        table["area_mc_um2"] = area_mc
        table["sphericity"] = np.pi ** (1 / 3) * (6 * volume_mc) ** (2 / 3) / area_mc
        cover = faces / total_face[:, None]
        table["area_face_um2"] = total_face
        for name, cat in (("pore", _PORE), ("cbd", _CBD), ("am", _AM)):
            table[f"area_{name}_face_um2"] = faces[:, cat]
        for name, cat in (("pore", _PORE), ("cbd", _CBD), ("am", _AM)):
            table[f"coverage_{name}"] = cover[:, cat]
        table["a_pore_per_volume_um-1"] = faces[:, _PORE] / volume
        table["a_cbd_per_volume_um-1"] = faces[:, _CBD] / volume
    if phase_labels is not None and ids.size:
        table["tpb_length_um"] = tpb_per_particle(phase_labels, p, v)[ids]
    else:
        table["tpb_length_um"] = np.full(ids.size, np.nan)
    return table


def weighted_quantile(values: np.ndarray, q: float | np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Quantile(s) ``q`` in [0, 1] of ``values`` with optional weights (linear interpolation).

    Sample k sits at the cumulative weight fraction ``(W_k - w_k / 2) / W`` (midpoint rule),
    so equal weights give the same result as ``np.percentile(..., method="hazen")``.

    Examples
    --------
    >>> float(weighted_quantile(np.array([1.0, 2.0, 3.0]), 0.5))
    2.0
    >>> float(weighted_quantile(np.array([1.0, 3.0]), 0.5, np.array([1.0, 3.0])))
    2.5
    """
    values = np.asarray(values, float)
    if values.size == 0:
        return np.full(np.shape(q), np.nan)
    w = np.ones_like(values) if weights is None else np.asarray(weights, float)
    order = np.argsort(values)
    values, w = values[order], w[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(q, cdf, values)


def size_statistics(table: pd.DataFrame) -> dict[str, float]:
    """D10/D50/D90 by number and by volume, mean sphericity and particle counts.

    Particles touching the volume boundary are excluded from the statistics (their
    size is cut) but counted in ``n_boundary_particles``. Keys: ``d10_number_um`` ...
    ``d90_volume_um``, ``d50_um`` (= volume-weighted D50), ``sphericity_mean`` and
    ``sphericity_median`` over the ``n_sphericity_particles`` inner particles that have a
    sphericity (at least ``sphericity_min_voxels`` voxels), ``n_particles`` (all),
    ``n_inner_particles``, ``n_boundary_particles``.

    Examples
    --------
    >>> t = pd.DataFrame({"eq_diameter_um": [2.0, 2.0, 9.0], "volume_um3": [4.2, 4.2, 381.7],
    ...                   "sphericity": [0.9, 0.9, 0.5], "touches_boundary": [False, False, True]})
    >>> size_statistics(t)["d50_number_um"], size_statistics(t)["n_boundary_particles"]
    (2.0, 1)
    """
    inner = table[~table["touches_boundary"].astype(bool)]
    d = inner["eq_diameter_um"].to_numpy(float)
    out: dict[str, float] = {}
    qs = np.array([0.1, 0.5, 0.9])
    num = weighted_quantile(d, qs)
    vol = weighted_quantile(d, qs, inner["volume_um3"].to_numpy(float))
    for i, name in enumerate(("d10", "d50", "d90")):
        out[f"{name}_number_um"] = float(num[i])
        out[f"{name}_volume_um"] = float(vol[i])
    out["d50_um"] = out["d50_volume_um"]
    psi = inner["sphericity"].to_numpy(float)
    psi = psi[np.isfinite(psi)]
    out["sphericity_mean"] = float(psi.mean()) if psi.size else float("nan")
    out["sphericity_median"] = float(np.median(psi)) if psi.size else float("nan")
    out["n_sphericity_particles"] = int(psi.size)
    out["sphericity_min_voxels"] = MIN_SPHERICITY_VOXELS
    out["n_particles"] = int(len(table))
    out["n_inner_particles"] = int(len(inner))
    out["n_boundary_particles"] = int(len(table) - len(inner))
    return out


def size_classes(table: pd.DataFrame, n_classes: int = 3) -> pd.Series:
    """Size class per particle from number-quantiles of the inner particles' diameters.

    ``n_classes=3`` gives ``"small"``, ``"medium"``, ``"large"`` (tertiles); other values
    give ``"class1"`` ... Boundary particles get a class too (by their cut size).

    Examples
    --------
    >>> t = pd.DataFrame({"eq_diameter_um": [1.0, 2.0, 3.0], "touches_boundary": [False] * 3})
    >>> size_classes(t).tolist()
    ['small', 'medium', 'large']
    """
    inner = table.loc[~table["touches_boundary"].astype(bool), "eq_diameter_um"].to_numpy(float)
    names = ["small", "medium", "large"] if n_classes == 3 else [f"class{i + 1}" for i in range(n_classes)]
    if inner.size == 0:
        return pd.Series([names[0]] * len(table), index=table.index, dtype=object)
    edges = weighted_quantile(inner, np.arange(1, n_classes) / n_classes)
    idx = np.searchsorted(edges, table["eq_diameter_um"].to_numpy(float), side="right")
    return pd.Series(np.array(names, dtype=object)[idx], index=table.index)


def depth_by_size_class(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of centroid depth (z, um) and count per size class (inner particles).

    Examples
    --------
    >>> t = pd.DataFrame({"eq_diameter_um": [1.0, 2.0, 3.0], "touches_boundary": [False] * 3,
    ...                   "centroid_z_um": [5.0, 6.0, 7.0]})
    >>> depth_by_size_class(t)["mean_depth_um"].tolist()
    [7.0, 6.0, 5.0]
    """
    t = table.assign(size_class=size_classes(table))
    t = t[~t["touches_boundary"].astype(bool)]
    g = t.groupby("size_class")["centroid_z_um"]
    return pd.DataFrame({"mean_depth_um": g.mean(), "std_depth_um": g.std(), "n": g.size()}).reset_index()

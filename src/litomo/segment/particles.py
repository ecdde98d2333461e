"""Distance-transform watershed separation of touching particles (SPEC 3 "Particles").

Separation only: ids, sizes, centroids and boundary flags of the separated particles are the
particle core's (:mod:`litomo.particles`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.particles import d50_um
from litomo.segment.flood import flood_from_markers, h_maxima_mask
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)


def _check_mask(mask: Any) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise DataError(f"particle mask must be 3D (z, y, x), got shape {mask.shape}")
    if mask.dtype != bool:
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            raise DataError(f"particle mask must be boolean (or 0/1), got values {values[:8].tolist()}; "
                            "select the AM phase first, e.g. labels == 1")
        mask = mask.astype(bool)
    return mask


def separate_particles(
    mask: Any,
    *,
    voxel_size_um: float | Sequence[float] = 1.0,
    min_distance_um: float | None = None,
    h_maxima: float | None = None,
    compactness: float = 0.0,
    min_size_vox: int = 8,
    smooth_sigma: float = 0.4,
) -> np.ndarray:
    """Split a binary particle mask into individual particles (int32 labels, 0 = background).

    Euclidean distance transform (in um, anisotropic voxels allowed) -> markers at its
    maxima -> marker-controlled watershed of the negated distance inside the mask.

    Parameters
    ----------
    mask : bool array, (z, y, x)
        Particle phase (e.g. ``labels == 1`` for AM).
    voxel_size_um : float or (z, y, x)
    min_distance_um : float, optional
        Use ``skimage.feature.peak_local_max`` with a ball footprint of this radius: two
        particle centres closer than this merge. Mutually exclusive with ``h_maxima``.
    h_maxima : float, optional
        Marker = regional maxima of the distance map higher than ``h_maxima`` um above
        their surroundings (``skimage.morphology.h_maxima``). Two overlapping spheres
        split when the distance at their neck is more than ``h_maxima`` below the smaller
        centre. Default (neither given): one voxel edge.
    compactness : float
        Compact watershed parameter (0 = classic watershed).
    min_size_vox : int
        Connected components of the mask smaller than this are removed first (noise specks).
    smooth_sigma : float
        Gaussian smoothing (voxels) of the distance map before finding maxima (suppresses
        voxel-staircase maxima, as in PoreSpy's SNOW); 0 disables.

    Returns
    -------
    int32 array of particle ids 1..N (sequential).

    Examples
    --------
    >>> z, y, x = np.ogrid[:24, :24, :40]
    >>> two = ((z - 12)**2 + (y - 12)**2 + (x - 12)**2 <= 64) | ((z - 12)**2 + (y - 12)**2 + (x - 26)**2 <= 64)
    >>> int(separate_particles(two).max())
    2
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import relabel_sequential, watershed

    mask = _check_mask(mask)
    vs = as_voxel_size(voxel_size_um)
    if min_distance_um is not None and h_maxima is not None:
        raise DataError("give either min_distance_um or h_maxima, not both")
    if min_size_vox > 1:
        mask = remove_small_objects(mask, max_size=int(min_size_vox) - 1) if _has_max_size() else \
            remove_small_objects(mask, min_size=int(min_size_vox))
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    dist = distance_um(mask, vs)
    if smooth_sigma > 0:
        # in place (each 1-D pass buffers its line first: the same numbers): at a 256^3 grid
        # every float64 temporary is 128 MiB of the run's peak (issue 22)
        ndimage.gaussian_filter(dist, smooth_sigma, output=dist)
        dist *= mask
    if min_distance_um is not None:
        if min_distance_um <= 0:
            raise DataError(f"min_distance_um must be positive, got {min_distance_um}")
        radii = [max(1, int(round(min_distance_um / s))) for s in vs]
        zz, yy, xx = np.ogrid[-radii[0]:radii[0] + 1, -radii[1]:radii[1] + 1, -radii[2]:radii[2] + 1]
        footprint = (zz / radii[0]) ** 2 + (yy / radii[1]) ** 2 + (xx / radii[2]) ** 2 <= 1
        # one peak per connected component at least, so no particle is left without a marker
        peaks = peak_local_max(dist, footprint=footprint, labels=ndimage.label(mask)[0],
                               exclude_border=False)
        peak_mask = np.zeros(mask.shape, dtype=bool)
        peak_mask[tuple(peaks.T)] = True
        # equal-height neighbours (a centre between voxels) are one plateau = one marker
        markers, _ = ndimage.label(peak_mask, structure=np.ones((3, 3, 3)))
    else:
        h = min(vs) if h_maxima is None else float(h_maxima)
        if h <= 0:
            raise DataError(f"h_maxima must be positive (um), got {h}")
        maxima = h_maxima_mask(dist, h) & mask
        # a plateau maximum is one marker (label its connected voxels together)
        markers, _ = ndimage.label(maxima, structure=np.ones((3, 3, 3)))
        # components without any maximum (flat or tiny) still need a marker
        comp, ncomp = ndimage.label(mask)
        has = np.zeros(ncomp + 1, dtype=bool)
        has[comp[markers > 0]] = True
        missing = np.flatnonzero(~has[1:]) + 1
        if missing.size:
            # the deepest voxel of each such component; on the voxels of those components only
            # (ndimage.maximum_position sorts the whole volume: seconds at 256^3)
            sel = np.flatnonzero(has[comp.ravel()] == 0)
            sel = sel[comp.ravel()[sel] > 0]
            cs, ds = comp.ravel()[sel], dist.ravel()[sel]
            order = np.lexsort((-ds, cs))
            first = order[np.r_[True, cs[order][1:] != cs[order][:-1]]]
            start = markers.max() + 1
            markers.ravel()[sel[first]] = start + np.arange(first.size)
        del comp, maxima  # 80 MiB at a 256^3 grid, no longer needed during the watershed
    if compactness:
        labels = watershed(np.negative(dist, out=dist), markers, mask=mask, compactness=compactness)
    else:  # the same labels as scikit-image's watershed, ~3x less CPU (litomo.segment.flood)
        labels = flood_from_markers(np.negative(dist, out=dist), markers, mask)
    del dist
    labels, _, _ = relabel_sequential(labels)
    log.info("separated %d particles", int(labels.max()))
    return labels.astype(np.int32)


def _dyadic_exponent(value: float, max_exponent: int = 40) -> int | None:
    """Smallest ``e`` with ``value * 2**e`` an integer (exactly), or None."""
    for e in range(max_exponent + 1):
        scaled = value * 2.0**e
        if scaled == int(scaled):
            return e
    return None


def distance_um(mask: np.ndarray, voxel_size_um: Sequence[float]) -> np.ndarray:
    """Euclidean distance (um, float64) of each mask voxel to the nearest background voxel.

    Equal, bit for bit, to ``scipy.ndimage.distance_transform_edt(mask, sampling=voxel_size_um)``.
    The ``edt`` package (multi-threaded; 4x less CPU at 256^3) computes the squared
    distances in float32: they are exact there when every squared voxel size is a binary
    fraction and the largest squared distance fits float32's 24-bit mantissa (0.125, 0.25,
    0.5 or 1 um voxels up to thousands of voxels), and their float64 square root is then
    scipy's result. Other voxel sizes (0.4 um) keep scipy, so particle labels never depend on
    float32 rounding.

    Examples
    --------
    >>> from scipy import ndimage
    >>> m = np.zeros((5, 6, 7), bool); m[1:4, 1:5, 1:6] = True
    >>> for vs in ((0.25, 0.5, 1.0), (0.4, 0.4, 0.4)):
    ...     print(bool((distance_um(m, vs) == ndimage.distance_transform_edt(m, sampling=vs)).all()))
    True
    True
    """
    import os

    from scipy import ndimage

    vs = [float(v) for v in voxel_size_um]
    exps = [_dyadic_exponent(v * v) for v in vs]
    exact = None not in exps
    if exact:
        e = max(exps)  # every squared distance is an integer multiple of 2**-e
        units = sum(v * v * 2.0**e * n * n for v, n in zip(vs, mask.shape, strict=True))
        exact = units < 2**24
    # no background voxel at all: edt answers inf, scipy finite values; keep scipy's
    if not exact or mask.all():
        return ndimage.distance_transform_edt(mask, sampling=vs)
    import edt

    sq = edt.edtsq(np.ascontiguousarray(mask, dtype=bool), anisotropy=tuple(vs), black_border=False,
                   parallel=os.cpu_count() or 1)
    return np.sqrt(sq, dtype=np.float64)


def _has_max_size() -> bool:
    # skimage 0.26 renamed remove_small_objects(min_size) -> max_size (deprecating the old name)
    import inspect

    from skimage.morphology import remove_small_objects

    return "max_size" in inspect.signature(remove_small_objects).parameters


def tune_separation(
    mask: Any,
    target_d50_um: float,
    *,
    voxel_size_um: float | Sequence[float] = 1.0,
    parameter: str = "h_maxima",
    values: Sequence[float] | None = None,
    by: str = "volume",
    **kwargs: Any,
) -> dict[str, Any]:
    """Grid search of the marker parameter so the particle D50 matches a reference.

    Parameters
    ----------
    mask : bool array
    target_d50_um : float
        Reference D50 (e.g. from laser diffraction or the supplier's PSD), um.
    parameter : ``"h_maxima"`` or ``"min_distance_um"``
        Which marker parameter to scan.
    values : sequence of float, optional
        Candidate values (um). Default: 12 values from 0.25 to 6 voxel edges
        (h_maxima) or 1 to 12 voxel edges (min_distance_um), geometric.
    by : ``"volume"`` or ``"number"``
        Weighting of the D50.
    **kwargs
        Passed on to :func:`separate_particles`.

    Returns
    -------
    dict with ``best`` ({parameter: value}), ``labels`` (for the best value), ``d50_um``
    and ``scan`` (list of {value, d50_um, n_particles}).
    """
    if parameter not in ("h_maxima", "min_distance_um"):
        raise DataError(f"parameter must be 'h_maxima' or 'min_distance_um', got {parameter!r}")
    if not (np.isfinite(target_d50_um) and target_d50_um > 0):
        raise DataError(f"target_d50_um must be positive, got {target_d50_um}")
    vs = min(as_voxel_size(voxel_size_um))
    if values is None:
        lo, hi = (0.25, 6.0) if parameter == "h_maxima" else (1.0, 12.0)
        values = (np.geomspace(lo, hi, 12) * vs).tolist()
    scan = []
    best: tuple[float, float, Any] | None = None
    for v in values:
        labels = separate_particles(mask, voxel_size_um=voxel_size_um, **{parameter: float(v)}, **kwargs)
        d = d50_um(labels, voxel_size_um, by=by)
        scan.append({"value": float(v), "d50_um": d, "n_particles": int(labels.max())})
        err = abs(np.log(d / target_d50_um)) if np.isfinite(d) and d > 0 else np.inf
        if best is None or err < best[0]:
            best = (err, float(v), labels)
    assert best is not None
    if not np.isfinite(best[0]):
        raise DataError("no interior particles for any parameter value: the volume is too small")
    return {"best": {parameter: best[1]}, "labels": best[2],
            "d50_um": scan[[s["value"] for s in scan].index(best[1])]["d50_um"], "scan": scan}

"""Per-state Li statistics (SPEC 2.4) on a calibrated Li map.

Every function takes ``x_li``: a float array indexed ``(z, y, x)`` holding the calibrated,
normalised Li content in active-material (AM) voxels and NaN everywhere else. Class
thresholds follow SPEC 2.1 via :func:`litomo.xanes.threeenergy.classify_li` (poor
``x <= poor_max``, rich ``x >= rich_min``, moderate in between). Per-particle functions
also take ``particles``: an integer label volume (0 = no particle), e.g. from
:func:`litomo.segment.particles.separate_particles`.

Everything is vectorised with :func:`numpy.bincount` / :mod:`scipy.ndimage`, so thousands
of particles cost about as much as one.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from litomo.errors import DataError
from litomo.manifest.model import SEPARATOR_SIDES
from litomo.particles import check_particle_labels, particle_table
from litomo.volume import as_voxel_size
from litomo.xanes.threeenergy import class_fractions, classify_li

log = logging.getLogger(__name__)

#: Histogram bins shared by all states (x_Li from 0 to 1.2 in steps of 0.02).
DEFAULT_LI_BINS = np.linspace(0.0, 1.2, 61)


def check_li_map(x_li: Any, *, ndim: int | None = 3) -> np.ndarray:
    """``x_li`` as a float array (NaN outside the AM), or a :class:`DataError` naming what is wrong.

    Examples
    --------
    >>> check_li_map(np.full((2, 2, 2), np.nan)).shape
    (2, 2, 2)
    """
    x = np.asarray(x_li)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"x_li must be a float array with NaN outside the active material; got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise DataError(f"x_li must be a {ndim}D (z, y, x) array, got shape {x.shape}")
    if np.isinf(x).any():
        raise DataError("x_li contains inf; masked voxels must be NaN")
    return x


class LiHistogram(NamedTuple):
    """Counts of x_Li per bin; values outside the bin range are counted, not dropped."""

    counts: np.ndarray
    edges: np.ndarray
    underflow: int
    overflow: int

    def to_frame(self) -> pd.DataFrame:
        """One row per bin: ``bin_left, bin_right, bin_centre, count, fraction``."""
        total = self.counts.sum() + self.underflow + self.overflow
        return pd.DataFrame(
            {
                "bin_left": self.edges[:-1],
                "bin_right": self.edges[1:],
                "bin_centre": 0.5 * (self.edges[:-1] + self.edges[1:]),
                "count": self.counts,
                "fraction": self.counts / total if total else np.zeros(len(self.counts)),
            }
        )


def li_histogram(x_li: Any, bins: Any = None) -> LiHistogram:
    """Histogram of x_Li over the AM voxels with fixed bins shared by all states.

    Parameters
    ----------
    x_li : array_like of float
        Li content; NaN voxels (not AM) are ignored.
    bins : array_like, optional
        Increasing bin edges (default :data:`DEFAULT_LI_BINS`, 0 to 1.2 in 0.02 steps). Use
        the same edges for every state so histograms compare bin by bin.

    Returns
    -------
    LiHistogram
        ``counts`` (len(bins) - 1), ``edges``, and the numbers of values below the first
        edge (``underflow``) and above the last (``overflow``).

    Examples
    --------
    >>> h = li_histogram(np.array([0.1, 0.5, np.nan, 2.0]), bins=[0, 0.5, 1.0])
    >>> h.counts.tolist(), h.overflow
    ([1, 1], 1)
    """
    x = check_li_map(x_li, ndim=None)
    edges = np.asarray(DEFAULT_LI_BINS if bins is None else bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise DataError("histogram bins must be at least two strictly increasing edges")
    v = x[np.isfinite(x)]
    counts, _ = np.histogram(v, bins=edges)
    return LiHistogram(counts, edges, int((v < edges[0]).sum()), int((v > edges[-1]).sum()))


def distribution_widths(values: Any) -> dict[str, float]:
    """FWHM and interquartile range of a sample of Li contents.

    ``iqr_li = q75 - q25``. ``fwhm_li`` is the full width at half maximum of the highest peak of
    the histogram (Freedman-Diaconis bins, at most 512, smoothed by a Gaussian of one bin),
    with linear interpolation of both half-maximum crossings; for a normal distribution
    FWHM = 2.355 sigma and IQR = 1.349 sigma. A two-phase (bimodal) state has the FWHM of its
    dominant peak only; the IQR spans both.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(0.7, 0.05, 200_000)
    >>> w = distribution_widths(x)
    >>> round(w["fwhm_li"] / 0.05, 1), round(w["iqr_li"] / 0.05, 2)
    (2.4, 1.35)
    """
    from scipy.ndimage import gaussian_filter1d

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2 or np.ptp(v) == 0:
        return {"fwhm_li": 0.0 if v.size else float("nan"), "iqr_li": 0.0 if v.size else float("nan")}
    q25, q75 = np.percentile(v, [25, 75])
    width = 2 * (q75 - q25) / v.size ** (1 / 3) if q75 > q25 else np.ptp(v) / 64
    nbins = int(min(max(np.ceil(np.ptp(v) / width), 8), 512))
    counts, edges = np.histogram(v, bins=nbins)
    h = gaussian_filter1d(counts.astype(np.float64), 1.0, mode="constant")
    k = int(np.argmax(h))
    half = h[k] / 2
    centres = (edges[:-1] + edges[1:]) / 2
    lo = k
    while lo > 0 and h[lo - 1] > half:
        lo -= 1
    hi = k
    while hi < h.size - 1 and h[hi + 1] > half:
        hi += 1

    def cross(i: int, j: int) -> float:  # half-maximum crossing between bins i (above) and j (below)
        if j < 0 or j >= h.size:
            return float(edges[0] if j < 0 else edges[-1])
        return float(centres[i] + (h[i] - half) / (h[i] - h[j]) * (centres[j] - centres[i]))

    return {"fwhm_li": cross(hi, hi + 1) - cross(lo, lo - 1), "iqr_li": float(q75 - q25)}


def state_summary(
    x_li: Any,
    *,
    voxel_size_um: Any,
    poor_max: float = 0.6,
    rich_min: float = 0.9,
    expected_li: float | None = None,
) -> dict[str, Any]:
    """Whole-volume Li statistics of one state (SPEC 2.4).

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM.
    voxel_size_um : float or (z, y, x)
        Voxel size in um.
    poor_max, rich_min : float
        Class thresholds (SPEC 2.1).
    expected_li : float, optional
        Known average Li content of the state (e.g. from the electrochemistry); if given,
        ``li_error_vs_expected = mean_li - expected_li``.

    Returns
    -------
    dict
        ``mean_li, std_li, frac_li_rich, frac_li_moderate, frac_li_poor`` (volume fractions
        of the AM), ``total_li_um3`` (sum of x_Li times voxel volume, um^3 of fully lithiated
        AM equivalent), ``fwhm_li`` and ``iqr_li`` (:func:`distribution_widths`), ``n_voxels``, ``am_volume_um3``, ``expected_li``,
        ``li_error_vs_expected``.

    Examples
    --------
    >>> x = np.full((2, 2, 2), np.nan); x[0] = 1.0; x[1, 0] = 0.5
    >>> s = state_summary(x, voxel_size_um=0.5)
    >>> s["n_voxels"], round(s["mean_li"], 4), s["frac_li_rich"], s["total_li_um3"]
    (6, 0.8333, 0.6666666666666666, 0.625)
    """
    x = check_li_map(x_li)
    vv = float(np.prod(as_voxel_size(voxel_size_um)))
    v = x[np.isfinite(x)].astype(np.float64)
    n = int(v.size)
    if n == 0:
        raise DataError("the Li map has no active-material voxels (all NaN); nothing to summarise")
    fr = class_fractions(v, poor_max=poor_max, rich_min=rich_min)
    mean = float(v.mean())
    out: dict[str, Any] = {
        "mean_li": mean,
        "std_li": float(v.std()),
        "frac_li_rich": fr["rich"],
        "frac_li_moderate": fr["moderate"],
        "frac_li_poor": fr["poor"],
        "total_li_um3": float(v.sum() * vv),
        **distribution_widths(v),
        "n_voxels": n,
        "am_volume_um3": float(n * vv),
        "expected_li": None if expected_li is None else float(expected_li),
        "li_error_vs_expected": None if expected_li is None else mean - float(expected_li),
    }
    return out


def depth_from_separator_um(z_um: Any, thickness_um: float, separator_side: str = "z_min") -> np.ndarray:
    """Depth below the separator of positions ``z_um`` measured from the z = 0 face.

    Parameters
    ----------
    z_um : array_like of float
        Positions along z (um) from the z = 0 face, e.g. slice centres or particle centroids.
    thickness_um : float
        Extent of the volume along z (um): ``n_z * voxel_z``.
    separator_side : {"z_min", "z_max"}
        The face of the volume on the separator side: z = 0 (``"z_min"``) or the last slice.

    Returns
    -------
    ndarray of float
        Depth from the separator face (um); the current-collector side has the largest depth.

    Examples
    --------
    >>> depth_from_separator_um([0.5, 1.5, 2.5], 3.0, "z_max").tolist()
    [2.5, 1.5, 0.5]
    """
    if separator_side not in SEPARATOR_SIDES:
        raise DataError(f"separator_side must be one of {SEPARATOR_SIDES}, got {separator_side!r}")
    z = np.asarray(z_um, dtype=np.float64)
    return z if separator_side == "z_min" else float(thickness_um) - z


def z_profile(
    x_li: Any,
    *,
    voxel_size_um: Any,
    poor_max: float = 0.6,
    rich_min: float = 0.9,
    separator_side: str = "z_min",
) -> pd.DataFrame:
    """Through-plane (z) profile of the Li content and classes, one row per z slice.

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM.
    voxel_size_um : float or (z, y, x)
        Voxel size in um.
    poor_max, rich_min : float
        Class thresholds (SPEC 2.1).
    separator_side : {"z_min", "z_max"}
        The face on the separator side (:func:`depth_from_separator_um`).

    Returns
    -------
    pandas.DataFrame
        ``z_index, z_um`` (slice centre, from the z = 0 face), ``depth_um`` (slice centre,
        from the separator face), ``mean_li, std_li,
        frac_li_rich, frac_li_moderate, frac_li_poor`` (over the slice's AM voxels; NaN for
        slices without AM) and ``am_fraction`` (AM voxels / slice voxels).

    Examples
    --------
    >>> x = np.ones((3, 2, 2)) * np.array([0.2, 0.7, 1.0])[:, None, None]
    >>> z_profile(x, voxel_size_um=1.0)["mean_li"].round(3).tolist()
    [0.2, 0.7, 1.0]
    """
    x = check_li_map(x_li)
    vz = as_voxel_size(voxel_size_um)[0]
    finite = np.isfinite(x)
    n = finite.sum(axis=(1, 2)).astype(np.float64)
    xs = np.where(finite, x, 0.0).astype(np.float64)
    s1 = xs.sum(axis=(1, 2))
    s2 = (xs * xs).sum(axis=(1, 2))
    cls = classify_li(x, poor_max=poor_max, rich_min=rich_min)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        fr = [(cls == k).sum(axis=(1, 2)) / n for k in (2, 1, 0)]
    nz = x.shape[0]
    return pd.DataFrame(
        {
            "z_index": np.arange(nz),
            "z_um": (np.arange(nz) + 0.5) * vz,
            "depth_um": depth_from_separator_um((np.arange(nz) + 0.5) * vz, nz * vz, separator_side),
            "mean_li": mean,
            "std_li": std,
            "frac_li_rich": fr[0],
            "frac_li_moderate": fr[1],
            "frac_li_poor": fr[2],
            "am_fraction": n / float(x.shape[1] * x.shape[2]),
        }
    )


def surface_voxels(particles: Any) -> np.ndarray:
    """Boolean map of particle voxels with a face neighbour outside their own particle.

    Neighbours beyond the volume edge count as inside (a particle cut by the field of view
    has no physical surface there).

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), int); lab[1:4, 1:4, 1:4] = 1
    >>> int(surface_voxels(lab).sum())  # 27 voxels, only the centre is interior
    26
    """
    lab = np.asarray(particles)
    surf = np.zeros(lab.shape, dtype=bool)
    for axis in range(lab.ndim):
        n = lab.shape[axis]
        if n < 2:
            continue
        lo = [slice(None)] * lab.ndim
        hi = [slice(None)] * lab.ndim
        lo[axis] = slice(0, n - 1)
        hi[axis] = slice(1, n)
        diff = lab[tuple(lo)] != lab[tuple(hi)]
        surf[tuple(lo)] |= diff
        surf[tuple(hi)] |= diff
    return surf & (lab > 0)


def li_particle_table(
    x_li: Any,
    particles: Any,
    *,
    voxel_size_um: Any,
    poor_max: float = 0.6,
    rich_min: float = 0.9,
    boundary_ids: Any = None,
    depth_from: str = "low",
    weights: Any = None,
) -> pd.DataFrame:
    """The base particle table plus per-particle Li statistics (SPEC 2.4).

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM (NaN particle voxels count for the volume, not for Li).
    particles : array_like of int, (z, y, x)
        Particle labels, 0 = background.
    voxel_size_um : float or (z, y, x)
        Voxel size in um.
    poor_max, rich_min : float
        Class thresholds (SPEC 2.1).
    boundary_ids : array_like of int, optional
        Labels touching the volume boundary (default: :func:`litomo.particles.boundary_touching`).
    depth_from : {"low", "high"}
        Face that depth is measured from: the z = 0 face (``"low"``) or the last z face.
    weights : array_like of float, optional
        Per-voxel weights of ``mean_li`` and ``std_li``, e.g. the AM volume fraction of each
        binned voxel, so that a partly filled surface voxel (whose x_Li is noisier by the
        inverse of that fraction) counts by the AM it holds: the particle's Ni-weighted mean.
        Negative weights count as 0. Default: every mapped voxel counts once.

    Returns
    -------
    pandas.DataFrame
        :func:`litomo.particles.particle_table`'s columns (``particle, n_voxels, volume_um3,
        eq_diameter_um, centroid_{z,y,x}_um, touches_boundary``), then ``depth_um`` (centroid
        distance from the chosen z face), ``n_li_voxels``, ``mean_li`` (mean x_Li over the
        particle's mapped voxels, weighted by ``weights``), ``std_li``, ``li_rich_fraction``
        (fraction of the particle's Li-mapped voxels with ``x >= rich_min``),
        ``n_surface_voxels`` and ``surface_activity`` (fraction of its mapped surface voxels
        that are Li-rich; surface = face-adjacent to another label or background).

    Examples
    --------
    >>> lab = np.zeros((4, 4, 4), np.int32); lab[:2] = 1; lab[2:] = 2
    >>> x = np.where(lab == 1, 1.0, 0.5)
    >>> t = li_particle_table(x, lab, voxel_size_um=1.0)
    >>> t["mean_li"].tolist(), t["li_rich_fraction"].tolist()
    ([1.0, 0.5], [1.0, 0.0])
    """
    x = check_li_map(x_li)
    lab = check_particle_labels(particles, shape=x.shape)
    if depth_from not in ("low", "high"):
        raise DataError(f"depth_from must be 'low' or 'high', got {depth_from!r}")
    vs = as_voxel_size(voxel_size_um)
    table = particle_table(lab, vs, boundary_ids=boundary_ids)
    ids = table["particle"].to_numpy(np.intp)
    flat = lab.ravel().astype(np.intp)
    nlab = int(flat.max()) + 1 if flat.size else 1

    def per_label(weights: np.ndarray | None) -> np.ndarray:
        return np.bincount(flat, weights=weights, minlength=nlab)[ids]

    finite = np.isfinite(x).ravel()
    xf = np.where(finite, x.ravel(), 0.0).astype(np.float64)
    n_li = per_label(finite.astype(np.float64))
    if weights is None:
        wf = finite.astype(np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != x.shape:
            raise DataError(f"weights shape {w.shape} differs from the Li map's {x.shape}")
        wf = np.where(finite, np.clip(np.nan_to_num(w.ravel()), 0.0, None), 0.0)
    s0, s1, s2 = per_label(wf), per_label(xf * wf), per_label(xf * xf * wf)
    rich = (classify_li(x, poor_max=poor_max, rich_min=rich_min) == 2).ravel()
    surf = surface_voxels(lab).ravel()
    n_surf_li = per_label((surf & finite).astype(np.float64))
    n_surf_rich = per_label((surf & rich).astype(np.float64))
    cz = table["centroid_z_um"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / s0
        table["depth_um"] = cz if depth_from == "low" else x.shape[0] * vs[0] - cz
        table["n_li_voxels"] = n_li.astype(np.int64)
        table["mean_li"] = mean
        table["std_li"] = np.sqrt(np.maximum(s2 / s0 - mean * mean, 0.0))
        table["li_rich_fraction"] = per_label(rich.astype(np.float64)) / n_li
        table["n_surface_voxels"] = per_label(surf.astype(np.float64)).astype(np.int64)
        table["surface_activity"] = n_surf_rich / n_surf_li
    n_unmapped = int((n_li == 0).sum())
    if n_unmapped:
        log.warning("%d particle(s) have no Li-mapped voxels; their Li columns are NaN", n_unmapped)
    return table

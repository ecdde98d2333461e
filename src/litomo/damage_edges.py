"""The crack paper's damage method: median filter, Canny edges per slice, depth windows from the
separator, and the detachment gap between each particle and the carbon-binder network.

As the paper did it, on 2-D slices: the grey image is median-filtered (3x3x3) to remove the
noise, Canny edges are found in every z slice, and the edges inside a particle (its filled hull
minus a ``margin_vox`` rim, so the particle outline does not count) are the cracks. Damage is the
crack edge length per particle section area (um^-1), per particle and per window of
``window_um`` depth measured from the separator. Where litomo departs: the grey values are first
normalised to the AM/pore contrast (pore median 0, AM median 1) so Canny's thresholds
(``canny_low``, ``canny_high``, fractions of that contrast) mean the same on every data set;
and the detachment gap is measured in 3-D (Euclidean distance from each particle surface voxel
to the nearest CBD voxel, minus one voxel so touching = 0), not read off slices.

Per particle, with a CBD mask: ``cbd_contact_fraction`` (surface voxels touching CBD),
``cbd_detached_fraction`` (surface voxels whose CBD is near, ``0 < gap <= max_gap_um``, but not
touching: the particle has come off the carbon network there) and ``cbd_gap_mean_um`` (mean
gap over those voxels).

Damage classes (``edge_damage_class``: intact / moderate / severe) come from the scale-free crack
trace number ``edge_density_per_um * eq_diameter_um`` (for a diametral crack through a sphere,
2 faces x crack area x sin(tilt to the slices) / volume x diameter = 3 sin(tilt)), so one set of
thresholds serves every particle size; the thresholds are calibrated on the crack phantom
(:mod:`litomo.phantom.cracks`, see docs/science.md "Canny damage classes").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from litomo.damage import particle_hull
from litomo.errors import DataError
from litomo.manifest.model import SEPARATOR_SIDES
from litomo.particles import check_particle_labels, particle_table
from litomo.progress import ProgressCallback
from litomo.statistics import depth_from_separator_um
from litomo.volume import as_voxel_size


@dataclass(frozen=True)
class EdgeDamageParams:
    """Parameters of :func:`edge_damage` (defaults: the paper's 3x3 median, Canny sigma 1, 10 um)."""

    median_size_vox: int = 3
    canny_sigma: float = 1.0
    canny_low: float = 0.1
    canny_high: float = 0.2
    margin_vox: int = 2
    closing_radius_vox: int = 3
    window_um: float = 10.0
    max_gap_um: float | None = None  # default: 3 voxels
    separator_side: str = "z_min"
    moderate_trace_number: float = 0.3
    severe_trace_number: float = 2.0

    def __post_init__(self) -> None:
        if self.separator_side not in SEPARATOR_SIDES:
            raise DataError(f"--separator-side must be z_min or z_max, got {self.separator_side!r}")
        if not self.window_um > 0:
            raise DataError(f"--window-um must be a positive length, got {self.window_um}")
        if not 0 < self.canny_low <= self.canny_high:
            raise DataError(f"Canny thresholds need 0 < low <= high, got {self.canny_low}, {self.canny_high}")
        if not 0 < self.moderate_trace_number < self.severe_trace_number:
            raise DataError("edge damage classes need 0 < moderate_trace_number < severe_trace_number, got "
                            f"{self.moderate_trace_number}, {self.severe_trace_number}")


#: Canny damage classes, least damaged first
EDGE_CLASSES = ("intact", "moderate", "severe")


def edge_damage_class(trace_number: np.ndarray, params: EdgeDamageParams | None = None) -> np.ndarray:
    """Class (``intact`` / ``moderate`` / ``severe``) of each particle's crack trace number.

    ``moderate`` from ``params.moderate_trace_number`` (0.3), ``severe`` from
    ``params.severe_trace_number`` (2.0); NaN (no section area) is ``intact``.

    Examples
    --------
    >>> edge_damage_class(np.array([0.0, 1.3, 3.5])).tolist()
    ['intact', 'moderate', 'severe']
    """
    p = params or EdgeDamageParams()
    t = np.nan_to_num(np.asarray(trace_number, float), nan=0.0)
    k = (t >= p.moderate_trace_number).astype(int) + (t >= p.severe_trace_number)
    return np.asarray(EDGE_CLASSES, dtype=object)[k]


def canny_edges(image: np.ndarray, am: np.ndarray, params: EdgeDamageParams | None = None) -> np.ndarray:
    """Canny edges (bool) per z slice of the median-filtered, contrast-normalised image.

    Examples
    --------
    >>> img = np.zeros((3, 16, 16)); img[:, :, 8:] = 1.0
    >>> e = canny_edges(img, img > 0.5)
    >>> set(np.nonzero(e[1])[1].tolist()) <= {7, 8}  # at the step (a tie at an exact half-voxel step)
    True
    """
    from skimage.feature import canny

    p = params or EdgeDamageParams()
    g = ndimage.median_filter(np.asarray(image, np.float32), size=p.median_size_vox)
    am = np.asarray(am, bool)
    if not am.any() or am.all():
        raise DataError("edge damage needs both active material and background in the volume")
    lo, hi = float(np.median(g[~am])), float(np.median(g[am]))
    if hi <= lo:
        raise DataError("edge damage: the active material is not brighter than the background")
    g = (g - lo) / (hi - lo)
    out = np.zeros(g.shape, bool)
    for k in range(g.shape[0]):
        out[k] = canny(g[k], sigma=p.canny_sigma, low_threshold=p.canny_low, high_threshold=p.canny_high)
    return out


def _surface_gaps(lab: np.ndarray, cbd_dist: np.ndarray | None, ids: np.ndarray, v: tuple[float, float, float],
                  max_gap: float) -> dict[str, np.ndarray]:
    """Per-particle CBD contact / detached fractions and mean gap from the surface voxels."""
    n = int(lab.max()) + 1
    nan = np.full(ids.size, np.nan)
    if cbd_dist is None:
        return {"cbd_contact_fraction": nan, "cbd_detached_fraction": nan.copy(), "cbd_gap_mean_um": nan.copy()}
    surface = (lab > 0) & (ndimage.minimum_filter(lab, footprint=ndimage.generate_binary_structure(3, 1),
                                                  mode="nearest") != lab)
    sl = lab[surface]
    gap = np.maximum(cbd_dist[surface] - min(v), 0.0)
    touching = gap < 0.5 * min(v)
    detached = ~touching & (gap <= max_gap)
    total = np.bincount(sl, minlength=n)[ids].astype(float)
    n_det = np.bincount(sl, weights=detached, minlength=n)[ids]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"cbd_contact_fraction": np.bincount(sl, weights=touching, minlength=n)[ids] / total,
                "cbd_detached_fraction": n_det / total,
                "cbd_gap_mean_um": np.bincount(sl, weights=np.where(detached, gap, 0.0), minlength=n)[ids] / n_det}


def edge_damage(
    image: np.ndarray,
    particles: np.ndarray,
    voxel_size_um: float | tuple[float, float, float],
    *,
    cbd: np.ndarray | None = None,
    params: EdgeDamageParams | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-particle and per-depth-window crack edge density (and CBD detachment).

    Parameters
    ----------
    image : (z, y, x) array
        Grey values (AM bright), or the AM mask itself when no grey image exists (then only
        cracks resolved in the segmentation are seen).
    particles : (z, y, x) int array
        Particle labels (0 background).
    voxel_size_um : float or (z, y, x)
    cbd : (z, y, x) bool array, optional
        Carbon-binder mask for the detachment gap.
    params : EdgeDamageParams, optional
    progress : callable, optional

    Returns
    -------
    (particles, depth) : pandas.DataFrame
        ``particle, centroid_z_um, depth_um, edge_length_um, section_area_um2,
        edge_density_per_um, cbd_contact_fraction, cbd_detached_fraction, cbd_gap_mean_um``;
        and per window ``depth_start_um, depth_end_um, n_particles, n_intact, n_moderate, n_severe, edge_density_per_um``
        (edge length / section area of all particles in the window's slices),
        ``cbd_detached_fraction`` (section-area-weighted mean over the window's particles).

    Examples
    --------
    >>> z, y, x = np.ogrid[:24, :24, :24]
    >>> ball = ((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 81).astype(np.int32)
    >>> per, depth = edge_damage(ball.astype(float), ball, 1.0)
    >>> float(per["edge_density_per_um"][0])  # an intact particle has no interior edges
    0.0
    """
    p = params or EdgeDamageParams()
    lab = check_particle_labels(particles)
    v = as_voxel_size(voxel_size_um)
    if np.shape(image) != lab.shape:
        raise DataError(f"image shape {np.shape(image)} differs from the particle labels {lab.shape}")
    edges = canny_edges(image, lab > 0, p)
    table = particle_table(lab, v)
    ids = table["particle"].to_numpy()
    owner = np.zeros(lab.shape, lab.dtype)  # hull interior (cracks included) of each particle
    objects = ndimage.find_objects(lab)
    for k, i in enumerate(ids):
        sl = objects[i - 1]
        hull = particle_hull(lab[sl] == i, p.closing_radius_vox)
        if p.margin_vox > 0:
            hull = ndimage.binary_erosion(np.pad(hull, 1), iterations=p.margin_vox)[1:-1, 1:-1, 1:-1]
        owner[sl][hull] = i
        if progress is not None and (k % 50 == 49 or k == ids.size - 1):
            progress(k + 1, ids.size, "edge damage")
    interior = owner > 0
    n = int(lab.max()) + 1
    pix = float(np.sqrt(v[1] * v[2]))  # an edge pixel stands for this length of crack trace
    edge_len = np.bincount(owner[edges & interior], minlength=n)[ids] * pix
    area = np.bincount(owner[interior], minlength=n)[ids] * v[1] * v[2]
    nz = lab.shape[0]
    cz = table["centroid_z_um"].to_numpy(float)
    depth = depth_from_separator_um(cz, nz * v[0], p.separator_side)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = pd.DataFrame({"particle": ids, "centroid_z_um": cz, "depth_um": depth, "edge_length_um": edge_len,
                            "section_area_um2": area, "edge_density_per_um": edge_len / area})
        per["crack_trace_number"] = per["edge_density_per_um"] * table["eq_diameter_um"].to_numpy(float)
    per["edge_damage_class"] = edge_damage_class(per["crack_trace_number"].to_numpy(), p)
    cbd_dist = ndimage.distance_transform_edt(~np.asarray(cbd, bool), sampling=v) if cbd is not None else None
    max_gap = p.max_gap_um if p.max_gap_um is not None else 3 * min(v)
    for name, col in _surface_gaps(lab, cbd_dist, ids, v, max_gap).items():
        per[name] = col
    return per, _depth_windows(edges & interior, interior, per, lab, cbd_dist, v, p, max_gap)


def _depth_windows(edges: np.ndarray, interior: np.ndarray, per: pd.DataFrame, lab: np.ndarray,
                   cbd_dist: np.ndarray | None, v: tuple[float, float, float], p: EdgeDamageParams,
                   max_gap: float) -> pd.DataFrame:
    nz = lab.shape[0]
    slice_depth = depth_from_separator_um((np.arange(nz) + 0.5) * v[0], nz * v[0], p.separator_side)
    win = (slice_depth // p.window_um).astype(int)
    n_win = int(win.max()) + 1
    e = np.bincount(win, weights=edges.sum(axis=(1, 2)), minlength=n_win) * float(np.sqrt(v[1] * v[2]))
    a = np.bincount(win, weights=interior.sum(axis=(1, 2)), minlength=n_win) * v[1] * v[2]
    pw = np.clip((per["depth_um"].to_numpy(float) // p.window_um).astype(int), 0, n_win - 1)
    rows = []
    for w in range(n_win):
        row = {"depth_start_um": w * p.window_um, "depth_end_um": (w + 1) * p.window_um,
               "n_particles": int(np.sum(pw == w)), "edge_density_per_um": e[w] / a[w] if a[w] > 0 else np.nan}
        for cls in EDGE_CLASSES:
            row[f"n_{cls}"] = int(np.sum((pw == w) & (per["edge_damage_class"].to_numpy() == cls)))
        if cbd_dist is not None:
            sel = per[pw == w]
            wts = sel["section_area_um2"].to_numpy(float)
            frac = sel["cbd_detached_fraction"].to_numpy(float)
            ok = np.isfinite(frac) & (wts > 0)
            row["cbd_detached_fraction"] = float(np.average(frac[ok], weights=wts[ok])) if ok.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)

"""Crack and damage quantification of cycled active-material particles.

Per particle (from a particle label volume, 0 = background):

* ``crack_fraction`` - internal crack/void volume fraction: voxels inside the particle hull that
  are not active material. The hull is the particle after a morphological closing (ball of
  ``closing_radius_vox`` = 3, catches cracks open to the surface) and a 3D ``binary_fill_holes``
  (catches closed internal voids).
* ``crack_surface_density_per_um`` - crack/void surface area per hull volume (um^-1), by counting
  voxel faces between crack voxels and the particle's AM voxels (face counting overestimates
  smooth surfaces by ~1.2-1.5x, SPEC 3; used consistently here).
* ``edge_density_per_um`` - edges inside the particle per hull volume (um^-1), measured on the
  hull interior (hull eroded by 3 voxels, so the outer surface does not count):
  with a greyscale image, the 3D gradient magnitude (Gaussian, sigma 1 voxel) of the grey values
  normalised to the AM/pore contrast, per um.
  By the co-area formula this integrates to the area of interior edges, so it also sees
  sub-voxel cracks, which appear only as partial-volume grey dips. The noise floor (median gradient
  in pores more than 3 voxels from any AM) is subtracted. Without a greyscale image,
  Canny edges (sigma 1) per z slice of the AM mask.
* ``gap_um`` - detachment gap: distance from the particle surface to the nearest other particle
  surface (0 when touching; ``inf`` beyond ``max_gap_um``).
* ``damage_index`` (dimensionless)::

      D = crack_fraction + w_surface * (d_eq / 6) * max(crack_surface_density, edge_density)
          + w_gap * min(gap / d_eq, 1)

  with ``d_eq`` = ``hull_eq_diameter_um``, the equivalent diameter of the hull. ``d_eq/6`` is the inverse surface-to-volume ratio of the equivalent sphere, so the middle term
  is the interior crack/edge area relative to the particle's own outer surface (a single
  diametral crack of a sphere gives 0.5). Defaults ``w_surface = 0.5``, ``w_gap = 0.02`` (below the
  mild threshold: detachment alone never makes an intact particle damaged, it only adds to it).
* ``damage_class`` - ``least`` if ``D < mild_threshold`` (default 0.03), ``severe`` if
  ``D >= severe_threshold`` (default 0.6), else ``mild``. The defaults were set on
  :mod:`litomo.phantom.cracks` (radius-10-voxel particles): *mild* = one crack, resolved or
  sub-voxel (a sub-voxel crack is only seen with a greyscale image); *severe* = crossing or
  branching cracks opening beyond the voxel size (crack volume fraction above ~0.25, interior
  crack area about the outer surface area). Calibrate them for other data (``DamageParams``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from litomo.errors import DataError, LitomoError
from litomo.particles import check_particle_labels, particle_table
from litomo.progress import ProgressCallback
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)

DAMAGE_CLASSES = ("least", "mild", "severe")


@dataclass(frozen=True)
class DamageParams:
    """Weights and class thresholds of the damage index (see module docstring)."""

    w_surface: float = 0.5
    w_gap: float = 0.02
    mild_threshold: float = 0.03
    severe_threshold: float = 0.6
    closing_radius_vox: int = 3
    max_gap_um: float | None = None  # default: 10 voxels

    def __post_init__(self) -> None:
        if not 0 <= self.mild_threshold < self.severe_threshold:
            raise LitomoError(
                f"damage thresholds must satisfy 0 <= mild ({self.mild_threshold}) < severe ({self.severe_threshold})"
            )
        if self.closing_radius_vox < 0:
            raise LitomoError("closing_radius_vox must be >= 0")


def _ball(r: int) -> np.ndarray:
    zz, yy, xx = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return zz**2 + yy**2 + xx**2 <= r * r


def particle_hull(solid: np.ndarray, closing_radius_vox: int = 3) -> np.ndarray:
    """Filled hull of one particle mask: closing (ball) then 3D hole filling, OR the mask.

    Examples
    --------
    >>> m = np.zeros((9, 9, 9), bool); m[1:8, 1:8, 1:8] = True; m[4, 2:7, 2:7] = False
    >>> int(particle_hull(m, 0).sum() - m.sum())
    25
    """
    solid = np.asarray(solid, bool)
    r = int(closing_radius_vox)
    if r > 0:
        padded = np.pad(solid, r + 1)
        closed = ndimage.binary_closing(padded, structure=_ball(r))[r + 1 : -(r + 1), r + 1 : -(r + 1), r + 1 : -(r + 1)]
    else:
        closed = solid
    return ndimage.binary_fill_holes(closed) | solid


def close_cracks(am: np.ndarray, closing_radius_vox: int = 3) -> np.ndarray:
    """AM mask with cracks and internal voids closed, for separating particles before
    :func:`damage_table`.

    A distance-transform watershed on the raw AM mask splits a cracked particle into fragments
    that each look intact; separating on this closed, hole-filled mask keeps a crack inside its
    particle. Use the result for separation, then keep only AM voxels:
    ``labels = separate_particles(close_cracks(am)) * am``.

    Examples
    --------
    >>> am = np.zeros((12, 12, 12), bool); am[2:10, 2:10, 2:10] = True; am[5, 2:10, 2:10] = False
    >>> bool(close_cracks(am, 2)[5, 5, 5])
    True
    """
    am = np.asarray(am, bool)
    r = int(closing_radius_vox)
    if r <= 0:
        return ndimage.binary_fill_holes(am)
    padded = np.pad(am, r + 1)
    closed = ndimage.binary_closing(padded, structure=_ball(r))[r + 1 : -(r + 1), r + 1 : -(r + 1), r + 1 : -(r + 1)]
    return ndimage.binary_fill_holes(closed | am)


def classify_damage(index: Any, params: DamageParams | None = None) -> np.ndarray:
    """Map damage index values to ``"least" / "mild" / "severe"``.

    Examples
    --------
    >>> classify_damage([0.0, 0.1, 0.7]).tolist()
    ['least', 'mild', 'severe']
    """
    p = params or DamageParams()
    d = np.asarray(index, dtype=float)
    out = np.where(d >= p.severe_threshold, "severe", np.where(d >= p.mild_threshold, "mild", "least"))
    return out.astype(object)


def _face_area(a: np.ndarray, b: np.ndarray, vs: tuple[float, float, float]) -> float:
    """Area (um^2) of voxel faces between masks a and b (face counting)."""
    areas = (vs[1] * vs[2], vs[0] * vs[2], vs[0] * vs[1])
    total = 0.0
    for ax in range(3):
        s0 = [slice(None)] * 3
        s1 = [slice(None)] * 3
        s0[ax] = slice(None, -1)
        s1[ax] = slice(1, None)
        n = np.count_nonzero(a[tuple(s0)] & b[tuple(s1)]) + np.count_nonzero(b[tuple(s0)] & a[tuple(s1)])
        total += n * areas[ax]
    return total


def _grey_levels(grey: np.ndarray, am: np.ndarray) -> tuple[float, float]:
    if not am.any() or am.all():
        raise DataError("need both AM and non-AM voxels to normalise the greyscale contrast")
    lo, hi = float(np.median(grey[~am])), float(np.median(grey[am]))
    if hi <= lo:
        raise DataError("active material is not brighter than the pores in the greyscale image")
    return lo, hi


def _grey_gradient(grey: np.ndarray | None, am: np.ndarray,
                   vs: tuple[float, float, float]) -> tuple[np.ndarray | None, float]:
    """Gradient magnitude (per um) of the contrast-normalised grey image and its noise floor."""
    if grey is None:
        return None, 0.0
    g = np.asarray(grey, dtype=np.float32)
    if g.shape != am.shape:
        raise DataError(f"greyscale shape {g.shape} differs from the labels {am.shape}")
    lo, hi = _grey_levels(g, am)
    # gradient per um of the contrast-normalised grey (anisotropy ignored in this proxy)
    grad = ndimage.gaussian_gradient_magnitude((g - lo) / (hi - lo), sigma=1.0) / float(np.mean(vs))
    # noise floor: median gradient in pores more than 3 voxels from any AM
    far = ndimage.distance_transform_edt(~am) > 3
    return grad, float(np.median(grad[far])) if far.any() else 0.0


def _edge_density(solid: np.ndarray, hull: np.ndarray, grad_box: np.ndarray | None, noise_floor: float,
                  vs: tuple[float, float, float]) -> float:
    """Edges inside the hull interior per um (grey gradient, or Canny on the mask without grey)."""
    interior = ndimage.binary_erosion(hull, iterations=3)
    if not interior.any():
        return 0.0
    if grad_box is not None:
        return float(np.mean(np.maximum(grad_box[interior] - noise_floor, 0)))
    from skimage.feature import canny

    edges = np.zeros_like(hull)
    for k in range(hull.shape[0]):
        if interior[k].any():
            edges[k] = canny(solid[k].astype(float), sigma=1.0)
    return float(np.count_nonzero(edges & interior) / int(interior.sum()) / np.sqrt(vs[1] * vs[2]))


def _gap_um(lab: np.ndarray, i: int, sl: tuple[slice, ...], margin: list[int],
            vs: tuple[float, float, float], max_gap_um: float) -> float:
    """Detachment gap: EDT from particle ``i`` to the nearest other particle within a margin box."""
    gbox = tuple(slice(max(s.start - m, 0), min(s.stop + m, dim)) for s, m, dim in zip(sl, margin, lab.shape, strict=True))
    sub = lab[gbox]
    others = (sub > 0) & (sub != i)
    if not others.any():
        return float("inf")
    dist = ndimage.distance_transform_edt(sub != i, sampling=vs)
    gap = max(float(dist[others].min() - min(vs)), 0.0)
    return float("inf") if gap > max_gap_um else gap


def damage_table(
    particles: np.ndarray,
    voxel_size_um: float | tuple[float, float, float],
    *,
    am_mask: np.ndarray | None = None,
    grey: np.ndarray | None = None,
    params: DamageParams | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """The base particle table plus crack/damage metrics, damage index and class (module docstring).

    Parameters
    ----------
    particles : ndarray (z, y, x) of int
        Particle labels, 0 = not a particle (e.g. from ``litomo.segment.particles.separate_particles``).
    voxel_size_um : float or (z, y, x)
    am_mask : ndarray of bool, optional
        Active-material voxels; default ``particles > 0``.
    grey : ndarray, optional
        Greyscale image on the same grid (AM bright); enables the gradient edge measure.
    params : DamageParams, optional
    progress : callable, optional

    Returns
    -------
    pandas.DataFrame, one row per particle: :func:`litomo.particles.particle_table`'s columns
    (``particle, n_voxels, volume_um3, eq_diameter_um, centroid_{z,y,x}_um, touches_boundary``),
    then ``hull_volume_um3, hull_eq_diameter_um, crack_fraction, crack_surface_density_per_um,
    edge_density_per_um, gap_um, damage_index, damage_class``.

    Examples
    --------
    >>> lab = np.zeros((20, 20, 20), np.int32); lab[4:16, 4:16, 4:16] = 1
    >>> t = damage_table(lab, 0.1)
    >>> float(t.loc[0, "crack_fraction"]), t.loc[0, "damage_class"]
    (0.0, 'least')
    """
    p = params or DamageParams()
    vs = as_voxel_size(voxel_size_um)
    lab = check_particle_labels(particles)
    am = (lab > 0) if am_mask is None else np.asarray(am_mask, bool)
    if am.shape != lab.shape:
        raise DataError(f"am_mask shape {am.shape} differs from the labels {lab.shape}")
    grad, noise_floor = _grey_gradient(grey, am, vs)
    table = particle_table(lab, vs)
    if table.empty:
        raise DataError("the particle label volume holds no particles")
    vvox = vs[0] * vs[1] * vs[2]
    max_gap_um = p.max_gap_um if p.max_gap_um is not None else 10 * max(vs)
    margin = [int(np.ceil(max_gap_um / v)) + 1 for v in vs]
    pad = p.closing_radius_vox + 3
    objects = ndimage.find_objects(lab)
    ids = table["particle"].to_numpy()
    rows = []
    for n_done, i in enumerate(ids, start=1):
        sl = objects[i - 1]
        box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, dim)) for s, dim in zip(sl, lab.shape, strict=True))
        solid = lab[box] == i
        hull = particle_hull(solid, p.closing_radius_vox)
        crack = hull & ~am[box]
        hull_um3 = int(hull.sum()) * vvox
        rows.append({
            "hull_volume_um3": hull_um3,
            "hull_eq_diameter_um": float((6 * hull_um3 / np.pi) ** (1 / 3)),
            "crack_fraction": float(crack.sum() / hull.sum()),
            "crack_surface_density_per_um": _face_area(crack, solid, vs) / hull_um3,
            "edge_density_per_um": _edge_density(solid, hull, None if grad is None else grad[box], noise_floor, vs),
            "gap_um": _gap_um(lab, int(i), sl, margin, vs, max_gap_um),
        })
        if progress is not None:
            progress(n_done, len(ids), "particle damage")
    table = pd.concat([table, pd.DataFrame(rows)], axis=1)
    table["damage_index"] = damage_index(table, p)
    table["damage_class"] = classify_damage(table["damage_index"], p)
    return table


def damage_index(table: pd.DataFrame, params: DamageParams | None = None) -> np.ndarray:
    """The damage index D of each row of a :func:`damage_table` (formula in the module docstring)."""
    p = params or DamageParams()
    d = table["hull_eq_diameter_um"].to_numpy(float)
    surf = np.maximum(table["crack_surface_density_per_um"].to_numpy(float), table["edge_density_per_um"].to_numpy(float))
    gap = np.minimum(np.nan_to_num(table["gap_um"].to_numpy(float), posinf=np.inf) / d, 1.0)
    return table["crack_fraction"].to_numpy(float) + p.w_surface * d / 6.0 * surf + p.w_gap * gap


def depth_profile(
    table: pd.DataFrame,
    *,
    window_um: float = 10.0,
    depth_um: float | None = None,
) -> pd.DataFrame:
    """Damage-class populations per z window (by particle centroid depth).

    Parameters
    ----------
    table : DataFrame from :func:`damage_table`
    window_um : float
        Window height along z (um).
    depth_um : float, optional
        Total depth to cover (default: up to the deepest centroid).

    Examples
    --------
    >>> t = pd.DataFrame({"centroid_z_um": [1, 5, 12], "damage_class": ["least", "severe", "mild"],
    ...                   "damage_index": [0.0, 0.5, 0.1]})
    >>> depth_profile(t, window_um=10)[["n_least", "n_mild", "n_severe"]].values.tolist()
    [[1, 0, 1], [0, 1, 0]]
    """
    if window_um <= 0:
        raise LitomoError(f"window_um must be positive, got {window_um}")
    z = table["centroid_z_um"].to_numpy(float)
    top = depth_um if depth_um is not None else (float(z.max()) if z.size else 0.0)
    n_win = max(1, int(np.floor(top / window_um)) + 1)
    if depth_um is not None and np.isclose(n_win * window_um - window_um, depth_um):
        n_win -= 1
    idx = np.clip((z // window_um).astype(int), 0, n_win - 1)
    rows = []
    for w in range(n_win):
        sel = idx == w
        cls = table["damage_class"].to_numpy()[sel]
        counts = {c: int(np.sum(cls == c)) for c in DAMAGE_CLASSES}
        n = int(sel.sum())
        rows.append(
            {
                "z_start_um": w * window_um,
                "z_end_um": (w + 1) * window_um,
                "n_particles": n,
                **{f"n_{c}": counts[c] for c in DAMAGE_CLASSES},
                "fraction_severe": counts["severe"] / n if n else float("nan"),
                "mean_damage_index": float(table["damage_index"].to_numpy()[sel].mean()) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def severe_network(table: pd.DataFrame, *, k: int = 3, damage_class: str = "severe") -> pd.DataFrame:
    """k-nearest-neighbour network (cKDTree on centroids, um) of the particles of one damage class.

    Each particle is joined to its ``k`` nearest particles of the same class; duplicate edges are
    merged. Returns ``particle_a, particle_b, distance_um`` (``particle_a < particle_b``).

    Examples
    --------
    >>> t = pd.DataFrame({"particle": [1, 2, 3], "damage_class": ["severe"] * 3, "centroid_z_um": [0, 0, 0],
    ...                   "centroid_y_um": [0, 0, 0], "centroid_x_um": [0.0, 1.0, 3.0]})
    >>> severe_network(t, k=1).values.tolist()
    [[1.0, 2.0, 1.0], [2.0, 3.0, 2.0]]
    """
    from scipy.spatial import cKDTree

    sel = table[table["damage_class"] == damage_class]
    cols = ["particle_a", "particle_b", "distance_um"]
    if len(sel) < 2:
        return pd.DataFrame(columns=cols)
    pts = sel[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy(float)
    labels = sel["particle"].to_numpy()
    kk = min(k + 1, len(sel))
    dist, nn = cKDTree(pts).query(pts, k=kk)
    edges = {}
    for a in range(len(sel)):
        for d, b in zip(dist[a, 1:], nn[a, 1:], strict=True):
            key = tuple(sorted((int(labels[a]), int(labels[b]))))
            edges[key] = float(d)
    out = pd.DataFrame([(a, b, d) for (a, b), d in sorted(edges.items())], columns=cols)
    return out


def sphere_pack(table: pd.DataFrame, bbox_um: tuple[tuple[float, float], ...] | None = None) -> pd.DataFrame:
    """Sphere-pack representation (centres and equivalent radii, um) for finite-element models.

    Parameters
    ----------
    table : DataFrame from :func:`damage_table`
    bbox_um : ((z0, z1), (y0, y1), (x0, x1)), optional
        Keep particles whose centre lies inside this box (um).

    Examples
    --------
    >>> t = pd.DataFrame({"particle": [1], "centroid_z_um": [1.0], "centroid_y_um": [2.0], "centroid_x_um": [3.0],
    ...                   "volume_um3": [4 / 3 * np.pi], "damage_index": [0.0], "damage_class": ["least"]})
    >>> round(float(sphere_pack(t)["radius_um"][0]), 6)
    1.0
    """
    out = pd.DataFrame(
        {
            "particle": table["particle"].to_numpy(),
            "z_um": table["centroid_z_um"].to_numpy(float),
            "y_um": table["centroid_y_um"].to_numpy(float),
            "x_um": table["centroid_x_um"].to_numpy(float),
            "radius_um": (3 * table["volume_um3"].to_numpy(float) / (4 * np.pi)) ** (1 / 3),
            "damage_index": table["damage_index"].to_numpy(float),
            "damage_class": table["damage_class"].to_numpy(),
        }
    )
    if bbox_um is not None:
        if len(bbox_um) != 3 or any(len(b) != 2 or b[0] >= b[1] for b in bbox_um):
            raise LitomoError(f"bbox_um must be ((z0, z1), (y0, y1), (x0, x1)) with lo < hi, got {bbox_um}")
        keep = np.ones(len(out), bool)
        for col, (lo, hi) in zip(("z_um", "y_um", "x_um"), bbox_um, strict=True):
            keep &= (out[col] >= lo) & (out[col] <= hi)
        out = out[keep].reset_index(drop=True)
    return out

"""Synthetic three-phase NMC cathode microstructure with ground truth.

Secondary particles (:mod:`litomo.phantom.painter`) are polydisperse, slightly aspherical,
densely packed, and some carry internal pores or a crack. The carbon-binder domain (CBD) sits preferentially at particle necks: the morphological
closing of AM minus AM, thinned by a smooth random field so the clusters are porous. The
rest is pore space.

Phase codes follow SPEC 1: ``0 = pore, 1 = AM, 2 = CBD``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from litomo.errors import DataError
from litomo.phantom.painter import (
    defect_table,
    paint_particles_fast,
    particle_params,
)
from litomo.progress import ProgressCallback

log = logging.getLogger(__name__)

#: Default voxel size (um): D50 = 4.7 um spans 37.6 raw voxels; after 7x binning a particle
#: radius is 2.7 binned voxels.
DEFAULT_VOXEL_SIZE_UM = 0.125


@dataclass
class Electrode:
    """A synthetic electrode and its ground truth.

    Attributes
    ----------
    labels : uint8 array (z, y, x)
        0 pore, 1 AM, 2 CBD.
    particle_ids : int32 array (z, y, x)
        1..n inside AM particles, 0 elsewhere (internal pores and cracks are 0).
    radial : float32 array (z, y, x)
        Normalised radial coordinate inside each particle, 0 at the centre and 1 on its surface
        (``|q| / R(direction)``); meaningless outside AM.
    angular : float16 array (z, y, x)
        A smooth random function of direction from the particle centre, in [-1, 1]; used by
        :mod:`litomo.phantom.lithium` as the surface reactivity (preferred reaction sites).
    voxel_size_um : float
        Isotropic voxel edge length (um).
    centers_vox : (n, 3) float array
        Particle centres in voxel coordinates of ``labels`` (may lie outside the volume).
    diameters_um : (n,) float array
        Nominal equivalent-sphere diameters of the generated particles (um).
    info : dict
        Generation parameters and measured fractions.
    """

    labels: np.ndarray
    particle_ids: np.ndarray
    radial: np.ndarray
    angular: np.ndarray
    voxel_size_um: float
    centers_vox: np.ndarray
    diameters_um: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def am_mask(self) -> np.ndarray:
        return self.labels == 1

    def fractions(self) -> dict[str, float]:
        """Volume fractions of pore, AM and CBD."""
        counts = np.bincount(self.labels.ravel(), minlength=3).astype(float)
        counts /= counts.sum()
        return {"pore": float(counts[0]), "am": float(counts[1]), "cbd": float(counts[2])}


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise (float32), generated z-slab by z-slab."""
    out = np.empty(shape, dtype=np.float32)
    for z in range(shape[0]):  # one slab at a time keeps the RNG stream (and memory) bounded
        out[z] = rng.standard_normal(shape[1:], dtype=np.float32)
    ndimage.gaussian_filter(out, sigma, output=out, mode="wrap")
    # slab-wise variance: np.std would allocate two full-size temporaries
    acc = np.zeros(2)
    for z0 in range(0, shape[0], 32):
        sl = out[z0 : z0 + 32].astype(np.float64)
        acc += (sl.sum(), (sl * sl).sum())
    mean = acc[0] / out.size
    out /= np.float32(max(math.sqrt(max(acc[1] / out.size - mean * mean, 0.0)), 1e-12))
    return out


def _edt_capped(feature_free: np.ndarray, cap: float, slab: int = 128) -> np.ndarray:
    """Euclidean distance (voxels) of every True voxel to the nearest False voxel, float32.

    Computed in z-slabs with a halo of ``cap`` voxels, so values below ``cap`` are exact while
    memory stays at one slab of float64 (scipy's EDT has no float32 or chunked mode).
    """
    nz = feature_free.shape[0]
    halo = int(math.ceil(cap)) + 1
    out = np.empty(feature_free.shape, dtype=np.float32)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        a0, a1 = max(0, z0 - halo), min(nz, z1 + halo)
        d = ndimage.distance_transform_edt(feature_free[a0:a1])
        out[z0:z1] = np.minimum(d[z0 - a0 : z0 - a0 + (z1 - z0)], cap + 1)
    return out


def _checked_args(shape: Any, am_fraction: float, cbd_fraction: float) -> tuple[int, int, int]:
    """The (z, y, x) shape, after refusing sizes and fractions the generator cannot honour."""
    shape = (int(shape),) * 3 if np.isscalar(shape) else tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise DataError(f"electrode shape must be three sizes >= 8 voxels, got {shape}")
    if not 0.3 <= am_fraction <= 0.75:
        raise DataError(f"am_fraction must be within 0.3-0.75 (packing limit), got {am_fraction}")
    if not 0 <= cbd_fraction < 1 - am_fraction:
        raise DataError(f"cbd_fraction must be in [0, 1 - am_fraction), got {cbd_fraction}")
    return shape  # type: ignore[return-value]


def make_electrode(
    shape: tuple[int, int, int] | int,
    *,
    voxel_size_um: float = DEFAULT_VOXEL_SIZE_UM,
    d50_um: float = 4.7,
    sigma_log: float = 0.15,
    am_fraction: float = 0.66,
    cbd_fraction: float = 0.09,
    asphericity: float = 0.08,
    defect_probability: float = 0.3,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> Electrode:
    """Generate a three-phase NMC electrode (pore, AM, CBD) with particle ids.

    Parameters
    ----------
    shape : int or (z, y, x)
        Volume shape in voxels.
    voxel_size_um : float
        Voxel edge length (um).
    d50_um : float
        Median equivalent-sphere diameter (by number) of the secondary particles (um).
    sigma_log : float
        Standard deviation of ln(diameter) (lognormal polydispersity).
    am_fraction : float
        Nominal AM packing fraction (before overlaps and internal pores are removed); the
        resulting AM volume fraction is typically 0.03-0.05 lower, within 0.55-0.70.
    cbd_fraction : float
        CBD volume fraction (exact up to sampling of the selection threshold).
    asphericity : float
        Relative amplitude of the tri-axial ellipsoid and Legendre perturbation of the radius.
    defect_probability : float
        Probability that a particle has internal pores or a crack.
    seed : int
        Random seed; the same arguments give a bit-identical electrode.

    Returns
    -------
    Electrode

    Examples
    --------
    >>> e = make_electrode(64, seed=1)
    >>> sorted(e.fractions())
    ['am', 'cbd', 'pore']
    """
    shape = _checked_args(shape, am_fraction, cbd_fraction)
    rng = np.random.default_rng(seed)
    vs = float(voxel_size_um)
    parts = particle_params(shape, vs, d50_um, sigma_log, am_fraction, asphericity, defect_probability, rng)
    ids, best, angular, voids = paint_particles_fast(parts, 0, shape[0], defect_table(parts))
    if progress is not None:
        progress(1, 1, "packing particles")
    order = parts.visible
    r50 = parts.r50
    ids[voids] = 0
    del voids
    am = ids > 0
    best[~am] = 0  # in place: the claiming level becomes the radial coordinate
    radial = best

    # CBD at the necks: closing(AM) - AM, thinned by smooth noise to form porous clusters
    # distances on a coarser grid: CBD placement is a smooth, coarse feature and the EDT is the
    # costliest step of the generator
    f = 2 if r50 >= 8 else 1
    am_c = am[::f, ::f, ::f]
    rc = max(1.5, 0.22 * r50 / f)
    d_am = _edt_capped(~am_c, 2 * rc + 2)  # distance of pore voxels to AM (coarse voxels)
    dil = d_am <= rc
    closed = _edt_capped(dil, rc + 1) > rc
    del dil
    coarse = np.where(closed, np.float32(1.5), -np.minimum(d_am, 2 * rc) / np.float32(rc))
    del closed, d_am
    score = _smooth_noise(shape, sigma=max(1.0, 0.06 * r50), rng=rng)
    score *= np.float32(0.7)
    for zc in range(coarse.shape[0]):  # upsample one coarse slice at a time (bounded memory)
        block = coarse[zc].repeat(f, 0)[: shape[1]].repeat(f, 1)[:, : shape[2]]
        score[zc * f : (zc + 1) * f] += block[None]
    del coarse
    score[am] = -np.inf
    n_cbd = int(round(cbd_fraction * am.size))
    labels = am.astype(np.uint8)
    if n_cbd > 0:
        flat = score.ravel()
        sample = flat[rng.integers(0, flat.size, size=min(flat.size, 2_000_000))]
        sample = sample[np.isfinite(sample)]
        q = 1 - n_cbd / max(1, int(np.count_nonzero(~am)))
        if q <= 0:
            raise DataError("cbd_fraction is larger than the pore space left by the particles")
        thr = np.quantile(sample, q)
        labels[score > thr] = 2
    del score
    diam_um = 2 * parts.radii * vs
    elec = Electrode(
        labels=labels, particle_ids=ids, radial=radial, angular=angular, voxel_size_um=vs,
        centers_vox=parts.centers, diameters_um=diam_um,
        info={
            "seed": seed, "n_particles_generated": int(len(parts.radii)), "n_particles_visible": int(len(order)),
            "d50_um_nominal": float(d50_um), "d50_um_generated": float(np.median(diam_um)),
            "sigma_log": sigma_log, "am_fraction_nominal": am_fraction, "cbd_fraction_target": cbd_fraction,
            "n_defective_particles": int(parts.has_defect[order].sum()),
        },
    )
    elec.info["fractions"] = elec.fractions()
    log.info("electrode %s: fractions %s", shape, elec.info["fractions"])
    return elec


def _row_noise(seed: int, z0: int, z1: int, shape_yx: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise on rows ``z0:z1`` of an unbounded stack.

    Every row's white noise comes from its own seed, and the filter reads a halo of rows, so
    any row range gives the same values as the whole stack (y and x wrap around).
    """
    halo = int(4.0 * sigma + 0.5)  # scipy's kernel radius at truncate=4
    white = np.empty((z1 - z0 + 2 * halo, *shape_yx), np.float32)
    for i in range(white.shape[0]):
        white[i] = np.random.default_rng([seed, 104729, z0 - halo + i + 1_000_000]).standard_normal(shape_yx, dtype=np.float32)
    ndimage.gaussian_filter(white, sigma, output=white, mode=("nearest", "wrap", "wrap"))
    # analytic standard deviation of filtered unit white noise: the kernel's L2 norm per axis
    x = np.arange(-halo, halo + 1)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    out = white[halo : halo + z1 - z0]
    out /= np.float32(math.sqrt(float((w**2).sum())) ** 3)
    return out


class ElectrodeStream:
    """A large electrode produced in increasing row (z) order with bounded memory.

    The same particles as :func:`make_electrode` with the same arguments (identical packing);
    the CBD uses the same closing-and-noise construction evaluated with halos, and its
    selection threshold is estimated once on a pilot block in the middle of the volume (the
    microstructure is statistically homogeneous), so its fraction matches ``cbd_fraction`` up
    to sampling. Rows are painted once each and kept only while a later request can need them.

    Parameters
    ----------
    shape : int or (z, y, x)
    chunk_rows : int
        Rows painted per step; the result does not depend on it.
    Other parameters as :func:`make_electrode`.

    Examples
    --------
    >>> es = ElectrodeStream(48, seed=1)
    >>> labels, ids, radial, angular = es.rows(0, 8)
    >>> labels.shape
    (8, 48, 48)
    """

    #: rows in the middle of the volume painted first to set the CBD threshold
    PILOT_ROWS = 48

    def __init__(self, shape: tuple[int, int, int] | int, *, voxel_size_um: float = DEFAULT_VOXEL_SIZE_UM,
                 d50_um: float = 4.7, sigma_log: float = 0.15, am_fraction: float = 0.66,
                 cbd_fraction: float = 0.09, asphericity: float = 0.08, defect_probability: float = 0.3,
                 seed: int = 0, chunk_rows: int = 32):
        shape = _checked_args(shape, am_fraction, cbd_fraction)
        self.shape: tuple[int, int, int] = shape
        self.voxel_size_um = float(voxel_size_um)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        self.parts = particle_params(shape, self.voxel_size_um, d50_um, sigma_log, am_fraction, asphericity,
                                      defect_probability, rng)
        r50 = self.parts.r50
        self.f = 2 if r50 >= 8 else 1
        self.rc = max(1.5, 0.22 * r50 / self.f)
        # rows of AM a CBD row depends on: the two capped EDTs of the closing (coarse rows)
        h_coarse = (math.ceil(2 * self.rc + 2) + 1) + (math.ceil(self.rc + 1) + 1)
        self.halo = self.f * (h_coarse + 1)
        self.sigma = max(1.0, 0.06 * r50)
        self.chunk = max(self.f, int(chunk_rows) // self.f * self.f)
        self.cbd_fraction = float(cbd_fraction)
        self.diameters_um = 2 * self.parts.radii * self.voxel_size_um
        self._geo: tuple[int, list[np.ndarray]] = (0, [np.zeros((0, *shape[1:]), dt) for dt in
                                                       (np.int32, np.float32, np.float16)])
        self._lab: tuple[int, np.ndarray] = (0, np.zeros((0, *shape[1:]), np.uint8))
        self.threshold = -np.inf
        self._defects: dict[str, np.ndarray] | None = None
        nz = shape[0]
        pilot_rows = self.PILOT_ROWS
        p0 = max(0, (nz // 2 - pilot_rows // 2) // self.f * self.f)
        score, am = self._score(p0, min(nz, p0 + pilot_rows), *self._paint(max(0, p0 - self.halo),
                                                                             min(nz, p0 + pilot_rows + self.halo)))
        free = score[~am]
        n_cbd = cbd_fraction * am.size
        self.threshold = float(np.quantile(free, 1 - n_cbd / max(1, free.size))) if n_cbd > 0 else np.inf
        self.info = {
            "seed": seed, "n_particles_generated": int(len(self.parts.radii)),
            "n_particles_visible": int(len(self.parts.visible)), "d50_um_nominal": float(d50_um),
            "d50_um_generated": float(np.median(self.diameters_um)), "sigma_log": sigma_log,
            "am_fraction_nominal": am_fraction, "cbd_fraction_target": cbd_fraction,
            "n_defective_particles": int(self.parts.has_defect[self.parts.visible].sum()),
            "cbd_threshold_pilot_rows": [p0, min(nz, p0 + pilot_rows)],
        }

    @property
    def centers_vox(self) -> np.ndarray:
        return self.parts.centers

    def paint(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw painting of rows ``a:b``: ids, normalised radius (2 outside), angular, voids."""
        if self._defects is None:
            self._defects = defect_table(self.parts)
        return paint_particles_fast(self.parts, a, b, self._defects)

    def _paint(self, a: int, b: int) -> tuple[int, list[np.ndarray]]:
        ids, best, angular, voids = self.paint(a, b)
        ids[voids] = 0
        best[ids == 0] = 0
        return a, [ids, best, angular]

    def _score(self, a: int, b: int, g0: int, geo: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """CBD score and AM mask of rows ``a:b`` (``a`` a multiple of ``f``) from painted rows
        ``g0:...`` that include the halo (clipped at the volume faces)."""
        f, rc = self.f, self.rc
        am = geo[0] > 0
        c0 = (a - g0) % f  # align the coarse grid to global multiples of f
        am_c = am[c0::f, ::f, ::f]
        d_am = _edt_capped(~am_c, 2 * rc + 2, slab=max(1, am_c.shape[0]))
        closed = _edt_capped(d_am <= rc, rc + 1, slab=max(1, am_c.shape[0])) > rc
        coarse = np.where(closed, np.float32(1.5), -np.minimum(d_am, 2 * rc) / np.float32(rc))
        first = (a - g0 - c0) // f
        ny, nx = self.shape[1:]
        up = coarse[first : first + (b - a + f - 1) // f].repeat(f, 0)[: b - a]
        up = up.repeat(f, 1)[:, :ny].repeat(f, 2)[:, :, :nx]
        score = _row_noise(self.seed, a, b, (ny, nx), self.sigma)
        score *= np.float32(0.7)
        score += up
        return score, am[a - g0 : b - g0]

    def rows(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Phase labels (uint8), particle ids (int32), normalised radius (float32) and angular
        field (float16) of rows ``a:b`` (read-only views). Successive calls must not decrease ``a``."""
        nz = self.shape[0]
        a, b = max(0, int(a)), min(nz, int(b))
        l0, lab = self._lab
        if a < l0:
            raise DataError(f"ElectrodeStream rows must be requested in increasing order ({a} < {l0})")
        l1 = l0 + len(lab)
        if b > l1:
            new_l1 = max(b, l1 + self.chunk)
            new_l1 = min(nz, -(-new_l1 // self.f) * self.f)
            self._extend_geometry(min(nz, new_l1 + self.halo), keep_from=min(a, max(0, l1 - self.halo)))
            g0, geo = self._geo
            s0 = max(g0, l1 - self.halo)  # only the halo the EDTs need
            score, am = self._score(l1, new_l1, s0, [x[s0 - g0 :] for x in geo])
            labels = am.astype(np.uint8)
            labels[(score > self.threshold) & ~am] = 2
            lab = np.concatenate([lab[a - l0 :], labels]) if a < l1 else labels[a - l1 :]
        else:
            lab = lab[a - l0 :]
        self._lab = (a, lab)
        g0, geo = self._geo
        # geometry rows below these are never needed again (requests and labels move up)
        drop = min(a, max(0, a + len(lab) - self.halo)) - g0
        if drop > 0:
            g0, geo = g0 + drop, [x[drop:] for x in geo]
            self._geo = (g0, geo)
        out = (lab[: b - a], *(x[a - g0 : b - g0] for x in geo))
        for v in out:  # views of the cache: read-only
            v.flags.writeable = False
        return out  # type: ignore[return-value]

    def _extend_geometry(self, g1_new: int, keep_from: int) -> None:
        g0, geo = self._geo
        if len(geo[0]) == 0:
            g0 = keep_from
        keep_from = max(g0, keep_from)
        g1 = g0 + len(geo[0])
        geo = [x[keep_from - g0 :] for x in geo]
        g0 = keep_from
        if g1_new > g1:
            _, new = self._paint(max(g1, g0), g1_new)
            geo = [np.concatenate([x, y]) for x, y in zip(geo, new, strict=True)]
        self._geo = (g0, geo)

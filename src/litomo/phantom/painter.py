"""The analytic particles of the synthetic electrode and their painting onto voxel rows.

Secondary particles are polydisperse (lognormal equivalent diameters), slightly aspherical
(random tri-axial ellipsoids with a low-order Legendre perturbation of the radius), packed
densely by random placement followed by soft-sphere relaxation (a force-biased packing that
leaves small overlaps so neighbouring particles touch), and some carry internal pores or a
crack. Every particle is analytic (:class:`ParticleSet`), so any z-range of the volume can be
painted on its own (:func:`paint_particles`, compiled: :func:`paint_particles_fast`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy.spatial import cKDTree

from litomo.progress import ProgressCallback


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform random rotation matrices from unit quaternions, shape (n, 3, 3)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def pack_spheres(
    box_vox: tuple[float, float, float],
    radii_vox: np.ndarray,
    rng: np.random.Generator,
    *,
    allowed_overlap: float = 0.04,
    iterations: int = 400,
) -> np.ndarray:
    """Random placement + soft-sphere relaxation in a periodic box; returns centres (n, 3).

    Pairs closer than ``(r_i + r_j) * (1 - allowed_overlap)`` are pushed apart symmetrically
    until no such pair remains (or ``iterations`` is reached), so contacting particles keep a
    small overlap and touch. Vectorised over pairs (cKDTree), no per-particle loops.
    """
    box = np.asarray(box_vox, dtype=float)
    n = len(radii_vox)
    pos = rng.uniform(0, 1, size=(n, 3)) * box
    r = np.asarray(radii_vox, dtype=float)
    target = 1.0 - allowed_overlap
    cutoff = 2 * r.max() * target
    for _ in range(iterations):
        tree = cKDTree(pos, boxsize=box)
        pairs = tree.query_pairs(cutoff, output_type="ndarray")
        if len(pairs) == 0:
            break
        i, j = pairs[:, 0], pairs[:, 1]
        d = pos[j] - pos[i]
        d -= box * np.round(d / box)  # minimum image
        dist = np.linalg.norm(d, axis=1)
        overlap = (r[i] + r[j]) * target - dist
        sel = overlap > 1e-3 * (r[i] + r[j])
        if not sel.any():
            break
        i, j, d, dist, overlap = i[sel], j[sel], d[sel], np.maximum(dist[sel], 1e-9)[:, None], overlap[sel]
        # heavier (bigger) particles move less: weights by volume
        wi = r[j] ** 3 / (r[i] ** 3 + r[j] ** 3)
        step = d / dist * overlap[:, None] * 0.55
        # bincount, not np.add.at: the unbuffered ufunc.at is ~20x slower at 1e5 pairs
        mi, mj = -step * wi[:, None], step * (1 - wi)[:, None]
        disp = np.stack([np.bincount(i, mi[:, c], n) + np.bincount(j, mj[:, c], n) for c in range(3)], axis=1)
        pos = np.mod(pos + disp, box)
    return pos


def _legendre(l_order: int, x: np.ndarray) -> np.ndarray:
    if l_order == 2:
        return 1.5 * x * x - 0.5
    x2 = x * x
    if l_order == 3:
        return x * (2.5 * x2 - 1.5)
    return x2 * (4.375 * x2 - 3.75) + 0.375


@dataclass
class ParticleSet:
    """The analytic particles of an electrode: everything needed to paint any z-range of it.

    Each particle is an ellipsoid-like star-shaped body (centre, rotation, tri-axial stretch,
    two Legendre bumps of the radius) with optional internal pores or a crack drawn from its
    own seed, so rows ``z0:z1`` can be evaluated independently of the rest of the volume.
    """

    shape: tuple[int, int, int]
    r50: float
    radii: np.ndarray
    centers: np.ndarray
    rot: np.ndarray
    ax: np.ndarray
    harm_axes: np.ndarray
    harm_amp: np.ndarray
    harm_order: np.ndarray
    ang_axes: np.ndarray
    ang_w: np.ndarray
    has_defect: np.ndarray
    defect_seeds: np.ndarray
    reach: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    visible: np.ndarray  # indices of the particles whose bounding box meets the volume


def particle_params(shape: tuple[int, int, int], vs: float, d50_um: float, sigma_log: float,
                     am_fraction: float, asphericity: float, defect_probability: float,
                     rng: np.random.Generator) -> ParticleSet:
    r50 = d50_um / 2 / vs  # median radius in voxels
    r_cap = r50 * math.exp(2.5 * sigma_log)
    margin = r_cap * (1 + 3 * asphericity)
    box = np.array(shape, float) + 2 * margin
    # number of particles such that the nominal volumes fill am_fraction of the packing box
    mean_vol = 4 / 3 * math.pi * r50**3 * math.exp(4.5 * sigma_log**2)
    n = max(1, int(round(am_fraction * box.prod() / mean_vol)))
    radii = np.minimum(r50 * np.exp(sigma_log * rng.standard_normal(n)), r_cap)
    centers = pack_spheres(tuple(box), radii, rng) - margin  # voxel coordinates of the volume
    rot = _random_rotations(rng, n)
    ax = 1 + asphericity * rng.uniform(-1, 1, size=(n, 3))
    ax /= np.cbrt(ax.prod(axis=1))[:, None]  # keep the volume of the sphere of radius R
    harm_axes = rng.normal(size=(n, 2, 3))
    harm_axes /= np.linalg.norm(harm_axes, axis=2, keepdims=True)
    harm_amp = asphericity * 0.5 * rng.uniform(-1, 1, size=(n, 2))
    harm_order = rng.integers(2, 5, size=(n, 2))
    ang_axes = rng.normal(size=(n, 3, 3))
    ang_axes /= np.linalg.norm(ang_axes, axis=2, keepdims=True)
    ang_w = rng.uniform(-1, 1, size=(n, 3))
    ang_w /= np.abs(ang_w).sum(axis=1, keepdims=True)
    has_defect = rng.uniform(size=n) < defect_probability
    defect_seeds = rng.integers(0, 2**31, size=n)
    reach = radii * (1 + 3 * asphericity) + 1
    lo_all = np.floor(centers - reach[:, None]).astype(int)
    hi_all = np.ceil(centers + reach[:, None]).astype(int) + 1
    visible = np.all((hi_all > 0) & (lo_all < np.array(shape)), axis=1)
    return ParticleSet(shape=shape, r50=r50, radii=radii, centers=centers, rot=rot, ax=ax, harm_axes=harm_axes,
                       harm_amp=harm_amp, harm_order=harm_order, ang_axes=ang_axes, ang_w=ang_w,
                       has_defect=has_defect, defect_seeds=defect_seeds, reach=reach, lo=lo_all, hi=hi_all,
                       visible=np.flatnonzero(visible))


def _matmul3(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``a @ m`` for (n, 3) points, term by term: BLAS rounding depends on the array length and
    alignment, and painting must give bit-identical voxels whatever the row range."""
    return a[:, 0:1] * m[0] + a[:, 1:2] * m[1] + a[:, 2:3] * m[2] if m.ndim == 2 else (
        a[:, 0] * m[0] + a[:, 1] * m[1] + a[:, 2] * m[2])


def paint_particles(parts: ParticleSet, z0: int, z1: int, progress: ProgressCallback | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Particle ids (int32), normalised radius (float32, 2 outside), angular field (float16) and
    internal voids (bool) of rows ``z0:z1`` of the volume.

    Only particles whose bounding box meets the rows are evaluated, in index order, so any
    split of the volume into row ranges gives exactly the rows of the whole volume.
    """
    shape = (z1 - z0, *parts.shape[1:])
    ids = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, 2.0, dtype=np.float32)  # normalised radius of the claiming particle
    angular = np.zeros(shape, dtype=np.float16)  # a smooth modulation: half precision is plenty
    voids = np.zeros(shape, dtype=bool)
    vis = parts.visible
    order = vis[(parts.hi[vis, 0] > z0) & (parts.lo[vis, 0] < z1)]
    top = np.array([z1, *parts.shape[1:]])
    bottom = np.array([z0, 0, 0])
    radii, rot, ax = parts.radii, parts.rot, parts.ax
    for k, p in enumerate(order):
        lo = np.maximum(parts.lo[p], bottom)
        hi = np.minimum(parts.hi[p], top)
        sub = (slice(lo[0] - z0, hi[0] - z0), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        c = parts.centers[p].astype(np.float32)
        r2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        near = r2 <= np.float32(parts.reach[p] ** 2)  # only voxels that can belong to the particle
        idx = np.nonzero(near)
        d = np.stack([idx[0] + (lo[0] - c[0]), idx[1] + (lo[1] - c[1]), idx[2] + (lo[2] - c[2])], -1)
        d = d.astype(np.float32)
        q = _matmul3(d, rot[p].astype(np.float32)) / ax[p].astype(np.float32)
        rho = np.sqrt((q * q).sum(-1))
        nvec = q / np.maximum(rho, 1e-6)[:, None]
        rdir = np.ones(rho.shape, np.float32)
        for j in range(2):
            rdir += np.float32(parts.harm_amp[p, j]) * _legendre(
                int(parts.harm_order[p, j]), _matmul3(nvec, parts.harm_axes[p, j].astype(np.float32)))
        level = rho / (np.float32(radii[p]) * rdir)
        bsub = best[sub]
        claim = (level <= 1.0) & (level < bsub[idx])
        cidx = tuple(a[claim] for a in idx)
        bsub[cidx] = level[claim]
        ids[sub][cidx] = p + 1
        nv = nvec[claim]
        g = np.zeros(len(nv), np.float32)
        for j in range(3):  # odd and even terms so reactive sites are not centro-symmetric
            cj = _matmul3(nv, parts.ang_axes[p, j].astype(np.float32))
            g += np.float32(parts.ang_w[p, j]) * (cj if j == 0 else _legendre(j + 1, cj))
        angular[sub][cidx] = g
        if parts.has_defect[p]:
            prng = np.random.default_rng(int(parts.defect_seeds[p]))
            dc = d[claim]
            if prng.uniform() < 0.5:  # a crack: a thin slab through the particle core
                nrm = prng.normal(size=3)
                nrm /= np.linalg.norm(nrm)
                off = prng.uniform(-0.3, 0.3) * radii[p]
                width = prng.uniform(0.6, 1.2)  # half-width in voxels
                crack = (np.abs(_matmul3(dc, nrm.astype(np.float32)) - off) < width) & (level[claim] < 0.8)
            else:  # a few internal pores
                crack = np.zeros(len(dc), bool)
                for _ in range(int(prng.integers(1, 4))):
                    c0 = prng.normal(size=3)
                    c0 *= prng.uniform(0, 0.55) * radii[p] / np.linalg.norm(c0)
                    rv = prng.uniform(0.08, 0.16) * radii[p]
                    crack |= ((dc - c0.astype(np.float32)) ** 2).sum(-1) < rv * rv
            voids[sub][tuple(a[crack] for a in cidx)] = True
        if progress is not None:
            progress(k + 1, len(order), "packing particles")
    return ids, best, angular, voids


# --------------------------------------------------------------------------- compiled painting
# The numpy painter above costs ~1 us per voxel (fancy indexing of every particle's bounding
# box); a 1024^3 volume needs a compiled per-voxel loop (numba, a dependency). The numpy painter
# stays as the readable reference the tests compare the compiled one with.



def defect_table(parts: ParticleSet) -> dict[str, np.ndarray]:
    """The random defect of every particle, drawn exactly as :func:`paint_particles` draws it."""
    n = len(parts.radii)
    kind = np.zeros(n, np.int64)
    crack = np.zeros((n, 5), np.float64)  # normal (3), offset, half-width
    pores = np.zeros((n, 3, 4), np.float64)  # up to 3 x (centre (3), radius)
    n_pores = np.zeros(n, np.int64)
    for p in np.flatnonzero(parts.has_defect):
        prng = np.random.default_rng(int(parts.defect_seeds[p]))
        r = parts.radii[p]
        if prng.uniform() < 0.5:
            nrm = prng.normal(size=3)
            nrm /= np.linalg.norm(nrm)
            kind[p] = 1
            crack[p, :3] = nrm.astype(np.float32)
            crack[p, 3] = prng.uniform(-0.3, 0.3) * r
            crack[p, 4] = prng.uniform(0.6, 1.2)
        else:
            kind[p] = 2
            n_pores[p] = int(prng.integers(1, 4))
            for j in range(n_pores[p]):
                c0 = prng.normal(size=3)
                c0 *= prng.uniform(0, 0.55) * r / np.linalg.norm(c0)
                pores[p, j, :3] = c0.astype(np.float32)
                pores[p, j, 3] = prng.uniform(0.08, 0.16) * r
    return {"kind": kind, "crack": crack, "pores": pores, "n_pores": n_pores}


def _paint_rows_py(z0, z1, sel, lo, hi, centers, reach, rot, ax, radii, hax, hamp, hord, aax, aw,
                   kind, crack, pores, n_pores, ids, best, ang, voids):
    """Per-voxel painting of rows ``z0:z1`` (compiled with numba; arrays hold those rows)."""
    ny, nx = ids.shape[1], ids.shape[2]
    for t in range(sel.shape[0]):
        p = sel[t]
        za, zb = max(lo[p, 0], z0), min(hi[p, 0], z1)
        ya, yb = max(lo[p, 1], 0), min(hi[p, 1], ny)
        xa, xb = max(lo[p, 2], 0), min(hi[p, 2], nx)
        cz, cy, cx = centers[p, 0], centers[p, 1], centers[p, 2]
        r2max = reach[p] * reach[p]
        for z in range(za, zb):
            dz = z - cz
            for y in range(ya, yb):
                dy = y - cy
                rest = r2max - dz * dz - dy * dy
                if rest < 0:
                    continue
                half = math.sqrt(rest)  # only the x run inside the reach sphere
                for x in range(max(xa, int(math.ceil(cx - half))), min(xb, int(math.floor(cx + half)) + 1)):
                    dx = x - cx
                    if dz * dz + dy * dy + dx * dx > r2max:
                        continue
                    q0 = (dz * rot[p, 0, 0] + dy * rot[p, 1, 0] + dx * rot[p, 2, 0]) / ax[p, 0]
                    q1 = (dz * rot[p, 0, 1] + dy * rot[p, 1, 1] + dx * rot[p, 2, 1]) / ax[p, 1]
                    q2 = (dz * rot[p, 0, 2] + dy * rot[p, 1, 2] + dx * rot[p, 2, 2]) / ax[p, 2]
                    rho = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2)
                    inv = 1.0 / max(rho, 1e-6)
                    n0, n1, n2 = q0 * inv, q1 * inv, q2 * inv
                    rdir = 1.0
                    for j in range(2):
                        c = n0 * hax[p, j, 0] + n1 * hax[p, j, 1] + n2 * hax[p, j, 2]
                        o = hord[p, j]
                        if o == 2:
                            leg = 1.5 * c * c - 0.5
                        elif o == 3:
                            leg = c * (2.5 * c * c - 1.5)
                        else:
                            leg = c * c * (4.375 * c * c - 3.75) + 0.375
                        rdir += hamp[p, j] * leg
                    level = rho / (radii[p] * rdir)
                    zi = z - z0
                    if level > 1.0 or level >= best[zi, y, x]:
                        continue
                    best[zi, y, x] = level
                    ids[zi, y, x] = p + 1
                    g = 0.0
                    for j in range(3):
                        c = n0 * aax[p, j, 0] + n1 * aax[p, j, 1] + n2 * aax[p, j, 2]
                        if j == 0:
                            g += aw[p, j] * c
                        elif j == 1:
                            g += aw[p, j] * (1.5 * c * c - 0.5)
                        else:
                            g += aw[p, j] * c * (2.5 * c * c - 1.5)
                    ang[zi, y, x] = g
                    if kind[p] == 1:
                        d = dz * crack[p, 0] + dy * crack[p, 1] + dx * crack[p, 2] - crack[p, 3]
                        if abs(d) < crack[p, 4] and level < 0.8:
                            voids[zi, y, x] = True
                    elif kind[p] == 2:
                        for j in range(n_pores[p]):
                            ez, ey, ex = dz - pores[p, j, 0], dy - pores[p, j, 1], dx - pores[p, j, 2]
                            if ez * ez + ey * ey + ex * ex < pores[p, j, 3] * pores[p, j, 3]:
                                voids[zi, y, x] = True


_paint_rows_jit = numba.njit(nogil=True, cache=True)(_paint_rows_py)


def paint_particles_fast(parts: ParticleSet, z0: int, z1: int, defects: dict[str, np.ndarray],
                         threads: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`paint_particles` compiled with numba (same geometry up to float rounding), split
    over ``threads`` row ranges."""
    shape = (z1 - z0, *parts.shape[1:])
    ids = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, 2.0, dtype=np.float32)
    angular = np.zeros(shape, dtype=np.float16)
    ang32 = np.zeros(shape, dtype=np.float32)
    voids = np.zeros(shape, dtype=bool)

    def run(a: int, b: int) -> None:
        vis = parts.visible
        sel = vis[(parts.hi[vis, 0] > a) & (parts.lo[vis, 0] < b)]
        _paint_rows_jit(a, b, sel, parts.lo, parts.hi, parts.centers, parts.reach, parts.rot, parts.ax,
                        parts.radii, parts.harm_axes, parts.harm_amp, parts.harm_order, parts.ang_axes, parts.ang_w,
                        defects["kind"], defects["crack"], defects["pores"], defects["n_pores"],
                        ids[a - z0 : b - z0], best[a - z0 : b - z0], ang32[a - z0 : b - z0], voids[a - z0 : b - z0])

    cuts = np.linspace(z0, z1, max(1, min(threads, z1 - z0)) + 1).round().astype(int)
    if len(cuts) > 2:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(cuts) - 1) as ex:
            list(ex.map(run, cuts[:-1], cuts[1:]))
    else:
        run(z0, z1)
    angular[...] = ang32
    return ids, best, angular, voids

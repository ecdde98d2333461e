"""Phantom of intact and progressively cracked spherical particles with known damage.

Each particle is a sphere (radius ``radius_vox``) cut by planar crack slabs of a given opening
width (voxels). Cracks narrower than a voxel appear only as partial-volume grey dips in the
greyscale rendering (the grey value of a voxel is the AM fraction of the voxel along the crack
normal); the label rendering is the greyscale thresholded at 0.5, so sub-voxel cracks vanish from
it, as they do in a segmented scan.

Damage levels (in increasing order of damage, with the class a good damage index must assign):

=============  ====================================================  ==========
level          cracks                                                class
=============  ====================================================  ==========
``intact``     none                                                  least
``subvoxel``   one diametral planar crack, opening 0.4 voxel          mild
``planar``     one diametral planar crack, opening 1.5 voxel          mild
``double``     two crossing diametral cracks, opening 2 voxels        severe
``branching``  two crossing cracks + two branches, opening 3 voxels   severe
=============  ====================================================  ==========

A *branch* is a half-plane crack that starts on another crack and runs to the surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from litomo.errors import LitomoError

# (normal, offset from centre in units of radius, opening width in voxels, half-plane condition)
# half-plane condition: (normal, sign) restricts the crack to the side sign * (n.r) > 0 of a plane
_Crack = tuple[tuple[float, float, float], float, float, tuple[tuple[float, float, float], int] | None]

DAMAGE_LEVELS: dict[str, tuple[str, list[_Crack]]] = {
    "intact": ("least", []),
    "subvoxel": ("mild", [((1.0, 0.35, 0.2), 0.0, 0.4, None)]),
    "planar": ("mild", [((1.0, 0.35, 0.2), 0.0, 1.5, None)]),
    "double": ("severe", [((1.0, 0.35, 0.2), 0.0, 2.0, None), ((0.2, 1.0, -0.3), 0.0, 2.0, None)]),
    "branching": (
        "severe",
        [
            ((1.0, 0.35, 0.2), 0.0, 3.0, None),
            ((0.2, 1.0, -0.3), 0.0, 3.0, None),
            ((0.3, -0.4, 1.0), 0.0, 3.0, ((1.0, 0.35, 0.2), 1)),
            ((-0.5, 0.3, 1.0), 0.0, 3.0, ((1.0, 0.35, 0.2), -1)),
        ],
    ),
}


@dataclass
class DamagePhantom:
    """A row of spherical particles with known cracks.

    Attributes
    ----------
    grey : ndarray (z, y, x) float32
        AM fraction per voxel (0 pore .. 1 AM) plus Gaussian noise.
    labels : ndarray (z, y, x) int32
        Particle labels 1..n of the thresholded (grey > 0.5, noise-free) AM.
    levels : list of str
        Damage level of particle ``i + 1``.
    expected_class : list of str
        The damage class each particle should be given.
    voxel_size_um : float
    """

    grey: np.ndarray
    labels: np.ndarray
    levels: list[str]
    expected_class: list[str]
    voxel_size_um: float
    centres_vox: list[tuple[float, float, float]] = field(default_factory=list)


def _slab_coverage(dist: np.ndarray, width: float) -> np.ndarray:
    """Fraction of a unit voxel (along the normal) inside a slab |d| < width/2."""
    lo = np.maximum(dist - 0.5, -width / 2)
    hi = np.minimum(dist + 0.5, width / 2)
    return np.clip(hi - lo, 0.0, 1.0)


def make_damage_phantom(
    levels: list[str] | tuple[str, ...] = ("intact", "subvoxel", "planar", "double", "branching"),
    *,
    radius_vox: float = 10.0,
    gap_vox: int = 2,
    voxel_size_um: float = 0.05,
    noise: float = 0.02,
    seed: int = 0,
) -> DamagePhantom:
    """Build a :class:`DamagePhantom`.

    Parameters
    ----------
    levels : sequence of str
        Damage level per particle, from :data:`DAMAGE_LEVELS`.
    radius_vox : float
        Particle radius in voxels.
    gap_vox : int
        Pore gap between neighbouring particles along x, voxels.
    voxel_size_um : float
    noise : float
        Std of the Gaussian grey noise (AM/pore contrast = 1).
    seed : int

    Examples
    --------
    >>> ph = make_damage_phantom(("intact", "planar"), radius_vox=6)
    >>> int(ph.labels.max()), ph.expected_class
    (2, ['least', 'mild'])
    """
    unknown = [lv for lv in levels if lv not in DAMAGE_LEVELS]
    if unknown or not levels:
        raise LitomoError(f"unknown damage level(s) {unknown}; choose from {list(DAMAGE_LEVELS)}")
    r = float(radius_vox)
    if r < 4:
        raise LitomoError("radius_vox must be at least 4 voxels")
    side = int(np.ceil(2 * r)) + 4
    pitch = int(np.ceil(2 * r)) + 1 + int(gap_vox)
    nx = pitch * len(levels) + 4
    zz, yy, xx = np.mgrid[:side, :side, :nx].astype(np.float32)
    grey = np.zeros((side, side, nx), np.float32)
    owner = np.zeros((side, side, nx), np.int32)
    centres = []
    c0 = (side - 1) / 2.0
    for i, level in enumerate(levels):
        cx = 2 + r + 0.5 + i * pitch
        centres.append((c0, c0, cx))
        rz, ry, rx = zz - c0, yy - c0, xx - cx
        rad = np.sqrt(rz**2 + ry**2 + rx**2)
        inside = np.clip(r + 0.5 - rad, 0.0, 1.0)  # partial-volume sphere edge
        solid = np.ones_like(inside)
        for normal, offset, width, half in DAMAGE_LEVELS[level][1]:
            n = np.asarray(normal, float)
            n /= np.linalg.norm(n)
            d = n[0] * rz + n[1] * ry + n[2] * rx - offset * r
            cov = _slab_coverage(d, width)
            if half is not None:
                hn = np.asarray(half[0], float)
                hn /= np.linalg.norm(hn)
                cov = np.where(half[1] * (hn[0] * rz + hn[1] * ry + hn[2] * rx) > 0, cov, 0.0)
            solid = np.minimum(solid, 1.0 - cov)
        am = inside * solid
        grey = np.maximum(grey, am)
        owner[rad < r + 1] = i + 1
    rng = np.random.default_rng(seed)
    labels = np.where(grey > 0.5, owner, 0).astype(np.int32)
    noisy = (grey + rng.normal(0.0, noise, grey.shape)).astype(np.float32) if noise > 0 else grey
    return DamagePhantom(
        grey=noisy,
        labels=labels,
        levels=list(levels),
        expected_class=[DAMAGE_LEVELS[lv][0] for lv in levels],
        voxel_size_um=float(voxel_size_um),
        centres_vox=centres,
    )

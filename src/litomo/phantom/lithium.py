"""Li content of the synthetic electrode during delithiation (charge), from Fick's law.

Each secondary particle is treated as a sphere in normalised radial coordinate ``s = r / R``
(for the slightly aspherical particles ``s`` is the normalised radius along each direction,
see :attr:`litomo.phantom.electrode.Electrode.radial`). Li leaves through the surface; the
concentration follows the analytic series solution of spherical diffusion with a fixed surface
concentration (Crank, *The Mathematics of Diffusion*, eq. 6.18)::

    u(s, tau) = sum_n 2 (-1)^(n+1) sinc(n s) exp(-n^2 tau),   tau = pi^2 D t / R^2

where ``u`` is the fraction of the initial excess Li still present at ``s``. The surface value
itself relaxes from the pristine to the charged composition as ``exp(-beta tau)``, a simple
stand-in for a finite surface reaction rate so the surface is not instantly charged.

Heterogeneity (what makes the phantom useful for Li mapping):

- the dimensionless time scales with ``1 / R^2``: small particles delithiate first;
- the surface reactivity varies over each particle's surface (``exp(anisotropy * g(direction))``
  with ``g`` a random low-order spherical function), giving core-shell fronts that penetrate
  faster at preferred sites;
- a depth gradient along z: the separator side (z = 0) reacts faster than the current-collector
  side, as in a rate-limited porous electrode;
- a particle-to-particle lognormal rate spread (contact quality, CBD coverage).

State I is pristine (``x_Li = li_max``); later states are chosen so the mean Li content over AM
falls linearly to ``final_mean``. All values lie in ``[li_min, li_max]``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from litomo.errors import DataError
from litomo.phantom.electrode import Electrode, ElectrodeStream

_S_POINTS = 257
_LOGTAU = (-4.0, 1.5, 441)  # log10 tau range and number of samples of the lookup table


@functools.lru_cache(maxsize=1)
def _u_table() -> np.ndarray:
    """u(s, tau) on a (log10 tau, s) grid; the series is summed once and cached."""
    s = np.linspace(0.0, 1.0, _S_POINTS)
    tau = 10 ** np.linspace(*_LOGTAU)
    n = np.arange(1, 401)[:, None]
    # sinc(n s) = sin(n pi s) / (n pi s) handles the centre s = 0 without special cases
    basis = 2 * (-1.0) ** (n + 1) * np.sinc(n * s[None, :])  # (n, s)
    u = np.exp(-np.outer(tau, n[:, 0] ** 2)) @ basis  # (tau, s)
    return np.clip(u, 0.0, 1.0).astype(np.float32)


def remaining_fraction(s: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Fraction ``u`` of the initial Li excess left at normalised radius ``s`` and time ``tau``.

    Linear interpolation in a precomputed table (``tau`` below 1e-4 counts as 0 inside the
    particle; above 10**1.5 the particle is fully relaxed).

    Examples
    --------
    >>> float(remaining_fraction(np.array([0.0]), np.array([0.0]))[0])
    1.0
    >>> bool(remaining_fraction(np.array([0.0]), np.array([10.0]))[0] < 0.001)
    True
    """
    s = np.asarray(s, dtype=np.float32)
    tau = np.asarray(tau, dtype=np.float32)
    lo, hi, num = _LOGTAU
    with np.errstate(divide="ignore"):
        lt = np.log10(np.maximum(tau, np.float32(1e-30)))
    ti = (lt - lo) / (hi - lo) * (num - 1)
    si = np.clip(s, 0.0, 1.0) * (_S_POINTS - 1)
    u = ndimage.map_coordinates(_u_table(), [np.clip(ti, 0, num - 1), si], order=1, mode="nearest")
    u = np.where(ti < 0, np.where(s >= 1.0, 0.0, 1.0), u)
    return u.astype(np.float32)


class LithiumModel:
    """Li content field of an :class:`~litomo.phantom.electrode.Electrode` versus charge progress.

    Parameters
    ----------
    electrode : Electrode
    li_max, li_min : float
        Pristine and fully charged Li content (``x_Li``).
    anisotropy : float
        Amplitude of the surface reactivity modulation (log-rate units).
    depth_gradient : float
        Log-rate difference between the separator (z = 0) and current-collector side.
    rate_spread : float
        Lognormal sigma of the particle-to-particle rate.
    beta : float
        Surface relaxation rate relative to diffusion (larger = surface charges sooner).
    seed : int

    Examples
    --------
    >>> from litomo.phantom.electrode import make_electrode
    >>> m = LithiumModel(make_electrode(48, seed=0), seed=0)
    >>> x = m.li(m.progress_for_mean(0.7))
    >>> bool(abs(np.nanmean(x) - 0.7) < 0.05)
    True
    """

    def __init__(self, electrode: Electrode, *, li_max: float = 1.0, li_min: float = 0.38,
                 anisotropy: float = 0.8, depth_gradient: float = 1.0, rate_spread: float = 0.3,
                 beta: float = 2.0, seed: int = 0):
        if not li_min < li_max:
            raise DataError(f"li_min ({li_min}) must be below li_max ({li_max})")
        self.electrode = electrode
        rng = self._setup(electrode.centers_vox, electrode.diameters_um, electrode.labels.shape[0],
                          anisotropy=anisotropy, depth_gradient=depth_gradient, rate_spread=rate_spread,
                          beta=beta, li_max=li_max, li_min=li_min, seed=seed)
        ids = electrode.particle_ids
        # per-voxel tau multiplier (0 outside AM), built slab by slab to bound temporaries
        self.rate = np.zeros(ids.shape, np.float32)
        for z0 in range(0, ids.shape[0], 32):
            sl = slice(z0, z0 + 32)
            self.rate[sl] = self.particle_rate[ids[sl]] * np.exp(
                np.float32(self.anisotropy) * electrode.angular[sl].astype(np.float32))
        # a random voxel sample for the bisection on the mean (no index list of all AM voxels)
        flat = rng.integers(0, ids.size, size=min(ids.size, 120_000))
        in_am = ids.reshape(-1)[flat] > 0
        self._sample = (electrode.radial.reshape(-1)[flat[in_am]], self.rate.reshape(-1)[flat[in_am]])

    def _setup(self, centers_vox: np.ndarray, diameters_um: np.ndarray, nz: int, *, anisotropy: float,
               depth_gradient: float, rate_spread: float, beta: float, li_max: float, li_min: float,
               seed: int) -> np.random.Generator:
        """Per-particle rates (indexed by particle id); returns the RNG for the voxel sample."""
        if not li_min < li_max:
            raise DataError(f"li_min ({li_min}) must be below li_max ({li_max})")
        self.li_max, self.li_min = float(li_max), float(li_min)
        self.anisotropy, self.beta = float(anisotropy), float(beta)
        rng = np.random.default_rng(seed)
        n = len(diameters_um)
        depth = np.clip(centers_vox[:, 0] / max(nz - 1, 1), 0.0, 1.0)
        r_rel = diameters_um / np.median(diameters_um)
        # per-particle multiplier of tau: pi^2 / R^2 scaling, depth gradient, random spread
        rate = math.pi**2 / r_rel**2 * np.exp(depth_gradient * (0.5 - depth))
        rate *= np.exp(rate_spread * rng.standard_normal(n))
        self.particle_rate = np.concatenate([[0.0], rate]).astype(np.float32)  # index by id
        return rng

    @classmethod
    def for_stream(cls, stream: ElectrodeStream, *, li_max: float = 1.0, li_min: float = 0.38,
                   anisotropy: float = 0.8, depth_gradient: float = 1.0, rate_spread: float = 0.3,
                   beta: float = 2.0, seed: int = 0, sample_planes: int = 24) -> LithiumModel:
        """The model for an :class:`~litomo.phantom.electrode.ElectrodeStream` (no full arrays).

        Particle rates are those :class:`LithiumModel` gives the same electrode; the voxel
        sample for :meth:`progress_for_mean` comes from ``sample_planes`` single z planes
        spread evenly over the depth (so the depth gradient is sampled without bias).
        Compute Li with :meth:`li_of` on rows from :meth:`ElectrodeStream.rows`.
        """
        self = cls.__new__(cls)
        self.electrode = None  # type: ignore[assignment]
        nz = stream.shape[0]
        rng = self._setup(stream.centers_vox, stream.diameters_um, nz, anisotropy=anisotropy,
                          depth_gradient=depth_gradient, rate_spread=rate_spread, beta=beta,
                          li_max=li_max, li_min=li_min, seed=seed)
        s_all, k_all = [], []
        for z in np.unique(np.linspace(0, nz - 1, max(1, sample_planes)).round().astype(int)):
            ids, level, ang, voids = stream.paint(int(z), int(z) + 1)
            am = (ids > 0) & ~voids
            s_all.append(level[am])
            k_all.append(self.rate_of(ids[am], ang[am]))
        s, k = np.concatenate(s_all), np.concatenate(k_all)
        pick = rng.permutation(len(s))[:120_000]
        self._sample = (s[pick], k[pick])
        return self

    def rate_of(self, ids: np.ndarray, angular: np.ndarray) -> np.ndarray:
        """Per-voxel tau multiplier from particle ids and the angular (reactivity) field."""
        return self.particle_rate[ids] * np.exp(np.float32(self.anisotropy) * angular.astype(np.float32))

    def li_of(self, progress: float, ids: np.ndarray, radial: np.ndarray, angular: np.ndarray) -> np.ndarray:
        """Li content (float32, NaN outside AM) of voxels given their particle ids, normalised
        radius and angular field (e.g. rows from an ElectrodeStream)."""
        am = ids > 0
        out = np.full(ids.shape, np.nan, dtype=np.float32)
        if progress <= 0:
            out[am] = self.li_max
        else:
            out[am] = self._values(progress, radial[am], self.rate_of(ids[am], angular[am]))
        return out

    def _values(self, progress: float, s: np.ndarray, k: np.ndarray) -> np.ndarray:
        tau = np.float32(progress) * k
        u = remaining_fraction(s, tau)
        surf = np.exp(-np.float32(self.beta) * tau)  # surface excess still present
        frac = surf + (1 - surf) * u
        x = self.li_min + (self.li_max - self.li_min) * frac
        return np.clip(x, self.li_min, self.li_max).astype(np.float32)

    def li_rows(self, progress: float, z0: int, z1: int) -> np.ndarray:
        """Li content of z rows ``z0:z1`` (float32, NaN outside AM)."""
        am = self.electrode.particle_ids[z0:z1] > 0
        out = np.full(am.shape, np.nan, dtype=np.float32)
        if progress <= 0:
            out[am] = self.li_max
        else:
            out[am] = self._values(progress, self.electrode.radial[z0:z1][am], self.rate[z0:z1][am])
        return out

    def li(self, progress: float) -> np.ndarray:
        """Li content (float32, NaN outside AM) at dimensionless charge ``progress`` (D t / R50^2)."""
        nz = self.rate.shape[0]
        out = np.empty(self.rate.shape, np.float32)
        for z0 in range(0, nz, 32):
            out[z0 : z0 + 32] = self.li_rows(progress, z0, min(nz, z0 + 32))
        return out

    def progress_for_mean(self, mean_li: float) -> float:
        """The progress at which the mean Li content over AM is ``mean_li`` (bisection)."""
        if not self.li_min < mean_li <= self.li_max:
            raise DataError(f"target mean Li {mean_li} must lie in ({self.li_min}, {self.li_max}]")
        s, k = self._sample
        if mean_li >= self.li_max - 1e-9 or len(s) == 0:
            return 0.0
        lo, hi = -6.0, 3.0  # log10 progress
        for _ in range(28):
            mid = 0.5 * (lo + hi)
            if float(self._values(10**mid, s, k).mean()) > mean_li:
                lo = mid
            else:
                hi = mid
        return float(10 ** (0.5 * (lo + hi)))


def li_schedule(n_states: int, final_mean: float = 0.45, first_mean: float = 1.0) -> np.ndarray:
    """Mean Li content per state: linear from ``first_mean`` (pristine) to ``final_mean``.

    Examples
    --------
    >>> li_schedule(4).round(3).tolist()
    [1.0, 0.817, 0.633, 0.45]
    """
    if n_states < 1:
        raise DataError(f"need at least one state, got {n_states}")
    if n_states == 1:
        return np.array([first_mean])
    return np.linspace(first_mean, final_mean, n_states)

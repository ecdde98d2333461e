"""Synthetic operando Ni K-edge XANES tomography of an NMC electrode, with ground truth.

:func:`make_operando_phantom` builds a lazily evaluated dataset (:class:`OperandoPhantom`) from
:class:`OperandoSettings`: an electrode (:mod:`litomo.phantom.electrode`), its Li content per
state (:mod:`litomo.phantom.lithium`), the attenuation at each imaging energy
(:mod:`litomo.phantom.spectra`) and a known misregistration and state motion
(:mod:`litomo.phantom.motion`). Gaussian detector noise is added with
``sigma = AM edge jump / snr``. :mod:`litomo.phantom.writer` writes the whole dataset.

Everything is generated on a grid larger than the field of view (so motion brings real sample,
not padding, into view) and cropped; volumes are produced one energy at a time. Large datasets
(``size > STREAM_ABOVE_SIZE``) are generated in one pass over z: the electrode is painted row by
row from its analytic particles (:class:`~litomo.phantom.electrode.ElectrodeStream`) and every
output file is written slab by slab, with memory bounded by a few hundred rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from litomo.errors import DataError, LitomoError
from litomo.phantom.electrode import (
    DEFAULT_VOXEL_SIZE_UM,
    Electrode,
    ElectrodeStream,
    make_electrode,
)
from litomo.phantom.lithium import LithiumModel, li_schedule
from litomo.phantom.motion import Transform, chain_affine, random_axis, random_deformation
from litomo.phantom.spectra import (
    DEFAULT_ENERGIES_EV,
    ROLES,
    UINT16_COUNTS_PER_INV_UM,
    UINT16_OFFSET_PER_UM,
    am_attenuation,
    background_per_um,
)
from litomo.preprocess import bin_array
from litomo.progress import ProgressCallback
from litomo.resample.kernels import affine_rows

#: :func:`litomo.phantom.writer.write_operando_phantom` streams (bounded memory) above this size by default.
STREAM_ABOVE_SIZE = 320
_LI_CACHE_VOXELS = 320**3  # below this, one full Li volume per state is cached


@dataclass(frozen=True)
class OperandoSettings:
    """What an operando phantom is made of (see :func:`make_operando_phantom`).

    Parameters
    ----------
    size : int
        Edge length of the raw cubic field of view (voxels).
    n_states : int
        Number of electrochemical states; state I is pristine, the mean Li content then falls
        linearly to ``final_mean_li``.
    seed : int
        Random seed (bit-identical output for the same settings).
    voxel_size_um : float
        Raw voxel size (um); the default puts D50 = 4.7 um over ~38 voxels.
    energies_ev : sequence of float
        Imaging energies (eV), increasing. Three energies are the pre-edge, edge and post-edge
        roles; other counts give an energy-list dataset (roles ``e00``, ``e01``, ...). The last
        (highest) energy is the fixed reference of each state.
    snr : float
        AM edge jump divided by the Gaussian noise sigma (raw voxels); 0 disables noise.
    final_mean_li, li_pristine, li_charged : float
        Mean x_Li of the last state and the x_Li of the two reference end members.
    max_translation_vox, max_rotation_deg, deformation_vox : float
        Misregistration of the non-reference energies (uniform in +-max per axis / angle;
        deformation = largest control-point displacement). Zero disables each.
    state_translation_vox, state_rotation_deg : float
        Rigid motion of the whole sample between states (state I is the reference).
    electrode_kwargs : dict, optional
        Passed to :func:`litomo.phantom.electrode.make_electrode` / ``ElectrodeStream``.
    """

    size: int = 192
    n_states: int = 4
    seed: int = 0
    voxel_size_um: float = DEFAULT_VOXEL_SIZE_UM
    energies_ev: Sequence[float] = DEFAULT_ENERGIES_EV
    snr: float = 5.0
    final_mean_li: float = 0.45
    li_pristine: float = 1.0
    li_charged: float = 0.38
    max_translation_vox: float = 3.0
    max_rotation_deg: float = 0.8
    deformation_vox: float = 1.0
    state_translation_vox: float = 2.0
    state_rotation_deg: float = 0.3
    electrode_kwargs: dict[str, Any] | None = None


def roman(n: int) -> str:
    """State name of the n-th state (1 -> "I"), as the seed papers number charge states."""
    vals = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
            (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
    out = ""
    for v, s in vals:
        while n >= v:
            out += s
            n -= v
    return out


@dataclass
class OperandoPhantom:
    """A lazily evaluated operando dataset; volumes are produced one at a time on request.

    Use :func:`make_operando_phantom` to build one and :meth:`volume` / :meth:`truth` to get
    arrays; :func:`write_operando_phantom` writes the whole dataset.
    """

    size: int
    voxel_size_um: float
    energies_ev: tuple[float, ...]
    roles: tuple[str, ...]
    state_names: list[str]
    electrode: Electrode
    model: LithiumModel
    progress_by_state: list[float]
    state_motion: list[Transform]
    energy_transforms: list[dict[str, Transform]]
    margin: int
    snr: float
    seed: int
    li_pristine: float = 1.0
    li_charged: float = 0.38
    info: dict[str, Any] = field(default_factory=dict)
    _li_cache: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size,) * 3

    @property
    def noise_sigma_per_um(self) -> float:
        """Standard deviation of the added detector noise (1/um)."""
        jump = float(am_attenuation(self.energies_ev[-1], self.li_pristine) - am_attenuation(self.energies_ev[0], self.li_pristine))
        return abs(jump) / self.snr if self.snr > 0 else 0.0

    def li_object(self, k: int) -> np.ndarray:
        """True Li content of state ``k`` on the (extended, unmoved) object grid; NaN outside AM."""
        return self.model.li(self.progress_by_state[k])

    def li_rows(self, k: int) -> Any:
        """Li rows of state ``k``; small volumes keep one full Li volume per state (each slab
        reads a few margin rows more than it writes, so recomputing would cost ~2x), large ones
        compute rows on demand to keep memory bounded."""
        if self.electrode.labels.size <= _LI_CACHE_VOXELS:
            if self._li_cache is None or self._li_cache[0] != k:
                self._li_cache = None
                self._li_cache = (k, self.model.li(self.progress_by_state[k]))
            full = self._li_cache[1]
            return lambda a, b: full[a:b]
        return lambda a, b: self.model.li_rows(self.progress_by_state[k], a, b)

    def _mu_rows(self, k: int, energy_ev: float) -> Any:
        """A function giving the attenuation (1/um) of object rows ``a:b`` at ``energy_ev``."""
        bg = background_per_um(energy_ev)
        lut = np.array([bg["pore"], 0.0, bg["cbd"]], dtype=np.float32)
        li_rows = self.li_rows(k)

        def rows(a: int, b: int) -> np.ndarray:
            labels = self.electrode.labels[a:b]
            mu = lut[labels]
            am = labels == 1
            li = li_rows(a, b)
            mu[am] = am_attenuation(energy_ev, li[am], li_pristine=self.li_pristine, li_charged=self.li_charged)
            return mu

        return rows

    def chain(self, k: int, role: str | None) -> list[Transform]:
        """The non-identity transforms from the object grid to state ``k``'s volume at ``role``
        (None: its post-edge reference grid)."""
        chain = []
        if role is not None:
            chain.append(self.energy_transforms[k][role])
        chain.append(self.state_motion[k])
        return [t for t in chain if not t.is_identity]

    def _resample(self, objs: list[tuple[Any, int, Any]], chain: list[Transform],
                  slab: int | None = None) -> list[np.ndarray]:
        """Resample object-grid data ``(source, order, dtype)`` through ``chain`` onto the field
        of view, z-slab by z-slab, in a few threads (scipy.ndimage releases the GIL).

        ``source`` is an array or a function ``rows(a, b)`` returning object rows ``a:b``; only
        the rows a slab can reach are produced, so nothing but the outputs needs to exist as a
        full volume. ``order`` 0 rounds coordinates and indexes (exact nearest neighbour, much
        faster than a spline call); ``order`` 1 is trilinear (both compiled,
        :func:`litomo.resample.kernels.affine_rows`).
        """
        n, m = self.size, self.margin
        ext = self.electrode.labels.shape[0]
        if slab is None:
            slab = 16 if n <= 256 else 48  # big volumes: amortise the margin rows each slab reads
        outs = [np.empty(self.shape, dtype=dt) for _, _, dt in objs]

        def rows(source: Any, a: int, b: int) -> np.ndarray:
            return source(a, b) if callable(source) else source[a:b]

        def work(z0: int) -> None:
            z1 = min(n, z0 + slab)
            if not chain:
                for out, (src, _, _) in zip(outs, objs, strict=True):
                    out[z0:z1] = rows(src, m + z0, m + z1)[:, m : m + n, m : m + n]
                return
            a, b = row_range(self, chain, z0, z1, ext)
            mat, vec, lin = chain_affine(n, chain)
            samples = chain[0].deformation_samples(self.shape)
            for out, (src, order, _) in zip(outs, objs, strict=True):
                affine_rows(rows(src, a, b), a, z0, z1, n, m, mat, vec, lin, samples, order, out[z0:z1])

        starts = list(range(0, n, slab))
        workers = max(1, min(4, os.cpu_count() or 1))
        if workers == 1 or len(starts) == 1:
            for z0 in starts:
                work(z0)
        else:
            with ThreadPoolExecutor(workers) as ex:
                list(ex.map(work, starts))
        return outs

    def volume(self, k: int, role: str, *, dtype: str = "float32") -> np.ndarray:
        """The attenuation volume of state ``k`` at energy ``role`` (float32 1/um, or uint16 counts)."""
        e = self.energies_ev[self.roles.index(role)]
        energy_t = None if role == self.roles[-1] else role
        (out,) = self._resample([(self._mu_rows(k, e), 1, np.float32)], self.chain(k, energy_t))
        sigma = self.noise_sigma_per_um
        if sigma > 0:
            rng = np.random.default_rng([self.seed, 7919, k, self.roles.index(role)])
            for z in range(out.shape[0]):  # per slice: bounded memory, fixed RNG order
                out[z] += np.float32(sigma) * rng.standard_normal(out.shape[1:], dtype=np.float32)
        if dtype == "uint16":
            counts = (out + np.float32(UINT16_OFFSET_PER_UM)) * np.float32(UINT16_COUNTS_PER_INV_UM)
            return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
        if dtype != "float32":
            raise DataError(f"dtype must be 'float32' or 'uint16', got {dtype!r}")
        return out

    def truth_array(self, k: int, key: str) -> np.ndarray:
        """One truth volume of state ``k`` on that state's post-edge grid: ``"li"`` (float32, NaN
        outside AM), ``"labels"`` (uint8) or ``"particles"`` (int32)."""
        chain = self.chain(k, None)
        if key == "li":
            (li,) = self._resample([(self.li_rows(k), 0, np.float32)], chain)
            return li
        if key == "labels":
            return self._resample([(self.electrode.labels, 0, np.uint8)], chain)[0]
        if key == "particles":
            return self._resample([(self.electrode.particle_ids, 0, np.int32)], chain)[0]
        raise ValueError(f"key must be li, labels or particles, got {key!r}")

    def truth(self, k: int) -> dict[str, np.ndarray]:
        """True ``li`` (float32, NaN outside AM), ``labels`` (uint8), ``particles`` (int32) of state
        ``k`` on that state's post-edge grid (nearest-neighbour resampling, so they agree)."""
        chain = self.chain(k, None)
        labels, particles, li = self._resample(
            [(self.electrode.labels, 0, np.uint8), (self.electrode.particle_ids, 0, np.int32),
             (self.li_rows(k), 0, np.float32)], chain)
        return {"li": li, "labels": labels, "particles": particles}


def _plan(s: OperandoSettings) -> tuple[tuple[float, ...], tuple[str, ...], list[str], list[Transform],
                                       list[dict[str, Transform]], int]:
    """Validate the arguments and draw the transforms; returns energies, roles, state names,
    state motions, energy transforms and the margin of the object grid (voxels)."""
    size, n_states, seed, energies_ev = s.size, s.n_states, s.seed, s.energies_ev
    state_translation_vox, state_rotation_deg = s.state_translation_vox, s.state_rotation_deg
    max_translation_vox, max_rotation_deg, deformation_vox = s.max_translation_vox, s.max_rotation_deg, s.deformation_vox
    energies = tuple(float(e) for e in energies_ev)
    if len(energies) < 2 or any(b <= a for a, b in zip(energies, energies[1:], strict=False)):
        raise DataError(f"energies_ev must be at least two strictly increasing energies, got {energies}")
    if min(energies) < 100:
        raise DataError(f"energies must be in eV; {min(energies):g} looks like keV")
    if size < 16:
        raise DataError(f"size must be at least 16 voxels, got {size}")
    if n_states < 1:
        raise DataError(f"n_states must be >= 1, got {n_states}")
    roles = ROLES if len(energies) == 3 else tuple(f"e{i:02d}" for i in range(len(energies)))
    rng = np.random.default_rng([seed, 1])
    names = [roman(i + 1) for i in range(n_states)]

    motions, energy_t = [], []
    for k in range(n_states):
        if k == 0 or (state_translation_vox == 0 and state_rotation_deg == 0):
            motions.append(Transform())
        else:
            motions.append(Transform(
                translation_vox=tuple(float(v) for v in rng.uniform(-1, 1, 3) * state_translation_vox),
                rotation_deg=float(rng.uniform(-1, 1) * state_rotation_deg), rotation_axis=random_axis(rng)))
        per = {}
        for role in roles[:-1]:
            control, amp = (random_deformation(rng, deformation_vox) if deformation_vox > 0 else (None, 0.0))
            per[role] = Transform(
                translation_vox=tuple(float(v) for v in rng.uniform(-1, 1, 3) * max_translation_vox),
                rotation_deg=float(rng.uniform(-1, 1) * max_rotation_deg), rotation_axis=random_axis(rng),
                control=control, deformation_max_vox=amp)
        per[roles[-1]] = Transform()
        energy_t.append(per)
    # margin: the farthest any output voxel can sample outside the field of view
    half_diag = size * math.sqrt(3) / 2
    reach = 0.0
    for k in range(n_states):
        for role in roles:
            te, tk = energy_t[k][role], motions[k]
            reach = max(reach, sum(
                float(np.linalg.norm(t.translation_vox)) + math.radians(abs(t.rotation_deg)) * half_diag
                + 1.2 * t.deformation_max_vox for t in (te, tk)))
    margin = int(math.ceil(reach)) + 2
    return energies, roles, names, motions, energy_t, margin


def build_operando_phantom(settings: OperandoSettings, *, streamed: bool = False,
                           progress: ProgressCallback | None = None) -> OperandoPhantom:
    """The phantom of ``settings`` (lazy: volumes are computed on request).

    With ``streamed`` the electrode is an :class:`ElectrodeStream` (same particles, transforms
    and Li physics; nothing held as a full volume), which only the streamed writer
    (:func:`litomo.phantom.writer.write_operando_phantom` with ``streamed=True``) can render.

    Examples
    --------
    >>> ph = build_operando_phantom(OperandoSettings(size=48, n_states=1, seed=1), streamed=True)
    >>> ph.electrode.shape[0] > 48
    True
    """
    s = settings
    energies, roles, names, motions, energy_t, margin = _plan(s)
    ext = s.size + 2 * margin
    ekw = dict(s.electrode_kwargs or {})
    if streamed:
        electrode = ElectrodeStream(ext, voxel_size_um=s.voxel_size_um, seed=s.seed, **ekw)
        model = LithiumModel.for_stream(electrode, li_max=s.li_pristine, li_min=s.li_charged, seed=s.seed)
    else:
        electrode = make_electrode(ext, voxel_size_um=s.voxel_size_um, seed=s.seed, progress=progress, **ekw)
        model = LithiumModel(electrode, li_max=s.li_pristine, li_min=s.li_charged, seed=s.seed)
        # the angular field is folded into the model's rates; drop it to save a full volume
        electrode.angular = np.zeros((1, 1, 1), np.float32)
    targets = li_schedule(s.n_states, s.final_mean_li, s.li_pristine)
    prog = [model.progress_for_mean(float(t)) for t in targets]
    info = {"target_mean_li": [float(t) for t in targets], "electrode": electrode.info}
    if streamed:
        info["streamed"] = True
    return OperandoPhantom(
        size=s.size, voxel_size_um=float(s.voxel_size_um), energies_ev=energies, roles=roles,
        state_names=names, electrode=electrode, model=model, progress_by_state=prog,  # type: ignore[arg-type]
        state_motion=motions, energy_transforms=energy_t, margin=margin, snr=float(s.snr), seed=s.seed,
        li_pristine=s.li_pristine, li_charged=s.li_charged, info=info)


def make_operando_phantom(size: int = 192, n_states: int = 4, *, progress: ProgressCallback | None = None,
                          **settings: Any) -> OperandoPhantom:
    """An in-memory phantom: ``OperandoSettings(size=size, n_states=n_states, **settings)``.

    Examples
    --------
    >>> ph = make_operando_phantom(48, 2, seed=1)
    >>> ph.volume(0, "edge").shape
    (48, 48, 48)
    """
    return build_operando_phantom(OperandoSettings(size=size, n_states=n_states, **settings), progress=progress)


def make_streamed_phantom(size: int, n_states: int = 1, **settings: Any) -> OperandoPhantom:
    """A streamed phantom (:func:`build_operando_phantom` with ``streamed=True``) of the same settings."""
    return build_operando_phantom(OperandoSettings(size=size, n_states=n_states, **settings), streamed=True)


def truth_on_binned_grid(li: np.ndarray, am_mask: np.ndarray, factor: int | Sequence[int],
                         min_am_fraction: float = 0.5) -> np.ndarray:
    """Block-mean true Li content on the binned grid (what a binned Li map should show).

    Each block's value is the mean ``x_Li`` over its AM voxels (the edge jump comes from AM
    only, so a binned Li map measures this AM-weighted mean); NaN where less than
    ``min_am_fraction`` of the block is AM. Edges that do not fill a block are cropped, as in
    :func:`litomo.preprocess.bin_array`.

    Examples
    --------
    >>> li = np.full((4, 4, 4), 0.5, np.float32); am = np.ones((4, 4, 4), bool); am[:2] = False
    >>> truth_on_binned_grid(li, am, 2)[:, 0, 0].tolist()
    [nan, 0.5]
    """
    am = np.asarray(am_mask, dtype=bool)
    if li.shape != am.shape:
        raise DataError(f"li {li.shape} and am_mask {am.shape} differ in shape")
    filled = np.where(am, np.nan_to_num(li, nan=0.0), 0).astype(np.float32)
    am_frac = bin_array(am.astype(np.float32), factor)
    li_sum = bin_array(filled, factor)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = li_sum / am_frac
    out[~(am_frac >= min_am_fraction) | (am_frac == 0)] = np.nan
    return out.astype(np.float32)


def row_range(ph: OperandoPhantom, chain: list[Transform], z0: int, z1: int, ext: int) -> tuple[int, int]:
    """Object rows ``a:b`` that output slab ``z0:z1`` samples through ``chain`` (with the
    linear-interpolation neighbour and a bound on the deformation)."""
    n, m = ph.size, ph.margin
    if not chain:
        return m + z0, m + z1
    mat, vec, lin = chain_affine(n, chain)
    corners = np.array([[z, y, x] for z in (z0, z1 - 1) for y in (0, n - 1) for x in (0, n - 1)], float)
    rows = corners @ mat[0] + vec[0] + m
    slack = 0.0
    if chain[0].control is not None:  # the sampled B-spline stays within ~1.5x its control maximum
        slack = float(np.abs(lin[0]).sum()) * (2.0 * chain[0].deformation_max_vox + 0.5)
    return max(0, int(math.floor(rows.min() - slack)) - 1), min(ext, int(math.ceil(rows.max() + slack)) + 2)


@dataclass(frozen=True)
class ThreeEnergyState:
    """One noise-free, registered three-energy state with its truth (see :func:`operando_state`)."""

    mu: list[np.ndarray]
    li: np.ndarray
    particles: np.ndarray
    voxel_size_um: float
    energies_ev: tuple[float, ...]
    r_pristine: float
    r_charged: float
    li_pristine: float
    li_charged: float


def operando_state(size: int = 40, *, state: int = 1, n_states: int = 2, seed: int = 0,
                   voxel_size_um: float = 0.25) -> ThreeEnergyState:
    """One noise-free, registered state of :func:`make_operando_phantom` (the dead-angle study's input).

    ``mu`` holds the pre-edge, edge and post-edge volumes (1/um), ``li`` is NaN outside AM; the
    end-member edge ratios ``r_pristine``, ``r_charged`` come from the phantom's own AM attenuation
    model (the calibration standards of this synthetic beamline), so a study isolates the
    reconstruction error.

    Examples
    --------
    >>> st = operando_state(24, seed=1)
    >>> len(st.mu), st.li.shape, st.r_pristine > st.r_charged  # oxidised Ni: edge at higher energy
    (3, (24, 24, 24), True)
    """
    if not 0 <= state < n_states:
        raise LitomoError(f"state must be in [0, {n_states - 1}], got {state}")
    ph = make_operando_phantom(size, n_states, seed=seed, voxel_size_um=voxel_size_um, snr=0.0,
                               max_translation_vox=0.0, max_rotation_deg=0.0, deformation_vox=0.0,
                               state_translation_vox=0.0, state_rotation_deg=0.0)
    if len(ph.roles) != 3:
        raise LitomoError("the dead-angle study needs a three-energy phantom")
    truth = ph.truth(state)
    e = ph.energies_ev

    def ratio(li: float) -> float:
        a = [float(am_attenuation(x, li, li_pristine=ph.li_pristine, li_charged=ph.li_charged)) for x in e]
        return (a[1] - a[0]) / (a[2] - a[0])

    return ThreeEnergyState(
        mu=[ph.volume(state, role) for role in ph.roles], li=truth["li"], particles=truth["particles"],
        voxel_size_um=ph.voxel_size_um, energies_ev=e, r_pristine=ratio(ph.li_pristine),
        r_charged=ratio(ph.li_charged), li_pristine=ph.li_pristine, li_charged=ph.li_charged)

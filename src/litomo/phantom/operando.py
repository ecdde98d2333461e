"""Synthetic operando Ni K-edge XANES tomography of an NMC electrode, with ground truth.

The attenuation volumes are computed from the **real** Ni K-edge reference spectra bundled in
``litomo/data`` (pyxas NiO = pristine / Li-rich end member, LiNiO2 = charged end member):

- AM: ``mu(E, x) = AM_EDGE_JUMP_PER_UM * mu_norm(E, x) + AM_BACKGROUND_PER_UM * (E / 8333)^-2.8``
  where ``mu_norm(E, x)`` interpolates linearly between the pristine (``x = li_pristine``) and
  charged (``x = li_charged``) normalised spectra;
- CBD and electrolyte-filled pores: low, smooth photo-absorption ``~ E^-3``.

Values are linear attenuation coefficients in 1/um (NMC811 at 4.7 g/cm^3: ~0.05/um below the
edge and a Ni edge jump of ~0.06/um; carbon-binder and LiPF6/carbonate electrolyte ~1e-3/um).
Gaussian detector noise is added with ``sigma = AM edge jump / snr``.

Because the AM background falls with energy (``E^-2.8``) while the reference spectra are
normalised (flat background), the edge ratio ``R = (mu_edge - mu_pre) / (mu_post - mu_pre)`` of
pure AM is slightly larger than the same ratio evaluated on the references (about +0.03 at the
default energies, i.e. +0.04 in calibrated ``x_Li``). This is a real systematic error of the
three-energy method; ``truth.json`` records both ratios (``edge_ratio``) so a pipeline test can
tell method bias from processing errors.

Geometry. The post-edge volume of each state is the fixed reference of that state; the other
energies are misregistered relative to it by a known rigid transform (translation of a few
voxels, rotation below 1 degree) plus a smooth B-spline deformation of about a voxel. The whole
sample also moves rigidly between states (for particle tracking tests). The convention, also
written to ``truth/transforms.json``::

    volume_e(x) = post_edge(c + R^T (x - c - t) + u(x))        (same state)
    post_edge_k(x) = post_edge_I(c + R_k^T (x - c - t_k))       (state motion)

with ``c`` the volume centre, ``t`` = ``translation_vox`` (z, y, x), ``R`` the rotation by
``rotation_deg`` about ``rotation_axis`` and ``u`` the deformation field (voxels). For a pure
translation the content of the moving volume is shifted by ``+t``.

Everything is generated on a grid larger than the field of view (so motion brings real sample,
not padding, into view) and cropped; volumes are produced one energy at a time. Large datasets
(``size > STREAM_ABOVE_SIZE``) are generated in one pass over z: the electrode is painted row by
row from its analytic particles (:class:`~litomo.phantom.electrode.ElectrodeStream`) and every
output file is written slab by slab, with memory bounded by a few hundred rows.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import io
import json
import logging
import math
import os
import queue
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from litomo.errors import DataError, LitomoError
from litomo.io.atomic import write_text_atomic
from litomo.phantom.electrode import DEFAULT_VOXEL_SIZE_UM, Electrode, make_electrode
from litomo.phantom.lithium import LithiumModel, li_schedule
from litomo.progress import ProgressCallback
from litomo.xanes.threeenergy import class_fractions

log = logging.getLogger(__name__)

DEFAULT_ENERGIES_EV: tuple[float, float, float] = (8330.0, 8345.0, 8430.0)
ROLES: tuple[str, str, str] = ("pre_edge", "edge", "post_edge")
E_REF_EV = 8333.0
AM_EDGE_JUMP_PER_UM = 0.064
AM_BACKGROUND_PER_UM = 0.047
#: photo-absorption of the NMC matrix (O, Mn, Co, Li and Ni below its K edge) falls as ~E^-2.8
#: near 8.3 keV; the manifest passes the same exponent to the map's background correction
AM_BACKGROUND_EXPONENT = 2.8
CBD_PER_UM = 0.0012
PORE_PER_UM = 0.0008
#: uint16 output: ``counts = (mu_per_um + UINT16_OFFSET_PER_UM) * UINT16_COUNTS_PER_INV_UM``.
#: The edge ratio R = (edge - pre) / (post - pre) is invariant to this common affine map.
UINT16_OFFSET_PER_UM = 0.05
UINT16_COUNTS_PER_INV_UM = 250_000.0

#: :func:`write_operando_phantom` streams (bounded memory) above this size by default.
STREAM_ABOVE_SIZE = 320
_LI_CACHE_VOXELS = 320**3  # below this, one full Li volume per state is cached
_REFERENCE_FILES = {"pristine": "ni_kedge_NiO.csv", "charged": "ni_kedge_LiNiO2.csv"}


# --------------------------------------------------------------------------- spectra

def reference_spectrum(which: str) -> tuple[np.ndarray, np.ndarray]:
    """The bundled normalised Ni K-edge spectrum ``(energy_ev, mu)``: ``"pristine"`` or ``"charged"``.

    Examples
    --------
    >>> e, mu = reference_spectrum("pristine")
    >>> float(e[0]), float(e[-1])
    (8200.0, 9000.0)
    """
    if which not in _REFERENCE_FILES:
        raise LitomoError(f"reference must be 'pristine' or 'charged', got {which!r}")
    e, mu = _load_reference(which)
    return e.copy(), mu.copy()


@functools.lru_cache(maxsize=2)
def _load_reference(which: str) -> tuple[np.ndarray, np.ndarray]:
    text = importlib.resources.files("litomo.data").joinpath(_REFERENCE_FILES[which]).read_text()
    rows = [r for r in csv.reader(io.StringIO(text)) if r and not r[0].startswith("#")]
    data = np.array([[float(v) for v in r] for r in rows[1:]])
    return data[:, 0], data[:, 1]


def normalized_mu(energy_ev: float, li: Any, *, li_pristine: float = 1.0, li_charged: float = 0.38) -> Any:
    """Normalised absorption at ``energy_ev`` for Li content ``li`` (linear mix of the references).

    Examples
    --------
    >>> e, mu = reference_spectrum("charged")
    >>> bool(np.isclose(normalized_mu(8345.0, 0.38), np.interp(8345.0, e, mu)))
    True
    """
    ep, mp = _load_reference("pristine")
    ec, mc = _load_reference("charged")
    m_p = np.float32(np.interp(energy_ev, ep, mp))
    m_c = np.float32(np.interp(energy_ev, ec, mc))
    w = (np.asarray(li, dtype=np.float32) - np.float32(li_charged)) / np.float32(li_pristine - li_charged)
    return m_c + w * (m_p - m_c)


def background_per_um(energy_ev: float) -> dict[str, float]:
    """Non-resonant attenuation (1/um) of the three phases at ``energy_ev`` (AM without Ni edge)."""
    r = energy_ev / E_REF_EV
    return {"am": AM_BACKGROUND_PER_UM * r**-AM_BACKGROUND_EXPONENT, "cbd": CBD_PER_UM * r**-3,
            "pore": PORE_PER_UM * r**-3}


def am_attenuation(energy_ev: float, li: Any, *, li_pristine: float = 1.0, li_charged: float = 0.38) -> Any:
    """Linear attenuation (1/um) of NMC with Li content ``li`` at ``energy_ev``."""
    bg = background_per_um(energy_ev)["am"]
    mu = normalized_mu(energy_ev, li, li_pristine=li_pristine, li_charged=li_charged)
    return np.float32(AM_EDGE_JUMP_PER_UM) * mu + np.float32(bg)


# --------------------------------------------------------------------------- transforms

@dataclass
class Transform:
    """Rigid transform + optional smooth deformation; see the module docstring for the convention."""

    translation_vox: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: float = 0.0
    rotation_axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    control: np.ndarray | None = None  # (3, n, n, n) displacement (voxels) on a coarse grid
    deformation_max_vox: float = 0.0

    @property
    def matrix(self) -> np.ndarray:
        a = np.asarray(self.rotation_axis, float)
        a = a / np.linalg.norm(a)
        th = math.radians(self.rotation_deg)
        k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        return np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)

    @property
    def is_identity(self) -> bool:
        return not any(self.translation_vox) and self.rotation_deg == 0 and self.control is None

    def to_json(self) -> dict[str, Any]:
        return {
            "translation_vox": [float(v) for v in self.translation_vox],
            "rotation_deg": float(self.rotation_deg),
            "rotation_axis": [float(v) for v in self.rotation_axis],
            "deformation_max_vox": float(self.deformation_max_vox),
        }

    def _weights(self, n_out: int, n_coarse: int) -> np.ndarray:
        """(n_coarse, n_out) linear-interpolation weights from a coarse axis to the full axis."""
        pos = np.linspace(0, n_coarse - 1, n_out)
        i0 = np.clip(np.floor(pos).astype(int), 0, n_coarse - 2)
        w1 = pos - i0
        w = np.zeros((n_coarse, n_out), np.float32)
        w[i0, np.arange(n_out)] = 1 - w1
        w[i0 + 1, np.arange(n_out)] += w1
        return w

    def displacement(self, z0: int, z1: int, shape: Sequence[int]) -> np.ndarray:
        """The deformation field ``u`` (3, z1 - z0, ny, nx) in voxels on the regular output grid.

        The cubic B-spline through the control points is sampled on a coarse grid (at most 33
        points per axis; the field is smooth on the control-point scale) and interpolated
        linearly and separably with matrix products, far cheaper than a per-voxel spline.
        """
        if self.control is None:
            return np.zeros((3, z1 - z0, *shape[1:]), np.float32)
        key = tuple(int(s) for s in shape)
        cache = getattr(self, "_field_cache", None)
        if cache is None or cache[0] != key:
            n = self.control.shape[1]
            m = [min(33, max(2, int(s))) for s in key]
            grid = np.meshgrid(*[np.linspace(0, n - 1, mi) for mi in m], indexing="ij")
            f = np.stack([ndimage.map_coordinates(self.control[i], grid, order=3, mode="nearest")
                          for i in range(3)]).astype(np.float32)
            ws = [self._weights(s, mi) for s, mi in zip(key, m, strict=True)]
            self._field_cache = (key, f, ws)
        _, f, (wz, wy, wx) = self._field_cache
        out = np.empty((3, z1 - z0, *key[1:]), np.float32)
        for i in range(3):
            a = np.tensordot(wz[:, z0:z1].T, f[i], axes=1)  # (nz, my, mx)
            a = a @ wx  # (nz, my, nx)
            out[i] = np.einsum("zyx,yY->zYx", a, wy, optimize=True)
        return out

    def pull(self, pts: np.ndarray, center: np.ndarray, shape: Sequence[int],
             u: np.ndarray | None = None) -> np.ndarray:
        """Map points ``(3, ...)`` of this transform's output frame to its input frame.

        ``u`` is the deformation at ``pts`` (from :meth:`displacement` when ``pts`` is the
        regular grid); without it the deformation is ignored.
        """
        d = pts - (center + np.asarray(self.translation_vox))[(slice(None),) + (None,) * (pts.ndim - 1)]
        out = np.tensordot(self.matrix.T, d, axes=1) + center[(slice(None),) + (None,) * (pts.ndim - 1)]
        if u is not None:
            out += u
        return out


def _random_axis(rng: np.random.Generator) -> tuple[float, float, float]:
    a = rng.normal(size=3)
    return tuple(float(v) for v in a / np.linalg.norm(a))  # type: ignore[return-value]


def _deformation(rng: np.random.Generator, amplitude_vox: float, n: int = 5) -> tuple[np.ndarray, float]:
    c = rng.normal(size=(3, n, n, n))
    c *= amplitude_vox / np.abs(c).max()
    return c, float(amplitude_vox)


# --------------------------------------------------------------------------- the phantom

def _roman(n: int) -> str:
    vals = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
            (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
    out = ""
    for v, s in vals:
        while n >= v:
            out += s
            n -= v
    return out


def _chain_affine(size: int, chain: list[Transform]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chain's rigid parts as one affine map ``x -> M x + v`` and the linear map ``L`` that
    carries the first transform's deformation through the later rotations."""
    center = np.full(3, (size - 1) / 2.0)
    mat, vec, lin = np.eye(3), np.zeros(3), np.eye(3)
    for j, t in enumerate(chain):
        if j > 0 and t.control is not None:
            raise AssertionError("only the first transform of a chain may be deformable")
        rt = t.matrix.T
        mat, vec = rt @ mat, rt @ vec + center - rt @ (center + np.asarray(t.translation_vox))
        lin = lin if j == 0 else rt @ lin
    return mat, vec, lin


def _slab_points(size: int, margin: int, z0: int, z1: int, chain: list[Transform]) -> np.ndarray:
    """Object-grid coordinates (3, z1 - z0, n, n) sampled by output slab ``z0:z1``.

    The chain's rigid parts are composed into one affine map ``M x + v`` (evaluated by
    broadcasting, no per-point matrix products); the first transform's deformation is
    carried through the later rotations as ``L u(x)``.
    """
    n = size
    mat, vec, lin = _chain_affine(size, chain)
    axes = (np.arange(z0, z1, dtype=np.float64)[:, None, None], np.arange(n, dtype=np.float64)[None, :, None],
            np.arange(n, dtype=np.float64)[None, None, :])
    pts = np.empty((3, z1 - z0, n, n), np.float64)
    for i in range(3):
        pts[i] = mat[i, 0] * axes[0] + mat[i, 1] * axes[1] + mat[i, 2] * axes[2] + (vec[i] + margin)
    if chain and chain[0].control is not None:
        u = chain[0].displacement(z0, z1, (size,) * 3)
        for i in range(3):
            for j in range(3):
                if lin[i, j] != 0:
                    pts[i] += lin[i, j] * u[j]
    return pts


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

    def _li_rows(self, k: int) -> Any:
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
        li_rows = self._li_rows(k)

        def rows(a: int, b: int) -> np.ndarray:
            labels = self.electrode.labels[a:b]
            mu = lut[labels]
            am = labels == 1
            li = li_rows(a, b)
            mu[am] = am_attenuation(energy_ev, li[am], li_pristine=self.li_pristine, li_charged=self.li_charged)
            return mu

        return rows

    def _chain(self, k: int, role: str | None) -> list[Transform]:
        chain = []
        if role is not None:
            chain.append(self.energy_transforms[k][role])
        chain.append(self.state_motion[k])
        return [t for t in chain if not t.is_identity]

    def _slab_points(self, z0: int, z1: int, chain: list[Transform]) -> np.ndarray:
        """Object-grid coordinates (3, z1 - z0, n, n) sampled by output slab ``z0:z1``."""
        return _slab_points(self.size, self.margin, z0, z1, chain)

    def _resample(self, objs: list[tuple[Any, int, Any]], chain: list[Transform],
                  slab: int | None = None) -> list[np.ndarray]:
        """Resample object-grid data ``(source, order, dtype)`` through ``chain`` onto the field
        of view, z-slab by z-slab, in a few threads (scipy.ndimage releases the GIL).

        ``source`` is an array or a function ``rows(a, b)`` returning object rows ``a:b``; only
        the rows a slab can reach are produced, so nothing but the outputs needs to exist as a
        full volume. ``order`` 0 rounds coordinates and indexes (exact nearest neighbour, much
        faster than a spline call); ``order`` 1 uses ``map_coordinates``.
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
            if _resample_rows_jit is not None:  # compiled: no coordinate arrays
                a, b = _row_range(self, chain, z0, z1, ext)
                mat, vec, lin = _chain_affine(n, chain)
                field = _deformation_samples(chain[0], self.shape)
                for out, (src, order, _) in zip(outs, objs, strict=True):
                    _resample_rows_jit(rows(src, a, b), a, z0, z1, n, m, mat, vec, lin, field, order, out[z0:z1])
                return
            pts = self._slab_points(z0, z1, chain)
            a = int(max(0, np.floor(pts[0].min()) - 1))
            b = int(min(ext, np.ceil(pts[0].max()) + 2))
            pts[0] -= a
            flat = None
            for out, (src, order, dt) in zip(outs, objs, strict=True):
                block = rows(src, a, b)
                if order == 0:
                    if flat is None:
                        idx = [np.clip(np.rint(pts[i]), 0, block.shape[i] - 1).astype(np.intp) for i in range(3)]
                        flat = np.ravel_multi_index(idx, block.shape)
                    out[z0:z1] = block.reshape(-1)[flat]
                else:
                    out[z0:z1] = ndimage.map_coordinates(block, pts, order=order, mode="nearest", output=dt)

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
        (out,) = self._resample([(self._mu_rows(k, e), 1, np.float32)], self._chain(k, energy_t))
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
        chain = self._chain(k, None)
        if key == "li":
            (li,) = self._resample([(self._li_rows(k), 0, np.float32)], chain)
            return li
        if key == "labels":
            return self._resample([(self.electrode.labels, 0, np.uint8)], chain)[0]
        if key == "particles":
            return self._resample([(self.electrode.particle_ids, 0, np.int32)], chain)[0]
        raise ValueError(f"key must be li, labels or particles, got {key!r}")

    def truth(self, k: int) -> dict[str, np.ndarray]:
        """True ``li`` (float32, NaN outside AM), ``labels`` (uint8), ``particles`` (int32) of state
        ``k`` on that state's post-edge grid (nearest-neighbour resampling, so they agree)."""
        chain = self._chain(k, None)
        labels, particles, li = self._resample(
            [(self.electrode.labels, 0, np.uint8), (self.electrode.particle_ids, 0, np.int32),
             (self._li_rows(k), 0, np.float32)], chain)
        return {"li": li, "labels": labels, "particles": particles}


def _plan(size: int, n_states: int, seed: int, energies_ev: Sequence[float], max_translation_vox: float,
          max_rotation_deg: float, deformation_vox: float, state_translation_vox: float,
          state_rotation_deg: float) -> tuple[tuple[float, ...], tuple[str, ...], list[str], list[Transform],
                                              list[dict[str, Transform]], int]:
    """Validate the arguments and draw the transforms; returns energies, roles, state names,
    state motions, energy transforms and the margin of the object grid (voxels)."""
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
    names = [_roman(i + 1) for i in range(n_states)]

    motions, energy_t = [], []
    for k in range(n_states):
        if k == 0 or (state_translation_vox == 0 and state_rotation_deg == 0):
            motions.append(Transform())
        else:
            motions.append(Transform(
                translation_vox=tuple(float(v) for v in rng.uniform(-1, 1, 3) * state_translation_vox),
                rotation_deg=float(rng.uniform(-1, 1) * state_rotation_deg), rotation_axis=_random_axis(rng)))
        per = {}
        for role in roles[:-1]:
            control, amp = (_deformation(rng, deformation_vox) if deformation_vox > 0 else (None, 0.0))
            per[role] = Transform(
                translation_vox=tuple(float(v) for v in rng.uniform(-1, 1, 3) * max_translation_vox),
                rotation_deg=float(rng.uniform(-1, 1) * max_rotation_deg), rotation_axis=_random_axis(rng),
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


def make_operando_phantom(
    size: int = 192,
    n_states: int = 4,
    *,
    seed: int = 0,
    voxel_size_um: float = DEFAULT_VOXEL_SIZE_UM,
    energies_ev: Sequence[float] = DEFAULT_ENERGIES_EV,
    snr: float = 5.0,
    final_mean_li: float = 0.45,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
    max_translation_vox: float = 3.0,
    max_rotation_deg: float = 0.8,
    deformation_vox: float = 1.0,
    state_translation_vox: float = 2.0,
    state_rotation_deg: float = 0.3,
    electrode_kwargs: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> OperandoPhantom:
    """Build a synthetic operando XANES dataset (lazy: volumes are computed on request).

    Parameters
    ----------
    size : int
        Edge length of the raw cubic field of view (voxels).
    n_states : int
        Number of electrochemical states; state I is pristine, the mean Li content then falls
        linearly to ``final_mean_li``.
    seed : int
        Random seed (bit-identical output for the same arguments).
    voxel_size_um : float
        Raw voxel size (um); the default puts D50 = 4.7 um over ~38 voxels.
    energies_ev : sequence of float
        Imaging energies (eV), increasing. Three energies are the pre-edge, edge and post-edge
        roles; other counts give an energy-list dataset (roles ``e00``, ``e01``, ...). The last
        (highest) energy is the fixed reference of each state.
    snr : float
        AM edge jump divided by the Gaussian noise sigma (raw voxels); 0 disables noise.
    max_translation_vox, max_rotation_deg, deformation_vox : float
        Misregistration of the non-reference energies (uniform in +-max per axis / angle;
        deformation = largest control-point displacement). Zero disables each.
    state_translation_vox, state_rotation_deg : float
        Rigid motion of the whole sample between states (state I is the reference).

    Examples
    --------
    >>> ph = make_operando_phantom(48, 2, seed=1)
    >>> ph.volume(0, "edge").shape
    (48, 48, 48)
    """
    energies, roles, names, motions, energy_t, margin = _plan(
        size, n_states, seed, energies_ev, max_translation_vox, max_rotation_deg, deformation_vox,
        state_translation_vox, state_rotation_deg)
    ext = size + 2 * margin
    ekw = dict(electrode_kwargs or {})
    electrode = make_electrode(ext, voxel_size_um=voxel_size_um, seed=seed, progress=progress, **ekw)
    model = LithiumModel(electrode, li_max=li_pristine, li_min=li_charged, seed=seed)
    # the angular field is folded into the model's rates; drop it to save a full volume
    electrode.angular = np.zeros((1, 1, 1), np.float32)
    targets = li_schedule(n_states, final_mean_li, li_pristine)
    prog = [model.progress_for_mean(float(t)) for t in targets]
    return OperandoPhantom(
        size=size, voxel_size_um=float(voxel_size_um), energies_ev=energies, roles=roles,
        state_names=names, electrode=electrode, model=model, progress_by_state=prog,
        state_motion=motions, energy_transforms=energy_t, margin=margin, snr=float(snr), seed=seed,
        li_pristine=li_pristine, li_charged=li_charged,
        info={"target_mean_li": [float(t) for t in targets], "electrode": electrode.info},
    )


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
    from litomo.preprocess import bin_array

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


# --------------------------------------------------------------------------- writing

def _edge_ratios(ph: OperandoPhantom) -> dict[str, float]:
    """R of pure AM (with its background slope) and of the normalised references, at both ends."""
    e = ph.energies_ev

    def ratio(f: Any) -> float:
        a, b, c = (float(f(x)) for x in e)
        return (b - a) / (c - a)

    out = {}
    for name, li in (("pristine", ph.li_pristine), ("charged", ph.li_charged)):
        out[f"am_{name}"] = ratio(lambda en, li=li: am_attenuation(en, li, li_pristine=ph.li_pristine,
                                                                    li_charged=ph.li_charged))
        out[f"reference_{name}"] = ratio(lambda en, li=li: normalized_mu(en, li, li_pristine=ph.li_pristine,
                                                                          li_charged=ph.li_charged))
    return out


def _write_csv_spectrum(path: Path, which: str) -> None:
    e, mu = reference_spectrum(which)
    lines = ["energy_ev,mu"] + [f"{a:.2f},{b:.6g}" for a, b in zip(e, mu, strict=True)]
    write_text_atomic(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- compiled resampling
# Building the (3, z, n, n) float64 coordinate arrays for map_coordinates costs more than the
# interpolation itself at 1024^3; the streamed writer evaluates the affine map, the deformation
# and the interpolation per voxel in one compiled loop when numba is installed.

try:  # pragma: no cover - depends on the environment
    import numba as _numba
except ImportError:  # pragma: no cover
    _numba = None


def _resample_rows_py(block, a, z0, z1, n, margin, mat, vec, lin, field, order, out):
    """Sample ``block`` (object rows from ``a``) on output rows ``z0:z1`` of ``out`` (rows from
    ``z0``): x_obj = M x + v + margin + L u(x); order 0 nearest, 1 trilinear; edges clamp."""
    nb0, nb1, nb2 = block.shape
    has_def = field.shape[1] > 1
    mz, my, mx = field.shape[1], field.shape[2], field.shape[3]
    sz, sy, sx = (mz - 1) / (n - 1), (my - 1) / (n - 1), (mx - 1) / (n - 1)
    for z in range(z0, z1):
        for y in range(n):
            for x in range(n):
                p0 = mat[0, 0] * z + mat[0, 1] * y + mat[0, 2] * x + vec[0] + margin - a
                p1 = mat[1, 0] * z + mat[1, 1] * y + mat[1, 2] * x + vec[1] + margin
                p2 = mat[2, 0] * z + mat[2, 1] * y + mat[2, 2] * x + vec[2] + margin
                if has_def:  # trilinear interpolation of the coarse deformation samples
                    fz, fy, fx = z * sz, y * sy, x * sx
                    iz, iy, ix = min(int(fz), mz - 2), min(int(fy), my - 2), min(int(fx), mx - 2)
                    wz, wy, wx = fz - iz, fy - iy, fx - ix
                    for c in range(3):
                        u = ((field[c, iz, iy, ix] * (1 - wx) + field[c, iz, iy, ix + 1] * wx) * (1 - wy)
                             + (field[c, iz, iy + 1, ix] * (1 - wx) + field[c, iz, iy + 1, ix + 1] * wx) * wy) * (1 - wz) \
                            + ((field[c, iz + 1, iy, ix] * (1 - wx) + field[c, iz + 1, iy, ix + 1] * wx) * (1 - wy)
                               + (field[c, iz + 1, iy + 1, ix] * (1 - wx) + field[c, iz + 1, iy + 1, ix + 1] * wx) * wy) * wz
                        p0 += lin[0, c] * u
                        p1 += lin[1, c] * u
                        p2 += lin[2, c] * u
                if order == 0:
                    i = min(max(int(math.floor(p0 + 0.5)), 0), nb0 - 1)
                    j = min(max(int(math.floor(p1 + 0.5)), 0), nb1 - 1)
                    k = min(max(int(math.floor(p2 + 0.5)), 0), nb2 - 1)
                    out[z - z0, y, x] = block[i, j, k]
                else:
                    p0 = min(max(p0, 0.0), nb0 - 1.0)
                    p1 = min(max(p1, 0.0), nb1 - 1.0)
                    p2 = min(max(p2, 0.0), nb2 - 1.0)
                    i, j, k = min(int(p0), nb0 - 2), min(int(p1), nb1 - 2), min(int(p2), nb2 - 2)
                    w0, w1, w2 = p0 - i, p1 - j, p2 - k
                    v = ((block[i, j, k] * (1 - w2) + block[i, j, k + 1] * w2) * (1 - w1)
                         + (block[i, j + 1, k] * (1 - w2) + block[i, j + 1, k + 1] * w2) * w1) * (1 - w0) \
                        + ((block[i + 1, j, k] * (1 - w2) + block[i + 1, j, k + 1] * w2) * (1 - w1)
                           + (block[i + 1, j + 1, k] * (1 - w2) + block[i + 1, j + 1, k + 1] * w2) * w1) * w0
                    out[z - z0, y, x] = v


_resample_rows_jit = _numba.njit(nogil=True, cache=True)(_resample_rows_py) if _numba is not None else None


def _in_memory_state_stats(li: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(labels.reshape(-1), minlength=3)[:3] / labels.size
    fractions = {f"li_{k}": v for k, v in class_fractions(li).items()}
    return {"mean_li": float(np.nanmean(li)), "std_li": float(np.nanstd(li)), "class_fractions": fractions,
            "phase_fractions": {"pore": float(counts[0]), "am": float(counts[1]), "cbd": float(counts[2])}}


def _write_volumes_in_memory(ph: OperandoPhantom, out: Path, dtype: str,
                             progress: ProgressCallback | None) -> dict[str, Any]:
    """Write the volumes and truth of an in-memory phantom one full volume at a time."""
    from litomo.io import write_tiff
    from litomo.phantom.electrode import equivalent_diameters_um
    from litomo.volume import Volume

    vs = ph.voxel_size_um
    total = len(ph.state_names) * (len(ph.roles) + 1)
    done = 0
    states = []
    for k, name in enumerate(ph.state_names):
        paths = []
        for role in ph.roles:
            vol = ph.volume(k, role, dtype=dtype)
            meta = {"energy_ev": ph.energies_ev[ph.roles.index(role)], "state": name, "role": role}
            paths.append(write_tiff(out / name / f"{role}.tif", Volume(vol, vs, meta)))
            del vol
            done += 1
            if progress is not None:
                progress(done, total, "writing phantom")
        for key in ("particles", "labels"):  # one full volume at a time
            arr = ph.truth_array(k, key)
            write_tiff(out / "truth" / name / f"{key}.tif", Volume(arr, vs))
            if key == "labels":
                labels = arr
            del arr
        li = ph.truth_array(k, "li")
        write_tiff(out / "truth" / name / "li.tif", Volume(li, vs))
        states.append({"paths": paths, **_in_memory_state_stats(li, labels)})
        del li, labels
        done += 1
        if progress is not None:
            progress(done, total, "writing phantom")
    d = equivalent_diameters_um(ph.electrode.particle_ids, vs, exclude_boundary=True)
    return {"states": states, "fractions": states[0]["phase_fractions"], "d_interior_um": d}


class _QueuedSlabs:
    """A lazy ``(z, y, x)`` array for :func:`litomo.io.write_tiff` whose z slabs arrive in order
    through a queue, so several files can be written at once from one generating pass.

    It has ``compute`` (never called whole) so ``write_tiff`` treats it like a dask array and
    reads it slab by slab in increasing z.
    """

    ndim = 3

    def __init__(self, shape: tuple[int, int, int], dtype: Any):
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._buf = np.zeros((0, *shape[1:]), self.dtype)
        self._pos = 0

    def compute(self) -> np.ndarray:
        raise NotImplementedError("a streamed volume is only read slab by slab")

    def put(self, item: Any, writer: Future) -> None:
        while True:  # never block on a writer that has died
            if writer.done() and writer.exception() is not None:
                raise writer.exception()  # type: ignore[misc]
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def __getitem__(self, key: slice) -> np.ndarray:
        z0, z1 = key.start or 0, min(self.shape[0], key.stop)
        if z0 != self._pos:
            raise RuntimeError(f"streamed volume read out of order ({z0} != {self._pos})")
        parts, have = [self._buf], len(self._buf)
        while have < z1 - z0:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise LitomoError(f"phantom generation failed: {item}")
            parts.append(item)
            have += len(item)
        buf = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._buf, self._pos = buf[z1 - z0 :], z1
        return buf[: z1 - z0]


@dataclass
class _RowCache:
    """Rows ``start:start + len(data)`` of an object-grid field, extended upwards on demand."""

    start: int = 0
    data: np.ndarray | None = None

    def get(self, a: int, b: int, compute: Any) -> np.ndarray:
        if self.data is None or a < self.start or self.start + len(self.data) < a:
            self.start, self.data = a, compute(a, b)
            return self.data
        end = self.start + len(self.data)
        keep = self.data[a - self.start :]
        self.data = np.concatenate([keep, compute(end, b)]) if b > end else keep
        self.start = a
        return self.data[: b - a]


def make_streamed_phantom(
    size: int,
    n_states: int = 1,
    *,
    seed: int = 0,
    voxel_size_um: float = DEFAULT_VOXEL_SIZE_UM,
    energies_ev: Sequence[float] = DEFAULT_ENERGIES_EV,
    snr: float = 5.0,
    final_mean_li: float = 0.45,
    li_pristine: float = 1.0,
    li_charged: float = 0.38,
    max_translation_vox: float = 3.0,
    max_rotation_deg: float = 0.8,
    deformation_vox: float = 1.0,
    state_translation_vox: float = 2.0,
    state_rotation_deg: float = 0.3,
    electrode_kwargs: dict[str, Any] | None = None,
) -> OperandoPhantom:
    """The phantom of :func:`make_operando_phantom` with the same arguments (same particles,
    transforms and Li physics) backed by an :class:`ElectrodeStream`: nothing is held as a full
    volume. Its ``electrode`` is the stream and its ``model`` a stream model, so only the
    streamed writer (:func:`write_operando_phantom` with ``streamed=True``) can render it.

    Examples
    --------
    >>> ph = make_streamed_phantom(48, 1, seed=1)
    >>> ph.electrode.shape[0] > 48
    True
    """
    from litomo.phantom.electrode import ElectrodeStream

    energies, roles, names, motions, energy_t, margin = _plan(
        size, n_states, seed, energies_ev, max_translation_vox, max_rotation_deg, deformation_vox,
        state_translation_vox, state_rotation_deg)
    stream = ElectrodeStream(size + 2 * margin, voxel_size_um=voxel_size_um, seed=seed, **(electrode_kwargs or {}))
    model = LithiumModel.for_stream(stream, li_max=li_pristine, li_min=li_charged, seed=seed)
    targets = li_schedule(n_states, final_mean_li, li_pristine)
    prog = [model.progress_for_mean(float(t)) for t in targets]
    return OperandoPhantom(
        size=size, voxel_size_um=float(voxel_size_um), energies_ev=energies, roles=roles, state_names=names,
        electrode=stream, model=model, progress_by_state=prog,  # type: ignore[arg-type]
        state_motion=motions, energy_transforms=energy_t, margin=margin, snr=float(snr), seed=seed,
        li_pristine=li_pristine, li_charged=li_charged,
        info={"target_mean_li": [float(t) for t in targets], "electrode": stream.info, "streamed": True},
    )


def _deformation_samples(t: Transform, shape: tuple[int, int, int]) -> np.ndarray:
    """The coarse samples (3, mz, my, mx) the deformation is interpolated from; a dummy
    (3, 1, 1, 1) array (no deformation) for a rigid transform."""
    if t.control is None:
        return np.zeros((3, 1, 1, 1), np.float32)
    t.displacement(0, 1, shape)  # fills the cache
    return t._field_cache[1]


def _row_range(ph: OperandoPhantom, chain: list[Transform], z0: int, z1: int, ext: int) -> tuple[int, int]:
    """Object rows ``a:b`` that output slab ``z0:z1`` samples through ``chain`` (with the
    linear-interpolation neighbour and a bound on the deformation)."""
    n, m = ph.size, ph.margin
    if not chain:
        return m + z0, m + z1
    mat, vec, lin = _chain_affine(n, chain)
    corners = np.array([[z, y, x] for z in (z0, z1 - 1) for y in (0, n - 1) for x in (0, n - 1)], float)
    rows = corners @ mat[0] + vec[0] + m
    slack = 0.0
    if chain[0].control is not None:  # the sampled B-spline stays within ~1.5x its control maximum
        slack = float(np.abs(lin[0]).sum()) * (2.0 * chain[0].deformation_max_vox + 0.5)
    return max(0, int(math.floor(rows.min() - slack)) - 1), min(ext, int(math.ceil(rows.max() + slack)) + 2)


def _li_block(model: LithiumModel, progress: float, a: int, ids: np.ndarray, radial: np.ndarray,
              angular: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Li of object rows ``r0:r1`` from fields that start at row ``a``."""
    return model.li_of(progress, ids[r0 - a : r1 - a], radial[r0 - a : r1 - a], angular[r0 - a : r1 - a])


def _write_volumes_streamed(ph: OperandoPhantom, out: Path, dtype: str, progress: ProgressCallback | None,
                            slab_rows: int = 32, sub_rows: int = 8) -> dict[str, Any]:
    """One pass over the object rows writing every volume and truth file slab by slab."""
    from litomo.io import write_tiff

    stream, model = ph.electrode, ph.model
    n, vs, shape = ph.size, ph.voxel_size_um, ph.shape
    n_states = len(ph.state_names)
    vol_dtype = np.uint16 if dtype == "uint16" else np.float32
    targets: list[tuple[Path, Any]] = []
    for name in ph.state_names:
        targets += [(out / name / f"{role}.tif", vol_dtype) for role in ph.roles]
        targets += [(out / "truth" / name / "li.tif", np.float32), (out / "truth" / name / "labels.tif", np.uint8),
                    (out / "truth" / name / "particles.tif", np.int32)]
    sinks = [_QueuedSlabs(shape, dt) for _, dt in targets]
    per_state = len(ph.roles) + 3
    chains = [[ph._chain(k, None if role == ph.roles[-1] else role) for role in ph.roles] for k in range(n_states)]
    noise_rng = [[np.random.default_rng([ph.seed, 7919, k, r]) for r in range(len(ph.roles))] for k in range(n_states)]
    sigma = np.float32(ph.noise_sigma_per_um)
    li_cache = [_RowCache() for _ in range(n_states)]
    acc = [{"n": 0, "sum": 0.0, "sumsq": 0.0, "poor": 0, "rich": 0, "labels": np.zeros(3, np.int64)}
           for _ in range(n_states)]
    pid_counts = np.zeros(len(stream.parts.radii) + 1, np.int64)
    faces: set[int] = set()

    def sample(block: np.ndarray, a: int, chain: list[Transform], z0: int, z1: int, order: int,
               dt: Any) -> np.ndarray:
        """Resample object rows ``a:...`` (``block``) onto output rows ``z0:z1`` through ``chain``."""
        m = ph.margin
        if not chain:
            return np.ascontiguousarray(block[m + z0 - a : m + z1 - a, m : m + n, m : m + n], dtype=dt)
        res = np.empty((z1 - z0, n, n), dt)
        if _resample_rows_jit is not None and block.shape[0] >= 2:
            mat, vec, lin = _chain_affine(n, chain)
            field = _deformation_samples(chain[0], ph.shape)
            cuts = np.linspace(z0, z1, 3).round().astype(int)
            list(pool.map(lambda c0, c1: _resample_rows_jit(block, a, c0, c1, n, m, mat, vec, lin, field, order,
                                                            res[c0 - z0 : c1 - z0]), cuts[:-1], cuts[1:]))
            return res

        def part(s0: int) -> None:
            s1 = min(z1, s0 + sub_rows)
            pts = _slab_points(n, m, s0, s1, chain)
            pts[0] -= a
            if order == 0:
                idx = [np.clip(np.rint(pts[i]), 0, block.shape[i] - 1).astype(np.intp) for i in range(3)]
                res[s0 - z0 : s1 - z0] = block.reshape(-1)[np.ravel_multi_index(idx, block.shape)]
            else:
                res[s0 - z0 : s1 - z0] = ndimage.map_coordinates(block, pts, order=1, mode="nearest", output=dt)

        list(pool.map(part, range(z0, z1, sub_rows)))
        return res

    def produce() -> None:
        for z0 in range(0, n, slab_rows):
            z1 = min(n, z0 + slab_rows)
            ranges = [_row_range(ph, c, z0, z1, stream.shape[0]) for cs in chains for c in cs]
            a, b = min(r[0] for r in ranges), max(r[1] for r in ranges)
            labels, ids, radial, angular = stream.rows(a, b)
            am = labels == 1
            for k in range(n_states):
                li = li_cache[k].get(a, b, functools.partial(
                    _li_block, model, ph.progress_by_state[k], a, ids, radial, angular))
                base = k * per_state
                for r, e in enumerate(ph.energies_ev):
                    bg = background_per_um(e)
                    lut = np.array([bg["pore"], 0.0, bg["cbd"]], dtype=np.float32)
                    # AM attenuation is affine in x_Li: one fused pass, no boolean-mask gathers
                    mu_c, mu_p = (float(am_attenuation(e, x, li_pristine=ph.li_pristine, li_charged=ph.li_charged))
                                  for x in (ph.li_charged, ph.li_pristine))
                    slope = np.float32((mu_p - mu_c) / (ph.li_pristine - ph.li_charged))
                    mu = np.where(am, slope * (li - np.float32(ph.li_charged)) + np.float32(mu_c), lut[labels])
                    vol = sample(mu, a, chains[k][r], z0, z1, 1, np.float32)
                    del mu
                    if sigma > 0:
                        for z in range(len(vol)):  # per slice, in z order: same draws as in memory
                            vol[z] += sigma * noise_rng[k][r].standard_normal(vol.shape[1:], dtype=np.float32)
                    if dtype == "uint16":
                        vol += np.float32(UINT16_OFFSET_PER_UM)
                        vol *= np.float32(UINT16_COUNTS_PER_INV_UM)
                        np.rint(vol, out=vol)
                        vol = np.clip(vol, 0, 65535).astype(np.uint16)
                    sinks[base + r].put(vol, futures[base + r])
                chain = chains[k][-1]
                t_li = sample(li, a, chain, z0, z1, 0, np.float32)
                t_lab = sample(labels, a, chain, z0, z1, 0, np.uint8)
                t_pid = sample(ids, a, chain, z0, z1, 0, np.int32)
                fin = t_li[np.isfinite(t_li)].astype(np.float64)
                st = acc[k]
                st["n"] += fin.size
                st["sum"] += float(fin.sum())
                st["sumsq"] += float((fin * fin).sum())
                st["poor"] += int(np.count_nonzero(fin <= 0.6))
                st["rich"] += int(np.count_nonzero(fin >= 0.9))
                st["labels"] += np.bincount(t_lab.reshape(-1), minlength=3)[:3]
                if k == 0:
                    pid_counts[:] += np.bincount(t_pid.reshape(-1), minlength=len(pid_counts))
                    faces.update(np.unique(np.concatenate([
                        t_pid[:, 0].ravel(), t_pid[:, -1].ravel(), t_pid[:, :, 0].ravel(), t_pid[:, :, -1].ravel(),
                        *((t_pid[0].ravel(),) if z0 == 0 else ()), *((t_pid[-1].ravel(),) if z1 == n else ()),
                    ])).tolist())
                for j, arr in enumerate((t_li, t_lab, t_pid)):
                    sinks[base + len(ph.roles) + j].put(arr, futures[base + len(ph.roles) + j])
            if progress is not None:
                progress(z1, n, "writing phantom")

    with ThreadPoolExecutor(len(sinks)) as writers, ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        futures = [writers.submit(write_tiff, path, sink, voxel_size_um=vs)
                   for (path, _), sink in zip(targets, sinks, strict=True)]
        try:
            produce()
        except BaseException as exc:
            for sink in sinks:  # unblock the writers: each discards its temporary file
                try:
                    sink._queue.put_nowait(exc)
                except queue.Full:
                    sink._queue.get_nowait()
                    sink._queue.put_nowait(exc)
            raise
        for f in futures:
            f.result()
    states = []
    for k in range(n_states):
        st = acc[k]
        nfin = max(st["n"], 1)
        mean = st["sum"] / nfin
        lab = st["labels"] / n**3
        states.append({
            "paths": [p for p, _ in targets[k * per_state : k * per_state + len(ph.roles)]],
            "mean_li": mean, "std_li": math.sqrt(max(st["sumsq"] / nfin - mean * mean, 0.0)),
            "class_fractions": {"li_poor": st["poor"] / nfin, "li_moderate": (nfin - st["poor"] - st["rich"]) / nfin,
                                "li_rich": st["rich"] / nfin},
            "phase_fractions": {"pore": float(lab[0]), "am": float(lab[1]), "cbd": float(lab[2])}})
    present = np.setdiff1d(np.flatnonzero(pid_counts), [0, *faces])
    d = np.cbrt(6 * pid_counts[present] * vs**3 / np.pi)
    return {"states": states, "fractions": states[0]["phase_fractions"], "d_interior_um": d}


def write_operando_phantom(
    out_dir: str | os.PathLike,
    size: int = 192,
    n_states: int = 4,
    *,
    seed: int = 0,
    dtype: str = "float32",
    voxel_size_um: float = DEFAULT_VOXEL_SIZE_UM,
    bin_factor: int = 7,
    overwrite: bool = False,
    streamed: bool | None = None,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Generate and write an operando dataset with its manifest and ground truth.

    Layout::

        OUT/experiment.toml                      manifest (expected_li = true mean x_Li per state)
        OUT/<state>/{pre_edge,edge,post_edge}.tif
        OUT/refs/{pristine,charged}.csv          energy_ev, mu (bundled real references)
        OUT/truth/<state>/{li,labels,particles}.tif   on that state's post-edge grid
        OUT/truth/transforms.json, OUT/truth/truth.json

    Small datasets are built in memory (:func:`make_operando_phantom`; about 25 bytes per voxel
    of the extended grid ``size + 2 * margin``). Above ``STREAM_ABOVE_SIZE`` (or with
    ``streamed=True``) the electrode is painted row by row (:class:`ElectrodeStream`) and every
    output file is written z-slab by z-slab in one pass, so memory stays at a few hundred rows
    whatever the size (``size = 1024``: a few GB). Both paths follow the same construction;
    the streamed one differs in its random CBD noise field and its estimate of the CBD
    threshold. Returns the truth summary (also in ``truth.json``). Extra keyword arguments go
    to :func:`make_operando_phantom`.

    Examples
    --------
    >>> summary = write_operando_phantom("demo", size=96, n_states=4, seed=0)  # doctest: +SKIP
    """
    from litomo.manifest import (
        Manifest,
        ProcessingSpec,
        SampleSpec,
        StateSpec,
        XanesSpec,
        write_manifest,
    )

    if dtype not in ("float32", "uint16"):
        raise DataError(f"dtype must be 'float32' or 'uint16', got {dtype!r}")
    out = Path(out_dir).expanduser().resolve()
    if (out / "experiment.toml").exists() and not overwrite:
        raise LitomoError(f"{out} already holds a dataset (experiment.toml); choose another folder "
                          "or pass overwrite=True (--overwrite)")
    if streamed is None:
        streamed = size > STREAM_ABOVE_SIZE
    if streamed:
        ph = make_streamed_phantom(size, n_states, seed=seed, voxel_size_um=voxel_size_um, **kwargs)
        written = _write_volumes_streamed(ph, out, dtype, progress)
    else:
        ph = make_operando_phantom(size, n_states, seed=seed, voxel_size_um=voxel_size_um, progress=progress,
                                   **kwargs)
        written = _write_volumes_in_memory(ph, out, dtype, progress)
    vs = ph.voxel_size_um
    refs = out / "refs"
    _write_csv_spectrum(refs / "pristine.csv", "pristine")
    _write_csv_spectrum(refs / "charged.csv", "charged")
    states, per_state, transforms = [], [], {}
    fractions = written["fractions"]
    for k, name in enumerate(ph.state_names):
        st = written["states"][k]
        per_state.append({"name": name, "mean_li": st["mean_li"], "std_li": st["std_li"],
                          "progress": ph.progress_by_state[k], "target_mean_li": ph.info["target_mean_li"][k],
                          "class_fractions": st["class_fractions"], "phase_fractions": st["phase_fractions"]})
        transforms[name] = {"state_motion": ph.state_motion[k].to_json(),
                            **{role: ph.energy_transforms[k][role].to_json() for role in ph.roles}}
        states.append(StateSpec(
            name=name, energies_ev=ph.energies_ev, volumes=tuple(st["paths"]), label=f"state {name}",
            expected_li=round(st["mean_li"], 6), note="synthetic operando phantom", three_energy=ph.roles == ROLES))
    d_interior = written["d_interior_um"]
    three = ph.roles == ROLES
    e = ph.energies_ev
    manifest = Manifest(
        path=out / "experiment.toml",
        sample=SampleSpec(name=f"phantom-seed{seed}", voxel_size_um=(vs, vs, vs),
                          expected={**fractions, "d50_um": float(np.median(ph.electrode.diameters_um))}),
        xanes=XanesSpec(pre_edge_ev=e[0] if three else None, edge_ev=e[1] if three else None,
                        post_edge_ev=e[2] if three else None, reference_pristine=refs / "pristine.csv",
                        reference_charged=refs / "charged.csv", li_pristine=ph.li_pristine,
                        li_charged=ph.li_charged),
        processing=ProcessingSpec(bin=(bin_factor,) * 3, background_exponent=AM_BACKGROUND_EXPONENT),
        states=states,
    )
    truth = {
        "generator": "litomo.phantom.operando", "seed": seed, "size": size, "dtype": dtype,
        "voxel_size_um": vs, "energies_ev": list(ph.energies_ev), "roles": list(ph.roles),
        "snr": ph.snr, "noise_sigma_per_um": ph.noise_sigma_per_um,
        "fractions": fractions,
        "d50_um": float(np.median(ph.electrode.diameters_um)),
        "d50_um_interior_measured": float(np.median(d_interior)) if d_interior.size else None,
        "streamed": bool(streamed),
        "n_particles": int(ph.electrode.info["n_particles_visible"]),
        "states": per_state,
        "attenuation_per_um": {"am_edge_jump": AM_EDGE_JUMP_PER_UM, "am_background_8333ev": AM_BACKGROUND_PER_UM,
                               "cbd_8333ev": CBD_PER_UM, "pore_8333ev": PORE_PER_UM},
        "uint16_scale": {"offset_per_um": UINT16_OFFSET_PER_UM, "counts_per_inv_um": UINT16_COUNTS_PER_INV_UM,
                         "formula": "mu_per_um = counts / counts_per_inv_um - offset_per_um"} if dtype == "uint16" else None,
        "li_pristine": ph.li_pristine, "li_charged": ph.li_charged,
        "edge_ratio": _edge_ratios(ph) if three else None,
    }
    write_text_atomic(out / "truth" / "transforms.json", json.dumps({
        "convention": "volume_e(x) = post_edge(c + R^T (x - c - t) + u(x)); post_edge_k(x) = "
                      "post_edge_I(c + R_k^T (x - c - t_k)); c = ((n-1)/2,)*3, axes (z, y, x), voxels",
        "states": transforms}, indent=2))
    write_text_atomic(out / "truth" / "truth.json", json.dumps(truth, indent=2))
    write_manifest(manifest, out / "experiment.toml")
    return truth

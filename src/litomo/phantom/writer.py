"""Writing a synthetic operando dataset: volumes, truth, reference spectra and the manifest.

Small datasets are rendered one full volume at a time; above ``STREAM_ABOVE_SIZE`` (or with
``streamed=True``) one pass over the object rows writes every volume and truth file slab by slab
(bounded memory whatever the size). Both follow the same construction; the streamed one differs
in its random CBD noise field and its estimate of the CBD threshold.
"""

from __future__ import annotations

import functools
import json
import math
import os
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from litomo.errors import DataError, LitomoError
from litomo.io import write_tiff
from litomo.io.atomic import write_text_atomic
from litomo.particles import equivalent_diameters_um
from litomo.phantom.electrode import DEFAULT_VOXEL_SIZE_UM
from litomo.phantom.lithium import LithiumModel
from litomo.phantom.motion import Transform, chain_affine, slab_points
from litomo.phantom.operando import (
    STREAM_ABOVE_SIZE,
    OperandoPhantom,
    OperandoSettings,
    build_operando_phantom,
    roman,
    row_range,
)
from litomo.phantom.spectra import (
    AM_BACKGROUND_EXPONENT,
    AM_BACKGROUND_PER_UM,
    AM_EDGE_JUMP_PER_UM,
    CBD_PER_UM,
    PORE_PER_UM,
    ROLES,
    UINT16_COUNTS_PER_INV_UM,
    UINT16_OFFSET_PER_UM,
    am_attenuation,
    background_per_um,
    edge_ratios,
    write_csv_spectrum,
)
from litomo.preprocess import bin_factors
from litomo.progress import ProgressCallback
from litomo.resample.kernels import affine_rows
from litomo.volume import Volume
from litomo.xanes.threeenergy import class_fractions


def _in_memory_state_stats(li: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(labels.reshape(-1), minlength=3)[:3] / labels.size
    fractions = {f"li_{k}": v for k, v in class_fractions(li).items()}
    return {"mean_li": float(np.nanmean(li)), "std_li": float(np.nanstd(li)), "class_fractions": fractions,
            "phase_fractions": {"pore": float(counts[0]), "am": float(counts[1]), "cbd": float(counts[2])}}


def _write_volumes_in_memory(ph: OperandoPhantom, out: Path, dtype: str,
                             progress: ProgressCallback | None) -> dict[str, Any]:
    """Write the volumes and truth of an in-memory phantom one full volume at a time."""
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

    def fail(self, exc: BaseException) -> None:
        """Hand ``exc`` to the reader (the writer thread), dropping a queued slab if need be."""
        try:
            self._queue.put_nowait(exc)
        except queue.Full:
            self._queue.get_nowait()
            self._queue.put_nowait(exc)

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


def _li_block(model: LithiumModel, progress: float, a: int, ids: np.ndarray, radial: np.ndarray,
              angular: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Li of object rows ``r0:r1`` from fields that start at row ``a``."""
    return model.li_of(progress, ids[r0 - a : r1 - a], radial[r0 - a : r1 - a], angular[r0 - a : r1 - a])


@dataclass
class _StateAccumulator:
    """Running truth statistics of one state over the streamed slabs."""

    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    poor: int = 0
    rich: int = 0
    labels: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))

    def add(self, t_li: np.ndarray, t_lab: np.ndarray) -> None:
        fin = t_li[np.isfinite(t_li)].astype(np.float64)
        self.n += fin.size
        self.sum += float(fin.sum())
        self.sumsq += float((fin * fin).sum())
        self.poor += int(np.count_nonzero(fin <= 0.6))
        self.rich += int(np.count_nonzero(fin >= 0.9))
        self.labels += np.bincount(t_lab.reshape(-1), minlength=3)[:3]

    def record(self, paths: list[Path], n_voxels: int) -> dict[str, Any]:
        nfin = max(self.n, 1)
        mean = self.sum / nfin
        lab = self.labels / n_voxels
        return {
            "paths": paths, "mean_li": mean, "std_li": math.sqrt(max(self.sumsq / nfin - mean * mean, 0.0)),
            "class_fractions": {"li_poor": self.poor / nfin, "li_moderate": (nfin - self.poor - self.rich) / nfin,
                                "li_rich": self.rich / nfin},
            "phase_fractions": {"pore": float(lab[0]), "am": float(lab[1]), "cbd": float(lab[2])}}


class _StreamedWriter:
    """One pass over the object rows writing every volume and truth file slab by slab."""

    def __init__(self, ph: OperandoPhantom, out: Path, dtype: str, slab_rows: int):
        self.ph, self.dtype, self.slab_rows = ph, dtype, slab_rows
        n_states = len(ph.state_names)
        vol_dtype = np.uint16 if dtype == "uint16" else np.float32
        self.targets: list[tuple[Path, Any]] = []
        for name in ph.state_names:
            self.targets += [(out / name / f"{role}.tif", vol_dtype) for role in ph.roles]
            self.targets += [(out / "truth" / name / "li.tif", np.float32),
                             (out / "truth" / name / "labels.tif", np.uint8),
                             (out / "truth" / name / "particles.tif", np.int32)]
        self.sinks = [_QueuedSlabs(ph.shape, dt) for _, dt in self.targets]
        self.futures: list[Future] = []
        self.per_state = len(ph.roles) + 3
        self.chains = [[ph.chain(k, None if role == ph.roles[-1] else role) for role in ph.roles]
                       for k in range(n_states)]
        self.noise_rng = [[np.random.default_rng([ph.seed, 7919, k, r]) for r in range(len(ph.roles))]
                          for k in range(n_states)]
        self.sigma = np.float32(ph.noise_sigma_per_um)
        self.li_cache = [_RowCache() for _ in range(n_states)]
        self.acc = [_StateAccumulator() for _ in range(n_states)]
        self.pid_counts = np.zeros(len(ph.electrode.parts.radii) + 1, np.int64)
        self.faces: set[int] = set()
        self.pool: ThreadPoolExecutor | None = None

    def sample(self, block: np.ndarray, a: int, chain: list[Transform], z0: int, z1: int, order: int,
               dt: Any) -> np.ndarray:
        """Resample object rows ``a:...`` (``block``) onto output rows ``z0:z1`` through ``chain``."""
        n, m = self.ph.size, self.ph.margin
        if not chain:
            return np.ascontiguousarray(block[m + z0 - a : m + z1 - a, m : m + n, m : m + n], dtype=dt)
        res = np.empty((z1 - z0, n, n), dt)
        if block.shape[0] >= 2:  # the compiled sampler needs two rows to interpolate between
            mat, vec, lin = chain_affine(n, chain)
            samples = chain[0].deformation_samples(self.ph.shape)
            cuts = np.linspace(z0, z1, 3).round().astype(int)
            list(self.pool.map(lambda c0, c1: affine_rows(block, a, c0, c1, n, m, mat, vec, lin, samples, order,
                                                          res[c0 - z0 : c1 - z0]), cuts[:-1], cuts[1:]))
            return res
        pts = slab_points(n, m, z0, z1, chain)
        pts[0] -= a
        if order == 0:
            idx = [np.clip(np.rint(pts[i]), 0, block.shape[i] - 1).astype(np.intp) for i in range(3)]
            res[:] = block.reshape(-1)[np.ravel_multi_index(idx, block.shape)]
        else:
            res[:] = ndimage.map_coordinates(block, pts, order=1, mode="nearest", output=dt)
        return res

    def _volume(self, k: int, r: int, li: np.ndarray, labels: np.ndarray, am: np.ndarray, a: int,
                z0: int, z1: int) -> np.ndarray:
        """Attenuation of state ``k`` at energy ``r`` on output rows ``z0:z1`` (noise, dtype)."""
        ph = self.ph
        e = ph.energies_ev[r]
        bg = background_per_um(e)
        lut = np.array([bg["pore"], 0.0, bg["cbd"]], dtype=np.float32)
        # AM attenuation is affine in x_Li: one fused pass, no boolean-mask gathers
        mu_c, mu_p = (float(am_attenuation(e, x, li_pristine=ph.li_pristine, li_charged=ph.li_charged))
                      for x in (ph.li_charged, ph.li_pristine))
        slope = np.float32((mu_p - mu_c) / (ph.li_pristine - ph.li_charged))
        mu = np.where(am, slope * (li - np.float32(ph.li_charged)) + np.float32(mu_c), lut[labels])
        vol = self.sample(mu, a, self.chains[k][r], z0, z1, 1, np.float32)
        del mu
        if self.sigma > 0:
            for z in range(len(vol)):  # per slice, in z order: same draws as in memory
                vol[z] += self.sigma * self.noise_rng[k][r].standard_normal(vol.shape[1:], dtype=np.float32)
        if self.dtype == "uint16":
            vol += np.float32(UINT16_OFFSET_PER_UM)
            vol *= np.float32(UINT16_COUNTS_PER_INV_UM)
            np.rint(vol, out=vol)
            vol = np.clip(vol, 0, 65535).astype(np.uint16)
        return vol

    def _put(self, i: int, arr: np.ndarray) -> None:
        self.sinks[i].put(arr, self.futures[i])

    def _slab(self, z0: int, z1: int) -> None:
        ph, n = self.ph, self.ph.size
        stream = ph.electrode
        ranges = [row_range(ph, c, z0, z1, stream.shape[0]) for cs in self.chains for c in cs]
        a, b = min(r[0] for r in ranges), max(r[1] for r in ranges)
        labels, ids, radial, angular = stream.rows(a, b)
        am = labels == 1
        for k in range(len(ph.state_names)):
            li = self.li_cache[k].get(a, b, functools.partial(
                _li_block, ph.model, ph.progress_by_state[k], a, ids, radial, angular))
            base = k * self.per_state
            for r in range(len(ph.energies_ev)):
                self._put(base + r, self._volume(k, r, li, labels, am, a, z0, z1))
            chain = self.chains[k][-1]
            t_li = self.sample(li, a, chain, z0, z1, 0, np.float32)
            t_lab = self.sample(labels, a, chain, z0, z1, 0, np.uint8)
            t_pid = self.sample(ids, a, chain, z0, z1, 0, np.int32)
            self.acc[k].add(t_li, t_lab)
            if k == 0:
                self.pid_counts[:] += np.bincount(t_pid.reshape(-1), minlength=len(self.pid_counts))
                self.faces.update(np.unique(np.concatenate([
                    t_pid[:, 0].ravel(), t_pid[:, -1].ravel(), t_pid[:, :, 0].ravel(), t_pid[:, :, -1].ravel(),
                    *((t_pid[0].ravel(),) if z0 == 0 else ()), *((t_pid[-1].ravel(),) if z1 == n else ()),
                ])).tolist())
            for j, arr in enumerate((t_li, t_lab, t_pid)):
                self._put(base + len(ph.roles) + j, arr)

    def run(self, progress: ProgressCallback | None) -> dict[str, Any]:
        n, vs = self.ph.size, self.ph.voxel_size_um
        with ThreadPoolExecutor(len(self.sinks)) as writers, \
                ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as self.pool:
            self.futures = [writers.submit(write_tiff, path, sink, voxel_size_um=vs)
                            for (path, _), sink in zip(self.targets, self.sinks, strict=True)]
            try:
                for z0 in range(0, n, self.slab_rows):
                    z1 = min(n, z0 + self.slab_rows)
                    self._slab(z0, z1)
                    if progress is not None:
                        progress(z1, n, "writing phantom")
            except BaseException as exc:
                for sink in self.sinks:  # unblock the writers: each discards its temporary file
                    sink.fail(exc)
                raise
            for f in self.futures:
                f.result()
        nr = len(self.ph.roles)
        states = [acc.record([p for p, _ in self.targets[k * self.per_state : k * self.per_state + nr]], n**3)
                  for k, acc in enumerate(self.acc)]
        present = np.setdiff1d(np.flatnonzero(self.pid_counts), [0, *self.faces])
        d = np.cbrt(6 * self.pid_counts[present] * vs**3 / np.pi)
        return {"states": states, "fractions": states[0]["phase_fractions"], "d_interior_um": d}


def _write_volumes_streamed(ph: OperandoPhantom, out: Path, dtype: str, progress: ProgressCallback | None,
                            slab_rows: int = 32) -> dict[str, Any]:
    """One pass over the object rows writing every volume and truth file slab by slab."""
    return _StreamedWriter(ph, out, dtype, slab_rows).run(progress)


def _manifest(ph: OperandoPhantom, written: dict[str, Any], out: Path, *, seed: int,
              bin_factor: int | tuple[int, int, int]) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """The dataset's manifest, the per-state truth records and the recorded transforms."""
    from litomo.manifest import (  # the manifest module pulls in TOML parsing: load it on use
        Manifest,
        ProcessingSpec,
        SampleSpec,
        StateSpec,
        XanesSpec,
    )

    vs = ph.voxel_size_um
    refs = out / "refs"
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
        processing=ProcessingSpec(bin=bin_factors(bin_factor), background_exponent=AM_BACKGROUND_EXPONENT),
        states=states,
    )
    return manifest, per_state, transforms


def dataset_entries(n_states: int) -> tuple[str, ...]:
    """The top-level entries :func:`write_operando_phantom` writes for ``n_states`` states.

    A :class:`~litomo.io.rundir.RunDir` records them as owned before the data is written.

    Examples
    --------
    >>> dataset_entries(2)
    ('experiment.toml', 'refs', 'truth', 'I', 'II')
    """
    return ("experiment.toml", "refs", "truth", *(roman(k + 1) for k in range(n_states)))


def write_operando_phantom(
    out_dir: str | os.PathLike,
    size: int = 192,
    n_states: int = 4,
    *,
    seed: int = 0,
    dtype: str = "float32",
    voxel_size_um: float = DEFAULT_VOXEL_SIZE_UM,
    bin_factor: int | tuple[int, int, int] = 7,
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
    threshold. Returns the truth summary (also in ``truth.json``). Extra keyword arguments are
    :class:`~litomo.phantom.operando.OperandoSettings` fields.

    Examples
    --------
    >>> summary = write_operando_phantom("demo", size=96, n_states=4, seed=0)  # doctest: +SKIP
    """
    from litomo.manifest import write_manifest

    if dtype not in ("float32", "uint16"):
        raise DataError(f"dtype must be 'float32' or 'uint16', got {dtype!r}")
    out = Path(out_dir).expanduser().resolve()
    if (out / "experiment.toml").exists() and not overwrite:
        raise LitomoError(f"{out} already holds a dataset (experiment.toml); choose another folder "
                          "or pass overwrite=True (--overwrite)")
    if streamed is None:
        streamed = size > STREAM_ABOVE_SIZE
    settings = OperandoSettings(size=size, n_states=n_states, seed=seed, voxel_size_um=voxel_size_um, **kwargs)
    ph = build_operando_phantom(settings, streamed=streamed, progress=None if streamed else progress)
    if streamed:
        written = _write_volumes_streamed(ph, out, dtype, progress)
    else:
        written = _write_volumes_in_memory(ph, out, dtype, progress)
    refs = out / "refs"
    write_csv_spectrum(refs / "pristine.csv", "pristine")
    write_csv_spectrum(refs / "charged.csv", "charged")
    manifest, per_state, transforms = _manifest(ph, written, out, seed=seed, bin_factor=bin_factor)
    vs, fractions, d_interior, three = ph.voxel_size_um, written["fractions"], written["d_interior_um"], ph.roles == ROLES
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
                         "formula": "mu_per_um = counts / counts_per_inv_um - offset_per_um",
                         "clipped": "mu_per_um below -offset_per_um is stored as 0 counts"} if dtype == "uint16" else None,
        "li_pristine": ph.li_pristine, "li_charged": ph.li_charged,
        "edge_ratio": edge_ratios(ph.energies_ev, ph.li_pristine, ph.li_charged) if three else None,
    }
    write_text_atomic(out / "truth" / "transforms.json", json.dumps({
        "convention": "volume_e(x) = post_edge(c + R^T (x - c - t) + u(x)); post_edge_k(x) = "
                      "post_edge_I(c + R_k^T (x - c - t_k)); c = ((n-1)/2,)*3, axes (z, y, x), voxels",
        "states": transforms}, indent=2))
    write_text_atomic(out / "truth" / "truth.json", json.dumps(truth, indent=2))
    write_manifest(manifest, out / "experiment.toml")
    return truth

"""Out-of-core microstructure summary: the metrics of :mod:`litomo.metrics.summary` that can be
computed exactly block by block (:mod:`litomo.metrics.chunked`), plus the REV curve on the same
seeded sub-volumes and S2 summed over slabs.

Exact out of core (equal to the in-memory path to float rounding, tested on the real 256^3
electrode): volume fractions, the z-profile, the AM erosion / dilation bracket, face and
marching-cubes (smoothed and unsmoothed) specific and interfacial areas, TPB length / density /
edge fraction, through / dead-end / isolated fractions, the REV curve and sizes, S2 and its
characteristic length. **Not computed out of core** (NaN / absent, with a note and a log line):
particle separation and the per-particle table (the watershed's seeds and basins are not
block-local), internal pores, tortuosity (a global linear solve) and the pore size
distributions / constrictivity (local thickness and simulated intrusion are global).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from litomo.metrics.chunked import (
    BlockMetrics,
    BlockPercolation,
    LabelSource,
    map_ordered,
    scan_blocks,
)
from litomo.metrics.fractions import axis_index
from litomo.metrics.rev import (
    default_rev_metric,
    rev_edges,
    rev_plan,
    rev_table,
    s2_from_power,
    s2_power,
)
from litomo.metrics.summary import DEFINITIONS, SIZE_KEYS
from litomo.metrics.surface import DEFAULT_SMOOTH_SIGMA_VOX, PAIRS, pair_key
from litomo.phases import PHASE_CODES, PHASES
from litomo.progress import ProgressCallback
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)

NAN = float("nan")
NOT_OUT_OF_CORE = ("particle separation and per-particle metrics (sizes, sphericity, internal pores), "
                   "tortuosity and pore size distributions / constrictivity are not computed out of core")


@dataclass
class ChunkedMicro:
    """What :func:`chunked_microstructure` returns: the summary dict (keys as
    :func:`litomo.metrics.summary.microstructure_report`) and the z-profile, REV and S2 tables."""

    summary: dict[str, Any]
    z_profile: pd.DataFrame
    rev: pd.DataFrame
    s2: pd.DataFrame


def face_matrix_um2(faces: np.ndarray, voxel_size_um: tuple[float, float, float]) -> np.ndarray:
    """Symmetric 3x3 interface areas (um^2) from face counts per axis ``faces[axis, a, b]``,
    with the arithmetic of :func:`litomo.metrics.surface.face_area_matrix` (bit-identical)."""
    v = voxel_size_um
    face_areas = (v[1] * v[2], v[0] * v[2], v[0] * v[1])
    out = np.zeros((3, 3))
    for ax in range(3):
        out += faces[ax] * face_areas[ax]
    return out + out.T


def _volume_um3(shape: Sequence[int], v: tuple[float, float, float]) -> float:
    return math.prod(shape) * v[0] * v[1] * v[2]


def _surfaces(bm: BlockMetrics, v: tuple[float, float, float], sigma: float) -> dict[str, Any]:
    vol = _volume_um3(bm.shape, v)
    m = face_matrix_um2(bm.faces, v) / vol
    n = math.prod(bm.shape)
    out: dict[str, Any] = {"surface_area_face_um-1": {p: float(m[PHASE_CODES[p]].sum()) for p in PHASES},
                           "interfacial_area_face_um-1": {pair_key(a, b): float(m[PHASE_CODES[a], PHASE_CODES[b]])
                                                          for a, b in PAIRS}}
    for name, smooth in (("smoothed", True), ("unsmoothed", False)):
        spec = {}
        for p in PHASES:
            c = PHASE_CODES[p]
            if bm.counts[c] in (0, n) or min(bm.shape) < 2:
                area = 0.0
            elif smooth and sigma > 0 and bm.smooth_range[c, 1] > 0.5 and bm.smooth_range[c, 0] < 0.5:
                area = float(bm.mc_smooth[c])
            else:  # what surface.mesh_area does when smoothing erases the object
                area = float(bm.mc_raw[c])
            spec[p] = area / vol
        inter = {}
        for a, b in PAIRS:
            (k,) = set(PHASES) - {a, b}
            inter[pair_key(a, b)] = max(0.0, 0.5 * (spec[a] + spec[b] - spec[k]))
        out[f"surface_area_mc_{name}_um-1"] = spec
        out[f"interfacial_area_mc_{name}_um-1"] = inter
    out["mc_smooth_sigma_vox"] = sigma
    return out


def _tpb(bm: BlockMetrics, v: tuple[float, float, float]) -> dict[str, float]:
    s = bm.shape
    n_edges = sum(s[k] * math.prod(s[j] - 1 for j in range(3) if j != k) for k in range(3))
    length = float(sum(int(c) * v[k] for k, c in enumerate(bm.tpb)))
    return {"tpb_length_um": length, "tpb_density_um-2": length / _volume_um3(s, v),
            "tpb_edge_fraction": int(bm.tpb.sum()) / n_edges if n_edges else NAN}


def _percolation(bp: BlockPercolation, axes: Sequence[str]) -> dict[str, Any]:
    perc: dict[str, dict[str, dict[str, float]]] = {k: {p: {} for p in PHASES}
                                                    for k in ("through", "dead_end", "isolated")}
    for p in PHASES:
        res = bp.fractions(PHASE_CODES[p])
        for a in axes:
            for k in perc:
                perc[k][p][a] = res[axis_index(a)][k]
    return {"through_fraction": perc["through"], "dead_end_cluster_fraction": perc["dead_end"],
            "isolated_fraction": perc["isolated"], "percolation_connectivity": 6}


def block_summary(source: LabelSource, voxel_size_um: Any, *, axes: Sequence[str] = ("z",),
                  chunk_vox: int = 128, smooth_sigma_vox: float = DEFAULT_SMOOTH_SIGMA_VOX,
                  progress: ProgressCallback | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Summary dict of the block-exact metrics and the z-profile table, in one pass over ``source``.

    Examples
    --------
    >>> lab = np.zeros((6, 5, 4), np.uint8); lab[:, :, 2:] = 1; lab[:, 0] = 2
    >>> s, z = block_summary(LabelSource(lab), 1.0, chunk_vox=3)
    >>> s["volume_fraction"]["am"], s["through_fraction"]["am"]["z"], round(s["surface_area_face_um-1"]["am"], 6)
    (0.4, 1.0, 0.3)
    """
    v = as_voxel_size(voxel_size_um)
    ax_idx = tuple(sorted({axis_index(a) for a in axes}))
    bm = BlockMetrics(source.shape, v, smooth_sigma_vox)
    bp = BlockPercolation(ax_idx)
    scan_blocks(source, chunk_vox, bm.halo, [bm, bp], progress)
    n = math.prod(source.shape)
    summary: dict[str, Any] = {
        "shape": list(source.shape), "voxel_size_um": list(v),
        "volume_fraction": {p: float(bm.counts[PHASE_CODES[p]] / n) for p in PHASES},
        "am_fraction_bracket": {"nominal": float(bm.counts[PHASE_CODES["am"]] / n),
                                "eroded": float(bm.bracket[0] / n), "dilated": float(bm.bracket[1] / n)}}
    summary.update(_percolation(bp, axes))
    summary.update(_surfaces(bm, v, smooth_sigma_vox))
    summary.update(_tpb(bm, v))
    z = pd.DataFrame({"z_index": np.arange(source.shape[0]), "z_um": (np.arange(source.shape[0]) + 0.5) * v[0]})
    per_slice = source.shape[1] * source.shape[2]
    for p in PHASES:
        z[p] = bm.z_counts[:, PHASE_CODES[p]] / per_slice  # type: ignore[index]
    return summary, z


def rev_curve_chunked(source: LabelSource, voxel_size_um: Any, *, chunk_vox: int = 128, seed: int = 0,
                      progress: ProgressCallback | None = None) -> pd.DataFrame:
    """:func:`litomo.metrics.rev.rev_curve` (default metric, random mode) on the same seeded
    sub-volumes, sub-volumes larger than ``chunk_vox`` counted block by block."""
    v = as_voxel_size(voxel_size_um)

    def evaluate(st: list[int], e: int) -> dict[str, float]:
        sub = source.sub(st, e)
        if e <= chunk_vox:
            return default_rev_metric(sub.read((0, 0, 0), sub.shape), v)
        bm = BlockMetrics(sub.shape, v, full=False)
        scan_blocks(sub, chunk_vox, 1, [bm])
        n = math.prod(sub.shape)
        m = face_matrix_um2(bm.faces, v) / _volume_um3(sub.shape, v)
        return {**{f"vf_{p}": float(bm.counts[PHASE_CODES[p]] / n) for p in PHASES},
                **{f"ssa_face_{p}": float(m[PHASE_CODES[p]].sum()) for p in PHASES}}

    plan = rev_plan(source.shape, rev_edges(source.shape), seed=seed)
    return rev_table(plan, evaluate, v, progress=progress)


def s2_chunked(source: LabelSource, voxel_size_um: Any, axes: Sequence[str], present: Sequence[str],
               chunk_vox: int = 128, progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Two-point correlation of each phase in ``present`` along each of ``axes``, the power
    spectra of the lines summed over slabs cut across another axis (as
    :func:`litomo.metrics.rev.two_point_correlation`); slabs measured by
    :func:`litomo.metrics.chunked.map_ordered` (on a dask cluster when one is active), summed
    in order."""
    v = as_voxel_size(voxel_size_um)
    s = source.shape
    tables = {}
    for a in axes:
        ax = axis_index(a)
        cut = 1 if ax == 0 else 0
        # slabs of at least 2^24 voxels: fewer, larger reads (16 MiB of uint8)
        thick = max(1, max(chunk_vox ** 3, 2**24) // max(1, math.prod(s) // s[cut]))
        starts = range(0, s[cut], thick)
        slab_power = functools.partial(_slab_power, source, cut=cut, thick=thick, ax=ax, present=tuple(present))
        power: dict[str, np.ndarray] = {}
        for k, pw in enumerate(map_ordered(slab_power, starts), start=1):
            for p in present:
                power[p] = power[p] + pw[p] if p in power else pw[p]
            if progress is not None:
                progress(k, len(starts), f"S2 along {a}: slabs")
        for p in present:
            tables[(p, a)] = s2_from_power(power[p], math.prod(s) // s[ax], s[ax], s[ax] // 2, v[ax])
    s2 = [tables[(p, a)].assign(phase=p, axis=a) for p in present for a in axes]
    if not s2:
        return pd.DataFrame(columns=["r_vox", "r_um", "s2", "phase", "axis"])
    return pd.concat(s2, ignore_index=True)


def _slab_power(source: LabelSource, c0: int, *, cut: int, thick: int, ax: int, present: tuple[str, ...]
                ) -> dict[str, np.ndarray]:
    """:func:`litomo.metrics.rev.s2_power` of each phase on the slab ``[c0, c0 + thick)`` across ``cut``."""
    lo, hi = [0, 0, 0], list(source.shape)
    lo[cut], hi[cut] = c0, min(c0 + thick, source.shape[cut])
    slab = source.read(lo, hi)
    return {p: s2_power(slab == PHASE_CODES[p], ax)[0] for p in present}


def chunked_microstructure(source: LabelSource, voxel_size_um: Any, *, axes: Sequence[str] = ("z",),
                           chunk_vox: int = 128, seed: int = 0,
                           smooth_sigma_vox: float = DEFAULT_SMOOTH_SIGMA_VOX,
                           progress: ProgressCallback | None = None) -> ChunkedMicro:
    """Every metric that is exact out of core (module notes), the volume read block by block.

    Peak memory: one z-slab of ``chunk_vox`` (+ halo) slices, a few float32 copies of one block,
    the per-block cluster sizes and, for S2, a slab of ``chunk_vox^3`` voxels.
    """
    summary, z = block_summary(source, voxel_size_um, axes=axes, chunk_vox=chunk_vox,
                               smooth_sigma_vox=smooth_sigma_vox, progress=progress)
    log.info("out-of-core micro (blocks of %d^3): %s", chunk_vox, NOT_OUT_OF_CORE)
    notes = [f"computed out of core in blocks of {chunk_vox}^3 voxels: {NOT_OUT_OF_CORE}"]
    for p in PHASES:
        if summary["volume_fraction"][p] == 0:
            notes.append(f"phase '{p}' is absent: its percolation fractions are NaN")
    summary.update({k: NAN for k in SIZE_KEYS})
    summary.update({"n_particles": 0, "n_inner_particles": 0, "n_boundary_particles": 0, "seed": seed,
                    "out_of_core": {"chunk_vox": int(chunk_vox), "not_computed": NOT_OUT_OF_CORE}})
    summary.update({k: NAN for k in ("internal_pore_volume_um3", "internal_pore_cbd_volume_um3",
                                     "internal_pore_empty_volume_um3", "internal_pore_fraction")})
    rev = rev_curve_chunked(source, voxel_size_um, chunk_vox=chunk_vox, seed=seed, progress=progress)
    present = [p for p in PHASES if summary["volume_fraction"][p] > 0]
    s2 = s2_chunked(source, voxel_size_um, axes, present, chunk_vox, progress)
    summary["definitions"] = DEFINITIONS
    summary["notes"] = notes
    return ChunkedMicro(summary=summary, z_profile=z, rev=rev, s2=s2)


__all__ = ["ChunkedMicro", "NOT_OUT_OF_CORE", "block_summary", "chunked_microstructure", "face_matrix_um2",
           "rev_curve_chunked", "s2_chunked"]

"""Out-of-core microstructure metrics: a label volume read block by block, exact merges.

A :class:`LabelSource` reads canonical labels (0 pore, 1 AM, 2 CBD) region by region from any
array that slices (numpy, ``np.memmap``, zarr, dask: a lazily read TIFF or OME-Zarr).
:func:`scan_blocks` cuts the volume into ``chunk_vox``-edged blocks, reads each z-slab once with
the halo the metrics need and hands every block to :class:`BlockMetrics` and
:class:`BlockPercolation` (measured per block, on a dask.distributed cluster when one is the
active scheduler, merged in block order), whose results equal the in-memory functions they mirror:

- counts, z-profile, AM erosion / dilation bracket (1-voxel halo): integer counts, summed;
- voxel-face areas and TPB edges: each face / edge belongs to the block holding its lower
  corner (``+1`` voxel of context on the high side), so nothing is counted twice;
- marching-cubes areas: each 2x2x2 cell belongs to the block holding its lower corner; the
  binary mesh area is a per-cell table (:func:`litomo.metrics.surface.binary_mesh_area`), and
  the smoothed field is the same Gaussian (scipy, ``mode="nearest"``, ``truncate=3``) computed
  on the block plus its radius, identical to the whole-volume filter inside the block, so the
  per-block meshes partition the whole-volume mesh (areas agree to float rounding);
- percolation: 6-connected labels per block (``scipy.ndimage.label``), merged across block faces
  by a union-find on the label pairs facing each other (``scipy.sparse.csgraph``), cluster sizes
  and face contacts summed per merged cluster.

No third-party library does these merges for a label volume (dask-image's ``ndmeasure.label``
merges components but keeps the whole label image, 8 bytes per voxel; cc3d has no halo merge),
hence the union-find here. The summary assembly, REV and S2 live in
:mod:`litomo.metrics.chunked_report`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from litomo.errors import DataError
from litomo.metrics.surface import DEFAULT_SMOOTH_SIGMA_VOX, binary_mesh_area, triangle_area
from litomo.metrics.tpb import tpb_edges
from litomo.phases import DEFAULT_MAPPING, PHASE_CODES, PHASES, to_canonical
from litomo.progress import ProgressCallback

log = logging.getLogger(__name__)

_SIX = ndi.generate_binary_structure(3, 1)


class LabelSource:
    """Canonical labels of a (possibly lazy) array, read region by region.

    Parameters
    ----------
    array : array-like, (z, y, x)
        Anything with ``shape`` that slices to an array: numpy, memmap, zarr, dask.
    mapping : mapping, optional
        Stored value of each phase (default pore=0, am=1, cbd=2); every region read is checked
        and converted by :func:`litomo.phases.to_canonical`.
    start, shape : (z, y, x), optional
        A sub-volume of ``array`` (default: all of it).

    Examples
    --------
    >>> src = LabelSource(np.array([[[0, 85], [170, 85]]] * 2), {"pore": 0, "am": 85, "cbd": 170})
    >>> src.shape, src.read((0, 0, 0), (1, 2, 2)).tolist()
    ((2, 2, 2), [[[0, 1], [2, 1]]])
    """

    def __init__(self, array: Any, mapping: Any = None, *, start: Sequence[int] = (0, 0, 0),
                 shape: Sequence[int] | None = None) -> None:
        if len(array.shape) != 3:
            raise DataError(f"label volume must be 3D (z, y, x); got shape {tuple(array.shape)}")
        self.array = array
        self.mapping = dict(mapping) if mapping else None
        self.start = tuple(int(s) for s in start)
        self.shape: tuple[int, int, int] = tuple(int(s) for s in (shape or array.shape))  # type: ignore[assignment]

    def read(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """Canonical uint8 labels of ``[lo, hi)`` (coordinates of this source)."""
        sl = tuple(slice(s + a, s + b) for s, a, b in zip(self.start, lo, hi, strict=True))
        raw = self.array[sl]
        # synchronous: this also runs inside a dask task (scan_blocks on a cluster), where a
        # nested compute on the cluster could wait for the very threads that run it
        raw = np.asarray(raw.compute(scheduler="synchronous") if hasattr(raw, "compute") else raw)
        if raw.dtype == np.uint8 and self.mapping in (None, DEFAULT_MAPPING):
            # already canonical: a range check instead of to_canonical's np.unique per block
            if raw.size and raw.max() > 2:
                return to_canonical(raw, self.mapping)  # raises, naming the unexpected values
            return raw
        return to_canonical(raw, self.mapping)

    def sub(self, start: Sequence[int], edge: int) -> LabelSource:
        """The cubic sub-volume of edge ``edge`` voxels at ``start``."""
        return LabelSource(self.array, self.mapping, start=[s + a for s, a in zip(self.start, start, strict=True)],
                           shape=(edge, edge, edge))


@dataclass(frozen=True)
class Block:
    """One block: its voxels ``[start, stop)`` and the region read around it (``region_lo``)."""

    index: tuple[int, int, int]
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    region_lo: tuple[int, int, int]
    shape: tuple[int, int, int]

    def crop(self, region: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """The part of ``region`` from ``start - lo`` to ``stop + hi``, clipped to the volume."""
        sl = tuple(slice(max(a - lo, 0) - r, min(b + hi, n) - r)
                   for a, b, r, n in zip(self.start, self.stop, self.region_lo, self.shape, strict=True))
        return region[sl]

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]


def block_grid(shape: Sequence[int], chunk_vox: int) -> list[list[tuple[int, int]]]:
    """``[(start, stop), ...]`` per axis for blocks of edge ``chunk_vox``.

    Examples
    --------
    >>> block_grid((5, 4, 4), 3)[0]
    [(0, 3), (3, 5)]
    """
    if int(chunk_vox) < 2:
        raise DataError(f"--chunk-size must be at least 2 voxels, got {chunk_vox}")
    return [[(a, min(a + chunk_vox, n)) for a in range(0, n, chunk_vox)] for n in shape]


def scan_blocks(source: LabelSource, chunk_vox: int, halo: int, consumers: Sequence[Any],
                progress: ProgressCallback | None = None) -> None:
    """Read ``source`` in z-slabs (each once, with ``halo`` voxels of context), measure every
    block of every slab (``consumer.measure(region, block)``) and merge the parts in block
    order (``consumer.merge(part, block)``).

    The slabs are measured by :func:`map_ordered` (on the workers of a dask.distributed
    cluster when one is active: ``litomo micro --scheduler``) and merged here in the same
    order, so the results are identical wherever they ran.
    """
    grid = block_grid(source.shape, chunk_vox)
    total = len(grid[0]) * len(grid[1]) * len(grid[2])
    # fresh consumers: a task carries the configuration, not the sums merged so far
    measure = functools.partial(measure_slab, source, grid, halo=halo, consumers=[c.fresh() for c in consumers])
    done = 0
    for parts in map_ordered(measure, range(len(grid[0]))):
        for block, per_consumer in parts:
            for c, part in zip(consumers, per_consumer, strict=True):
                c.merge(part, block)
            done += 1
            if progress is not None:
                progress(done, total, "microstructure: blocks")


def map_ordered(fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """``fn(item)`` for each of ``items``, yielded in order: as dask tasks on the active
    dask.distributed cluster (as many at a time as it has threads, so memory stays a few
    items' worth), else here, one after the other.

    Examples
    --------
    >>> list(map_ordered(abs, [-2, 3]))
    [2, 3]
    """
    slots = cluster_threads()
    if not slots:
        for item in items:
            yield fn(item)
        return
    import dask

    for first in range(0, len(items), slots):
        # pure=False: no hashing of the (possibly large) arguments for a task key
        tasks = [dask.delayed(functools.partial(fn, item), pure=False)() for item in items[first:first + slots]]
        yield from dask.compute(*tasks)


def measure_slab(source: LabelSource, grid: list[list[tuple[int, int]]], iz: int, *, halo: int,
                 consumers: Sequence[Any]) -> list[tuple[Block, list[Any]]]:
    """``[(block, [consumer.measure(region, block), ...]), ...]`` for the blocks of z-slab ``iz``."""
    z0, z1 = grid[0][iz]
    lo_z = max(z0 - halo, 0)
    slab = source.read((lo_z, 0, 0), (min(z1 + halo, source.shape[0]), *source.shape[1:]))
    out = []
    for (iy, (y0, y1)), (ix, (x0, x1)) in itertools.product(enumerate(grid[1]), enumerate(grid[2])):
        lo = (lo_z, max(y0 - halo, 0), max(x0 - halo, 0))
        region = slab[:, lo[1]:y1 + halo, lo[2]:x1 + halo]
        block = Block((iz, iy, ix), (z0, y0, x0), (z1, y1, x1), lo, source.shape)
        out.append((block, [c.measure(region, block) for c in consumers]))
    return out


def cluster_threads() -> int:
    """Worker threads of the dask.distributed client that dask computes on now; 0 without one.

    Examples
    --------
    >>> cluster_threads()
    0
    """
    import dask

    if dask.config.get("scheduler", None) != "dask.distributed":
        return 0
    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError):  # no client left: dask falls back to its threads
        return 0


#: voxels per z-slab of :func:`read_slabs` (16 MiB of uint8)
SLAB_VOXELS = 2**24


def read_slabs(array: Any, progress: ProgressCallback | None = None, desc: str = "reading",
               slab_voxels: int | None = None) -> np.ndarray:
    """A (lazy) array read whole, z-slab by z-slab (``slab_voxels``, default
    :data:`SLAB_VOXELS`), on the dask scheduler of the moment (a ``--scheduler`` cluster reads
    there), reporting ``progress(done, total, desc)`` per slab when there is more than one (a
    one-slab read is no long step, and its line would precede a one-line input error).

    Examples
    --------
    >>> import dask.array as da
    >>> read_slabs(da.arange(24, chunks=6).reshape(2, 3, 4), slab_voxels=12)[1, 2].tolist()
    [20, 21, 22, 23]
    """
    if not hasattr(array, "compute"):
        return np.asarray(array)
    shape = tuple(int(n) for n in array.shape)
    depth = max(1, (slab_voxels or SLAB_VOXELS) // max(1, math.prod(shape[1:])))
    out = np.empty(shape, array.dtype)
    starts = range(0, shape[0], depth)
    for k, z0 in enumerate(starts, start=1):
        out[z0:z0 + depth] = array[z0:z0 + depth].compute()
        if progress is not None and len(starts) > 1:
            progress(k, len(starts), desc)
    return out


def gaussian_radius(sigma: float) -> int:
    """Half-width of scipy's Gaussian kernel at ``truncate=3`` (the context a smoothed voxel needs)."""
    return int(3.0 * float(sigma) + 0.5) if sigma > 0 else 0


@dataclass
class BlockMetrics:
    """Sums over blocks for fractions, bracket, face / mesh areas and TPB (see module notes)."""

    shape: tuple[int, int, int]
    voxel_size_um: tuple[float, float, float]
    sigma: float = DEFAULT_SMOOTH_SIGMA_VOX
    full: bool = True  # False: counts and faces only (the REV metric)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))
    z_counts: np.ndarray | None = None
    bracket: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))  # eroded, dilated
    faces: np.ndarray = field(default_factory=lambda: np.zeros((3, 3, 3), np.int64))  # axis, a, b
    tpb: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))
    mc_raw: np.ndarray = field(default_factory=lambda: np.zeros(3))
    mc_smooth: np.ndarray = field(default_factory=lambda: np.zeros(3))
    smooth_range: np.ndarray = field(default_factory=lambda: np.tile([np.inf, -np.inf], (3, 1)))

    @property
    def halo(self) -> int:
        return max(gaussian_radius(self.sigma) + 1, 1)

    def fresh(self) -> BlockMetrics:
        """An empty accumulator of the same configuration."""
        return BlockMetrics(self.shape, self.voxel_size_um, self.sigma, self.full)

    def measure(self, region: np.ndarray, b: Block) -> BlockMetrics:
        """The sums of one block alone (``self`` unchanged)."""
        part = self.fresh()
        part.add(region, b)
        return part

    def merge(self, part: BlockMetrics, b: Block) -> None:
        """Add the sums of one block (from :meth:`measure`)."""
        if self.z_counts is None:
            self.z_counts = np.zeros((self.shape[0], 3), np.int64)
        if part.z_counts is not None:
            self.z_counts += part.z_counts
        for name in ("counts", "bracket", "faces", "tpb", "mc_raw", "mc_smooth"):
            getattr(self, name)[...] += getattr(part, name)
        self.smooth_range[:, 0] = np.minimum(self.smooth_range[:, 0], part.smooth_range[:, 0])
        self.smooth_range[:, 1] = np.maximum(self.smooth_range[:, 1], part.smooth_range[:, 1])

    def add(self, region: np.ndarray, b: Block) -> None:
        core = b.crop(region, 0, 0)
        self.counts += np.bincount(core.ravel(), minlength=3)[:3]
        if self.z_counts is None:
            self.z_counts = np.zeros((self.shape[0], 3), np.int64)
        idx = (np.arange(core.shape[0], dtype=np.int64)[:, None, None] * 3 + core).ravel()
        self.z_counts[b.start[0]:b.stop[0]] += np.bincount(idx, minlength=3 * core.shape[0]).reshape(-1, 3)
        ext = b.crop(region, 0, 1)
        self._faces(ext, b.size)
        if not self.full:
            return
        self._bracket(b.crop(region, 1, 1), b)
        self.tpb += [int(e[: b.size[0], : b.size[1], : b.size[2]].sum()) for e in tpb_edges(ext)]
        for p in PHASES:
            self.mc_raw[PHASE_CODES[p]] += binary_mesh_area(ext == PHASE_CODES[p], self.voxel_size_um)
        if self.sigma > 0:
            self._smoothed(b.crop(region, gaussian_radius(self.sigma), gaussian_radius(self.sigma) + 1), b)

    def _bracket(self, r1: np.ndarray, b: Block) -> None:
        am = r1 == PHASE_CODES["am"]
        # border_value=1 for erosion: the volume edge is a crop, not an AM surface (as
        # fractions.am_fraction_bracket); inner block edges are cropped off below
        inner = tuple(slice(a - lo, a - lo + n) for a, lo, n in
                      zip(b.start, (max(s - 1, 0) for s in b.start), b.size, strict=True))
        self.bracket[0] += int(ndi.binary_erosion(am, _SIX, border_value=1)[inner].sum())
        self.bracket[1] += int(ndi.binary_dilation(am, _SIX)[inner].sum())

    def _faces(self, ext: np.ndarray, size: tuple[int, int, int]) -> None:
        for ax in range(3):
            sub = ext[tuple(slice(None) if k == ax else slice(0, size[k]) for k in range(3))]
            if sub.shape[ax] < 2:
                continue
            a = sub[tuple(slice(0, -1) if k == ax else slice(None) for k in range(3))]
            c = sub[tuple(slice(1, None) if k == ax else slice(None) for k in range(3))]
            diff = a != c
            self.faces[ax] += np.bincount(a[diff].astype(np.intp) * 3 + c[diff], minlength=9).reshape(3, 3)

    def _smoothed(self, rg: np.ndarray, b: Block) -> None:
        from skimage import measure

        r = gaussian_radius(self.sigma)
        off = [a - max(a - r, 0) for a in b.start]
        for p in PHASES:
            field_ = ndi.gaussian_filter((rg == PHASE_CODES[p]).astype(np.float32), self.sigma, mode="nearest",
                                         truncate=3.0)
            core = field_[tuple(slice(o, o + n) for o, n in zip(off, b.size, strict=True))]
            rng = self.smooth_range[PHASE_CODES[p]]
            rng[0], rng[1] = min(rng[0], float(core.min())), max(rng[1], float(core.max()))
            ext = field_[tuple(slice(o, None) for o in off)]
            ext = ext[tuple(slice(0, n + 1) for n in b.size)]
            if min(ext.shape) >= 2 and ext.min() < 0.5 < ext.max():
                verts, faces, _, _ = measure.marching_cubes(ext, 0.5, spacing=self.voxel_size_um)
                self.mc_smooth[PHASE_CODES[p]] += triangle_area(verts, faces)


@dataclass
class BlockPercolation:
    """Per-block 6-connected clusters of each phase merged across block faces (union-find).

    ``measure`` labels a block and records each cluster's size and whether it touches the low /
    high volume face of each axis (any thread or dask worker); ``merge`` (in scan order) numbers
    them and pairs the labels facing the lower neighbour's high face; ``add`` does both;
    :meth:`fractions` merges and returns through / dead-end / isolated fractions.
    """

    axes: tuple[int, ...]
    sizes: dict[int, list[np.ndarray]] = field(default_factory=lambda: {c: [] for c in range(3)})
    touch: dict[int, list[np.ndarray]] = field(default_factory=lambda: {c: [] for c in range(3)})
    pairs: dict[int, list[np.ndarray]] = field(default_factory=lambda: {c: [] for c in range(3)})
    count: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))
    pending: dict[tuple[int, int, tuple[int, int, int]], np.ndarray] = field(default_factory=dict)

    def fresh(self) -> BlockPercolation:
        """An empty accumulator of the same configuration."""
        return BlockPercolation(self.axes)

    def measure(self, region: np.ndarray, b: Block) -> list[tuple[np.ndarray, np.ndarray, dict[int, np.ndarray],
                                                                   dict[int, np.ndarray]]]:
        """Per phase code: cluster sizes, face contacts, and the block-local labels of the low
        faces (towards a lower neighbour) and high faces (towards a higher one) by axis."""
        core = b.crop(region, 0, 0)
        parts = []
        for code in range(3):
            lab, n = ndi.label(core == code, structure=_SIX)
            sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            t = np.zeros((n + 1, 2 * len(self.axes)), bool)
            for k, ax in enumerate(self.axes):
                t[np.take(lab, 0, axis=ax).ravel(), 2 * k] = b.start[ax] == 0
                t[np.take(lab, -1, axis=ax).ravel(), 2 * k + 1] = b.stop[ax] == b.shape[ax]
            low = {ax: np.take(lab, 0, axis=ax) for ax in range(3) if b.index[ax] > 0}
            high = {ax: np.take(lab, -1, axis=ax) for ax in range(3) if b.stop[ax] < b.shape[ax]}
            parts.append((sizes, t[1:], low, high))
        return parts

    def merge(self, part: list[Any], b: Block) -> None:
        """Number one block's clusters after those merged so far and pair them with the
        clusters facing them in the lower neighbours (blocks arrive in scan order)."""
        for code, (sizes, touch, low, high) in enumerate(part):
            offset = int(self.count[code])
            self.sizes[code].append(sizes)
            self.touch[code].append(touch)
            for ax, plane in low.items():
                prev = self.pending.pop((code, ax, _shifted(b.index, ax)))
                ids = _global_ids(plane, offset)
                both = (prev > 0) & (ids > 0)
                if both.any():
                    self.pairs[code].append(np.unique(np.stack([prev[both], ids[both]], 1), axis=0))
            for ax, plane in high.items():
                self.pending[(code, ax, b.index)] = _global_ids(plane, offset)
            self.count[code] += len(sizes)

    def add(self, region: np.ndarray, b: Block) -> None:
        self.merge(self.measure(region, b), b)

    def fractions(self, code: int) -> dict[int, dict[str, float]]:
        """``{axis: {"through", "dead_end", "isolated"}}`` of phase ``code``, as
        :func:`litomo.metrics.percolation.percolation`; NaN for an absent phase."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = int(self.count[code])
        sizes = np.concatenate(self.sizes[code]) if n else np.zeros(0, np.int64)
        n_phase = int(sizes.sum())
        if n_phase == 0:
            nan = float("nan")
            return {ax: {"through": nan, "dead_end": nan, "isolated": nan} for ax in self.axes}
        pairs = np.concatenate(self.pairs[code]) if self.pairs[code] else np.zeros((0, 2), np.int64)
        graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0] - 1, pairs[:, 1] - 1)), shape=(n, n))
        n_comp, comp = connected_components(graph, directed=False)
        # float64 weights are exact for counts below 2^53
        csize = np.bincount(comp, weights=sizes.astype(np.float64), minlength=n_comp).astype(np.int64)
        touch = np.concatenate(self.touch[code])
        out = {}
        for k, ax in enumerate(self.axes):
            first = np.bincount(comp, weights=touch[:, 2 * k], minlength=n_comp) > 0
            last = np.bincount(comp, weights=touch[:, 2 * k + 1], minlength=n_comp) > 0
            out[ax] = {"through": float(csize[first & last].sum() / n_phase),
                       "dead_end": float(csize[first ^ last].sum() / n_phase),
                       "isolated": float(csize[~(first | last)].sum() / n_phase)}
        log.debug("phase %d: %d block clusters merged into %d", code, n, n_comp)
        return out


def _global_ids(plane: np.ndarray, offset: int) -> np.ndarray:
    """Block-local cluster labels of one face plane -> ids unique over all blocks (0 stays 0)."""
    return np.where(plane > 0, plane.astype(np.int64) + offset, 0)


def _shifted(index: tuple[int, int, int], ax: int) -> tuple[int, int, int]:
    return tuple(i - (k == ax) for k, i in enumerate(index))  # type: ignore[return-value]


__all__ = ["Block", "BlockMetrics", "BlockPercolation", "LabelSource", "block_grid", "cluster_threads",
           "SLAB_VOXELS", "gaussian_radius", "map_ordered", "measure_slab", "read_slabs", "scan_blocks"]

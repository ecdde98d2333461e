"""Block-wise pieces of the streamed ``litomo segment`` (volumes larger than memory).

:func:`litomo.workflows.segment.run_segment` reads the greyscale volume lazily and never holds
it whole: the (optionally denoised) grey volume is staged once into a zarr store chunked like
the prediction blocks (:func:`stage_grey`), Otsu figures and multi-Otsu thresholds come from
a fixed-size random sample of voxels gathered slab by slab (:func:`sample_values`, which the
in-memory path uses too, so the numbers are the same), and the volume fractions and the AM dilation/erosion bracket are sums over
blocks (:func:`label_summary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import DataError


def slab_depth(shape: tuple[int, ...], itemsize: int, memory_mb: float) -> int:
    """z-slices per read so that one slab of the volume takes at most a quarter of ``memory_mb``.

    Examples
    --------
    >>> slab_depth((160, 160, 160), 4, 4.0)
    10
    """
    plane = int(shape[1]) * int(shape[2]) * int(itemsize)
    return int(max(1, min(int(shape[0]), (memory_mb * 2**20 / 4) // max(plane, 1))))


def _slabs(shape: tuple[int, ...], depth: int) -> list[tuple[int, int]]:
    return [(z, min(z + depth, shape[0])) for z in range(0, shape[0], depth)]


def sample_values(grey: Any, max_samples: int, seed: int, *, depth: int) -> np.ndarray:
    """Voxel values behind the Otsu figures, read ``depth`` z-slices at a time (the volume's dtype).

    Every voxel (in C order) when the volume has at most ``max_samples``; otherwise
    ``max_samples`` voxels drawn uniformly with replacement (``default_rng(seed).integers``),
    in increasing index order. Memory is O(``max_samples``) whatever the volume size (drawing
    without replacement, ``Generator.choice`` shuffles all ``n`` indices when ``n`` is below
    50 x the sample: 800 MB at 10^8 voxels). The in-memory path calls this function too, so
    both give the same thresholds. Raises :class:`DataError` for NaN/inf anywhere in the volume
    (every slab is read once).

    Examples
    --------
    >>> g = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    >>> s = sample_values(g, 50, 0, depth=3)
    >>> bool(np.array_equal(s, np.sort(np.random.default_rng(0).integers(0, 1000, 50)).astype(np.float32)))
    True
    """
    n = math.prod(grey.shape)
    plane = int(grey.shape[1]) * int(grey.shape[2])
    idx = np.sort(np.random.default_rng(seed).integers(0, n, max_samples)) if n > max_samples else None
    parts = []
    for z0, z1 in _slabs(tuple(grey.shape), depth):
        slab = np.asarray(grey[z0:z1]).ravel()
        if slab.dtype.kind == "f" and not np.all(np.isfinite(slab)):
            raise DataError("greyscale volume holds NaN or inf voxels; fill or mask them first")
        if idx is None:
            parts.append(slab)
        else:
            a, b = np.searchsorted(idx, [z0 * plane, z1 * plane])
            parts.append(slab[idx[a:b] - z0 * plane])
    return np.concatenate(parts)


def stage_grey(grey: Any, path: Path, block: tuple[int, ...], steps: tuple[str, ...] = (),
               chunks: Any = None) -> tuple[Any, list[dict]]:
    """Denoise ``grey`` block-wise (each filter's halo) and store it in a zarr array chunked as ``block``.

    Returns the stored zarr array (sliced block by block afterwards, without a dask graph per
    read) and the denoising record (:func:`litomo.denoise.denoise_pipeline`). The prediction
    blocks then read only the chunks they overlap, instead of whole z-slabs of the source file.
    """
    import dask.array as da
    import zarr

    from litomo.denoise import denoise_pipeline

    darr = grey if isinstance(grey, da.Array) else da.from_array(grey, chunks=block)
    record: list[dict] = []
    if steps:
        darr, record = denoise_pipeline(darr, steps, chunks=chunks, return_record=True)
    z = zarr.create_array(store=str(path), shape=tuple(int(s) for s in darr.shape), chunks=tuple(block),
                          dtype=darr.dtype, fill_value=0, config={"write_empty_chunks": True}, zarr_format=3)
    da.store(darr.rechunk(tuple(block)), z, lock=False)
    return zarr.open_array(str(path), mode="r"), record


def label_summary(region: Callable[[tuple[slice, ...]], np.ndarray], shape: tuple[int, ...],
                  block: tuple[int, ...], am_code: int = 1, n_codes: int = 3) -> tuple[np.ndarray, dict[str, float]]:
    """Voxels per label code and the AM fraction bracket, one block (+1 voxel of halo) at a time.

    ``region(slices)`` returns the canonical labels of a region. The bracket equals
    :func:`litomo.segment.forest.am_fraction_sensitivity` (1-voxel face dilation / erosion;
    outside the volume is "not AM" for the dilation and "AM" for the erosion).

    Examples
    --------
    >>> lab = np.zeros((10, 10, 10), np.uint8); lab[3:7, 3:7, 3:7] = 1
    >>> counts, s = label_summary(lambda sl: lab[sl], lab.shape, (4, 4, 4))
    >>> counts.tolist(), s["dilated"] * 1000, s["eroded"] * 1000
    ([936, 64, 0], 160.0, 8.0)
    """
    from scipy import ndimage

    from litomo.segment.blocks import block_slices

    st = ndimage.generate_binary_structure(3, 1)
    counts = np.zeros(n_codes, np.int64)
    am = dil = ero = 0
    for sl in block_slices(tuple(shape), tuple(block)):
        lo = [max(s.start - 1, 0) for s in sl]
        hi = [min(s.stop + 1, n) for s, n in zip(sl, shape, strict=True)]
        lab = region(tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        inner = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, lo, strict=True))
        counts += np.bincount(lab[inner].ravel(), minlength=n_codes)[:n_codes]
        pads = [(1 - (s.start - a), 1 - (b - s.stop)) for s, a, b in zip(sl, lo, hi, strict=True)]
        m = lab == am_code
        core = tuple(slice(1, 1 + s.stop - s.start) for s in sl)  # the block inside its 1-voxel rim
        am += int(m[inner].sum())
        dil += int(ndimage.binary_dilation(np.pad(m, pads, constant_values=False), st)[core].sum())
        ero += int(ndimage.binary_erosion(np.pad(m, pads, constant_values=True), st, border_value=1)[core].sum())
    n = math.prod(shape)
    return counts, {"fraction": am / n, "dilated": dil / n, "eroded": ero / n}


def otsu_coder(thresholds: np.ndarray, order: tuple[str, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Grey values -> canonical phase codes by multi-Otsu ``thresholds`` (phases ``order`` by grey value).

    Examples
    --------
    >>> otsu_coder(np.array([1.0, 2.0]), ("pore", "cbd", "am"))(np.array([0.5, 1.5, 2.5])).tolist()
    [0, 2, 1]
    """
    from litomo.phases import PHASE_CODES

    lut = np.array([PHASE_CODES[p] for p in order], dtype=np.uint8)
    return lambda grey: lut[np.digitize(grey, thresholds)]


def compare_reference(labels: Any, reference: Any, values: Any, depth: int,
                      progress: Callable[[int, int, str], None] | None = None) -> dict:
    """:func:`litomo.metrics.agreement.reference_agreement` read ``depth`` z-slices at a time.

    The confusion counts of the slabs add up, so the figures equal the whole-volume ones;
    memory is two slabs whatever the volume size.
    """
    from litomo.metrics.agreement import (
        agreement_from_confusion,
        check_reference_values,
        reference_confusion,
    )

    values = check_reference_values(values)
    slabs = _slabs(tuple(reference.shape), depth)
    total = np.zeros((3, 256), np.int64)
    for i, (z0, z1) in enumerate(slabs):
        total += reference_confusion(np.asarray(labels[z0:z1]), np.asarray(reference[z0:z1]), values)
        if progress is not None and len(slabs) > 1:
            progress(i + 1, len(slabs), "comparing with the reference")
    return agreement_from_confusion(total, values, math.prod(reference.shape))


__all__ = ["compare_reference", "label_summary", "otsu_coder", "sample_values", "slab_depth", "stage_grey"]

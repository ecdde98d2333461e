"""Blocks of a volume with the halo the features need: the chunking of segmentation.

Split from :mod:`litomo.segment.forest` so that training, prediction and streaming share one
definition of how a volume is cut into blocks (their working memory, their mirrored context).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.segment.features import feature_halo, feature_names, features_unpadded


def auto_blocks(shape: tuple[int, ...], n_features: int, halo: int, memory_mb: float) -> tuple[int, ...]:
    """Largest blocks (evenly tiling ``shape``) whose working memory fits ``memory_mb``.

    Per padded voxel: the float32 block, one Gaussian, three gradients and six Hessian
    elements (12 x 4 bytes); per interior voxel: the features and their row-major copy
    (2 x 4 bytes per feature, class probabilities counted as features). The longest block
    edge is split first, so a 128^3 volume runs as two 128 x 128 x 64 blocks, not eight 64^3
    ones (the halo's filter cost grows as the block shrinks).
    """
    budget = memory_mb * 2**20
    pieces = [1, 1, 1]
    while True:
        c = [math.ceil(n / k) for n, k in zip(shape, pieces, strict=True)]
        need = 48 * math.prod(x + 2 * halo for x in c) + 8 * n_features * math.prod(c)
        if need <= budget or max(c) <= max(halo, 16):
            return tuple(c)
        ax = int(np.argmax(c))
        pieces[ax] += 1


def normalise_chunks(chunks: Any, shape: tuple[int, ...], halo: int, n_features: int,
                      memory_mb: float) -> tuple[int, int, int]:
    if chunks is None:
        return auto_blocks(shape, n_features, halo, memory_mb)  # type: ignore[return-value]
    if np.isscalar(chunks):
        c = (int(chunks),) * 3
    else:
        c = tuple(int(x) for x in chunks)
        if len(c) != 3:
            raise DataError(f"--chunks must be one integer or three (z, y, x), got {chunks!r}")
    if any(x < 1 for x in c):
        raise DataError(f"--chunks must be positive, got {chunks!r}")
    # blocks thinner than their halo cost more in context than they deliver; equal-sized
    # blocks avoid thin remainders (correctness does not depend on it: see padded_block)
    c = tuple(min(n, max(x, halo)) for x, n in zip(c, shape, strict=True))
    return tuple(math.ceil(n / math.ceil(n / x)) for x, n in zip(c, shape, strict=True))  # type: ignore[return-value]


def block_slices(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[slice, ...]]:
    ranges = [[slice(a, min(a + c, n)) for a in range(0, n, c)] for n, c in zip(shape, chunks, strict=True)]
    return [tuple(s) for s in itertools.product(*ranges)]


def padded_block(grey: Any, sl: tuple[slice, ...], halo: int) -> np.ndarray:
    """The block plus ``halo`` voxels of context, mirrored (numpy "symmetric") at volume faces.

    Identical to what ``np.pad(grey, halo, "symmetric")`` holds around the block, and to
    dask ``map_overlap(boundary="reflect")``.
    """
    lo = [max(s.start - halo, 0) for s in sl]
    hi = [min(s.stop + halo, n) for s, n in zip(sl, grey.shape, strict=True)]
    region = np.asarray(grey[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))], dtype=np.float32)
    pads = [(halo - (s.start - a), halo - (b - s.stop)) for s, a, b in zip(sl, lo, hi, strict=True)]
    if any(p != (0, 0) for p in pads):
        region = np.pad(region, pads, mode="symmetric")
    return region


def block_features(grey: Any, sl: tuple[slice, ...], halo: int, params: dict) -> np.ndarray:
    return features_unpadded(padded_block(grey, sl, halo), params, crop=halo)


def iter_blocks(grey: Any, params: dict, chunks: Any, memory_mb: float, extra_features: int = 0
                 ) -> Iterator[tuple[tuple[slice, ...], int, int]]:
    halo = feature_halo(params["sigmas"], structure_tensor=params["structure_tensor"])
    c = normalise_chunks(chunks, tuple(grey.shape), halo, len(feature_names(params)) + extra_features,
                          memory_mb)
    blocks = block_slices(tuple(grey.shape), c)
    for i, sl in enumerate(blocks):
        yield sl, i, len(blocks)


def as_rows(f: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(f.reshape(f.shape[0], -1).T)



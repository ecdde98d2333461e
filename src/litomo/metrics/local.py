"""Local property maps: volume fractions, specific surface and tortuosity on tiles (SPEC 3/4).

The volume is cut into boxes of ``tile_um`` (the last box along an axis may be shorter); each
tile gets its phase volume fractions, each phase's specific surface area by voxel-face counting
(um^2 per um^3 of tile) and, optionally, the tortuosity factor of the pore phase along the
transport axis, solved on the tile alone (closed side faces, fixed concentrations on its two
faces normal to the axis). The z-profile of any property is its mean and spread over the tiles
of each z-layer.

Faces on a tile border are split half and half between the two tiles, so the tile areas sum
exactly to the whole-volume face-counting area (:func:`litomo.metrics.surface.face_area_matrix`).
A tile's tortuosity is that of the tile as an isolated sample: paths that leave the tile
sideways are not followed, so it is not an average of the whole-volume tortuosity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from litomo.errors import DataError
from litomo.metrics.fractions import check_labels
from litomo.phases import PHASE_CODES, PHASES
from litomo.progress import ProgressCallback
from litomo.volume import as_voxel_size


def tile_edges(n: int, tile: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in steps of ``tile``.

    Examples
    --------
    >>> tile_edges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(s, min(s + tile, n)) for s in range(0, n, tile)]


def _boundary_face_areas(labels: np.ndarray, box: tuple[tuple[int, int], ...],
                         v: tuple[float, float, float]) -> np.ndarray:
    """Boundary face area (um^2) of each phase inside ``box``; border faces count half."""
    areas = np.zeros(len(PHASES))
    face = (v[1] * v[2], v[0] * v[2], v[0] * v[1])
    for d in range(3):
        lo, hi = box[d]
        elo, ehi = max(lo - 1, 0), min(hi + 1, labels.shape[d])
        sl = tuple(slice(elo, ehi) if k == d else slice(*box[k]) for k in range(3))
        block = labels[sl]
        if block.shape[d] < 2:
            continue
        inside = ((np.arange(elo, ehi) >= lo) & (np.arange(elo, ehi) < hi)).astype(float)
        w = 0.5 * (inside[:-1] + inside[1:])  # 1 inside, 1/2 on the border, 0 outside
        shape = [1, 1, 1]
        shape[d] = w.size
        a = np.take(block, np.arange(block.shape[d] - 1), axis=d)
        b = np.take(block, np.arange(1, block.shape[d]), axis=d)
        diff = a != b
        wd = np.broadcast_to(w.reshape(shape), diff.shape)
        for k, p in enumerate(PHASES):
            code = PHASE_CODES[p]
            e = diff & ((a == code) | (b == code))
            areas[k] += face[d] * float(wd[e].sum())
    return areas


def local_property_maps(
    labels: np.ndarray,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    tile_um: float | Sequence[float] = 20.0,
    *,
    tortuosity_axis: str | None = "z",
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """One row per tile: position, phase fractions, specific surfaces and pore tortuosity.

    Parameters
    ----------
    labels : (z, y, x) uint8
        Canonical labels (0 pore, 1 AM, 2 CBD).
    voxel_size_um : float or (z, y, x)
    tile_um : float or (z, y, x)
        Tile edge length(s) in um (rounded to whole voxels, at least 2).
    tortuosity_axis : {"z", "y", "x"} or None
        Solve the pore tortuosity factor of each tile along this axis (None: skip).
    progress : callable, optional

    Returns
    -------
    pandas.DataFrame
        ``iz, iy, ix`` (tile indices), ``{z,y,x}{0,1}_um`` (tile bounds), ``volume_fraction_<phase>``,
        ``specific_surface_<phase>_um-1`` and, with ``tortuosity_axis``, ``tau_pore_<axis>``
        (inf where the pore does not cross the tile).

    Examples
    --------
    >>> lab = np.zeros((4, 4, 8), np.uint8); lab[..., 4:] = 1
    >>> t = local_property_maps(lab, 1.0, (4, 4, 4), tortuosity_axis=None)
    >>> t["volume_fraction_pore"].tolist(), t["specific_surface_pore_um-1"].tolist()
    ([1.0, 0.0], [0.125, 0.125])
    """
    labels = check_labels(labels)
    if labels.ndim != 3:
        raise DataError(f"local maps need a 3D (z, y, x) label volume, got shape {labels.shape}")
    v = as_voxel_size(voxel_size_um)
    t_um = (float(tile_um),) * 3 if np.isscalar(tile_um) else tuple(float(t) for t in tile_um)
    if len(t_um) != 3 or not all(math.isfinite(t) and t > 0 for t in t_um):
        raise DataError(f"--tile-um must be one positive length or three (z, y, x), got {tile_um!r}")
    tile = tuple(max(2, round(t / vi)) for t, vi in zip(t_um, v, strict=True))
    edges = [tile_edges(n, t) for n, t in zip(labels.shape, tile, strict=True)]
    total = math.prod(len(e) for e in edges)
    rows = []
    for iz, ez in enumerate(edges[0]):
        for iy, ey in enumerate(edges[1]):
            for ix, ex in enumerate(edges[2]):
                rows.append(_tile_row(labels, (ez, ey, ex), (iz, iy, ix), v, tortuosity_axis))
                if progress is not None:
                    progress(len(rows), total, "local maps")
    return pd.DataFrame(rows)


def _tile_row(labels: np.ndarray, box: tuple[tuple[int, int], ...], index: tuple[int, int, int],
              v: tuple[float, float, float], tortuosity_axis: str | None) -> dict[str, float]:
    block = labels[tuple(slice(*b) for b in box)]
    vol_um3 = block.size * math.prod(v)
    row: dict[str, float] = {"iz": index[0], "iy": index[1], "ix": index[2]}
    for d, name in enumerate("zyx"):
        row[f"{name}0_um"], row[f"{name}1_um"] = box[d][0] * v[d], box[d][1] * v[d]
    counts = np.bincount(block.ravel(), minlength=3)
    areas = _boundary_face_areas(labels, box, v)
    for k, p in enumerate(PHASES):
        row[f"volume_fraction_{p}"] = counts[PHASE_CODES[p]] / block.size
        row[f"specific_surface_{p}_um-1"] = areas[k] / vol_um3
    if tortuosity_axis is not None:
        from litomo.transport.diffusion import tortuosity

        ax = "zyx".index(tortuosity_axis)
        pore = block == PHASE_CODES["pore"]
        row[f"tau_pore_{tortuosity_axis}"] = (tortuosity(pore, tortuosity_axis, voxel_size_um=v).tau
                                              if block.shape[ax] >= 2 and pore.any() else math.inf)
    return row


def tile_profile(table: pd.DataFrame, axis: str = "z") -> pd.DataFrame:
    """Mean, standard deviation, min and max of every tile property per layer of tiles along ``axis``.

    Infinite tortuosities are left out of the statistics and counted in ``n_inf_<column>``.

    Examples
    --------
    >>> t = pd.DataFrame({"iz": [0, 0, 1], "z0_um": [0, 0, 5], "z1_um": [5, 5, 9],
    ...                   "volume_fraction_am": [0.2, 0.4, 0.5]})
    >>> tile_profile(t)["volume_fraction_am_mean"].round(3).tolist()
    [0.3, 0.5]
    """
    key = f"i{axis}"
    skip = {"iz", "iy", "ix", "z0_um", "z1_um", "y0_um", "y1_um", "x0_um", "x1_um"}
    cols = [c for c in table.columns if c not in skip]
    out = []
    for i, g in table.groupby(key, sort=True):
        row: dict[str, float] = {key: i, f"{axis}0_um": g[f"{axis}0_um"].iloc[0], f"{axis}1_um": g[f"{axis}1_um"].iloc[0],
                                 "n_tiles": len(g)}
        for c in cols:
            x = g[c].to_numpy(float)
            fin = x[np.isfinite(x)]
            row[f"{c}_mean"] = float(fin.mean()) if fin.size else math.nan
            row[f"{c}_std"] = float(fin.std()) if fin.size else math.nan
            row[f"{c}_min"] = float(fin.min()) if fin.size else math.nan
            row[f"{c}_max"] = float(fin.max()) if fin.size else math.nan
            if c.startswith("tau_"):
                row[f"n_inf_{c}"] = int(np.isinf(x).sum())
        out.append(row)
    return pd.DataFrame(out)


def tile_map(table: pd.DataFrame, column: str) -> np.ndarray:
    """The tile property ``column`` as a small (n_z, n_y, n_x) array of tiles.

    Examples
    --------
    >>> t = pd.DataFrame({"iz": [0, 1], "iy": [0, 0], "ix": [0, 0], "volume_fraction_am": [0.2, 0.4]})
    >>> tile_map(t, "volume_fraction_am").shape
    (2, 1, 1)
    """
    shape = tuple(int(table[f"i{a}"].max()) + 1 for a in "zyx")
    out = np.full(shape, np.nan)
    out[table["iz"].to_numpy(int), table["iy"].to_numpy(int), table["ix"].to_numpy(int)] = table[column].to_numpy(float)
    return out

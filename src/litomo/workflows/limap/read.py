"""Stage ``read``: read a state's energy volumes lazily and block-mean bin them.

Only binned volumes are ever held in memory: a 1024^3 uint16 volume binned 7x7x7 is 146^3
float32 (12 MB). Each volume is read once, in z-slabs of whole bins, and feeds two binnings:
the map's (``processing.bin``) and the registration's (``processing.register_bin``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.manifest import ENERGY_ROLES, Manifest, StateSpec
from litomo.preprocess import bin_factors
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.stage import StateStage


def roles_of(state: StateSpec) -> tuple[str, ...]:
    """The image roles of a state (``pre_edge``, ``edge``, ``post_edge`` in three-energy mode)."""
    if state.three_energy:
        return ENERGY_ROLES
    return tuple(f"e{e:.1f}" for e in state.energies_ev)


def fixed_role(state: StateSpec) -> str:
    """The role every other energy is registered onto: ``post_edge``, or the highest energy."""
    return "post_edge" if state.three_energy else roles_of(state)[-1]


def open_state_volumes(state: StateSpec, manifest: Manifest, *,
                       slab_depth: Callable[[tuple[int, ...], int], int] | None = None) -> dict[str, Any]:
    """Open a state's energy volumes lazily (headers only) and refuse mismatched shapes.

    ``slab_depth(shape, itemsize)`` sets the z depth of the dask chunks the files are read in, so the
    reads themselves come in the slabs a stage works on (no dask rechunk copying data).
    """
    from litomo.io import read_volume

    chunks = None
    if slab_depth is not None:
        first = read_volume(state.volumes[0], lazy=True, voxel_size_um=manifest.sample.voxel_size_um)
        chunks = (slab_depth(first.shape, np.dtype(first.dtype).itemsize), -1, -1)
    vols = {role: read_volume(path, lazy=True, chunks=chunks, voxel_size_um=manifest.sample.voxel_size_um)
            for role, path in zip(roles_of(state), state.volumes, strict=True)}
    if len({v.shape for v in vols.values()}) != 1:
        detail = ", ".join(f"{r} {v.shape}" for r, v in vols.items())
        raise DataError(f"state {state.name!r}: the energy volumes differ in shape ({detail})")
    return vols


def check_input_volumes(manifest: Manifest) -> dict[str, Any]:
    """Open every volume (header only) and refuse unreadable files or mismatched shapes.

    Part of the input validation, so a bad file in the last state fails at once instead of
    after the earlier states were processed. Returns the first volume of each state (lazy).
    """
    return {st.name: next(iter(open_state_volumes(st, manifest).values())) for st in manifest.states}


def check_volume_values(name: str, binned: np.ndarray) -> list[str]:
    """Warn about NaN/inf and refuse an all-zero or constant volume.

    Examples
    --------
    >>> check_volume_values("v", np.array([1.0, np.nan, 2.0, 3.0]))
    ['v: 25.00% of the bins hold no finite voxel (excluded from the map)']
    """
    msgs = []
    finite = np.isfinite(binned)
    if not finite.all():
        frac = 1.0 - finite.mean()
        msgs.append(f"{name}: {frac:.2%} of the bins hold no finite voxel (excluded from the map)")
    vals = binned[finite]
    if vals.size == 0:
        raise DataError(f"{name}: every bin is NaN/inf (no finite voxel); check the file")
    if np.all(vals == 0):
        raise DataError(f"{name}: the finite voxels are all zero; check the file")
    if np.ptp(vals) == 0:
        raise DataError(f"{name}: the volume is constant ({vals.flat[0]}); check the file")
    return msgs


def bin_slab_depth(shape: tuple[int, ...], itemsize: int, factor: tuple[int, int, int], chunk_mb: float,
                   other: tuple[int, int, int] | None = None) -> int:
    """z depth of ~``chunk_mb`` slabs made of whole bins of ``factor`` (and of ``other``).

    Examples
    --------
    >>> bin_slab_depth((1024, 1024, 1024), 2, (7, 7, 7), 128.0, (4, 4, 4))
    56
    """
    step = factor[0] if other is None else math.lcm(factor[0], other[0])
    # z-slabs spanning full y/x: matches how TIFF pages are stored on disk
    plane = shape[1] * shape[2] * itemsize
    return max(step, int(chunk_mb * 2**20 // max(plane, 1)) // step * step)


def auto_register_bin(shape: tuple[int, ...], setting: int | tuple[int, int, int] | str, *,
                      max_voxels: float = 17e6) -> int | tuple[int, int, int]:
    """The binning factor the registration is estimated on.

    ``"auto"``: the smallest factor >= 2 whose binned volume has at most ``max_voxels`` (a
    256^3 registration takes seconds and well under 1 GB in elastix; finer grids place
    particle surfaces better, which the edge ratio needs at surface voxels).

    Examples
    --------
    >>> auto_register_bin((192, 192, 192), "auto"), auto_register_bin((1024,) * 3, "auto")
    (2, 4)
    """
    if setting != "auto":  # one factor, or (z, y, x) factors (processing.register_bin = [1, 4, 4])
        return setting if isinstance(setting, tuple) else int(setting)
    n = float(np.prod(shape))
    f = 2
    while n / f**3 > max_voxels:
        f += 1
    return f


def slab_opener(ctx: RunContext, state: StateSpec) -> Callable[[tuple[int, ...], int], int]:
    """The slab depth both the binning and the full-resolution warp read a state's files in."""
    p = ctx.manifest.processing
    reg_factor = bin_factors(auto_register_bin(ctx.raw_shapes[state.name], p.register_bin))

    def slab_depth(shape: tuple[int, ...], itemsize: int) -> int:
        return bin_slab_depth(shape, itemsize, bin_factors(p.bin), ctx.options.chunk_mb, reg_factor)

    return slab_depth


def open_slabbed(ctx: RunContext, state: StateSpec, volumes: dict[str, np.ndarray] | None = None,
                 ) -> tuple[dict[str, Any], tuple[float, float, float]]:
    """Lazy (dask) full-resolution arrays of a state, chunked in whole-bin z-slabs, and the raw voxel size.

    ``volumes``: the state's volumes by role when they were reconstructed in this run (stage
    ``reconstruct``) instead of read from files.
    """
    slab_depth = slab_opener(ctx, state)
    if volumes:
        import dask.array as da

        return ({role: da.from_array(v, chunks=(slab_depth(v.shape, v.dtype.itemsize), -1, -1))
                 for role, v in volumes.items()}, ctx.raw_voxel_size_um[state.name])
    vols = open_state_volumes(state, ctx.manifest, slab_depth=slab_depth)
    arrays = {}
    for role, vol in vols.items():
        arr = vol.array
        depth = slab_depth(arr.shape, arr.dtype.itemsize)
        if arr.chunks[0][0] != depth:  # formats that ignore the requested chunks
            arr = arr.rechunk((depth, -1, -1))
        # [data] encoding of the files undone (lazy float32; the identity leaves the array as it is)
        arrays[role] = ctx.manifest.data.to_mu(arr)
    return arrays, tuple(next(iter(vols.values())).voxel_size_um)


@dataclass
class Binned:
    """Output of :class:`BinStage`: each energy binned for the map and for the registration."""

    #: bin means on the map grid (``processing.bin``), by role
    map_grid: dict[str, np.ndarray]
    #: bin means on the registration grid (``processing.register_bin``), by role
    reg_grid: dict[str, np.ndarray]
    register_factor: tuple[int, int, int]
    raw_shape: tuple[int, int, int]
    raw_voxel_size_um: tuple[float, float, float]
    warnings: list[str]


class BinStage(StateStage):
    """Read each energy lazily and bin it for the map and for the registration.

    Not stored: reading and binning is cheap next to what it feeds, and it is redone only
    when a stage that reads it (registration, warp) has to run again.
    """

    name = "read"
    needs = ("reconstruct",)
    persist = False
    output = Binned

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        p, enc = ctx.manifest.processing, ctx.manifest.data
        key = {"inputs": {str(v): ctx.checksums[str(v)] for v in state.volumes},
               "bin": bin_factors(p.bin),
               "register_bin": auto_register_bin(ctx.raw_shapes[state.name], p.register_bin),
               "voxel_size_um": ctx.raw_voxel_size_um[state.name]}
        if not enc.identity:  # absent by default: the keys of runs without [data] stay as they were
            key["encoding"] = [enc.mu_scale_per_count, enc.mu_offset_per_um]
        return key

    def run(self, ctx: RunContext, state: StateSpec, *, reconstruct: Any = None) -> Binned:
        from litomo.preprocess import bin_multi

        p = ctx.manifest.processing
        reg_factor = bin_factors(auto_register_bin(ctx.raw_shapes[state.name], p.register_bin))
        arrays, raw_vs = open_slabbed(ctx, state, reconstruct.volumes if reconstruct is not None else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            done, finite = bin_multi(list(arrays.values()), [p.bin, reg_factor], return_finite=True)
        map_grid, reg_grid, msgs = {}, {}, []
        for role, out, fin in zip(arrays, done, finite, strict=True):
            map_grid[role], reg_grid[role] = out[0], out[1]
            if fin < 1.0:  # NaN-aware bins: say how much was left out (issue #20 item 8)
                msgs.append(f"state {state.name} {role}: {1.0 - fin:.2%} of the voxels are NaN/inf; "
                            "each bin averages its finite voxels")
            msgs += check_volume_values(f"state {state.name} {role}", map_grid[role])
        ctx.report(len(arrays), len(arrays), f"{state.name}: bin")
        return Binned(map_grid, reg_grid, reg_factor, tuple(next(iter(arrays.values())).shape), raw_vs, msgs)

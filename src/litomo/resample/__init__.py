"""Resampling: displacement fields, samplers, warp + bin kernels and the observed mask.

The one place litomo moves voxels from one grid to another (registration results applied at
full resolution, the Li-mapping warp + bin, the synthetic generator's misregistration).

Frame convention (shared with :mod:`litomo.register`): the corner of voxel ``(0, 0, 0)`` is the
origin, so voxel ``i`` of spacing ``s`` has its centre at ``(i + 0.5) * s``; block-mean binning
keeps that frame. A displacement field ``u`` (um, z-first components, from
:func:`litomo.register.displacement_field`) maps an output point ``p`` to ``p + u(p)`` in the
moving volume; on a finer grid it is upsampled trilinearly (:func:`upsample_linear`).

Samplers (those with scipy semantics live in :mod:`litomo.resample.samplers`, re-exported here):

* :func:`warp_slab` - scipy ``map_coordinates`` of any order (cubic by default);
* :func:`warp_slab_linear` / :func:`warp_bin_slab` - the numba trilinear kernel on given source
  indices, optionally binned on the fly;
* :func:`warp_bin_field` - the field's upsampling evaluated inside the kernel, one field row per
  output row, with masked bin means (:func:`selection_bits`), trilinear or cubic (whole-volume
  spline coefficients of the slab's rows: :mod:`litomo.resample.cubic`); this is what makes a
  1024^3 warp + bin take tens of seconds instead of minutes, and stores neither the coordinates
  (~1.7 GB for a 70x1024x1024 slab) nor the full-resolution slab;
* :func:`observed_mask` - output voxels whose source lies inside the moving volume;
* :func:`litomo.resample.kernels.affine_rows` - affine + smooth-deformation pull (phantom).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from litomo.errors import LitomoError
from litomo.resample import cubic, kernels
from litomo.resample.cubic import SplineRows, read_spline_rows, spline_rows
from litomo.resample.grid import (
    FieldGrid,
    MovingRows,
    block_array,
    field_grid,
    read_moving_rows,
    read_rows,
)
from litomo.resample.samplers import (
    box_mean,
    bspline_sum,
    cubic_prefilter_z,
    linear_weights,
    map_coordinates_cubic,
    set_threads,
    source_coordinates,
    upsample_linear,
    warp_slab,
)

__all__ = ["FieldGrid", "MovingRows", "SplineRows", "bin_selected", "box_mean", "bspline_sum", "cubic_prefilter_z", "field_grid", "interior_bits", "linear_weights", "map_coordinates_cubic", "observed_mask", "read_moving_rows", "read_spline_rows", "selection_bits", "set_threads",
           "source_coordinates", "spline_rows", "upsample_linear", "warp_bin_field", "warp_bin_slab", "warp_slab", "warp_slab_linear"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _factors(factor: int | tuple[int, int, int]) -> tuple[int, int, int]:
    f = (factor,) * 3 if np.isscalar(factor) else tuple(factor)
    if len(f) != 3 or any(int(k) < 1 for k in f):
        raise LitomoError(f"bin factor must be 1 or 3 positive integers, got {factor!r}")
    return tuple(int(k) for k in f)  # type: ignore[return-value]


def _coords(src_z: Any, src_y: Any, src_x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = [np.asarray(s) for s in (src_z, src_y, src_x)]
    if src[0].ndim != 3 or any(s.shape != src[0].shape for s in src):
        raise LitomoError("src_z, src_y, src_x must be 3D arrays of one shape, "
                          f"got {[s.shape for s in src]}")
    # float32 and float64 each get their own compiled kernel; anything else becomes float64
    return tuple(s if s.dtype in (np.float32, np.float64) else s.astype(np.float64)
                 for s in src)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------

def warp_slab_linear(block: Any, z_offset: int, src_z: Any, src_y: Any, src_x: Any) -> np.ndarray:
    """Trilinear resampling of ``block`` at given fractional voxel indices.

    Identical (to float32 rounding) to ``scipy.ndimage.map_coordinates(block,
    [src_z - z_offset, src_y, src_x], order=1, mode="nearest")``, but parallel.

    Parameters
    ----------
    block : (bz, by, bx) array, uint16 or float32 (others are converted)
        Rows ``[z_offset, z_offset + bz)`` of the moving volume.
    z_offset : int
        Moving-volume z index of ``block[0]``; ``src_z`` is in moving-volume indices.
    src_z, src_y, src_x : (nz, ny, nx) float arrays
        Source fractional voxel indices (voxel centres at integers) of each output voxel.
        Out-of-range indices take the nearest edge value.

    Returns
    -------
    numpy.ndarray
        float32 ``(nz, ny, nx)``.

    Examples
    --------
    >>> b = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> z = np.full((1, 1, 1), 0.5)
    >>> float(warp_slab_linear(b, 0, z, z, z)[0, 0, 0])
    3.5
    """
    block = block_array(block)
    sz, sy, sx = _coords(src_z, src_y, src_x)
    out = np.empty(sz.shape, np.float32)
    kernels.warp_rows(block, float(z_offset), sz, sy, sx, out)
    return out


def warp_bin_slab(block: Any, z_offset: int, src_z: Any, src_y: Any, src_x: Any,
                  factor: int | tuple[int, int, int] = 7) -> np.ndarray:
    """Trilinear resampling (as :func:`warp_slab_linear`) followed by block-mean binning.

    The warped values are accumulated straight into the bins (float64 sums), so the
    full-resolution slab is never stored. Output voxels beyond whole bins are dropped, as in
    :func:`litomo.preprocess.bin_array`; NaN in ``block`` propagates into its bins.

    Parameters
    ----------
    block, z_offset, src_z, src_y, src_x
        As :func:`warp_slab_linear`.
    factor : int or (fz, fy, fx)
        Bin size (voxels).

    Returns
    -------
    numpy.ndarray
        float32 ``(nz // fz, ny // fy, nx // fx)``.

    Examples
    --------
    >>> b = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> z, y, x = (a.astype(float) for a in np.indices((2, 2, 2)))
    >>> warp_bin_slab(b, 0, z, y, x, 2).tolist()
    [[[3.5]]]
    """
    f = _factors(factor)
    block = block_array(block)
    sz, sy, sx = _coords(src_z, src_y, src_x)
    shape = tuple(n // k for n, k in zip(sz.shape, f, strict=True))
    out = np.empty(shape, np.float32)
    if 0 in shape:
        return out
    kernels.warp_bin_rows(block, float(z_offset), sz, sy, sx, f[0], f[1], f[2], out)
    return out


def warp_bin_field(moving: Any, field_um: np.ndarray, field_voxel_size_um: Any,
                   voxel_size_um: Any, z_range: tuple[int, int], out_shape_yx: tuple[int, int],
                   factor: int | tuple[int, int, int] = 7, *,
                   valid: np.ndarray | None = None, interior: np.ndarray | None = None,
                   bits: np.ndarray | None = None) -> Any:
    """Warp output slices ``z_range`` through a coarse displacement field and bin them.

    Same transform and conventions as :func:`warp_slab` (the field is upsampled trilinearly to
    each output voxel, the moving volume sampled with edge clamping), followed by
    :func:`litomo.preprocess.bin_array`, in one parallel pass that stores neither the
    coordinates nor the full-resolution slab. The volume is sampled trilinearly; given the
    slab's :func:`litomo.resample.cubic.read_spline_rows` instead, with cubic B-splines: scipy's
    ``map_coordinates(volume, ..., order=3, mode="nearest")`` of the *whole* volume, to ~1e-15
    before the float32 result.

    Parameters
    ----------
    moving : array-like (numpy, dask or anything sliceable), (z, y, x), or SplineRows
        The full-resolution moving volume; only the rows the slab needs are read (uint16 and
        float32 are used as they are, other dtypes converted to float32); or the slab's
        :func:`litomo.resample.cubic.read_spline_rows` (cubic sampling).
    field_um : (3, z, y, x) float
        :func:`litomo.register.displacement_field` on a coarser grid of the same frame (um).
    field_voxel_size_um, voxel_size_um : (z, y, x)
        Voxel sizes of the field grid and of the full-resolution grid (um).
    z_range : (z0, z1)
        Full-resolution output slices; ``z1 - z0`` should be a multiple of the z factor.
    out_shape_yx : (ny, nx)
        In-plane full-resolution output size.
    factor : int or (fz, fy, fx)
        Bin size (voxels).
    valid, interior : bool arrays, optional
        Selections of output voxels (shape: the slab's whole bins at full resolution, in the
        output frame). ``valid``: the bin means are taken over these voxels only (NaN in bins
        without any). ``interior``: the means over ``interior & valid`` are returned too, from
        the same pass, as :func:`litomo.preprocess.bin_masked` of the warped slab would give.
    bits : uint8 array, optional
        Both selections at once, from :func:`selection_bits` (to build them once for several
        volumes warped onto the same slab); the interior means are then returned too.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        float32 ``((z1 - z0) // fz, ny // fy, nx // fx)``: the bin means, and with
        ``interior`` the interior means.

    Examples
    --------
    >>> mov = np.random.default_rng(0).random((14, 14, 14)).astype(np.float32)
    >>> zero = np.zeros((3, 2, 2, 2), np.float32)
    >>> out = warp_bin_field(mov, zero, (0.7,) * 3, (0.1,) * 3, (0, 14), (14, 14), 7)
    >>> bool(np.allclose(out, mov.reshape(2, 7, 2, 7, 2, 7).mean(axis=(1, 3, 5)), atol=1e-6))
    True
    """
    f = _factors(factor)
    g = field_grid(field_um, field_voxel_size_um, voxel_size_um, z_range, out_shape_yx)
    spline = moving if isinstance(moving, cubic.SplineRows) else None
    if spline is None and len(getattr(moving, "shape", ())) != 3:
        raise LitomoError("moving must be a 3D array")
    if spline is not None:  # the coefficients' frame: the volume's padded by cubic.PAD on every side
        block, z_off, yx_off = spline.coef, float(spline.first - cubic.PAD), -float(cubic.PAD)
    else:
        lo, hi = g.moving_rows(int(moving.shape[0]))
        block, z_off, yx_off = read_rows(moving, lo, hi), float(lo), 0.0
    (iz0, iz1, wz), (iy0, iy1, wy), (ix0, ix1, wx) = g.weights
    cz, cy, cx = g.centres
    shape = (cz.size // f[0], cy.size // f[1], cx.size // f[2])
    out = np.empty(shape, np.float32)
    full = tuple(n * k for n, k in zip(shape, f, strict=True))
    both = bits is not None or interior is not None  # return the interior means too
    if bits is None and (valid is not None or interior is not None):
        bits = selection_bits(full, valid, interior)
    if bits is not None and bits.shape != full:
        raise LitomoError(f"selection of shape {bits.shape} does not cover the slab's bins {full}")
    if 0 in shape:
        return (out, out.copy()) if both else out
    sums = np.empty(shape if bits is not None else (1, 1, 1), np.float32)
    kernels.warp_bin_field_rows(block, z_off, yx_off, 3 if spline is not None else 1, g.field, cz, cy, cx, g.voxel_size_um,
                                iz0, iz1, wz, iy0, iy1, wy, ix0, ix1, wx, f[0], f[1], f[2], out,
                                bits if bits is not None else np.zeros((1, 1, 1), np.uint8),
                                bits is not None, sums)
    # with a selection the kernel returns the two masked means (NaN in bins without voxels)
    if bits is None:
        return out
    return (out, sums) if both else out


def selection_bits(shape: tuple[int, int, int], valid: np.ndarray | None = None,
                   interior: np.ndarray | None = None) -> np.ndarray:
    """Pack two voxel selections into one uint8 array: bit 1 = valid, bit 2 = interior & valid.

    Examples
    --------
    >>> selection_bits((1, 1, 3), np.array([[[1, 1, 0]]], bool), np.array([[[0, 1, 1]]], bool)).tolist()
    [[[1, 3, 0]]]
    """
    out = []
    for name, sel in (("valid", valid), ("interior", interior)):
        if sel is None:
            out.append(None)
            continue
        sel = np.asarray(sel, dtype=bool)[: shape[0], : shape[1], : shape[2]]
        if sel.shape != tuple(shape):
            raise LitomoError(f"{name} mask of shape {sel.shape} does not cover the slab's bins {tuple(shape)}")
        out.append(sel)
    v, i = out
    if v is None:
        bits = np.ones(shape, np.uint8)
    else:
        bits = np.ascontiguousarray(v).view(np.uint8).copy()
    if i is not None:
        bits |= (i if v is None else i & v).view(np.uint8) << 1
    return bits


def interior_bits(halo: Any, offset: int, threshold: float, shape: tuple[int, int, int],
                  valid: np.ndarray | None = None) -> np.ndarray:
    """:func:`selection_bits` of ``valid`` and a one-voxel-eroded interior, in one parallel pass.

    ``selection_bits(shape, valid, interior_mask(halo, threshold, 1)[offset:offset + shape[0],
    :shape[1], :shape[2]])`` without the full-size temporaries (:func:`litomo.preprocess.interior_mask`:
    voxels above ``threshold`` whose 6 face neighbours are too; the array's faces count as
    inside). ``halo``: the slab's rows with one extra row on each side where the volume has one.

    Examples
    --------
    >>> h = np.zeros((1, 1, 7), np.float32); h[..., 1:6] = 1.0
    >>> interior_bits(h, 0, 0.5, (1, 1, 7)).tolist()
    [[[1, 1, 3, 3, 3, 1, 1]]]
    """
    halo = np.asarray(halo)
    if halo.ndim != 3 or any(n > k for n, k in zip((shape[0] + offset, *shape[1:]), halo.shape, strict=True)):
        raise LitomoError(f"halo of shape {halo.shape} does not cover the selection {tuple(shape)} from row {offset}")
    if halo.dtype not in (np.uint16, np.float32):
        halo = halo.astype(np.float32)
    bits = np.empty(tuple(shape), np.uint8)
    use = valid is not None
    v = np.asarray(valid, dtype=bool)[: shape[0], : shape[1], : shape[2]] if use else np.ones((1, 1, 1), bool)
    if use and v.shape != tuple(shape):
        raise LitomoError(f"valid mask of shape {v.shape} does not cover the selection {tuple(shape)}")
    kernels.interior_bits_rows(halo, int(offset), float(threshold), v, use, bits)
    return bits


def bin_selected(block: Any, bits: np.ndarray, factor: int | tuple[int, int, int] = 7,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin means over two packed selections (:func:`selection_bits`) of an unwarped block.

    What :func:`litomo.preprocess.bin_masked` gives for ``bits & 1`` and for ``bits & 2`` (the
    volume nothing moves, on the same bins as :func:`warp_bin_field`), in one parallel pass.

    Returns
    -------
    plain, interior, count : float32 arrays
        Means over the voxels with bit 1 and with bit 2 (NaN in bins without any), and the
        number of voxels with bit 2 per bin.

    Examples
    --------
    >>> b = np.arange(8, dtype=np.uint16).reshape(2, 2, 2)
    >>> plain, inner, n = bin_selected(b, selection_bits((2, 2, 2), None, b >= 4), 2)
    >>> plain.tolist(), inner.tolist(), n.tolist()
    ([[[3.5]]], [[[5.5]]], [[[4.0]]])
    """
    f = _factors(factor)
    block = np.asarray(block)
    if block.ndim != 3:
        raise LitomoError(f"block must be a 3D array, got shape {block.shape}")
    if block.dtype not in (np.uint16, np.float32):
        block = block.astype(np.float32)
    shape = tuple(n // k for n, k in zip(block.shape, f, strict=True))
    full = tuple(n * k for n, k in zip(shape, f, strict=True))
    if any(n < k for n, k in zip(np.shape(bits), full, strict=True)):
        raise LitomoError(f"selection of shape {np.shape(bits)} does not cover the block's bins {full}")
    # voxels beyond whole bins are dropped, as in bin_array: the kernel reads only the bins of
    # ``out``. Not cropped here: a crop that is not a multiple of the bins makes a non-contiguous
    # view, which numba compiles a second time (~1.3 s per dtype in a fresh checkout)
    bits = np.asarray(bits, dtype=np.uint8)
    out = [np.empty(shape, np.float32) for _ in range(3)]
    if 0 not in shape:
        kernels.bin_bits_rows(block, bits, f[0], f[1], f[2], *out)
    return out[0], out[1], out[2]


def observed_mask(field_um: np.ndarray, field_voxel_size_um: Any, voxel_size_um: Any,
                  z_range: tuple[int, int], out_shape_yx: tuple[int, int],
                  moving_shape: tuple[int, int, int]) -> np.ndarray:
    """Output voxels of a slab whose transformed position lies inside the moving volume.

    Near the faces of the field of view a translation makes part of the output map to points
    the moving volume never saw; resampling with edge clamping (as every warp here does)
    fills them with copies of the edge plane, which are not a measurement of that place. This
    marks them (False) so they can be left out. Only layers within the largest displacement
    of a face are evaluated (the interior is inside by construction), with the same field
    upsampling as :func:`warp_bin_field`.

    Returns
    -------
    bool array ``(z1 - z0, ny, nx)``.

    Examples
    --------
    >>> field = np.zeros((3, 2, 2, 2), np.float32); field[2] = 0.25  # +2.5 voxels along x
    >>> m = observed_mask(field, (0.7,) * 3, (0.1,) * 3, (0, 2), (3, 14), (14, 14, 14))
    >>> m[0, 0].astype(int).tolist()
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    """
    g = field_grid(field_um, field_voxel_size_um, voxel_size_um, z_range, out_shape_yx)
    field, vs, centres = g.field, g.voxel_size_um, g.centres
    fvs = np.asarray(field_voxel_size_um, float)
    out = np.ones(tuple(c.size for c in centres), bool)
    for axis in range(3):
        n_in = int(moving_shape[axis])
        reach = int(math.ceil(float(np.abs(field[axis]).max()) / vs[axis])) + 1
        # output indices (along this axis) whose voxel centre is within `reach` of either face
        # of the moving volume
        idx = np.arange(centres[axis].size)
        pos_in = centres[axis] / vs[axis] - 0.5
        near = idx[(pos_in < reach) | (pos_in > n_in - 1 - reach)]
        if near.size == 0:
            continue
        cent = [c if a != axis else c[near] for a, c in enumerate(centres)]
        pos = [c / fvs[a] - 0.5 for a, c in enumerate(cent)]
        # the few near-face positions first: the intermediate arrays stay a thin layer
        order = [axis] + [a for a in range(3) if a != axis]
        u = np.moveaxis(upsample_linear(np.moveaxis(field[axis], order, (0, 1, 2)),
                                         tuple(pos[a] for a in order)), (0, 1, 2), order)
        shape = [1, 1, 1]
        shape[axis] = -1
        src = (cent[axis].reshape(shape) + u) / vs[axis] - 0.5
        inside = (src >= -0.5) & (src <= n_in - 0.5)
        sub = [slice(None)] * 3
        sub[axis] = near
        out[tuple(sub)] &= inside
    return out

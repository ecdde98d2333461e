"""The register stage's edge-image target on the registration grid, and the itk-free resampling it uses.

The edge image's contrast depends on the Li content the map is to measure, so its B-spline is
registered onto the edge image the pre- and post-edge images predict (:func:`predicted_edge`),
resampled without itk (:func:`warp_cubic`); :mod:`litomo.workflows.limap.registration` runs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from litomo.errors import DataError


def predicted_edge(pre: np.ndarray, edge: np.ndarray, post: np.ndarray, interior: np.ndarray,
                   sigma_vox: float) -> np.ndarray:
    """The edge image the pre- and post-edge images predict, with the edge's own Li contrast.

    At each voxel the edge attenuation lies between pre- and post-edge ones,
    ``edge = pre + r * (post - pre)``, with the edge fraction ``r`` set by the Li content. ``r``
    is estimated as a ratio of Gaussian-smoothed sums, ``G(edge - pre) / G(post - pre)``: a
    jump-weighted mean, so the Ni-bearing particles dominate it at their partial-volume
    surfaces too, and noise in ``post - pre`` does not bias it as a mean of per-voxel ratios
    would. Where the smoothed jump is small (pores, binder: no Ni, nothing to predict) the
    state's mean fraction over ``interior`` is used. The prediction ``pre + r_s * (post - pre)``
    keeps the Li contrast on scales above ``sigma_vox``, so a B-spline registration of the
    measured edge image onto it is not rewarded for moving Li between particles, shells and
    cores; what remains below ``sigma_vox`` moves Li only inside a map bin.

    Parameters
    ----------
    pre, edge, post : numpy.ndarray
        Pre-edge, edge and post-edge images on one grid (pre-edge already registered; edge
        registered at least rigidly).
    interior : numpy.ndarray of bool
        Active-material voxels (post-edge above :func:`interior_threshold`).
    sigma_vox : float
        Gaussian sigma of the smoothing of ``r``, in voxels of the grid.

    Returns
    -------
    numpy.ndarray
        float32 predicted edge image.

    Examples
    --------
    >>> pre = np.ones((8, 8, 8)); post = 3 * pre; inside = np.ones((8, 8, 8), bool)
    >>> edge = pre + 0.25 * (post - pre)
    >>> bool(np.allclose(predicted_edge(pre, edge, post, inside, 1.0), 1.5))
    True
    """
    from scipy import ndimage as ndi

    inside = np.asarray(interior, bool)
    if not inside.any():
        raise DataError("no particle voxels to predict the edge image from")
    # float32 in place (scipy's filters accumulate in float64; sums below too): at a 256^3 grid
    # each temporary is 64 MiB, and the float64 version took ~500 MiB more (issue 22)
    pre = np.asarray(pre, np.float32)
    jump = np.subtract(post, pre, dtype=np.float32)
    num = np.subtract(edge, pre, dtype=np.float32)  # the rise, then its smoothed sum
    r_mean = num[inside].sum(dtype=np.float64) / jump[inside].sum(dtype=np.float64)
    jump_mean = jump[inside].mean(dtype=np.float64)
    num = ndi.gaussian_filter(num, sigma_vox, output=num)
    den = ndi.gaussian_filter(jump, sigma_vox)
    ok = den > 0.25 * jump_mean
    r = np.divide(num, den, out=num, where=ok)  # the edge fraction r, in num's memory
    r[~ok] = r_mean
    del den, ok
    r *= jump
    r += pre
    return r


def warp_cubic(volume: np.ndarray, maps: Any, voxel_size_um: tuple[float, ...], *, field_step_vox: int = 4,
               slab: int = 16) -> np.ndarray:
    """``volume`` resampled through the transform ``maps`` onto its own grid (cubic B-spline).

    What transformix's order-3 resampling gives, without itk: the displacement is evaluated with
    numpy (:func:`litomo.register.displacement_field`) on a grid ``field_step_vox`` times coarser
    and upsampled linearly (exact for the rigid part; the B-spline part varies on the control
    spacing, >= 8 voxels, so the linear error is a few thousandths of a voxel), then sampled
    by :func:`litomo.resample.map_coordinates_cubic`. Points mapped outside take the nearest edge
    value (transformix: a fill value); this feeds only a registration target. 256^3: 5.4 s of CPU
    per volume where transformix took 18.3 s (its first call; issue 22). ``slab`` z-planes at a
    time: the float64 source coordinates of a slab are its largest temporary (16 planes: 24 MiB at
    256^2; the edge target's peak went +492 -> +323 MiB from 64 to 16 planes, same output and CPU).

    Examples
    --------
    >>> m = {"Transform": ["TranslationTransform"], "TransformParameters": ["1", "0", "0"],
    ...      "FixedImageDimension": ["3"]}
    >>> v = np.arange(6.0)[None, None, :] * np.ones((6, 6, 1))
    >>> warp_cubic(v, [m], (1.0, 1.0, 1.0))[0, 0, :5].tolist()  # content shifted by +1 in x
    [1.0, 2.0, 3.0, 4.0, 5.0]
    """
    from litomo.register import displacement_field
    from litomo.resample import cubic_prefilter_z, map_coordinates_cubic, source_coordinates

    vol = np.asarray(volume, np.float32)
    shape, vs = vol.shape, np.asarray(voxel_size_um, float)
    fshape = tuple(max(2, -(-n // field_step_vox)) for n in shape)
    fvs = tuple(float(n * s / m) for n, s, m in zip(shape, vs, fshape, strict=True))
    field = displacement_field(maps, fshape, voxel_size_um=fvs)
    coef_z = cubic_prefilter_z(vol)  # once for the whole volume, not once per slab
    out = np.empty(shape, np.float32)
    for z0 in range(0, shape[0], slab):
        z1 = min(shape[0], z0 + slab)
        src = source_coordinates(field, fvs, vs, (z0, z1), shape[1:])
        out[z0:z1] = map_coordinates_cubic(vol, src, coef_z=coef_z)
    return out

"""Bring the images of all distances to one grid: Fresnel rescaling, shift and scale refinement.

Each distance is magnified differently (:class:`litomo.holo.geometry.HoloGeometry`); its image
is zoomed by ``M_0 / M_j`` about the detector centre onto the grid of the first (most
magnified) distance, whose field of view all others cover. Stage run-out and focus drift add a
residual shift and a small magnification error per distance; they are estimated by registering
single-distance Paganin images (similar-looking at every distance, unlike the raw holograms)
with :func:`skimage.registration.phase_cross_correlation`, and the scale by maximising the
normalised cross-correlation over a bracket around the nominal zoom.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from litomo.errors import DataError
from litomo.holo.geometry import HoloGeometry
from litomo.holo.retrieve import PhaseRetriever, RetrievalSettings

log = logging.getLogger(__name__)

#: Images are binned to at most this many pixels per side for the alignment estimate.
ALIGN_MAX_SIDE = 512


@dataclass(frozen=True)
class DistanceAlignment:
    """Per-distance mapping onto the common grid, with QA numbers.

    Attributes
    ----------
    scale : tuple of float
        Zoom factor per distance (nominal ``M_0 / M_j`` times the refinement; 1 for distance 0).
    shift_px : tuple of (float, float)
        ``(dy, dx)`` of each distance in common pixels after zooming (0 for distance 0).
    nominal_scale : tuple of float
        ``M_0 / M_j`` from the geometry.
    correlation : tuple of float
        Normalised cross-correlation with distance 0 of the Paganin images after alignment (QA).
    """

    scale: tuple[float, ...]
    shift_px: tuple[tuple[float, float], ...]
    nominal_scale: tuple[float, ...]
    correlation: tuple[float, ...]

    @classmethod
    def nominal(cls, geometry: HoloGeometry) -> DistanceAlignment:
        """The geometric zoom only (no shift), e.g. for data aligned upstream.

        Examples
        --------
        >>> g = HoloGeometry(17.0, (10.0, 20.0), 100.0, 3.0)
        >>> DistanceAlignment.nominal(g).scale
        (1.0, 2.0)
        """
        s = tuple(geometry.scale_to_common)
        return cls(s, tuple((0.0, 0.0) for _ in s), s, tuple(float("nan") for _ in s))


def zoom_shift(image: np.ndarray, scale: float, shift_px: tuple[float, float],
               out_shape: tuple[int, int], *, order: int = 1) -> np.ndarray:
    """Zoom ``image`` by ``scale`` about its centre, shift by ``shift_px``, crop to ``out_shape``.

    Output pixel ``y`` samples input ``(y - c_out - shift) / scale + c_in``.

    Examples
    --------
    >>> img = np.arange(16.0).reshape(4, 4)
    >>> bool(np.allclose(zoom_shift(img, 1.0, (0.0, 0.0), (4, 4)), img))
    True
    """
    img = np.asarray(image, dtype=np.float32)
    if scale == 1.0 and not any(shift_px) and img.shape == tuple(out_shape):
        return img.copy()  # the reference distance: an interpolating spline returns it unchanged
    c_in = (np.asarray(img.shape) - 1) / 2.0
    c_out = (np.asarray(out_shape) - 1) / 2.0
    offset = c_in - (c_out + np.asarray(shift_px, dtype=float)) / scale
    return ndimage.affine_transform(img, np.full(2, 1.0 / scale), offset=offset, output_shape=tuple(out_shape),
                                    order=order, mode="nearest", prefilter=order > 1)


#: Spline order of the resampling onto the common grid. Cubic, not linear: linear interpolation
#: of the upsampled distances is a low-pass (on the electrode forward model the retrieved
#: phase kept 0.50 of the true amplitude at 0.2 cycles/pixel with linear, 0.58 with cubic;
#: docs/benchmarks.md "Phase retrieval").
RESAMPLE_ORDER = 3


def to_common_grid(images: Sequence[np.ndarray], alignment: DistanceAlignment, *,
                   order: int = RESAMPLE_ORDER) -> np.ndarray:
    """Stack the images of one projection on the grid of distance 0: ``(n_distances, ny, nx)``.

    Examples
    --------
    >>> g = HoloGeometry(17.0, (10.0, 20.0), 100.0, 3.0)
    >>> to_common_grid([np.ones((8, 8)), np.ones((8, 8))], DistanceAlignment.nominal(g)).shape
    (2, 8, 8)
    """
    check_same_shape(images)
    shape = np.asarray(images[0]).shape
    return np.stack([zoom_shift(im, s, d, shape, order=order)
                     for im, s, d in zip(images, alignment.scale, alignment.shift_px, strict=True)])


def check_same_shape(images: Sequence[np.ndarray]) -> None:
    """One-line error when the distances' images differ in size."""
    shapes = [tuple(np.shape(im)) for im in images]
    if any(len(s) != 2 for s in shapes):
        raise DataError(f"hologram images must be 2-D, got shapes {shapes}")
    if len(set(shapes)) > 1:
        raise DataError(f"image sizes differ between distances: {shapes}; all distances must use one detector size")


def _ncc(a: np.ndarray, b: np.ndarray, margin: int) -> float:
    sl = (slice(margin, -margin or None),) * 2
    a, b = a[sl] - a[sl].mean(), b[sl] - b[sl].mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _register(ref: np.ndarray, img: np.ndarray, scale: float, margin: int) -> tuple[tuple[float, float], float]:
    from skimage.registration import phase_cross_correlation

    moved = zoom_shift(img, scale, (0.0, 0.0), ref.shape)
    shift, _, _ = phase_cross_correlation(ref, moved, upsample_factor=20, normalization=None)
    d = (float(shift[0]), float(shift[1]))
    return d, _ncc(ref, zoom_shift(img, scale, d, ref.shape), margin)


def _paganin_maps(images: Sequence[np.ndarray], geometry: HoloGeometry, bin_factor: int,
                  delta_beta: float) -> list[np.ndarray]:
    """Single-distance Paganin image of each distance on its own (binned) detector grid."""
    out = []
    settings = RetrievalSettings("paganin", delta_beta)
    for j, im in enumerate(images):
        a = np.asarray(im, dtype=np.float32)
        if bin_factor > 1:
            ny, nx = (a.shape[0] // bin_factor) * bin_factor, (a.shape[1] // bin_factor) * bin_factor
            a = a[:ny, :nx].reshape(ny // bin_factor, bin_factor, nx // bin_factor, bin_factor).mean(axis=(1, 3))
        pix = geometry.effective_pixel_um[j] * bin_factor
        r = PhaseRetriever(a.shape, [geometry.propagation_distance_mm[j]], geometry.energy_kev, pix, settings)
        out.append(r(np.clip(a, 1e-3, None)[None]))
    return out


def estimate_alignment(images: Sequence[np.ndarray], geometry: HoloGeometry, *, delta_beta: float = 137.0,
                       refine_scale: bool = True, max_scale_error: float = 0.02) -> DistanceAlignment:
    """Shift (and scale) of each distance relative to distance 0 for one projection.

    Parameters
    ----------
    images : sequence of ndarray (ny, nx)
        Flat-corrected intensities of one projection, one per distance, on the detector grid.
    geometry : HoloGeometry
    delta_beta : float
        For the Paganin images that are registered.
    refine_scale : bool
        Also refine each zoom factor within ``1 +- max_scale_error`` of the nominal one.

    Returns
    -------
    DistanceAlignment, shifts in full-resolution common pixels.
    """
    check_same_shape(images)
    if len(images) != geometry.n_distances:
        raise DataError(f"{len(images)} images given for {geometry.n_distances} distances (--z1-mm)")
    bin_factor = max(1, int(np.ceil(max(np.shape(images[0])) / ALIGN_MAX_SIDE)))
    maps = _paganin_maps(images, geometry, bin_factor, delta_beta)
    ref = maps[0]
    margin = max(2, min(ref.shape) // 16)
    scales, shifts, corr = [1.0], [(0.0, 0.0)], [1.0]
    for j in range(1, len(maps)):
        s0 = geometry.scale_to_common[j]
        if refine_scale:
            res = optimize.minimize_scalar(lambda s, j=j: -_register(ref, maps[j], s, margin)[1],
                                           bounds=(s0 * (1 - max_scale_error), s0 * (1 + max_scale_error)),
                                           method="bounded", options={"xatol": 1e-4 * s0})
            s = float(res.x)
        else:
            s = s0
        d, c = _register(ref, maps[j], s, margin)
        scales.append(s)
        shifts.append((d[0] * bin_factor, d[1] * bin_factor))
        corr.append(c)
        log.info("distance %d: scale %.4f (nominal %.4f), shift %.2f, %.2f px, NCC %.3f", j, s, s0, *shifts[-1], c)
    return DistanceAlignment(tuple(scales), tuple(shifts), tuple(geometry.scale_to_common), tuple(corr))


def combine_alignments(alignments: Sequence[DistanceAlignment]) -> DistanceAlignment:
    """Median of per-projection estimates (robust to a few failed registrations).

    Examples
    --------
    >>> a = DistanceAlignment((1.0, 2.0), ((0, 0), (1.0, 2.0)), (1.0, 2.0), (1.0, 0.9))
    >>> combine_alignments([a, a]).shift_px[1]
    (1.0, 2.0)
    """
    if not alignments:
        raise DataError("no alignment estimates to combine")
    sc = np.median([a.scale for a in alignments], axis=0)
    sh = np.median([a.shift_px for a in alignments], axis=0)
    cc = np.median([a.correlation for a in alignments], axis=0)
    return DistanceAlignment(tuple(float(s) for s in sc), tuple((float(y), float(x)) for y, x in sh),
                             alignments[0].nominal_scale, tuple(float(c) for c in cc))

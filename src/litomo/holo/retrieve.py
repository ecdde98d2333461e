"""Phase retrieval from near-field holograms: Paganin, multi-distance Paganin-like, CTF.

All three are closed forms on 2-D FFTs of intensities already flat-field corrected and brought
to one effective pixel (:mod:`litomo.holo.align`); distances are the effective parallel-beam
propagation distances ``D_j`` (:class:`litomo.holo.geometry.HoloGeometry`). With the
transmission function ``T = exp(-B + i phi)`` of a homogeneous object (``phi = -(delta/beta) B``)
and ``a_j = pi lambda D_j (delta/beta)``:

* ``paganin`` (Paganin et al., J. Microsc. 206, 2002, eq. 10): ``F[I] = (1 + a f^2) F[exp(-2B)]``,
  so ``phi = (delta/beta)/2 ln F^-1[F[I] / (1 + a f^2)]``. Same filter as nabu's
  ``PaganinPhaseRetrieval`` (the test checks the two agree to 1e-3).
* ``multi-paganin``: the same transport-of-intensity model at every distance, solved in the least
  squares sense per frequency, ``F[exp(-2B)] = sum_j (1 + a_j f^2) F[I_j] / (sum_j (1 + a_j f^2)^2
  + alpha)``; the logarithm keeps it valid for strong absorption, as the recursive Paganin-like
  scheme of the seed papers.
* ``ctf`` (Cloetens et al., Appl. Phys. Lett. 75, 1999; Zabler et al., Rev. Sci. Instrum. 76, 2005,
  homogeneous-object form): ``F[I_j - 1] = 2 (sin chi_j + (beta/delta) cos chi_j) F[phi]`` with
  ``chi_j = pi lambda D_j f^2``; Tikhonov-regularised least squares over the distances,
  ``F[phi] = sum_j H_j F[I_j - 1] / (sum_j H_j^2 + alpha)``. Given the detector pixel of each
  distance on the common grid (``detector_px``, the zoom onto that grid), ``H_j`` includes the
  pixel's aperture ``sinc(w_j f_y) sinc(w_j f_x)`` (``f`` in cycles per common pixel): a less
  magnified distance integrates over a wider pixel, and a CTF without it averages blurred
  images of those distances into the sharp one of the closest distance.

Why written here: nabu (MIT) has the single-distance Paganin and a single-distance CTF but no
multi-distance CTF; hotopy has it but is GPL-3.0 and a 4.7 GB environment (docs/design.md).

The returned phase is in radians and negative where there is matter (``phi = -k int delta dz``);
``-phi`` is the sinogram for FBP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft

from litomo.errors import DataError
from litomo.holo.geometry import HoloGeometry, check_delta_beta, wavelength_um

log = logging.getLogger(__name__)

METHODS = ("paganin", "multi-paganin", "ctf")
PAD_MODES = ("edge", "reflect", "mean", "none")
#: Mirror padding to the next fast FFT length >= 2 n, chosen by measurement (docs/benchmarks.md
#: "Phase retrieval"): on holograms of a sample wider than the field of view it gave r = 0.70
#: with the true phase against 0.52-0.55 for edge replication or no padding, and within 0.001
#: of the best mode when the sample lies inside the field.
DEFAULT_PAD_MODE = "reflect"
#: Tikhonov weight (CTF: relative to its zero-frequency denominator). On the electrode forward
#: model the CTF's correlation with the true phase was 0.9828 / 0.9829 / 0.9831 / 0.9729 at
#: 1e-3 / 1e-2 / 1e-1 / 1 (12 projections, docs/benchmarks.md).
DEFAULT_REGULARIZATION = {"paganin": 0.0, "multi-paganin": 0.0, "ctf": 1e-2}
#: Recursive Paganin: more iterations amplify the frequencies above chi = pi (litomo.holo.recursive);
#: on the electrode forward model the phase error was smallest at 3-5 and grew again at 8.
MAX_ITERATIONS = 20


@dataclass(frozen=True)
class RetrievalSettings:
    """What to retrieve and how.

    Parameters
    ----------
    method : {"paganin", "multi-paganin", "ctf"}
        ``paganin`` uses the first distance only.
    delta_beta : float
        delta/beta of the (assumed homogeneous) material, e.g. 137 for the NMC of the seeds.
    regularization : float, optional
        Tikhonov ``alpha`` for ``multi-paganin`` (absolute) / ``ctf`` (relative to the CTF's
        zero-frequency denominator ``n_distances * (2 beta/delta)^2``). Default per method in
        :data:`DEFAULT_REGULARIZATION`.
    pad_mode : {"edge", "reflect", "mean", "none"}
        Padding before the FFTs (to the next fast length >= 2 n unless "none").
    iterations : int
        Recursive Paganin (``paganin`` / ``multi-paganin`` only): corrections with the residual
        of the exact Fresnel model after the single pass (:mod:`litomo.holo.recursive`); 0 = off.
    """

    method: str = "ctf"
    delta_beta: float = 137.0
    regularization: float | None = None
    pad_mode: str = DEFAULT_PAD_MODE
    iterations: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DataError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.pad_mode not in PAD_MODES:
            raise DataError(f"--pad must be one of {', '.join(PAD_MODES)}, got {self.pad_mode!r}")
        object.__setattr__(self, "delta_beta", check_delta_beta(self.delta_beta))
        reg = DEFAULT_REGULARIZATION[self.method] if self.regularization is None else self.regularization
        if not np.isfinite(reg) or reg < 0:
            raise DataError(f"--regularization must be >= 0, got {self.regularization!r}")
        object.__setattr__(self, "regularization", float(reg))
        if self.iterations != int(self.iterations) or self.iterations < 0 or self.iterations > MAX_ITERATIONS:
            raise DataError(f"--iterations must be an integer 0 .. {MAX_ITERATIONS}, got {self.iterations!r}")
        if self.iterations and self.method == "ctf":
            raise DataError("--iterations (recursive Paganin) applies to --method paganin or multi-paganin, not ctf")
        object.__setattr__(self, "iterations", int(self.iterations))


def padded_shape(shape: tuple[int, int], pad_mode: str) -> tuple[int, int]:
    """FFT shape for an image of ``shape``: itself for "none", else next fast length >= 2 n.

    Examples
    --------
    >>> padded_shape((100, 130), "edge")
    (200, 270)
    """
    if pad_mode == "none":
        return (int(shape[0]), int(shape[1]))
    return (sfft.next_fast_len(2 * int(shape[0]), real=True), sfft.next_fast_len(2 * int(shape[1]), real=True))


def pad_image(img: np.ndarray, shape: tuple[int, int], pad_mode: str) -> np.ndarray:
    """Pad ``img`` (centred) to ``shape`` with ``pad_mode``.

    Examples
    --------
    >>> pad_image(np.ones((2, 2)), (4, 4), "edge").shape
    (4, 4)
    """
    ny, nx = img.shape
    py, px = shape[0] - ny, shape[1] - nx
    if py == 0 and px == 0:
        return img
    widths = ((py // 2, py - py // 2), (px // 2, px - px // 2))
    if pad_mode == "mean":
        return np.pad(img, widths, mode="constant", constant_values=float(np.mean(img)))
    return np.pad(img, widths, mode=pad_mode)


def frequency_squared(shape: tuple[int, int], pixel_um: float) -> np.ndarray:
    """``|f|^2`` (cycles/um)^2 on the rfft2 grid of ``shape``.

    Examples
    --------
    >>> float(frequency_squared((4, 4), 0.5)[0, 1])
    0.25
    """
    fy = sfft.fftfreq(shape[0], d=pixel_um)
    fx = sfft.rfftfreq(shape[1], d=pixel_um)
    return np.add.outer(fy**2, fx**2)


def pixel_aperture(shape: tuple[int, int], widths_px: Any, n: int) -> np.ndarray:
    """Transfer ``sinc(w f_y) sinc(w f_x)`` of a square detector pixel of width ``w`` (common pixels), per distance.

    On the rfft2 grid of ``shape``; ``(n, *rfft shape)``.

    Examples
    --------
    >>> m = pixel_aperture((8, 8), [1.0, 2.0], 2)
    >>> m.shape, float(m[0, 0, 0]), round(float(m[1, 0, 2]), 3)  # 0.25 cycles/px at width 2: sinc(0.5)
    ((2, 8, 5), 1.0, 0.637)
    """
    w = np.asarray(widths_px, dtype=float).ravel()[:n]
    if w.size != n or not np.all(w > 0):
        raise DataError(f"detector pixel widths {list(w)} must be positive, one per distance ({n})")
    fy = sfft.fftfreq(shape[0])
    fx = sfft.rfftfreq(shape[1])
    return np.stack([np.outer(np.sinc(wj * fy), np.sinc(wj * fx)) for wj in w])


class PhaseRetriever:
    """Phase retrieval for images of one shape; the filters are computed once.

    Parameters
    ----------
    shape : (ny, nx)
        Image shape (at the common effective pixel).
    distances_mm : sequence of float
        Effective propagation distance of each image (mm).
    energy_kev : float
    pixel_um : float
        Effective pixel size (um).
    settings : RetrievalSettings
    detector_px : sequence of float, optional
        ``ctf`` only: the detector pixel width of each distance in common pixels (the zoom
        factors :attr:`litomo.holo.align.DistanceAlignment.scale`); the CTF then models each
        pixel's aperture. None: point sampling.

    Examples
    --------
    >>> r = PhaseRetriever((32, 32), [50.0], 29.6, 0.4, RetrievalSettings("paganin", 137))
    >>> bool(np.allclose(r(np.ones((1, 32, 32))), 0.0, atol=1e-6))  # flat field: no phase
    True
    """

    def __init__(self, shape: tuple[int, int], distances_mm: Any, energy_kev: float, pixel_um: float,
                 settings: RetrievalSettings, detector_px: Any = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.settings = settings
        d_um = np.asarray(distances_mm, dtype=float).ravel() * 1e3
        if settings.method == "paganin":
            d_um = d_um[:1]
        if d_um.size == 0 or not np.all(d_um > 0):
            raise DataError("propagation distances must be positive")
        self.n_used = int(d_um.size)
        self.pad_shape = padded_shape(self.shape, settings.pad_mode)
        lam = wavelength_um(energy_kev)
        f2 = frequency_squared(self.pad_shape, pixel_um)
        db = settings.delta_beta
        if settings.method == "ctf":
            chi = np.pi * lam * d_um[:, None, None] * f2[None]
            h = 2.0 * (np.sin(chi) + np.cos(chi) / db)
            if detector_px is not None:
                h = h * pixel_aperture(self.pad_shape, detector_px, d_um.size)
            alpha = settings.regularization * d_um.size * (2.0 / db) ** 2
            self._weights = (h / (np.sum(h * h, axis=0) + alpha)).astype(np.float32)
        else:
            t = 1.0 + np.pi * lam * db * d_um[:, None, None] * f2[None]
            self._weights = (t / (np.sum(t * t, axis=0) + settings.regularization)).astype(np.float32)

    def check_stack(self, intensities: np.ndarray) -> np.ndarray:
        """``(n_dist, ny, nx)`` float32 images, at least ``n_used`` of ``shape`` (else DataError)."""
        stack = np.asarray(intensities, dtype=np.float32)
        if stack.ndim == 2:
            stack = stack[None]
        if stack.shape[1:] != self.shape or stack.shape[0] < self.n_used:
            raise DataError(f"expected {self.n_used} images of shape {self.shape}, got {stack.shape}")
        return stack

    def filter_padded(self, padded: np.ndarray) -> np.ndarray:
        """The retrieval filter on images already padded to ``pad_shape`` (``I - 1`` for the CTF)."""
        acc = None
        for j in range(self.n_used):
            spec = sfft.rfft2(padded[j], workers=-1)
            spec *= self._weights[j]
            acc = spec if acc is None else acc + spec
        return sfft.irfft2(acc, s=self.pad_shape, workers=-1)

    def crop(self, padded: np.ndarray) -> np.ndarray:
        """The image region of a ``pad_shape`` array."""
        oy = (self.pad_shape[0] - self.shape[0]) // 2
        ox = (self.pad_shape[1] - self.shape[1]) // 2
        return padded[oy : oy + self.shape[0], ox : ox + self.shape[1]]

    def phase_from_transmission(self, x: np.ndarray) -> np.ndarray:
        """``phi = (delta/beta)/2 ln x`` of a homogeneous object with intensity transmission ``x``."""
        if np.any(x <= 0):
            raise DataError("Paganin-filtered intensity is not positive: are the projections "
                            "flat-field corrected (about 1 in air)?")
        return (0.5 * self.settings.delta_beta * np.log(x)).astype(np.float32)

    def __call__(self, intensities: np.ndarray) -> np.ndarray:
        """Phase (rad, float32, ``shape``) from flat-corrected intensities ``(n_dist, ny, nx)``."""
        stack = self.check_stack(intensities)
        ctf = self.settings.method == "ctf"
        padded = np.stack([pad_image(stack[j] - 1.0 if ctf else stack[j], self.pad_shape, self.settings.pad_mode)
                           for j in range(self.n_used)])
        out = self.crop(self.filter_padded(padded))
        if ctf:
            return np.ascontiguousarray(out, dtype=np.float32)
        return self.phase_from_transmission(out)


def retrieve_phase(intensities: np.ndarray, geometry: HoloGeometry, settings: RetrievalSettings) -> np.ndarray:
    """Phase of one projection from its aligned, flat-corrected images at every distance.

    Parameters
    ----------
    intensities : ndarray (n_distances, ny, nx)
        Images at the common effective pixel (:func:`litomo.holo.align.to_common_grid`).
    geometry : HoloGeometry
    settings : RetrievalSettings

    Returns
    -------
    ndarray (ny, nx), float32: phase in radians (negative in matter).

    Examples
    --------
    >>> g = HoloGeometry(29.6, (50.0, 60.0), 1000.0, 8.0)
    >>> phi = retrieve_phase(np.ones((2, 16, 16)), g, RetrievalSettings("ctf", 137))
    >>> phi.shape, bool(np.abs(phi).max() < 1e-6)
    ((16, 16), True)
    """
    stack = np.asarray(intensities)
    if stack.ndim != 3 or stack.shape[0] != geometry.n_distances:
        raise DataError(f"expected ({geometry.n_distances}, ny, nx) images, got shape {stack.shape}")
    r = PhaseRetriever(stack.shape[1:], geometry.propagation_distance_mm, geometry.energy_kev,
                       geometry.common_pixel_um, settings, geometry.scale_to_common if settings.method == "ctf" else None)
    return r(stack)

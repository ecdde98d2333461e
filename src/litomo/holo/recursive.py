"""Recursive Paganin: Paganin-like retrieval corrected with the residual of the exact Fresnel model.

The seed papers retrieve the phase with "a Paganin-like retrieval with delta/beta = 137, applied
recursively". litomo defines it as a preconditioned fixed-point iteration. With ``x = exp(-2B)``
(the object's intensity transmission; the phase follows as ``phi = (delta/beta)/2 ln x`` for a
homogeneous object), the Paganin / multi-distance Paganin-like filter ``W`` inverts the
transport-of-intensity (TIE) model ``I_j = F^-1[(1 + a_j f^2) F[x]]`` exactly. Start from
``x_0 = W I``, then repeat

    x_{k+1} = x_k + W (I - A(x_k)),

where ``A_j(x) = |F^-1[F[sqrt(x) exp(i phi(x))] exp(-i pi lambda D_j f^2)]|^2`` is the exact
(paraxial) Fresnel propagation of the homogeneous-object wave to distance ``j``. A fixed point
satisfies ``W (I - A(x)) = 0``: the filtered residual of the full Fresnel model is zero, which
removes the TIE's small-distance approximation (it fails where ``pi lambda D f^2`` is not small).

Linearised, the update multiplies the error at frequency ``f`` by ``1 - (cos chi + (delta/beta)
sin chi) / (1 + (delta/beta) chi)`` with ``chi = pi lambda D f^2``: below ``chi = pi`` this lies in
(0, 1) and the iteration converges, above it the factor exceeds 1 (at most about 1.2 for
delta/beta >= 100). A few iterations (``litomo phase --iterations 3``) keep that growth small;
the measured effect is in docs/benchmarks.md.

Written here because no maintained library has it (nabu and algotom offer single-pass Paganin only).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from litomo.errors import DataError
from litomo.holo.geometry import wavelength_um
from litomo.holo.retrieve import PhaseRetriever, RetrievalSettings, pad_image

#: Lower bound of the intensity transmission during the iterations (a zero would make ln x -inf).
MIN_TRANSMISSION = 1e-6


class RecursivePaganin:
    """Recursive (multi-distance) Paganin retrieval, ``phase = RecursivePaganin(...)(intensities)``.

    Parameters
    ----------
    retriever : PhaseRetriever
        A ``paganin`` or ``multi-paganin`` retriever: its filter is ``W``, its distances the model's.
    distances_mm, energy_kev, pixel_um
        As given to the retriever (effective distances, mm; keV; um).
    iterations : int
        Residual corrections after the single pass (``RetrievalSettings.iterations``).

    Examples
    --------
    >>> from litomo.holo.retrieve import RetrievalSettings
    >>> base = PhaseRetriever((32, 32), [50.0], 29.6, 0.4, RetrievalSettings("paganin", 137))
    >>> r = RecursivePaganin(base, [50.0], 29.6, 0.4, iterations=2)
    >>> bool(np.allclose(r(np.ones((1, 32, 32))), 0.0, atol=1e-6))  # flat field: no phase
    True
    """

    def __init__(self, retriever: PhaseRetriever, distances_mm, energy_kev: float, pixel_um: float,
                 iterations: int) -> None:
        if retriever.settings.method not in ("paganin", "multi-paganin"):
            raise DataError(f"--iterations applies to paganin and multi-paganin, not {retriever.settings.method}")
        self.base = retriever
        self.iterations = int(iterations)
        d_um = np.asarray(distances_mm, dtype=float).ravel()[: retriever.n_used] * 1e3
        shape = retriever.pad_shape
        fy = sfft.fftfreq(shape[0], d=pixel_um)
        fx = sfft.fftfreq(shape[1], d=pixel_um)
        f2 = np.add.outer(fy**2, fx**2)
        lam = wavelength_um(energy_kev)
        self._propagators = np.exp(-1j * np.pi * lam * d_um[:, None, None] * f2[None]).astype(np.complex64)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Fresnel intensities ``(n_used, *pad_shape)`` of the homogeneous object with transmission ``x``."""
        x = np.maximum(x, MIN_TRANSMISSION)
        psi = np.sqrt(x) * np.exp(0.5j * self.base.settings.delta_beta * np.log(x))
        spec = sfft.fft2(psi.astype(np.complex64), workers=-1)
        return np.stack([np.abs(sfft.ifft2(spec * p, workers=-1)) ** 2 for p in self._propagators]).astype(np.float32)

    def __call__(self, intensities: np.ndarray) -> np.ndarray:
        """Phase (rad, float32, the retriever's shape) from flat-corrected ``(n_dist, ny, nx)`` images."""
        stack = self.base.check_stack(intensities)
        b = self.base
        padded = np.stack([pad_image(stack[j], b.pad_shape, b.settings.pad_mode) for j in range(b.n_used)])
        x = b.filter_padded(padded)
        for _ in range(self.iterations):
            x = x + b.filter_padded(padded - self.forward(x))
        return b.phase_from_transmission(b.crop(x))


def build_retriever(shape: tuple[int, int], distances_mm, energy_kev: float, pixel_um: float,
                    settings: RetrievalSettings, detector_px=None) -> PhaseRetriever | RecursivePaganin:
    """The retriever ``settings`` ask for: recursive when ``settings.iterations > 0``.

    ``detector_px`` (the CTF's pixel aperture, :class:`litomo.holo.retrieve.PhaseRetriever`) is
    used by ``ctf`` only.

    Examples
    --------
    >>> r = build_retriever((16, 16), [50.0], 29.6, 0.4, RetrievalSettings("paganin", 137, iterations=2))
    >>> type(r).__name__, r(np.ones((1, 16, 16))).shape
    ('RecursivePaganin', (16, 16))
    """
    base = PhaseRetriever(shape, distances_mm, energy_kev, pixel_um, settings,
                          detector_px if settings.method == "ctf" else None)
    if settings.iterations == 0:
        return base
    return RecursivePaganin(base, distances_mm, energy_kev, pixel_um, settings.iterations)

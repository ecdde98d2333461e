"""Sinogram geometry shared by the centre searches and the reconstruction.

* :func:`center_sinogram` pads and Fourier-shifts a sinogram so a given rotation axis is its
  middle column (the slice grid of :mod:`litomo.tomo.slabs`).
* :func:`sinogram_180` keeps the views of the first 180 degrees, for methods that need exactly 180.

Centres are in detector pixels from column 0 (pixel centres), so the detector middle is
``(n - 1) / 2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.tomo.project import check_angles


def center_sinogram(sino: np.ndarray, center_px: float) -> np.ndarray:
    """Pad and shift a sinogram ``(..., n_angles, n)`` so the rotation axis is its middle column.

    The output width ``2 * ceil(max(c, n - 1 - c)) + 1`` keeps every measured column (edge
    padding outside the detector); the sub-pixel part is a Fourier shift.

    Examples
    --------
    >>> s = np.zeros((2, 10)); s[:, 7] = 1
    >>> c = center_sinogram(s, 7.0)
    >>> c.shape, int(np.argmax(c[0])) == (c.shape[1] - 1) // 2
    ((2, 15), True)
    """
    s = np.asarray(sino, np.float32)
    n = s.shape[-1]
    c = float(center_px)
    if not (0 <= c <= n - 1):
        raise DataError(f"--center {c:g} px is outside the detector (0 .. {n - 1})")
    m = int(np.ceil(max(c, n - 1 - c) - 1e-9))
    width = 2 * m + 1
    o = m - c
    lo = int(np.floor(o))
    frac = o - lo
    margin = 16
    pad = [(0, 0)] * (s.ndim - 1) + [(lo + margin, width - n - lo + margin)]
    padded = np.pad(s, pad, mode="edge")
    if frac > 1e-6:
        # Fourier shift: exact for band-limited data and, unlike spline or linear interpolation,
        # it does not smooth the noise by an amount that depends on the fractional part, which
        # would make image metrics oscillate with a 1-pixel period.
        k = np.fft.rfftfreq(padded.shape[-1])
        padded = np.fft.irfft(np.fft.rfft(padded, axis=-1) * np.exp(-2j * np.pi * k * frac),
                              n=padded.shape[-1], axis=-1).astype(np.float32)
    return np.ascontiguousarray(padded[..., margin : margin + width])


def sinogram_180(sino: np.ndarray, theta_deg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The views of the first 180 degrees (sorted by angle), for methods that need exactly 180.

    Examples
    --------
    >>> s, th = sinogram_180(np.zeros((241, 8)), np.linspace(-120, 120, 241))
    >>> s.shape, float(th[0]), float(th[-1])
    ((180, 8), -120.0, 59.0)
    """
    th = check_angles(theta_deg)
    order = np.argsort(th, kind="stable")
    ths = th[order]
    keep = ths < ths[0] + 180.0 - 1e-6
    return np.asarray(sino)[order][keep], ths[keep]

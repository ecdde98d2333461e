"""Independent forward model of holotomography for the tests (imports nothing from litomo.holo).

A labelled electrode volume -> complex refractive index per phase (xraydb, no hand-typed
coefficients) -> projected phase and attenuation: the volume rotated about z with bilinear
interpolation (scipy.ndimage.rotate's geometry, order 1) and summed along the beam, applied as one
sparse matrix per angle -> parallel-beam Fresnel propagation of the transmission function
``exp(-B + i phi)`` over the effective distance ``D = z1 z2 / (z1 + z2)`` (Fresnel scaling
theorem) -> detector sampling at the magnified pixel, averaged over 4 x 4 sub-samples per
pixel, with a known shift per distance -> Poisson noise on a non-uniform beam, flats and darks.
"""

from __future__ import annotations

import numpy as np
import xraydb
from scipy import ndimage, sparse

HC_KEV_UM = 1.239841984e-3
#: Phase label in the TauFactor/Polaron file -> (chemical formula, density g/cm^3).
#: Pore: air; active material: NMC622; carbon-binder: carbon black + PVDF (C3H2F2 per
#: 1:1 C:PVDF-monomer), nanoporous, so density 1.2 instead of about 1.8 for the solid.
MATERIALS = {0: ("N1.56O0.42Ar0.01", 0.0012), 85: ("LiNi0.6Mn0.2Co0.2O2", 4.75), 170: ("C3H2F2", 1.2)}
#: Canonical litomo codes of the file's labels (0 pore, 1 AM, 2 CBD).
CODES = {0: 0, 85: 1, 170: 2}


def refractive_indices(energy_kev: float) -> dict[int, tuple[float, float]]:
    """(delta, beta) per file label at ``energy_kev`` from xraydb."""
    out = {}
    for label, (formula, rho) in MATERIALS.items():
        d, b, _ = xraydb.xray_delta_beta(formula, rho, energy_kev * 1e3)
        out[label] = (float(d), float(b))
    return out


def rotation_projector(angle_deg: float, n: int) -> sparse.csr_matrix:
    """``(n, n*n)`` matrix: a ``(y, x)`` slice, flattened, -> its sum along y after rotating it by
    ``angle_deg`` about the slice centre with bilinear interpolation and zeros outside.

    The same numbers as ``ndimage.rotate(slice, angle_deg, reshape=False, order=1).sum(axis=0)``
    (measured: <= 1e-6 of the largest value, test_holo_chain.py) for ~1/5 of the CPU: the
    interpolation weights are computed once per angle for every z-slice and for delta and beta.
    """
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    ctr = (n - 1) / 2
    y, x = np.mgrid[0:n, 0:n].astype(float) - ctr
    iy, ix = c * y + s * x + ctr, -s * y + c * x + ctr  # source coordinates (ndimage.rotate's matrix)
    inside = (iy >= 0) & (iy <= n - 1) & (ix >= 0) & (ix <= n - 1)  # mode "constant": 0 outside
    y0, x0 = np.floor(iy).astype(int), np.floor(ix).astype(int)
    fy, fx = iy - y0, ix - x0
    cols = np.broadcast_to(np.arange(n), (n, n))
    rows, src, w = [], [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            ok = inside & (y0 + dy < n) & (x0 + dx < n) & (wy * wx > 0)
            rows.append(cols[ok])
            src.append((y0 + dy)[ok] * n + (x0 + dx)[ok])
            w.append((wy * wx)[ok])
    return sparse.csr_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(src))), shape=(n, n * n))


def projected_phase(labels: np.ndarray, angles_deg: np.ndarray, n_det: int, voxel_um: float,
                    energy_kev: float) -> tuple[np.ndarray, np.ndarray]:
    """Phase ``phi = -k int delta`` and ``B = k int beta`` per projection, (n_angles, n_det, n_det).

    The cube of labels is centred in an n_det^3 box of air and rotated about the z (row) axis.
    """
    k = 2 * np.pi * energy_kev / HC_KEV_UM
    idx = refractive_indices(energy_kev)
    dvol = np.zeros(labels.shape, np.float64)
    bvol = np.zeros(labels.shape, np.float64)
    for label, (d, b) in idx.items():
        dvol[labels == label] = d
        bvol[labels == label] = b
    pads = [((n_det - s) // 2, n_det - s - (n_det - s) // 2) for s in labels.shape]
    dvol, bvol = np.pad(dvol, pads), np.pad(bvol, pads)
    # columns: (delta, beta) x z-slice; rows: the flattened (y, x) slice
    db = np.concatenate([dvol.reshape(n_det, -1), bvol.reshape(n_det, -1)]).T
    phi = np.empty((len(angles_deg), n_det, n_det), np.float32)
    att = np.empty_like(phi)
    for i, a in enumerate(angles_deg):
        proj = (rotation_projector(a, n_det) @ db).T * (k * voxel_um)  # (2 n_det z, n_det x)
        phi[i], att[i] = -proj[:n_det], proj[n_det:]
    return phi, att


def holograms(phi: np.ndarray, att: np.ndarray, *, energy_kev: float, z1_mm, z12_mm: float, voxel_um: float,
              shifts_px, rng: np.random.Generator, photons: float = 1e4, field: int = 256):
    """Detector images per distance ``(n_dist, n_angles, n, n)`` plus flats ``(n_dist, 3, n, n)`` and darks.

    ``voxel_um`` is the sample-plane pixel of the first distance (the phantom's voxel); the
    detector of distance j samples the sample plane at ``voxel_um * M_0 / M_j``, centred,
    displaced by ``shifts_px[j]`` (sample pixels).
    """
    dark = 100.0
    lam = HC_KEV_UM / energy_kev
    mag = [z12_mm / z for z in z1_mm]
    dist_um = [z * (z12_mm - z) / z12_mm * 1e3 for z in z1_mm]
    na, n, _ = phi.shape
    p0 = (field - n) // 2
    f = np.fft.fftfreq(field, d=voxel_um)
    f2 = np.add.outer(f**2, f**2)
    beam = np.outer(1 + 0.1 * np.linspace(-1, 1, n), 1 - 0.05 * np.linspace(-1, 1, n))
    c, cf = (n - 1) / 2, (field - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    out = np.empty((len(z1_mm), na, n, n), np.float32)
    flats = np.empty((len(z1_mm), 3, n, n), np.float32)
    for j in range(len(z1_mm)):
        s = mag[0] / mag[j]
        prop = np.exp(-1j * np.pi * lam * dist_um[j] * f2)
        for i in range(na):
            psi = np.ones((field, field), np.complex128)
            psi[p0 : p0 + n, p0 : p0 + n] = np.exp(-att[i] + 1j * phi[i])
            inten = np.abs(np.fft.ifft2(np.fft.fft2(psi) * prop)) ** 2
            det = np.zeros((n, n))
            for oy in sub:
                for ox in sub:
                    cy = (yy - c + oy) * s + cf - shifts_px[j][0]
                    cx = (xx - c + ox) * s + cf - shifts_px[j][1]
                    det += ndimage.map_coordinates(inten, [cy, cx], order=1, mode="nearest")
            out[j, i] = rng.poisson(photons * beam * det / sub.size**2) + dark
        flats[j] = rng.poisson(photons * np.broadcast_to(beam, (3, n, n))) + dark
    darks = np.full((len(z1_mm), 2, n, n), dark, np.float32)
    return out, flats, darks

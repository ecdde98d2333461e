"""Holograms of a labelled electrode (independent Fresnel forward model) -> litomo phase -> segmentation.

Truth: a 32^3 crop of the TauFactor/Polaron NMC electrode (pore, NMC, carbon-binder), upsampled
2x to 64^3 voxels of 0.195 um so the finest carbon-binder features span two voxels; delta and
beta from xraydb at 29.6 keV (tests/holo_forward.py). Four focus-to-sample distances
(z1 = 5 ... 8 mm, z1+z2 = 100 mm, magnification 20 ... 12.5, detector pixel 3.9 um,
Fresnel numbers 0.19 ... 0.12 at the effective pixel of 0.195 um), 120 projections over 180 degrees,
1e4 photons per pixel with Poisson noise, a 10 % beam gradient in flats and data, darks, and a
known shift of every distance (1-2 pixels).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from holo_forward import CODES, HC_KEV_UM, holograms, projected_phase
from litomo.holo import (
    HoloGeometry,
    PhaseRetriever,
    RetrievalSettings,
    read_holo_hdf5,
    write_holo_hdf5,
)
from litomo.holo.align import to_common_grid
from litomo.metrics.fractions import volume_fractions
from litomo.metrics.surface import specific_surface_area
from litomo.segment.cleanup import majority_filter
from litomo.segment.forest import ForestSettings, train_forest
from litomo.workflows.phase import PhaseOptions, run_phase

E_KEV = 29.6
UP = 2
VOXEL_UM = 100.0 / 256 / UP  # TauFactor notebook: 100 um box, 256 voxels
Z1_MM = (5.0, 5.5, 6.5, 8.0)
Z12_MM = 100.0
N, N_DET, N_ANGLES = 64, 96, 120
SHIFTS = [(0.0, 0.0), (1.3, -0.7), (-0.9, 1.6), (2.2, 0.4)]  # sample pixels, per distance
MARGIN = 3  # voxels dropped at the cube faces (air/sample edge)


@pytest.fixture(scope="module")
def electrode(shared_data, tmp_path_factory):
    raw = tifffile.imread(shared_data / "micro" / "taufactor_electrode_polaron_nmc_256.tiff")
    c = N // UP
    lab = raw[100 : 100 + c, 100 : 100 + c, 100 : 100 + c].repeat(UP, 0).repeat(UP, 1).repeat(UP, 2)
    angles = np.linspace(0, 180, N_ANGLES, endpoint=False)
    phi, att = projected_phase(lab, angles, N_DET, VOXEL_UM, E_KEV)
    data, flats, darks = holograms(phi, att, energy_kev=E_KEV, z1_mm=Z1_MM, z12_mm=Z12_MM, voxel_um=VOXEL_UM,
                                   shifts_px=SHIFTS, rng=np.random.default_rng(0))
    d = tmp_path_factory.mktemp("holo")
    path = write_holo_hdf5(d / "holo.h5", list(data), list(flats), angles, darks=list(darks))
    geometry = HoloGeometry(E_KEV, Z1_MM, Z12_MM, VOXEL_UM * Z12_MM / Z1_MM[0])
    # the true axis (the forward model rotates about the box centre): this module measures
    # retrieval and segmentation; the automatic centre is tested on its own below
    result = run_phase(read_holo_hdf5(path), geometry, RetrievalSettings("ctf", 137.0), d / "out",
                       PhaseOptions(center_px=(N_DET - 1) / 2))
    return {"labels": lab, "phi": phi, "geometry": geometry, "result": result, "path": path, "out": d / "out"}


def test_forward_projector_is_ndimage_rotate_then_sum():
    """The forward model's sparse projector against the plain computation it replaces (10x the CPU)."""
    from scipy import ndimage

    from holo_forward import rotation_projector

    rng = np.random.default_rng(1)
    vol = np.zeros((3, 40, 40))
    vol[:, 8:32, 8:32] = rng.random((3, 24, 24))
    for a in (0.0, 17.5, 90.0, 133.0):
        slow = ndimage.rotate(vol, a, axes=(1, 2), reshape=False, order=1).sum(axis=1)
        fast = (rotation_projector(a, 40) @ vol.reshape(3, -1).T).T
        # measured <= 1.2e-15 (double rounding); the opposite sense of rotation gives 0.2-0.35 and a
        # half-pixel offset 0.1-0.48
        assert np.abs(fast - slow).max() < 2.5e-15 * np.abs(slow).max(), a


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_outputs_and_voxel_size(electrode):
    res, g = electrode["result"], electrode["geometry"]
    assert res.volume.shape == (N_DET, N_DET, N_DET)
    assert res.volume.voxel_size_um == pytest.approx((VOXEL_UM,) * 3)
    rec = json.loads((electrode["out"] / "phase.json").read_text())
    assert rec["voxel_size_um"] == pytest.approx(g.common_pixel_um)
    assert json.loads((electrode["out"] / "run.json").read_text())["outputs"] == rec["outputs"]
    assert (electrode["out"] / "report.html").is_file()
    from litomo.io import read_volume

    back = read_volume(electrode["out"] / "volume.ome.zarr")
    assert back.voxel_size_um == pytest.approx((VOXEL_UM,) * 3)


def test_automatic_centre_of_the_phase_projections(electrode):
    from litomo.holo.axis import find_phase_center, sinogram_band

    sino = np.load(electrode["result"].outputs["phase_projections"], mmap_mode="r")
    axis = find_phase_center(sinogram_band(sino), np.linspace(0, 180, N_ANGLES, endpoint=False))
    # truth (N_DET - 1) / 2 = 47.5; Vo's method: measured 47.50 (47.25 on the exact projected phase
    # and with linear resampling onto the common grid: within the method's quarter-pixel steps)
    assert abs(axis.center_px - (N_DET - 1) / 2) <= 0.3, axis


def test_alignment_recovers_known_shifts(electrode):
    al = electrode["result"].alignment
    # the forward model displaces distance j by SHIFTS[j]; the alignment maps it back by -SHIFTS[j]
    err = np.abs(np.asarray(al.shift_px) + np.asarray(SHIFTS))
    assert err.max() < 0.25  # measured 0.15 px
    assert np.abs(np.asarray(al.scale) / np.asarray(al.nominal_scale) - 1).max() < 0.015  # measured 0.75 %
    assert min(al.correlation) > 0.987  # measured 0.9939


def test_projected_phase_correlation_multi_distance(electrode):
    sino = np.load(electrode["result"].outputs["phase_projections"])
    phi = electrode["phi"]
    r_ctf = np.mean([_corr(-sino[i], phi[i]) for i in range(N_ANGLES)])
    assert r_ctf >= 0.98  # measured 0.9872 (issue's threshold)
    # multi-distance Paganin-like on every 4th projection, same alignment
    scan, g = read_holo_hdf5(electrode["path"]), electrode["geometry"]
    r = PhaseRetriever(scan.image_shape, g.propagation_distance_mm, E_KEV, g.common_pixel_um,
                       RetrievalSettings("multi-paganin", 137.0))
    rs = [_corr(r(to_common_grid(scan.intensities(i), electrode["result"].alignment)), phi[i])
          for i in range(0, N_ANGLES, 4)]
    assert np.mean(rs) >= 0.98  # measured 0.9846 (issue's threshold)


def test_recursive_paganin_reduces_phase_error(electrode):
    from litomo.holo.recursive import build_retriever

    scan, g, phi = read_holo_hdf5(electrode["path"]), electrode["geometry"], electrode["phi"]
    stacks = {i: to_common_grid(scan.intensities(i), electrode["result"].alignment) for i in range(0, N_ANGLES, 10)}

    def rel_rms(method, iterations):
        r = build_retriever(scan.image_shape, g.propagation_distance_mm, E_KEV, g.common_pixel_um,
                            RetrievalSettings(method, 137.0, iterations=iterations))
        return np.mean([np.sqrt(np.mean((r(s) - phi[i]) ** 2) / np.mean(phi[i] ** 2)) for i, s in stacks.items()])

    # relative RMS error of the projected phase: measured paganin 0.145 -> 0.124, multi-paganin
    # 0.143 -> 0.119 with 3 iterations (CTF with the pixel aperture 0.134); the rest is mostly the
    # carbon-binder's delta/beta
    for method in ("paganin", "multi-paganin"):
        e0, e3 = rel_rms(method, 0), rel_rms(method, 3)
        assert e3 < 0.93 * e0, (method, e0, e3)  # measured ratio 0.86 / 0.83
        assert e3 < 0.13, (method, e3)


def test_reconstructed_delta_matches_xraydb(electrode):
    from holo_forward import refractive_indices

    vol, lab = _interior(electrode)
    truth = {CODES[k]: d * 1e6 for k, (d, _) in refractive_indices(E_KEV).items()}
    assert abs(np.median(vol[lab == 0])) < 0.02  # pore: measured -0.003 (NMC is 1.08)
    assert np.median(vol[lab == 1]) == pytest.approx(truth[1], rel=0.05)  # NMC: measured -2.4 %
    # carbon-binder (delta/beta 4800, retrieved with the NMC's 137): measured -23 %
    assert np.median(vol[lab == 2]) == pytest.approx(truth[2], rel=0.35)


def test_volume_is_registered_with_the_labels(electrode):
    """No geometric shift between the reconstruction and the labels (Fresnel scaling, alignment, FBP centre).

    Sub-voxel shift per axis by phase correlation of the interior with a rendering of the true
    delta: measured (z, y, x) = (0.00, -0.05, 0.00) voxels; the FBP of the exact projected phase
    gives (0, 0, 0). A half-pixel convention error anywhere in the chain would show as >= 0.5.
    """
    from skimage.registration import phase_cross_correlation

    from holo_forward import refractive_indices

    vol, lab = _interior(electrode)
    truth = np.zeros(lab.shape, np.float32)
    for k, (d, _) in refractive_indices(E_KEV).items():
        truth[lab == CODES[k]] = d * 1e6
    shift, _, _ = phase_cross_correlation(truth, vol, upsample_factor=20, normalization=None)
    assert np.abs(shift).max() <= 0.25, shift


def _interior(electrode):
    o = (N_DET - N) // 2
    sl = slice(o + MARGIN, o + N - MARGIN)
    vol = np.asarray(electrode["result"].volume.array)[sl, sl, sl]
    # ndimage.rotate turns the opposite way to litomo's projector: the reconstruction is the
    # labels mirrored along y
    lab = np.vectorize(CODES.get)(electrode["labels"][MARGIN:-MARGIN, MARGIN:-MARGIN, MARGIN:-MARGIN])
    return vol, lab.astype(np.uint8)[:, ::-1, :]


def test_segmentation_recovers_fractions_and_surface_areas(electrode):
    vol, truth = _interior(electrode)
    half = vol.shape[0] // 2
    # scribbles: 3 % of the voxels of the first half (as a user paints); scored on the other half
    pick = np.random.default_rng(1).random(vol.shape) < 0.03
    pick[half:] = False
    scribbles = np.zeros(vol.shape, np.uint8)
    scribbles[pick] = truth[pick] + 1
    model = train_forest(vol, scribbles, ForestSettings(n_estimators=50, seed=0))
    # `litomo segment --majority`: a strict 3x3x3 majority vote, parameter-free (not chosen on
    # this crop; two other crops and noise seeds in docs/benchmarks.md)
    seg = majority_filter(model.predict(vol).astype(np.uint8) - 1, 3)[half:]
    ref = truth[half:]
    vf_t, vf_s = volume_fractions(ref), volume_fractions(seg)
    sa_t, sa_s = specific_surface_area(ref, VOXEL_UM), specific_surface_area(seg, VOXEL_UM)
    for p in ("pore", "am", "cbd"):
        assert abs(vf_s[p] - vf_t[p]) < 0.015, (p, vf_s, vf_t)  # measured +1.16 / +0.19 / -1.35 pp
    # face specific surface areas (issue's target 10 %), measured -5.1 / -1.2 / -2.4 % (the
    # forest alone: +11.5 / +0.2 / +16.1 %); other crops in docs/benchmarks.md (CBD -3.3 / +3.7 %)
    assert abs(sa_s["pore"] / sa_t["pore"] - 1) < 0.10, (sa_s, sa_t)
    assert abs(sa_s["am"] / sa_t["am"] - 1) < 0.03, (sa_s, sa_t)
    assert abs(sa_s["cbd"] / sa_t["cbd"] - 1) < 0.06, (sa_s, sa_t)


def test_geometry_of_the_test_scan():
    g = HoloGeometry(E_KEV, Z1_MM, Z12_MM, 3.9)
    assert g.wavelength_um == pytest.approx(HC_KEV_UM / E_KEV)
    assert g.common_pixel_um == pytest.approx(VOXEL_UM, rel=2e-3)

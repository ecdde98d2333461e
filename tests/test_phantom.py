"""Synthetic operando electrode: microstructure bands, Li physics, spectra, geometry, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from litomo.errors import DataError, LitomoError
from litomo.manifest import load_manifest
from litomo.particles import equivalent_diameters_um
from litomo.phantom.electrode import make_electrode
from litomo.phantom.lithium import remaining_fraction
from litomo.phantom.operando import make_operando_phantom, truth_on_binned_grid
from litomo.phantom.spectra import (
    UINT16_COUNTS_PER_INV_UM,
    UINT16_OFFSET_PER_UM,
    am_attenuation,
    normalized_mu,
    reference_spectrum,
)
from litomo.preprocess import bin_array

NO_MOTION = dict(max_translation_vox=0, max_rotation_deg=0, deformation_vox=0, state_translation_vox=0,
                 state_rotation_deg=0)


@pytest.fixture(scope="module")
def phantom():
    return make_operando_phantom(96, 4, seed=0)


@pytest.fixture(scope="module")
def truths(phantom):
    return [phantom.truth(k) for k in range(4)]


def test_microstructure_bands(phantom, truths) -> None:
    e = phantom.electrode
    f = e.fractions()
    assert 0.55 <= f["am"] <= 0.70
    assert 0.07 <= f["cbd"] <= 0.11
    assert f["pore"] == pytest.approx(1 - f["am"] - f["cbd"])
    labels = truths[0]["labels"]
    counts = np.bincount(labels.ravel(), minlength=3) / labels.size
    assert 0.55 <= counts[1] <= 0.70 and 0.07 <= counts[2] <= 0.11
    # particle ids are exactly the AM voxels; ids are int32
    assert e.particle_ids.dtype == np.int32
    assert np.array_equal(e.particle_ids > 0, e.labels == 1)
    # CBD sits next to AM (necks), not floating in the pores: most CBD voxels are close to AM
    from scipy import ndimage

    d = ndimage.distance_transform_edt(e.labels != 1)
    assert np.median(d[e.labels == 2]) < 0.15 * 37.6  # median well under a particle radius


def test_d50_from_particle_ids(phantom) -> None:
    e = phantom.electrode
    d = equivalent_diameters_um(e.particle_ids, e.voxel_size_um, exclude_boundary=True)
    assert len(d) >= 5
    assert abs(np.median(d) - 4.7) / 4.7 < 0.15
    # D50 spans 35-40 raw voxels at the default voxel size; a bin-7 particle radius > 2 voxels
    assert 35 <= 4.7 / e.voxel_size_um <= 40
    assert 4.7 / 2 / (7 * e.voxel_size_um) > 2


def test_some_particles_have_internal_pores(phantom) -> None:
    from scipy import ndimage

    e = phantom.electrode
    assert e.info["n_defective_particles"] > 0
    # holes: non-AM voxels enclosed by a single particle
    filled = ndimage.binary_fill_holes(e.particle_ids > 0)
    assert np.count_nonzero(filled & (e.particle_ids == 0)) > 0


def test_li_bounds_monotonic_core_shell(phantom, truths) -> None:
    means = []
    for t in truths:
        li = t["li"]
        am = t["labels"] == 1
        assert np.all(np.isnan(li[~am])) and np.all(np.isfinite(li[am]))
        assert li[am].min() >= 0.38 - 1e-6 and li[am].max() <= 1.0 + 1e-6
        means.append(float(li[am].mean()))
    assert means[0] > 0.9
    assert all(b < a for a, b in zip(means, means[1:], strict=False))
    assert 0.40 <= means[-1] <= 0.5
    # core-shell: in a delithiated state the particle surface holds less Li than the core
    li_obj = phantom.li_object(2)
    s, am = phantom.electrode.radial, phantom.electrode.labels == 1
    assert np.nanmean(li_obj[am & (s > 0.85)]) < np.nanmean(li_obj[am & (s < 0.4)]) - 0.1
    # the separator side (z = 0) reacts faster than the current-collector side
    nz = li_obj.shape[0]
    assert np.nanmean(li_obj[: nz // 3]) < np.nanmean(li_obj[-nz // 3 :])


def test_diffusion_series_matches_crank_mean() -> None:
    # volume-averaged remaining fraction of a sphere: 1 - 6/pi^2 sum exp(-n^2 tau)/n^2 ... as a
    # fraction remaining: 6/pi^2 sum exp(-n^2 tau) / n^2 (Crank eq. 6.20)
    s = np.linspace(0, 1, 4001)
    n = np.arange(1, 2000)
    for tau in (0.01, 0.1, 0.5, 2.0):
        u = remaining_fraction(s, np.full_like(s, tau))
        mean = np.trapezoid(u * 3 * s**2, s)
        expected = 6 / np.pi**2 * np.sum(np.exp(-(n**2) * tau) / n**2)
        assert mean == pytest.approx(expected, abs=3e-3)


def test_spectra_interpolation_endpoints() -> None:
    ep, mp = reference_spectrum("pristine")
    ec, mc = reference_spectrum("charged")
    for energy in (8330.0, 8340.5, 8345.0, 8350.0, 8430.0):
        assert normalized_mu(energy, 1.0) == pytest.approx(np.interp(energy, ep, mp), abs=1e-6)
        assert normalized_mu(energy, 0.38) == pytest.approx(np.interp(energy, ec, mc), abs=1e-6)
        mid = normalized_mu(energy, 0.69)
        assert mid == pytest.approx(0.5 * (np.interp(energy, ep, mp) + np.interp(energy, ec, mc)), abs=1e-6)
    # the steep edge: the pristine (Ni2+) spectrum rises at lower energy than the charged one
    assert normalized_mu(8345.0, 1.0) > normalized_mu(8345.0, 0.38)
    # attenuation has a Ni edge jump, and the background falls with energy
    assert am_attenuation(8430.0, 1.0) - am_attenuation(8330.0, 1.0) > 0.05


def test_bundled_spectra_equal_originals(shared_data: Path) -> None:
    for which, name in (("pristine", "ref_NiO.txt"), ("charged", "ref_LiNiO2.txt")):
        orig = np.loadtxt(shared_data / "xanes" / "pyxas" / name)
        e, mu = reference_spectrum(which)
        np.testing.assert_allclose(e, orig[:, 0] * 1000.0, rtol=0, atol=1e-6)
        np.testing.assert_allclose(mu, orig[:, 1], rtol=0, atol=1e-9)


def test_registration_truth_pure_translation() -> None:
    from skimage.registration import phase_cross_correlation

    ph = make_operando_phantom(64, 1, seed=4, snr=0, max_rotation_deg=0, deformation_vox=0, max_translation_vox=3)
    post = ph.volume(0, "post_edge")
    for role in ("pre_edge", "edge"):
        t = np.array(ph.energy_transforms[0][role].translation_vox)
        assert np.abs(t).max() > 0.5  # something was applied
        shift, _, _ = phase_cross_correlation(post, ph.volume(0, role), upsample_factor=10)
        # content of the moving volume is displaced by +t, so registering it needs -t
        np.testing.assert_allclose(shift, -t, atol=0.35)


def test_state_motion_moves_truth() -> None:
    from skimage.registration import phase_cross_correlation

    ph = make_operando_phantom(64, 2, seed=5, snr=0, **{**NO_MOTION, "state_translation_vox": 2.0})
    t = np.array(ph.state_motion[1].translation_vox)
    a, b = ph.truth(0)["labels"].astype(float), ph.truth(1)["labels"].astype(float)
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=2)
    np.testing.assert_allclose(shift, -np.round(t), atol=1.0)


def test_rotation_and_deformation_recorded(phantom) -> None:
    for k in range(4):
        post = phantom.energy_transforms[k]["post_edge"]
        assert post.is_identity
        for role in ("pre_edge", "edge"):
            tr = phantom.energy_transforms[k][role]
            assert 0 < abs(tr.rotation_deg) < 1.0
            assert np.abs(tr.translation_vox).max() <= 3.0
            u = tr.displacement(0, 96, phantom.shape)
            # the recorded amplitude is the control-point maximum; the field stays near it
            assert 0.5 * tr.deformation_max_vox < np.abs(u).max() < 1.5 * tr.deformation_max_vox


def test_three_energy_ratio_recovers_truth() -> None:
    """With registration known (no motion), the SPEC 2.1 map on binned data follows the truth."""
    ph = make_operando_phantom(70, 2, seed=3, **NO_MOTION)
    t = ph.truth(1)
    vb = [bin_array(ph.volume(1, r), 7) for r in ph.roles]
    r = (vb[1] - vb[0]) / (vb[2] - vb[0])
    ratio = [[float(f(e, li)) for e in ph.energies_ev] for f, li in ((am_attenuation, 1.0), (am_attenuation, 0.38))]
    rp, rc = ((b - a) / (c - a) for a, b, c in ratio)
    x = 1.0 + (r - rp) * (0.38 - 1.0) / (rc - rp)
    truth = truth_on_binned_grid(t["li"], t["labels"] == 1, 7, min_am_fraction=0.7)
    m = np.isfinite(truth)
    assert m.sum() > 50
    assert np.sqrt(np.mean((x[m] - truth[m]) ** 2)) < 0.06
    assert np.corrcoef(x[m], truth[m])[0, 1] > 0.8


def test_uint16_is_affine_and_ratio_invariant() -> None:
    ph = make_operando_phantom(32, 1, seed=2, snr=0, **NO_MOTION)
    f = [ph.volume(0, r) for r in ph.roles]
    u = [ph.volume(0, r, dtype="uint16") for r in ph.roles]
    assert u[0].dtype == np.uint16
    back = u[0] / UINT16_COUNTS_PER_INV_UM - UINT16_OFFSET_PER_UM
    np.testing.assert_allclose(back, f[0], atol=1 / UINT16_COUNTS_PER_INV_UM)
    fb = [bin_array(v, 4) for v in f]
    ub = [bin_array(v.astype(np.float32), 4) for v in u]
    am = bin_array((ph.truth(0)["labels"] == 1).astype(np.float32), 4) > 0.9
    rf = ((fb[1] - fb[0]) / (fb[2] - fb[0]))[am]
    ru = ((ub[1] - ub[0]) / (ub[2] - ub[0]))[am]
    np.testing.assert_allclose(ru, rf, atol=2e-3)


def test_truth_on_binned_grid_block_means() -> None:
    li = np.zeros((4, 4, 4), np.float32)
    am = np.zeros((4, 4, 4), bool)
    am[:2, :2, :2] = True  # block 0: all AM, Li 0.5 and 1.0 halves
    li[:1, :2, :2], li[1:2, :2, :2] = 0.5, 1.0
    am[2:, 2:, 2:] = True
    am[3, 3, 3] = False  # block (1,1,1): 7/8 AM
    li[2:, 2:, 2:] = 0.4
    li[~am] = np.nan
    out = truth_on_binned_grid(li, am, 2, min_am_fraction=0.5)
    assert out[0, 0, 0] == pytest.approx(0.75)
    assert out[1, 1, 1] == pytest.approx(0.4)
    assert np.isnan(out[0, 1, 0])
    assert np.isnan(truth_on_binned_grid(li, am, 2, min_am_fraction=0.9)[1, 1, 1])
    with pytest.raises(DataError):
        truth_on_binned_grid(li, am[:2], 2)


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="keV"):
        make_operando_phantom(32, 1, energies_ev=(8.33, 8.345, 8.43))
    with pytest.raises(DataError, match="increasing"):
        make_operando_phantom(32, 1, energies_ev=(8345.0, 8330.0, 8430.0))
    with pytest.raises(DataError):
        make_electrode(4)


def _contents(root: Path) -> dict[str, bytes]:
    """Every file's bytes; for TIFFs the pixel bytes (OME-TIFF headers carry a random UUID)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".litomo" not in p.parts:  # the ownership marker carries a run id
            out[str(p.relative_to(root))] = tifffile.imread(p).tobytes() if p.suffix == ".tif" else p.read_bytes()
    return out


def _cli(args: list[str]) -> int:
    from litomo.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_writes_everything_and_is_deterministic(tmp_path: Path) -> None:
    args = ["phantom", "operando", "--size", "40", "--states", "3", "--seed", "7", "-q"]
    assert _cli([*args, "--out", str(tmp_path / "a")]) == 0
    assert _cli([*args, "--out", str(tmp_path / "b")]) == 0
    a = tmp_path / "a"
    for state in ("I", "II", "III"):
        for role in ("pre_edge", "edge", "post_edge"):
            assert (a / state / f"{role}.tif").is_file()
        for key in ("li", "labels", "particles"):
            assert (a / "truth" / state / f"{key}.tif").is_file()
    for ref in ("pristine", "charged"):
        head = (a / "refs" / f"{ref}.csv").read_text().splitlines()[0]
        assert head == "energy_ev,mu"
    m = load_manifest(a / "experiment.toml")
    truth = json.loads((a / "truth" / "truth.json").read_text())
    transforms = json.loads((a / "truth" / "transforms.json").read_text())
    assert [s.name for s in m.states] == ["I", "II", "III"]
    assert m.processing.bin == (7, 7, 7) and m.sample.voxel_size_um == (0.125,) * 3
    for s, ts in zip(m.states, truth["states"], strict=True):
        li = tifffile.imread(a / "truth" / s.name / "li.tif")
        assert s.expected_li == pytest.approx(np.nanmean(li), abs=1e-5)
        assert ts["mean_li"] == pytest.approx(np.nanmean(li), abs=1e-6)
        assert set(transforms["states"][s.name]) == {"state_motion", "pre_edge", "edge", "post_edge"}
    vol = tifffile.imread(m.states[1].volume_for("edge"))
    assert vol.shape == (40, 40, 40) and vol.dtype == np.float32
    # same seed, bit-identical data in every file
    ca, cb = _contents(a), _contents(tmp_path / "b")
    assert ca.keys() == cb.keys() and len(ca) == 3 * 6 + 2 + 3 + 1  # + run.json
    assert all(ca[k] == cb[k] for k in ca)
    # refusing to overwrite an existing dataset; --overwrite replaces only what litomo wrote
    assert _cli([*args, "--out", str(a)]) == 2
    (a / "thesis.tex").write_text("mine")
    assert _cli([*args, "--out", str(a), "--overwrite"]) == 2
    assert (a / "thesis.tex").read_text() == "mine" and (a / "experiment.toml").is_file()
    (a / "thesis.tex").unlink()
    assert _cli([*args, "--out", str(a), "--overwrite"]) == 0
    assert _cli([*args, "--out", str(tmp_path / "c"), "--dtype", "int8"]) == 2


def test_energy_list_dataset_and_uint16(tmp_path: Path) -> None:
    from litomo.phantom.writer import write_operando_phantom

    truth = write_operando_phantom(tmp_path, size=24, n_states=1, seed=1, dtype="uint16",
                                   energies_ev=(8330.0, 8340.0, 8345.0, 8350.0, 8430.0))
    m = load_manifest(tmp_path / "experiment.toml")
    (s,) = m.states
    assert not s.three_energy and s.energies_ev == (8330.0, 8340.0, 8345.0, 8350.0, 8430.0)
    assert tifffile.imread(s.volumes[0]).dtype == np.uint16
    assert truth["uint16_scale"]["counts_per_inv_um"] == UINT16_COUNTS_PER_INV_UM
    with pytest.raises(LitomoError, match="already holds"):
        write_operando_phantom(tmp_path, size=24, n_states=1)


# --------------------------------------------------------------------------- streamed (large) path

def test_electrode_stream_is_seamless_and_matches_in_memory() -> None:
    from litomo.phantom.electrode import ElectrodeStream

    es = ElectrodeStream(56, seed=3, chunk_rows=8)
    # overlapping, increasing requests of odd lengths: must reproduce one whole-volume request
    parts = [es.rows(z, z + 11) for z in range(0, 56, 9)]
    whole = ElectrodeStream(56, seed=3, chunk_rows=512).rows(0, 56)
    for z, p in zip(range(0, 56, 9), parts, strict=True):
        for got, ref in zip(p, whole, strict=True):
            np.testing.assert_array_equal(got, ref[z : z + 11])
    with pytest.raises(DataError, match="increasing"):
        es.rows(0, 4)
    # same particles as the in-memory generator (compiled painter: rounding-level differences)
    e = make_electrode(56, seed=3)
    assert np.mean(whole[1] == e.particle_ids) > 0.999
    counts = np.bincount(whole[0].ravel(), minlength=3) / whole[0].size
    assert counts[1] == pytest.approx(e.fractions()["am"], abs=0.002)
    assert 0.07 <= counts[2] <= 0.11
    assert np.array_equal(whole[1] > 0, whole[0] == 1)


def test_compiled_resampling_matches_map_coordinates() -> None:
    from scipy import ndimage

    from litomo.phantom.motion import chain_affine, slab_points
    from litomo.resample.kernels import affine_rows

    ph = make_operando_phantom(24, 1, seed=6)
    chain = ph.chain(0, "pre_edge")
    assert chain[0].control is not None
    rng = np.random.default_rng(0)
    ext = 24 + 2 * ph.margin
    block = rng.random((ext, ext, ext)).astype(np.float32)
    mat, vec, lin = chain_affine(24, chain)
    out = np.empty((10, 24, 24), np.float32)
    affine_rows(block, 3, 5, 15, 24, ph.margin, mat, vec, lin, chain[0].deformation_samples(ph.shape), 1, out)
    pts = slab_points(24, ph.margin, 5, 15, chain)
    pts[0] -= 3
    np.testing.assert_allclose(out, ndimage.map_coordinates(block, pts, order=1, mode="nearest"), atol=1e-5)


def test_streamed_writer_is_seamless_and_consistent(tmp_path: Path) -> None:
    from litomo.phantom.operando import make_streamed_phantom
    from litomo.phantom.writer import _write_volumes_streamed, write_operando_phantom

    truth = write_operando_phantom(tmp_path / "s", size=32, n_states=2, seed=7, streamed=True)
    mem = make_operando_phantom(32, 2, seed=7)
    assert truth["streamed"] and truth["n_particles"] == mem.electrode.info["n_particles_visible"]
    # the same drawn misregistration and state motion as the in-memory phantom, as recorded
    rec = json.loads((tmp_path / "s" / "truth" / "transforms.json").read_text())["states"]
    for k, name in enumerate(("I", "II")):
        for role in ("pre_edge", "edge"):
            assert rec[name][role] == mem.energy_transforms[k][role].to_json()
        assert rec[name]["state_motion"] == mem.state_motion[k].to_json()
    # fractions and Li close to the in-memory path and the targets
    f = truth["fractions"]
    mem_labels = mem.truth(0)["labels"]
    assert f["am"] == pytest.approx(np.mean(mem_labels == 1), abs=0.002)  # same particles
    # CBD: same construction, its own noise and pilot threshold (a 32^3 view is a small sample)
    assert f["cbd"] == pytest.approx(np.mean(mem_labels == 2), abs=0.02)
    assert truth["states"][0]["mean_li"] > 0.99
    assert truth["states"][1]["mean_li"] == pytest.approx(0.45, abs=0.05)
    m = load_manifest(tmp_path / "s" / "experiment.toml")
    li = tifffile.imread(tmp_path / "s" / "truth" / "II" / "li.tif")
    labels = tifffile.imread(tmp_path / "s" / "truth" / "II" / "labels.tif")
    assert np.all(np.isnan(li[labels != 1])) and np.all(np.isfinite(li[labels == 1]))
    assert m.states[1].expected_li == pytest.approx(np.nanmean(li), abs=1e-5)
    # slab size changes nothing: no seams at slab edges, every file bit-identical to the one-slab run
    _write_volumes_streamed(make_streamed_phantom(32, 2, seed=7), tmp_path / "r", "float32", None,
                            slab_rows=8)
    a, b = _contents(tmp_path / "r"), _contents(tmp_path / "s")
    assert len(a) == 12 and all(a[k] == b[k] for k in a)

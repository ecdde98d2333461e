"""``litomo map2d``: 2-D TXM-XANES maps from raw frames (issue 21 item 5).

Real frames: APS 32-ID-C (fov07, state soc01, 8250 / 8353 eV, one flat field per energy) and
SSRL 6-2c (pristine NCA, 8324 / 8354 eV, three exposures per energy, energy in the file name),
from ``../shared/data/xanes/xanespy``. Two energies allow the edge-jump (Ni) map, the particles
and the alignment QA, not a Li map. The Li map is checked on a phantom whose frames are made
here by an independent forward model: the two bundled reference spectra mixed by a known Li
field, a Victoreen-like non-resonant background, a flat field and Poisson counts.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from skimage.registration import phase_cross_correlation

from litomo.errors import DataError, InputFileError, ManifestError
from litomo.manifest.map2d import (
    EnergyFrames,
    Map2DSpec,
    group_frames_by_energy,
    load_map2d_manifest,
)
from litomo.workflows.map2d import OdStack, align_od, compute_map2d, frames_to_od

APS = "xanes/xanespy/txm-data-aps"
SSRL = "xanes/xanespy/txm-data-ssrl"


def _aps_frames(shared_data: Path) -> tuple[EnergyFrames, ...]:
    d = shared_data / APS
    return group_frames_by_energy(sorted(d.glob("fov07_xanessoc01_*.xrm")), sorted(d.glob("ref_xanessoc01_*.xrm")))


@pytest.fixture(scope="module")
def aps_od(shared_data) -> OdStack:
    return frames_to_od(_aps_frames(shared_data))


def _window_shifts(fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent estimate: skimage phase correlation of 256-px windows around each particle
    (Otsu masks, so the contrast change across the edge does not matter), inliers only."""
    g1, g0 = ndi.gaussian_filter(fixed, 2), ndi.gaussian_filter(moving, 2)
    m = ndi.binary_opening(g1 > threshold_otsu(g1), iterations=2)
    half, (h, w) = 128, fixed.shape
    pts, shifts = [], []
    for r in regionprops(label(m)):
        if r.area < 1500:
            continue
        y0 = int(np.clip(r.centroid[0] - half, 0, h - 2 * half))
        x0 = int(np.clip(r.centroid[1] - half, 0, w - 2 * half))
        a, b = g1[y0:y0 + 2 * half, x0:x0 + 2 * half], g0[y0:y0 + 2 * half, x0:x0 + 2 * half]
        s, _, _ = phase_cross_correlation(a > threshold_otsu(a), b > threshold_otsu(b), upsample_factor=20)
        pts.append((y0 + half - 0.5, x0 + half - 0.5))
        shifts.append(s)
    pts, shifts = np.array(pts), np.array(shifts)
    ok = np.linalg.norm(shifts - np.median(shifts, axis=0), axis=1) < 5
    return pts[ok], shifts[ok]


def test_aps_alignment_recovers_a_known_scale_and_shift(aps_od):
    """The 8353 eV OD frame and a copy moved by a known similarity (scale 0.991, shift)."""
    fixed = aps_od.od[1, 256:768, 256:768].astype(np.float64)
    s_true, t_true = 0.991, np.array([3.3, -4.6])  # fixed -> moving: q = c + s (r - c) + t
    c = (np.array(fixed.shape) - 1) / 2
    moving = ndi.affine_transform(fixed, np.eye(2) / s_true, offset=c - (c + t_true) / s_true, order=3,
                                  mode="nearest")
    st = OdStack(np.stack([moving, fixed]).astype(np.float32), np.array([8250.0, 8353.0]), 0.0389, pd.DataFrame())
    aligned, qa = align_od(st, "similarity", reference_index=1)
    row = qa.iloc[0]
    # measured: scale 0.9910, shift within 0.05 px
    assert row["scale"] == pytest.approx(s_true, abs=0.001)
    assert row["translation_y_px"] == pytest.approx(t_true[0], abs=0.2)
    assert row["translation_x_px"] == pytest.approx(t_true[1], abs=0.2)
    inner = (slice(20, -20), slice(20, -20))
    assert np.corrcoef(aligned[0][inner].ravel(), fixed[inner].ravel())[0, 1] > 0.99


def test_aps_alignment_of_the_real_pair_agrees_with_phase_correlation(aps_od):
    """8250 eV onto 8353 eV: elastix's similarity vs a phase-correlation fit of particle windows."""
    aligned, qa = align_od(aps_od, "similarity", reference_index=1)
    row = qa.iloc[0]
    pts, shifts = _window_shifts(aps_od.od[1], aps_od.od[0])
    assert len(pts) >= 5
    assert np.median(np.linalg.norm(shifts, axis=1)) > 40  # the frames really are 46 px apart
    c = (np.array(aps_od.od.shape[1:]) - 1) / 2
    # phase correlation gives the shift that registers moving onto fixed: d(r) = -(t + (s - 1)(r - c))
    x = np.zeros((2 * len(pts), 3))
    x[0::2, 0] = x[1::2, 1] = -1.0
    x[0::2, 2], x[1::2, 2] = -(pts[:, 0] - c[0]), -(pts[:, 1] - c[1])
    p, *_ = np.linalg.lstsq(x, shifts.ravel(), rcond=None)
    resid = shifts.ravel() - x @ p
    se_scale = float(np.sqrt(np.linalg.inv(x.T @ x)[2, 2] * (resid @ resid) / (len(resid) - 3)))
    # measured: elastix t = (-19.9, 41.2) px, windows t = (-19.6, 42.4) px
    assert row["translation_y_px"] == pytest.approx(p[0], abs=1.5)
    assert row["translation_x_px"] == pytest.approx(p[1], abs=1.5)
    # the scale is weakly determined by this pair: elastix 0.9957 (0.9914-0.9937 for inputs that
    # differ in the last float bit), windows 1.0039 +- 0.0022; whole-frame NCC changes by < 0.003
    # over 0.991-1.004 (docs/science.md, "2-D TXM-XANES maps")
    assert row["scale"] == pytest.approx(1 + p[2], abs=max(0.015, 3 * se_scale))
    assert row["ncc_after"] > row["ncc_before"] + 0.2  # measured 0.46 -> 0.77
    # aligned, the particles' residual window shifts are small (before: 46 px)
    pts2, res_shifts = _window_shifts(aps_od.od[1], np.nan_to_num(aligned[0], nan=float(np.nanmedian(aligned[0]))))
    assert np.median(np.linalg.norm(res_shifts, axis=1)) < 1.5  # measured 0.75 px


# ------------------------------------------------------------------------------------ phantom

LI_P, LI_C = 1.0, 0.38


def _reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled reference spectrum read with numpy (not litomo's reader)."""
    a = np.loadtxt(files("litomo.xanes") / "data" / name, delimiter=",", comments="#", skiprows=3)
    return a[:, 0], a[:, 1]


def _phantom_frames(tmp_path: Path, energies_ev, *, shape=(160, 160), px_um=0.05, counts=20000.0,
                    shift_px=(0.0, 0.0), seed=0) -> tuple[tuple[EnergyFrames, ...], np.ndarray, np.ndarray]:
    """Raw sample and flat TIFF frames of five particles with a lateral Li field.

    Forward model per pixel (written independently of litomo's inverse): Ni absorption
    ``J t(y, x) [f n_NiO(E) + (1 - f) n_LiNiO2(E)]`` with ``t`` the particle thickness (spheres),
    ``f = (x_Li - li_c) / (li_p - li_c)``, plus a non-resonant ``E^-2.8`` part of the particles
    and of a uniform film; flat field with a gradient, Poisson counts in both frames. The last
    energy's frame is shifted by ``shift_px`` (sub-pixel, spline) to exercise the alignment.
    Returns the frames, the Li truth (NaN outside particles) and the thickness map (um).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    t = np.zeros(shape)
    x_true = np.full(shape, np.nan)
    for cy, cx, r, core, rim in ((45, 45, 26, 0.95, 0.55), (50, 112, 22, 0.45, 0.85), (112, 50, 24, 0.75, 0.75),
                                 (115, 115, 28, 0.40, 0.98), (80, 80, 10, 0.62, 0.62)):
        rr = np.hypot(yy - cy, xx - cx) / r
        inside = rr < 1
        t = t + np.where(inside, 2 * r * px_um * np.sqrt(np.clip(1 - rr**2, 0, None)), 0.0)
        x_true = np.where(inside, core + (rim - core) * rr**2, x_true)
    f = (x_true - LI_C) / (LI_P - LI_C)
    ep, mp = _reference("ni_kedge_NiO.csv")
    ec, mc = _reference("ni_kedge_LiNiO2.csv")
    frames = []
    flat_shape = 1.0 + 0.2 * xx / shape[1]
    for k, e in enumerate(energies_ev):
        n = np.nan_to_num(f) * np.interp(e, ep, mp) + (1 - np.nan_to_num(f)) * np.interp(e, ec, mc)
        od = 0.3 * t * n + (0.15 * t + 0.1) * (e / 8333.0) ** -2.8
        if k == len(energies_ev) - 1:
            od = ndi.shift(od, shift_px, order=3, mode="nearest")
        i0 = counts * flat_shape
        sample = rng.poisson(i0 * np.exp(-od)).astype(np.float32)
        flat = rng.poisson(i0).astype(np.float32)
        ps, pf = tmp_path / f"s_{e:.1f}.tif", tmp_path / f"f_{e:.1f}.tif"
        tifffile.imwrite(ps, sample)
        tifffile.imwrite(pf, flat)
        frames.append(EnergyFrames(float(e), (ps,), (pf,)))
    return tuple(frames), x_true, t


def _li_errors(res, x_true, t, min_t_um=0.5):
    """RMSE of x_Li over pixels at least ``min_t_um`` thick (thin rims carry little Ni)."""
    sel = (t > min_t_um) & np.isfinite(res.x_li)
    covered = sel.sum() / (t > min_t_um).sum()
    return float(np.sqrt(np.mean((res.x_li[sel] - x_true[sel]) ** 2))), covered


@pytest.mark.parametrize(("energies", "method", "rmse_max", "particle_max"), [
    # measured (seed 0): RMSE 0.069, per-particle mean off by at most 0.041
    ((8330.0, 8344.0, 8430.0), "three-energy", 0.14, 0.08),
    # measured (seed 0): RMSE 0.045, per-particle mean off by at most 0.006
    ((8300.0, 8330.0, 8340.0, 8344.0, 8348.0, 8354.0, 8380.0, 8430.0), "fit", 0.09, 0.015),
])
def test_phantom_li_map(tmp_path, energies, method, rmse_max, particle_max):
    frames, x_true, t = _phantom_frames(tmp_path, energies, shift_px=(1.4, -2.2))
    # the forward model's non-resonant absorption falls as E^-2.8: the three-energy ratio removes it
    spec = Map2DSpec(frames=frames, pixel_size_um=0.05, align="translation", background_exponent=2.8)
    res = compute_map2d(spec)
    assert res.method == method
    # the last frame's shift (1.4, -2.2) px is found (translation of the centre, reference -> frame)
    last = res.alignment.iloc[-1]
    assert last["translation_y_px"] == pytest.approx(1.4, abs=0.1)  # measured within 0.02
    assert last["translation_x_px"] == pytest.approx(-2.2, abs=0.1)
    rmse, covered = _li_errors(res, x_true, t)
    assert covered > 0.99  # measured 1.0
    assert rmse < rmse_max
    # the AM mask is the particles: area within 2 % of the truth (measured -0.3 / -0.5 %)
    assert res.am_mask.sum() == pytest.approx((t > 0).sum(), rel=0.02)
    # per-particle means follow the truth's (thickness-weighted pixels of the particle's label)
    tab = res.particle_table
    assert len(tab) == 5
    for _, row in tab.iterrows():
        lab = res.particles == row["particle"]
        truth = float(np.nanmean(np.where(lab & (t > 0.5), x_true, np.nan)))
        assert row["mean_li"] == pytest.approx(truth, abs=particle_max)
    assert res.summary["mean_li"] == pytest.approx(float(np.nanmean(x_true[res.am_mask])), abs=particle_max)


# ------------------------------------------------------------------------------- real data, CLI


def test_aps_cli_edge_jump_map(shared_data, tmp_path, aps_od):
    """``litomo map2d --sample ... --flat ...`` on the APS pair: Ni map, particles, outputs."""
    import json

    from typer.testing import CliRunner

    from litomo.cli import app

    d = shared_data / APS
    out = tmp_path / "out"
    args = ["map2d", "-q", "--out", str(out)]
    for e in ("8250", "8353"):
        args += ["--sample", str(d / f"fov07_xanessoc01_{e}_0eV.xrm"), "--flat", str(d / f"ref_xanessoc01_{e}_0eV.xrm")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "edge-jump map of 2 energies" in r.output
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "edge-jump"
    for rel in ("report.html", "tables/particles.csv", "tables/alignment.csv", "maps/edge_jump.tif",
                "figures/edge_jump.png"):
        assert rel in run["outputs"] or rel.startswith("figures"), rel
        assert (out / rel).is_file(), rel
    assert "Li map needs three energies" in (out / "report.html").read_text()
    # README: "the difference shows about 8 particles clearly" (measured: 9 of >= 3 um^2)
    tab = pd.read_csv(out / "tables/particles.csv")
    assert 6 <= (tab["area_um2"] >= 3.0).sum() <= 12
    # AM area vs an independent count: the 8250 eV OD shifted by the phase-correlation offset,
    # subtracted from the 8353 eV OD, thresholded by skimage's Otsu (measured 146 vs 157 um^2)
    px = aps_od.pixel_size_um
    mask = tifffile.imread(out / "maps/am_mask.tif")
    moved = ndi.shift(aps_od.od[0].astype(float), (19.8, -42.0), order=1, cval=np.nan)
    jump = aps_od.od[1] - moved
    ok = np.isfinite(jump)
    area_otsu = float(((jump > threshold_otsu(jump[ok])) & ok).sum()) * px * px
    assert mask.sum() * px * px == pytest.approx(area_otsu, rel=0.15)
    summary = json.loads((out / "tables/summary.json").read_text())
    assert summary["edge_jump_cnr"] > 5  # measured 8.5 (Rose criterion: >= 5 is detectable)


def test_ssrl_repeats_and_energies_from_names(shared_data):
    """SSRL 6-2c: three exposures per energy, energy only in the file name, 0.5 s exposures."""
    d = shared_data / SSRL
    frames = group_frames_by_energy(sorted(d.glob("rep01_2016*.xrm")), sorted(d.glob("rep01_000*_ref_*.xrm")))
    assert [f.energy_ev for f in frames] == [8324.0, 8354.0]
    assert [len(f.sample) for f in frames] == [3, 3]
    st = frames_to_od(frames)
    one = frames_to_od(tuple(EnergyFrames(f.energy_ev, f.sample[:1], f.flat) for f in frames))
    assert st.frames["n_sample"].tolist() == [3, 3]
    # averaging three exposures lowers the OD noise; shot noise predicts the ratio from the raw
    # counts: var(OD) = 1/I_sample + 1/I_flat, with I_sample tripled (measured 0.737 / 0.753
    # against 0.758 / 0.757 predicted)
    from litomo.io import read_xrm

    def noise(od):
        hp = od - ndi.uniform_filter(od, 5)
        return float(np.std(hp[100:-100, 100:-100]))

    for k, f in enumerate(frames):
        i_s = float(np.median(read_xrm(f.sample[0]).image))
        i_f = float(np.median(read_xrm(f.flat[0]).image))
        predicted = np.sqrt((1 / (3 * i_s) + 1 / i_f) / (1 / i_s + 1 / i_f))
        assert noise(st.od[k]) / noise(one.od[k]) == pytest.approx(predicted, abs=0.04)
    # sample 0.5 s, flat 0.3 s: counts are compared as rates
    assert st.frames["sample_exposure_s"].tolist() == [0.5, 0.5]
    assert st.frames["flat_exposure_s"].tolist() == pytest.approx([0.3, 0.3])


def test_manifest_round_trip_and_errors(tmp_path, shared_data):
    d = shared_data / APS
    toml = tmp_path / "m.toml"
    toml.write_text(f"""
[map2d]
name = "fov07"
align = "translation"
[[map2d.energy]]
sample = "{d / 'fov07_xanessoc01_8250_0eV.xrm'}"
flat = ["{d / 'ref_xanessoc01_8250_0eV.xrm'}"]
[[map2d.energy]]
energy_ev = 8353.0
sample = ["{d / 'fov07_xanessoc01_8353_0eV.xrm'}"]
flat = ["{d / 'ref_xanessoc01_8353_0eV.xrm'}"]
""")
    spec = load_map2d_manifest(toml)
    assert spec.name == "fov07" and spec.align == "translation"
    assert spec.frames[0].energy_ev is None and spec.frames[1].energy_ev == 8353.0
    bad = toml.read_text().replace('align = "translation"', 'allign = "none"')
    toml.write_text(bad)
    with pytest.raises(ManifestError, match=r"map2d\.allign.*did you mean 'align'"):
        load_map2d_manifest(toml)
    toml.write_text(bad.replace('allign = "none"', "").replace("fov07_xanessoc01_8353", "nope"))
    with pytest.raises(ManifestError, match=r"map2d\.energy\[1\]\.sample.*not found"):
        load_map2d_manifest(toml)


def test_bad_inputs_are_one_line_errors(shared_data, tmp_path):
    d = shared_data / APS
    with pytest.raises(InputFileError, match="--flat: no flat-field frame at 8353"):
        group_frames_by_energy([d / "fov07_xanessoc01_8250_0eV.xrm", d / "fov07_xanessoc01_8353_0eV.xrm"],
                               [d / "ref_xanessoc01_8250_0eV.xrm"])
    frames = _aps_frames(shared_data)
    with pytest.raises(DataError, match="three-energy needs at least 3 energies"):
        compute_map2d(Map2DSpec(frames=frames, method="three-energy"))
    from litomo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["map2d", "--out", str(tmp_path / "o"), "--sample", str(d / "fov07_xanessoc01_8250_0eV.xrm")])
    assert exc.value.code == 2


def test_dark_and_exposure_normalisation_analytic(tmp_path):
    """OD = -ln(((I - D) / t_s) / ((I0 - D) / t_f)) with TIFF frames (no exposure recorded: t equal)."""
    for name, value in (("s", 110.0), ("f", 1010.0), ("d", 10.0)):
        tifffile.imwrite(tmp_path / f"{name}.tif", np.full((8, 8), value, np.float32))
    fr = EnergyFrames(8300.0, (tmp_path / "s.tif",), (tmp_path / "f.tif",), (tmp_path / "d.tif",))
    st = frames_to_od((fr,), pixel_size_um=0.1)
    assert st.od[0] == pytest.approx(np.full((8, 8), -np.log(100 / 1000)), rel=1e-6)
    with pytest.raises(InputFileError, match="pixel size"):
        frames_to_od((fr,))

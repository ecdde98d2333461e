"""``litomo run`` starting from projection series (manifest ``[reconstruction]``, stage ``reconstruct``).

A one-state operando phantom (64^3 voxels per energy) sits inside a larger detector, as a TXM
sample does (8 empty columns either side, 4 empty rows above and below: no view pushes it off
the detector), zero outside its inscribed cylinder. It is projected by astra at each energy
(240 deg, 241 views, Poisson-noisy flats and transmission) and every view is moved by known
random jitter (up to 3 px vertical, 5 px horizontal); the run aligns the post-edge series by
reprojection and the other energies to it. Its Li map is compared with the map of the run from
the true volumes (issue #14: within 0.01 x_Li RMSE).

The phantom is made without its volume noise and without its misregistration between energies
(``snr=0``, no energy transforms): a TXM series gets its noise in the projections (here Poisson)
and its misregistration from the stage (jitter), and both runs skip the registration stage, so
with the phantom's defaults the map "from the true volumes" would carry an unregistered 3-voxel
shift between energies and the map from projections the FBP-smoothed volume noise (docs/science.md).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pipeline_helpers import cli
from recon_helpers import txm_series

ROLES = ("pre_edge", "edge", "post_edge")
N = 64
SCALE = 0.35
MARGIN = 8  # empty detector columns either side (and MARGIN // 2 rows above and below)


def _write_dxchange(path, series):
    with h5py.File(path, "w") as f:
        f["exchange/data"] = series.data
        f["exchange/data_white"] = series.flats
        f["exchange/data_dark"] = series.darks
        f["exchange/theta"] = series.angles_deg
    return path


def _manifest(src_text: str, images: dict[str, str], extra: str = "") -> str:
    text = src_text.replace("register = true", "register = false")
    for role in ROLES:
        text = text.replace(f'{role} = "I/{role}.tif"', f'{role} = "{images[role]}"')
    return text + extra


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from litomo.io import read_volume, write_tiff
    from litomo.phantom.writer import write_operando_phantom
    from litomo.volume import Volume

    d = tmp_path_factory.mktemp("recon-limap")
    write_operando_phantom(d / "ph", size=N, n_states=1, seed=0, bin_factor=4, snr=0.0, max_translation_vox=0.0,
                           max_rotation_deg=0.0, deformation_vox=0.0)
    src = (d / "ph" / "experiment.toml").read_text()
    w = N + 1 + 2 * MARGIN  # odd: the rotation axis is a voxel centre
    yy, xx = np.mgrid[:w, :w]
    cylinder = (yy - w // 2) ** 2 + (xx - w // 2) ** 2 <= (N // 2 - 0.5) ** 2
    pad = ((MARGIN // 2,) * 2, (MARGIN, MARGIN + 1), (MARGIN, MARGIN + 1))
    truth, proj = {}, {}
    for k, role in enumerate(ROLES):
        v = np.asarray(read_volume(d / "ph" / "I" / f"{role}.tif").array, np.float32)
        # scaled so the thickest path transmits ~5 % (unscaled 0.02 %: normalize clips below 0.1 %);
        # the edge ratio, hence the Li map, is unchanged by one scale for all energies
        v = np.pad(v, pad) * cylinder * SCALE
        write_tiff(d / "ph" / f"true_{role}.tif", Volume(v, voxel_size_um=0.125))
        series, _, _ = txm_series(v, n_views=241, span_deg=240.0, jitter_px=(3.0, 5.0), seed=k, photons=1e5)
        _write_dxchange(d / "ph" / f"proj_{role}.h5", series)
        truth[role], proj[role] = f"true_{role}.tif", f"proj_{role}.h5"
    (d / "ph" / "true.toml").write_text(_manifest(src, truth))
    # no zingers in these data (the default zinger rule leaves clean data unchanged; kept off to keep the
    # measurement below comparable with the one in docs/science.md)
    recon = f'\n[reconstruction]\ncenter_px = {w // 2}.0\nalign = "reprojection"\nzingers = false\n'
    (d / "ph" / "proj.toml").write_text(_manifest(src, proj, recon))
    outs = {}
    import litomo.report.html as html

    with pytest.MonkeyPatch.context() as mp:  # the HTML report costs seconds and is tested elsewhere
        mp.setattr(html, "build_report", lambda out, *a, **k: None)
        for name in ("true", "proj"):
            code, _, err = cli(["run", str(d / "ph" / f"{name}.toml"), "--out", str(d / name),
                                "--scheduler", "synchronous", "-q"])
            assert code == 0, err
            outs[name] = d / name
    return outs


@pytest.mark.slow  # ~50 s CPU (estimated: 7 min wall at load ~20): reprojection alignment of three energies
def test_li_map_from_jittered_projections_matches_true_volumes(runs):
    import zarr

    from litomo.io.omezarr import read_ome_zarr

    li = {k: np.asarray(read_ome_zarr(out / "volumes" / "I" / "li.ome.zarr").array, float) for k, out in runs.items()}
    assert li["true"].shape == li["proj"].shape
    both = np.isfinite(li["true"]) & np.isfinite(li["proj"])
    rmse = float(np.sqrt(np.mean((li["true"][both] - li["proj"][both]) ** 2)))
    means = {k: float(np.nanmean(v)) for k, v in li.items()}
    print(f"x_Li RMSE projections vs true volumes: {rmse:.4f} over {both.sum()} map voxels "
          f"({np.isfinite(li['true']).sum()} / {np.isfinite(li['proj']).sum()} mapped); "
          f"mean {means['proj'] - means['true']:+.4f}")
    # issue #14's target 0.01; measured 0.0064 (mean +0.0011). At 721 views (docs/science.md): 0.0051, and
    # 0.0132 when the other energies were only registered to the post-edge views (0.23 px per view);
    # session 7, no detector margin: 0.090
    assert rmse < 0.01
    assert abs(means["true"] - means["proj"]) < 0.0025
    assert both.sum() > 0.95 * np.isfinite(li["true"]).sum()  # measured 2294 of 2294
    rec = json.loads((runs["proj"] / "run.json").read_text())
    assert [s["stage"] for s in rec["stages"] if s["ran"]][0] == "reconstruct"
    # the run from volumes has no reconstruct stage: its stages are those it had before
    assert "reconstruct" not in {s["stage"] for s in json.loads((runs["true"] / "run.json").read_text())["stages"]}
    work = runs["proj"] / "work" / "I" / "reconstruct" / "volumes"
    assert sorted(p.name for p in work.iterdir()) == ["edge.zarr", "post_edge.zarr", "pre_edge.zarr"]
    # missing data is not zeros: outside the field of view the volumes hold NaN (the corners of the
    # 81 x 81 slices: 1 - pi 40.5^2 / 81^2 = 21.5 % of the voxels), and the run says how much it left out
    post = np.asarray(zarr.open_array(str(work / "post_edge.zarr"), mode="r")[:])
    assert np.isnan(post[:, 0, 0]).all() and np.isnan(post[:, -1, -1]).all() and np.isfinite(post[:, 40]).all()
    assert abs(np.isnan(post).mean() - (1 - np.pi * 40.5**2 / 81**2)) < 0.01
    assert any("NaN" in w and "post_edge" in w for w in rec["warnings"]), rec["warnings"]


@pytest.mark.parametrize(("section", "needle"), [
    ('centre = 3\n', "reconstruction.centre"),
    ('method = "art"\n', "--method"),
    ('align = "none"\n', "angle"),  # the state's files are volumes, not projection series
])
def test_bad_reconstruction_section_is_one_line_before_any_output(tmp_path, section, needle):
    from litomo.phantom.writer import write_operando_phantom

    write_operando_phantom(tmp_path / "ph", size=16, n_states=1, seed=0, bin_factor=4)
    toml = tmp_path / "ph" / "bad.toml"
    toml.write_text((tmp_path / "ph" / "experiment.toml").read_text() + "\n[reconstruction]\n" + section)
    code, _, err = cli(["run", str(toml), "--out", str(tmp_path / "out"), "--scheduler", "synchronous", "-q"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "out").exists()

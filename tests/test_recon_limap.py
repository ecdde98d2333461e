"""``litomo run`` starting from projection series (manifest ``[reconstruction]``, stage ``reconstruct``).

A one-state operando phantom (64^3 voxels per energy, padded to 65 columns so the rotation axis
is a voxel centre, zero outside the inscribed cylinder so no projection is truncated) is
projected by astra at each energy (240 deg, 241 views, Poisson-noisy flats and transmission);
the Li map of the run from those projections is compared with the map of the run from the true
volumes.

The phantom is made without its volume noise and without its misregistration between energies
(``snr=0``, no energy transforms): a TXM series gets its noise in the projections (here Poisson)
and its misregistration from the stage (jitter), and both runs skip the registration stage, so
with the phantom's defaults the map "from the true volumes" would carry an unregistered 3-voxel
shift between energies and the map from projections the FBP-smoothed volume noise (measured:
0.041-0.084 x_Li RMSE from those two alone, 0.0000 without them; docs/science.md).
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
    yy, xx = np.mgrid[: N + 1, : N + 1]
    cylinder = (yy - N // 2) ** 2 + (xx - N // 2) ** 2 <= (N // 2 - 0.5) ** 2
    truth, proj = {}, {}
    for k, role in enumerate(ROLES):
        v = np.asarray(read_volume(d / "ph" / "I" / f"{role}.tif").array, np.float32)
        # scaled so the thickest path transmits ~5 % (unscaled 0.02 %: normalize clips below 0.1 %);
        # the edge ratio, hence the Li map, is unchanged by one scale for all energies
        v = np.pad(v, ((0, 0), (0, 1), (0, 1))) * cylinder * SCALE
        write_tiff(d / "ph" / f"true_{role}.tif", Volume(v, voxel_size_um=0.125))
        series, _, _ = txm_series(v, n_views=241, span_deg=240.0, jitter_px=(0.0, 0.0), seed=k, photons=1e5)
        _write_dxchange(d / "ph" / f"proj_{role}.h5", series)
        truth[role], proj[role] = f"true_{role}.tif", f"proj_{role}.h5"
    (d / "ph" / "true.toml").write_text(_manifest(src, truth))
    # no zingers in these data (the default zinger rule leaves clean data unchanged; kept off to keep the
    # measurement below comparable with the one in docs/science.md)
    recon = f'\n[reconstruction]\ncenter_px = {N // 2}.0\nalign = "none"\nzingers = false\n'
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


def test_li_map_from_projections_matches_true_volumes(runs):
    from litomo.io.omezarr import read_ome_zarr

    li = {k: np.asarray(read_ome_zarr(out / "volumes" / "I" / "li.ome.zarr").array, float) for k, out in runs.items()}
    assert li["true"].shape == li["proj"].shape
    both = np.isfinite(li["true"]) & np.isfinite(li["proj"])
    assert both.sum() > 0.5 * np.isfinite(li["true"]).sum()
    rmse = float(np.sqrt(np.mean((li["true"][both] - li["proj"][both]) ** 2)))
    print(f"x_Li RMSE projections vs true volumes: {rmse:.4f} over {both.sum()} map voxels")
    # measured 0.0043 (issue #14's target 0.01; 0.068 before the field-of-view mask, on the phantom with
    # volume noise and misregistration); without projection noise 0.0000: what is left is the noise
    assert rmse < 0.008
    means = {k: float(np.nanmean(v)) for k, v in li.items()}
    assert abs(means["true"] - means["proj"]) < 0.002  # measured 0.0004 (state mean x_Li)
    # the mapped bins agree too (the corners outside the field of view no longer enter the AM mask)
    assert both.sum() > 0.95 * np.isfinite(li["true"]).sum()  # measured 2692 of 2793
    rec = json.loads((runs["proj"] / "run.json").read_text())
    assert [s["stage"] for s in rec["stages"] if s["ran"]][0] == "reconstruct"
    # the run from volumes has no reconstruct stage: its stages are those it had before
    assert "reconstruct" not in {s["stage"] for s in json.loads((runs["true"] / "run.json").read_text())["stages"]}
    assert sorted(p.name for p in (runs["proj"] / "work" / "I" / "reconstruct" / "volumes").iterdir()) == \
        ["edge.zarr", "post_edge.zarr", "pre_edge.zarr"]


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

"""``litomo micro`` end to end on a small synthetic label volume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from micro_helpers import ball_electrode, run_cli


@pytest.fixture(scope="module")
def label_file(tmp_path_factory):
    """Balls of AM (radius 4-5 voxels) on a jittered grid, a patchy CBD rim, pores elsewhere."""
    lab = ball_electrode(40, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("micro") / "labels.tif"
    tifffile.imwrite(path, lab * 85)
    return path, lab


def run(argv, capsys):
    return run_cli(argv, capsys)


def test_micro_writes_tables_and_figures(label_file, tmp_path, capsys):
    path, lab = label_file
    out = tmp_path / "out"
    code, stdout, _ = run(["micro", str(path), "--voxel-size-um", "0.4", "--labels", "pore=0,am=85,cbd=170",
                           "--out", str(out), "--axes", "all", "--expected", "am=0.3,cbd=0.1,pore=0.6",
                           "--json", "--no-transport"], capsys)
    assert code in (0, None)
    rep = json.loads(stdout)
    assert rep["volume_fraction"]["am"] == pytest.approx((lab == 1).mean())
    assert set(rep["through_fraction"]["pore"]) == {"z", "y", "x"}
    saved = json.loads((out / "tables" / "microstructure.json").read_text())
    assert saved["surface_area_face_um-1"] == rep["surface_area_face_um-1"]
    table = pd.read_csv(out / "tables" / "metrics_table.csv")
    row = table[(table.metric == "Volume fraction") & (table.phase == "am")].iloc[0]
    assert row["labels Expected"] == 0.3 and row["labels Data"] == pytest.approx((lab == 1).mean())
    for name in ("particles", "z_profile", "rev", "s2"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
    s2 = pd.read_csv(out / "tables" / "s2.csv")
    first = s2[(s2.phase == "am") & (s2.axis == "z") & (s2.r_vox == 0)]["s2"].iloc[0]
    assert first == pytest.approx(rep["volume_fraction"]["am"])
    assert len(pd.read_csv(out / "tables" / "z_profile.csv")) == 40
    parts = pd.read_csv(out / "tables" / "particles.csv")
    assert rep["n_particles"] == len(parts) > 0
    inner = parts[~parts["touches_boundary"]]
    assert rep["n_boundary_particles"] == len(parts) - len(inner)
    assert rep["d50_number_um"] == pytest.approx(inner["eq_diameter_um"].median(), rel=0.2)
    for fig in ("phase_orthoslices", "rev", "s2", "psd", "sphericity"):
        assert (out / "figures" / f"{fig}.png").exists() and (out / "figures" / f"{fig}.svg").exists()


def test_micro_transport_and_absent_phase(tmp_path, capsys):
    lab = np.zeros((12, 10, 10), np.uint8)
    lab[:, :, 5:] = 1  # no CBD at all
    path = tmp_path / "two_phase.tif"
    tifffile.imwrite(path, lab)
    code, stdout, err = run(["micro", str(path), "--voxel-size-um", "0.5", "--out", str(tmp_path / "o"),
                             "--json", "--no-figures"], capsys)
    assert code in (0, None)
    rep = json.loads(stdout)
    assert rep["through_fraction"]["cbd"]["z"] is None  # NaN in strict JSON
    assert rep["tau"]["cbd"]["z"] == "inf"
    assert rep["tau"]["pore"]["z"] == pytest.approx(1.0, abs=0.02)  # straight slab
    assert "absent" in err


def test_micro_rejects_bad_labels(label_file, tmp_path, capsys):
    path, _ = label_file
    code, _, err = run(["micro", str(path), "--voxel-size-um", "0.4", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not in the phase mapping" in err  # stored values 85/170, default mapping 0/1/2
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    code, _, err = run(["micro", str(grey), "--voxel-size-um", "0.4", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "greyscale" in err
    code, _, err = run(["micro", str(path), "--voxel-size-um", "-1", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "voxel-size-um" in err

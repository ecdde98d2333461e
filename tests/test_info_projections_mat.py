"""``litomo info`` on real files: label values, projection series, ``.mat`` sinograms; and
``litomo spectrum --plot`` (issue 21 item 7)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile
from scipy.io import loadmat
from typer.testing import CliRunner

from litomo.cli import app, main
from litomo.io import read_volume
from litomo.io.mat import describe_mat, list_mat_variables

RECON = "recon"


def _info(path, *extra) -> dict:
    r = CliRunner().invoke(app, ["info", str(path), "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_tooth_is_a_projection_series_not_a_volume(shared_data):
    """tooth.h5 (DXchange): README: data (181, 2, 640), 10 flats, 10 darks, theta 0..179.0055 deg."""
    info = _info(shared_data / RECON / "tomopy/tooth.h5")
    assert info["kind"] == "projections"
    assert info["projections"].startswith("projection series: 181 angles of 2 x 640, flats 10, darks 10")
    assert (info["n_angles"], info["detector_rows"], info["detector_cols"]) == (181, 2, 640)
    assert info["theta_range_deg"] == pytest.approx([0.0, 179.0055], abs=1e-3)
    assert "shape_zyx" not in info and "voxel_size_um_zyx" not in info  # no "volume" with 1 um voxels
    # an explicit --dataset still reads the array as a volume
    assert _info(shared_data / RECON / "tomopy/tooth.h5", "--dataset", "/exchange/data")["shape_zyx"] == [181, 2, 640]


def test_nexus_projection_series(shared_data):
    """DIAD k11-18014.nxs: README: 3001 projections, 100 flats, 100 darks, 22 x 26 detector."""
    info = _info(shared_data / RECON / "httomo_k11_diad/k11-18014.nxs")
    assert info["kind"] == "projections" and info["format"] == "nxtomo"
    assert (info["n_angles"], info["n_flats"], info["n_darks"]) == (3001, 100, 100)
    assert (info["detector_rows"], info["detector_cols"]) == (22, 26)
    assert info["theta_range_deg"][1] - info["theta_range_deg"][0] == pytest.approx(180.0, abs=0.1)


def test_mat_sinogram(shared_data):
    """RealDataDend.mat: README: sinoRD (1260, 360) float32 (detector, angles), anglesRad 360
    values spanning ~179.5 deg."""
    path = shared_data / RECON / "tomobar/RealDataDend.mat"
    ref = loadmat(path)["sinoRD"]
    info = _info(path)
    assert info["kind"] == "sinogram" and info["dataset"] == "sinoRD"
    assert info["shape_zyx"] == [1, 1260, 360] and info["dtype"] == "float32"
    assert info["min"] == pytest.approx(float(ref.min())) and info["max"] == pytest.approx(float(ref.max()))
    sino = describe_mat(path)["sinogram"]
    assert (sino["n_angles"], sino["n_detector"], sino["angle_axis"]) == (360, 1260, 1)
    assert sino["angle_span_deg"] == pytest.approx(179.5, abs=0.1)
    assert np.array_equal(read_volume(path).array[0], ref)
    with pytest.raises(SystemExit) as exc:
        main(["info", str(path), "--dataset", "nope"])
    assert exc.value.code == 2


def _write_v73(path, name, arr):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header, arrays column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        d = f.create_dataset(name, data=np.ascontiguousarray(arr.T))
        d.attrs["MATLAB_class"] = np.bytes_("double")
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Dec  1 00:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(head.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")


def test_mat_v73_via_h5py(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    p = tmp_path / "v73.mat"
    _write_v73(p, "vol", arr)
    with pytest.raises(NotImplementedError):  # scipy refuses v7.3: the h5py path is needed
        loadmat(p)
    assert [(v.name, v.shape) for v in list_mat_variables(p)] == [("vol", (2, 3, 4))]
    vol = read_volume(p)
    assert vol.shape == (2, 3, 4) and np.array_equal(vol.array, arr)


def test_label_values_of_a_label_volume(shared_data):
    """TauFactor NMC label volume: counts per stored value, checked with numpy on tifffile's read."""
    path = shared_data / "micro/taufactor_electrode_polaron_nmc_256.tiff"
    truth = np.bincount(tifffile.imread(path).ravel())
    info = _info(path, "--voxel-size-um", "0.04")
    assert {int(k): v for k, v in info["label_values"].items()} == {i: int(c) for i, c in enumerate(truth) if c}
    assert len(info["label_values"]) == 3


def test_spectrum_plot(shared_data, tmp_path):
    prj = shared_data / "xanes/xraylarch/NiO.prj"
    png = tmp_path / "nio.png"
    r = CliRunner().invoke(app, ["spectrum", str(prj), "--json", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out["plot"] == str(png)
    # README: NiO E at norm = 0.5 = 8340.7 eV (larch, NiO_000); the merge's marker is drawn there
    assert out["edge_half_ev"] == pytest.approx(8341.0, abs=1.5)
    for bad in (tmp_path / "missing" / "x.png", tmp_path / "x.txt"):
        with pytest.raises(SystemExit) as exc:
            main(["spectrum", str(prj), "--plot", str(bad)])
        assert exc.value.code == 2
    assert not (tmp_path / "x.txt").exists()

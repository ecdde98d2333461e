"""read_volume dispatch and the ``litomo info`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from litomo.cli import app, main
from litomo.errors import InputFileError
from litomo.io import read_volume, write_hdf5_volume, write_ome_zarr, write_tiff
from litomo.volume import Volume


@pytest.fixture()
def vol():
    a = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    a[0, 0, 0] = np.nan
    return Volume(a, (0.5, 0.25, 0.25))


@pytest.mark.parametrize("name", ["v.tif", "v.h5", "v.ome.zarr"])
def test_dispatch_roundtrip(tmp_path, vol, name):
    p = tmp_path / name
    writer = {"v.tif": write_tiff, "v.h5": write_hdf5_volume, "v.ome.zarr": write_ome_zarr}[name]
    writer(p, vol)
    eager = read_volume(p)
    lazy = read_volume(p, lazy=True)
    assert not eager.is_lazy and lazy.is_lazy
    np.testing.assert_array_equal(eager.numpy(), vol.numpy())
    np.testing.assert_array_equal(lazy.numpy(), vol.numpy())
    assert eager.voxel_size_um == pytest.approx(vol.voxel_size_um)
    assert read_volume(p, voxel_size_um=2.0).voxel_size_um == (2.0, 2.0, 2.0)


def test_unknown_and_missing(tmp_path):
    (tmp_path / "x.raw").write_bytes(b"\0" * 10)
    with pytest.raises(InputFileError, match=r"unknown file format.*\.tif"):
        read_volume(tmp_path / "x.raw")
    with pytest.raises(InputFileError, match="not found"):
        read_volume(tmp_path / "nope.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no .tif"):
        read_volume(tmp_path / "empty")


def test_info_json(tmp_path, vol):
    p = tmp_path / "v.ome.zarr"
    write_ome_zarr(p, vol, chunks=(2, 5, 6))
    res = CliRunner().invoke(app, ["info", str(p), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["shape_zyx"] == [4, 5, 6] and info["dtype"] == "float32"
    assert info["voxel_size_um_zyx"] == [0.5, 0.25, 0.25]
    assert info["extent_um_zyx"] == [2.0, 1.25, 1.5]
    assert info["nan_count"] == 1
    assert info["min"] == pytest.approx(float(np.nanmin(vol.numpy())))
    assert info["max"] == pytest.approx(float(np.nanmax(vol.numpy())))
    assert info["chunks"] == [2, 5, 6]


def test_info_xrm_energy_and_override(shared_data):
    f = next((shared_data / "xanes" / "xanespy" / "txm-data-aps").glob("fov07*8353*.xrm"))
    res = CliRunner().invoke(app, ["info", str(f), "--json", "--voxel-size-um", "0.04"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["energy_ev"] == pytest.approx(8353.0, abs=0.1)
    assert info["shape_zyx"] == [1, 1024, 1024] and info["voxel_size_um_zyx"] == [0.04] * 3


def test_info_bad_file_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["info", str(tmp_path / "missing.tif")])
    assert exc.value.code == 2
    assert "missing.tif" in capsys.readouterr().err

"""HDF5 volumes, DXchange and NXtomo projections (real APS and Diamond files)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from litomo.errors import InputFileError
from litomo.io import read_dxchange, read_hdf5_volume, read_nxtomo, write_hdf5_volume
from litomo.volume import Volume


def test_roundtrip_eager_lazy_and_metadata(tmp_path):
    import dask.array as da

    a = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    p = tmp_path / "v.h5"
    write_hdf5_volume(p, Volume(a, (1.0, 0.2, 0.3), {"energy_ev": 8333.0}))
    v = read_hdf5_volume(p)
    np.testing.assert_array_equal(v.numpy(), a)
    assert v.dtype == np.float32 and v.voxel_size_um == (1.0, 0.2, 0.3)
    assert v.metadata["energy_ev"] == 8333.0 and v.metadata["dataset"] == "/volume"
    lazy = read_hdf5_volume(p, lazy=True, chunks=(2, 6, 7))
    assert lazy.is_lazy and lazy.array.chunks[0] == (2, 2, 1)
    np.testing.assert_array_equal(lazy.numpy(), a)
    # a dask volume is stored chunk by chunk
    p2 = tmp_path / "w.h5"
    write_hdf5_volume(p2, Volume(da.from_array(a.astype(np.uint16), chunks=2), 0.5), dataset="/a/b")
    w = read_hdf5_volume(p2)
    assert w.dtype == np.uint16 and w.voxel_size_um == (0.5, 0.5, 0.5)
    np.testing.assert_array_equal(w.numpy(), a.astype(np.uint16))


def test_autopick_ambiguous_and_units(tmp_path):
    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as f:
        f["recon/a"] = np.zeros((2, 3, 4), np.float32)
        f["recon/b"] = np.ones((2, 3, 4), np.float32)
        f["recon/b"].attrs["voxel_size"] = 50.0
        f["recon/b"].attrs["units"] = "nm"
    with pytest.raises(InputFileError, match=r"/recon/a.*/recon/b|/recon/b.*/recon/a"):
        read_hdf5_volume(p)
    v = read_hdf5_volume(p, "/recon/b")
    assert v.voxel_size_um == pytest.approx((0.05, 0.05, 0.05))
    assert v.numpy().sum() == 24
    with pytest.raises(InputFileError, match="nothere"):
        read_hdf5_volume(p, "/nothere")


def test_truncated_and_missing(tmp_path):
    p = tmp_path / "v.h5"
    write_hdf5_volume(p, Volume(np.ones((4, 8, 8), np.float32), 1.0), compression=None)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(p.read_bytes()[:600])
    with pytest.raises(InputFileError, match="cut.h5"):
        read_hdf5_volume(cut)
    with pytest.raises(InputFileError, match="not found"):
        read_hdf5_volume(tmp_path / "none.h5")


def test_dxchange_real_tooth(shared_data):
    pd = read_dxchange(shared_data / "recon" / "tomopy" / "tooth.h5")
    assert pd.data.shape == (181, 2, 640)
    assert pd.flats.shape == (10, 2, 640) and pd.darks.shape == (10, 2, 640)
    assert pd.theta_deg.shape == (181,)
    assert pd.theta_deg[0] == pytest.approx(0.0) and pd.theta_deg[-1] == pytest.approx(179.0055, abs=1e-3)
    assert np.all(np.diff(pd.theta_deg) > 0)
    # open beam is brighter than the sample, which is brighter than the dark current
    assert pd.flats.mean() > pd.data.mean() > pd.darks.mean()


def test_nxtomo_real_diad_with_dangling_links(shared_data):
    path = shared_data / "recon" / "httomo_k11_diad" / "k11-18014.nxs"
    pd = read_nxtomo(path)
    assert pd.data.shape == (3001, 22, 26) and pd.data.dtype == np.uint16
    assert len(pd.flats) == 100 and len(pd.darks) == 100
    assert pd.theta_deg.shape == (3001,)
    span = pd.theta_deg.max() - pd.theta_deg.min()
    assert 179.0 < span < 181.0 and 89.0 < pd.theta_deg.min() < 91.0
    assert pd.flats.mean() > pd.data.mean() > pd.darks.mean()
    # data behind a dangling external link: a clear error naming the missing file
    with pytest.raises(InputFileError, match="k11-18014-imaging.h5"):
        read_nxtomo(path, data_path="/entry/imaging_sum/sum", image_key_path="/entry/instrument/imaging/image_key")


def test_nxtomo_standard_definition_radians(tmp_path):
    p = tmp_path / "std.nxs"
    key = np.array([2, 1, 0, 0, 0, 0, 1])
    data = np.arange(7 * 3 * 4, dtype=np.uint16).reshape(7, 3, 4)
    with h5py.File(p, "w") as f:
        e = f.create_group("entry")
        e["definition"] = "NXtomo"
        e["instrument/detector/data"] = data
        e["instrument/detector/image_key"] = key
        e["sample/rotation_angle"] = np.radians([0, 0, 0, 45, 90, 135, 180])
        e["sample/rotation_angle"].attrs["units"] = "rad"
    pd = read_nxtomo(p)
    np.testing.assert_allclose(pd.theta_deg, [0, 45, 90, 135])
    np.testing.assert_array_equal(pd.data, data[2:6])
    np.testing.assert_array_equal(pd.flats, data[[1, 6]])
    np.testing.assert_array_equal(pd.darks, data[[0]])

"""OME-Zarr (NGFF 0.5, zarr v3) writer/reader: metadata, pyramids, streaming, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from litomo.errors import InputFileError
from litomo.io import list_ome_images, read_ome_zarr, read_volume, write_ome_zarr
from litomo.volume import Volume

VOX = (0.1, 0.2, 0.3)


def _vol(shape=(10, 12, 14), dtype=np.float32, seed=0):
    a = (np.random.default_rng(seed).random(shape) * 200).astype(dtype)
    return Volume(a, VOX, {"energy_ev": 8333.0})


def test_metadata_follows_ngff_05(tmp_path):
    p = tmp_path / "v.ome.zarr"
    write_ome_zarr(p, _vol(), chunks=(4, 5, 6), n_scales=3)
    root = json.loads((p / "zarr.json").read_text())
    assert root["zarr_format"] == 3 and root["node_type"] == "group"
    ome = root["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "micrometer" for a in ms["axes"])
    for level, ds in enumerate(ms["datasets"]):
        scale = ds["coordinateTransformations"][0]
        assert scale["type"] == "scale"
        np.testing.assert_allclose(scale["scale"], np.array(VOX) * 2**level)
        arr_meta = json.loads((p / ds["path"] / "zarr.json").read_text())
        assert arr_meta["node_type"] == "array" and arr_meta["dimension_names"] == ["z", "y", "x"]
    assert json.loads((p / "0" / "zarr.json").read_text())["shape"] == [10, 12, 14]


def test_roundtrip_levels_mean(tmp_path):
    v = _vol()
    p = tmp_path / "v.ome.zarr"
    write_ome_zarr(p, v, chunks=(4, 5, 6), n_scales=2)
    r0 = read_ome_zarr(p)
    assert r0.is_lazy and r0.voxel_size_um == VOX and r0.metadata["energy_ev"] == 8333.0
    assert r0.metadata["chunks"] == [4, 5, 6]
    np.testing.assert_array_equal(r0.numpy(), v.numpy())
    r1 = read_ome_zarr(p, level=1)
    expected = v.numpy().reshape(5, 2, 6, 2, 7, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(r1.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(r1.voxel_size_um, np.array(VOX) * 2)
    with pytest.raises(InputFileError, match="level 2"):
        read_ome_zarr(p, level=2)


def test_integer_dtype_and_dask_streaming(tmp_path):
    import dask.array as da

    a = np.random.default_rng(3).integers(0, 4000, (9, 8, 7), dtype=np.uint16)
    p = tmp_path / "u.ome.zarr"
    calls = []
    write_ome_zarr(p, Volume(da.from_array(a, chunks=(3, 8, 7)), 0.05), chunks=(4, 4, 4), n_scales=2,
                   progress=lambda d, t, s: calls.append((d, t)))
    assert calls[-1] == (2, 2)
    r = read_ome_zarr(p)
    assert r.dtype == np.uint16
    np.testing.assert_array_equal(r.numpy(), a)
    lvl1 = read_ome_zarr(p, level=1).numpy()
    np.testing.assert_array_equal(lvl1, np.round(a[:8, :8, :6].reshape(4, 2, 4, 2, 3, 2).mean(axis=(1, 3, 5))))


def test_dict_of_images_and_label_downsampling(tmp_path):
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[:, :, 4:] = 2
    labels[::2, ::2, ::2] = 1
    p = tmp_path / "multi.zarr"
    write_ome_zarr(p, {"li": _vol((8, 8, 8)), "labels": Volume(labels, VOX)}, n_scales=2,
                   downsample={"labels": "nearest"})
    assert list_ome_images(p) == ["labels", "li"]
    lab1 = read_ome_zarr(p, level=1, image="labels").numpy()
    assert set(np.unique(lab1)) <= {0, 1, 2}
    np.testing.assert_array_equal(lab1, labels[::2, ::2, ::2])
    assert read_ome_zarr(p, image="li").shape == (8, 8, 8)
    with pytest.raises(InputFileError, match="labels, li"):
        read_ome_zarr(p)


def test_atomic_overwrite_and_errors(tmp_path):
    p = tmp_path / "v.ome.zarr"
    write_ome_zarr(p, _vol((4, 4, 4)))
    write_ome_zarr(p, _vol((6, 4, 4), seed=1))
    assert read_ome_zarr(p).shape == (6, 4, 4)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["v.ome.zarr"]
    with pytest.raises(InputFileError):
        write_ome_zarr(tmp_path / "bad.zarr", _vol((4, 4, 4)), n_scales=0)
    assert not (tmp_path / "bad.zarr").exists()
    with pytest.raises(InputFileError, match="not found"):
        read_ome_zarr(tmp_path / "missing.zarr")
    assert not read_volume(p).is_lazy and read_volume(p, lazy=True).is_lazy


def test_readable_by_ome_zarr_py(tmp_path):
    """napari-ome-zarr uses ome-zarr-py's Reader: it must find the pyramid and its scales."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    v = _vol()
    p = tmp_path / "v.ome.zarr"
    write_ome_zarr(p, v, chunks=(4, 4, 4), n_scales=2)
    nodes = list(Reader(parse_url(str(p)))())
    assert nodes, "ome-zarr-py found no image"
    node = nodes[0]
    assert [tuple(d.shape) for d in node.data] == [(10, 12, 14), (5, 6, 7)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), v.numpy())
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    np.testing.assert_allclose(scales[1], np.array(VOX) * 2)

"""TIFF reader/writer: round trips, voxel-size metadata, lazy reads, corrupt files, real slices."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import litomo.io.tiff as tiffmod
from litomo.errors import InputFileError
from litomo.io import read_tiff, read_tiff_folder, write_tiff
from litomo.volume import Volume

VOX = (2.0, 0.5, 0.25)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int32, np.float64, np.int16])
def test_roundtrip_values_dtype_voxel(tmp_path, dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((6, 10, 12)) * 100).astype(dtype)
    p = tmp_path / "v.tif"
    write_tiff(p, Volume(a, VOX))
    v = read_tiff(p)
    assert v.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(v.numpy(), a)
    np.testing.assert_allclose(v.voxel_size_um, VOX, rtol=1e-6)


def test_imagej_metadata_visible_to_fiji(tmp_path):
    p = tmp_path / "v.tif"
    write_tiff(p, Volume(np.zeros((3, 4, 5), np.uint16), (1.5, 0.03, 0.03)))
    with tifffile.TiffFile(p) as tif:
        ij = tif.imagej_metadata
        assert ij["unit"] == "um" and ij["spacing"] == pytest.approx(1.5)
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.03, rel=1e-6)  # pixels per um -> um per pixel
        assert not tif.is_bigtiff


def test_bool_written_as_uint8(tmp_path):
    a = np.zeros((2, 3, 4), bool)
    a[1, 1, 1] = True
    write_tiff(tmp_path / "b.tif", a, voxel_size_um=1.0)
    v = read_tiff(tmp_path / "b.tif")
    assert v.dtype == np.uint8 and v.numpy().sum() == 1 and v.numpy()[1, 1, 1] == 1


@pytest.mark.parametrize(("unit", "factor"), [("micron", 1.0), ("nm", 1e-3), ("mm", 1e3)])
def test_imagej_units_converted(tmp_path, unit, factor):
    p = tmp_path / "u.tif"
    tifffile.imwrite(p, np.zeros((3, 4, 5), np.uint8), imagej=True, resolution=(1 / 30.0, 1 / 30.0),
                     metadata={"spacing": 60.0, "unit": unit, "axes": "ZYX"})
    np.testing.assert_allclose(read_tiff(p).voxel_size_um, (60 * factor, 30 * factor, 30 * factor))


def test_ome_physical_sizes_and_override(tmp_path):
    p = tmp_path / "o.ome.tif"
    tifffile.imwrite(p, np.zeros((3, 4, 5), np.int32), ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 40.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 40.0,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 80.0, "PhysicalSizeZUnit": "nm"})
    np.testing.assert_allclose(read_tiff(p).voxel_size_um, (0.08, 0.04, 0.04))
    assert read_tiff(p, voxel_size_um=0.5).voxel_size_um == (0.5, 0.5, 0.5)


def test_no_metadata_is_marked_unknown(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 4), np.uint8))
    v = read_tiff(p)
    # 1 um stands in, and the volume says it is not a measured size (commands then refuse it)
    assert v.voxel_size_um == (1.0, 1.0, 1.0) and v.metadata["voxel_size_known"] is False
    assert read_tiff(p, voxel_size_um=0.5).metadata["voxel_size_known"] is True


def test_lazy_equals_eager_and_is_chunked(tmp_path):
    a = np.random.default_rng(1).integers(0, 60000, (9, 16, 20), dtype=np.uint16)
    p = tmp_path / "v.tif"
    write_tiff(p, Volume(a, 0.1))
    lazy = read_tiff(p, lazy=True, chunks=(4, -1, -1))
    assert lazy.is_lazy and lazy.array.chunks[0] == (4, 4, 1)
    np.testing.assert_array_equal(lazy.numpy(), read_tiff(p).numpy())
    np.testing.assert_array_equal(lazy.array[5].compute(), a[5])


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_lazy_contiguous_fast_path_byte_order(tmp_path, byteorder, dtype):
    """Uncompressed contiguous pages are read straight into memory: values, dtype and byte
    order must match tifffile's own decoding, for both byte orders; compressed files take
    tifffile's path."""
    a = (np.random.default_rng(4).random((23, 11, 13)) * 60000).astype(dtype)
    p = tmp_path / "v.tif"
    tifffile.imwrite(p, a, byteorder=byteorder)
    with tifffile.TiffFile(p) as tif:
        assert tif.series[0].dataoffset is not None  # the fast path applies
    lazy = read_tiff(p, lazy=True, chunks=(5, -1, -1), voxel_size_um=1.0)
    got = lazy.array.compute()
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)
    z = tmp_path / "z.tif"
    tifffile.imwrite(z, a, compression="zlib")
    np.testing.assert_array_equal(read_tiff(z, lazy=True, chunks=(5, -1, -1), voxel_size_um=1.0).numpy(), a)


def test_lazy_read_of_file_truncated_after_opening(tmp_path):
    """A file cut short after its header was read (e.g. still being copied) fails clearly."""
    a = np.zeros((10, 32, 32), np.uint16)
    p = tmp_path / "v.tif"
    tifffile.imwrite(p, a)
    lazy = read_tiff(p, lazy=True, chunks=(5, -1, -1), voxel_size_um=1.0)
    with open(p, "r+b") as fh:
        fh.truncate(p.stat().st_size - 5000)
    with pytest.raises(InputFileError, match="truncated"):
        lazy.array.compute(scheduler="synchronous")


def test_dask_volume_streamed_and_compressed(tmp_path):
    import dask.array as da

    a = np.arange(7 * 8 * 9, dtype=np.float32).reshape(7, 8, 9)
    p = tmp_path / "d.tif"
    write_tiff(p, Volume(da.from_array(a, chunks=(2, 8, 9)), 0.2), compression="zlib")
    with tifffile.TiffFile(p) as tif:
        assert tif.pages[0].compression != 1
    np.testing.assert_array_equal(read_tiff(p).numpy(), a)


def test_bigtiff_over_threshold_uses_ome(tmp_path, monkeypatch):
    monkeypatch.setattr(tiffmod, "_BIGTIFF_BYTES", 100)
    a = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    p = tmp_path / "big.tif"
    write_tiff(p, Volume(a, (0.3, 0.1, 0.1)))
    with tifffile.TiffFile(p) as tif:
        assert tif.is_bigtiff and tif.is_ome
    v = read_tiff(p)
    np.testing.assert_array_equal(v.numpy(), a)
    np.testing.assert_allclose(v.voxel_size_um, (0.3, 0.1, 0.1))


def test_write_is_atomic_on_failure(tmp_path):
    p = tmp_path / "v.tif"
    write_tiff(p, Volume(np.ones((2, 3, 4), np.uint8), 1.0))
    before = p.read_bytes()
    with pytest.raises(InputFileError):
        write_tiff(p, np.ones((2, 2, 3, 4), np.uint8))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["v.tif"]


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file_raises(tmp_path, fraction):
    p = tmp_path / "v.tif"
    write_tiff(p, Volume(np.random.default_rng(2).random((5, 32, 32)).astype(np.float32), 1.0))
    data = p.read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputFileError, match="cut.tif"):
        read_tiff(bad)


def test_missing_and_garbage(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_tiff(tmp_path / "nope.tif")
    (tmp_path / "g.tif").write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(InputFileError, match="g.tif"):
        read_tiff(tmp_path / "g.tif")


def test_folder_natural_sort_and_checks(tmp_path):
    for i in (1, 2, 10):
        tifffile.imwrite(tmp_path / f"im{i}.tif", np.full((4, 5), i, np.uint8))
    v = read_tiff_folder(tmp_path, voxel_size_um=1.0)
    assert v.numpy()[:, 0, 0].tolist() == [1, 2, 10]
    lazy = read_tiff_folder(tmp_path, lazy=True, chunks=(2, -1, -1), voxel_size_um=1.0)
    np.testing.assert_array_equal(lazy.numpy(), v.numpy())
    tifffile.imwrite(tmp_path / "im11.tif", np.zeros((4, 6), np.uint8))
    with pytest.raises(InputFileError, match="im11.tif"):
        read_tiff_folder(tmp_path)


def test_real_battery_ct_slices_lazy(shared_data):
    folder = shared_data / "recon" / "battery_xct_workflows" / "cell_vol"
    v = read_tiff_folder(folder, lazy=True, voxel_size_um=1.0)
    assert v.is_lazy and v.shape == (100, 728, 728) and v.dtype == np.uint8
    # slice 42 (0-based) is im043.tif in natural order
    np.testing.assert_array_equal(v.array[42].compute(), tifffile.imread(folder / "im043.tif"))
    assert len(v.array.chunks[0]) >= 1

"""Issue #20 items 5, 7, 8, 9, 11 and issue #21 item 1: readers never answer wrong in silence.

Each test reproduces a case of the fault trial (missing or corrupt zarr chunks, complex input,
NaN voxels in bins, garbled HDF5, a TIFF header claiming a huge image, a FIFO as a volume, the
NREL TIFF's 72 dpi default) and checks the one-line error or the corrected answer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile

from litomo.errors import DataError, InputFileError
from litomo.io import read_volume, write_ome_zarr
from litomo.io.guards import check_fits_in_memory, require_voxel_size
from litomo.preprocess import bin_array, bin_multi, finite_fraction
from litomo.volume import Volume
from litomo.xanes import threeenergy as te

NREL = "micro/nrel_nmc1cal_generatedCBD_bridge_251x301x301.tif"


# ------------------------------------------------------------------ item 5: missing zarr chunks


def _store(tmp_path: Path, arr: np.ndarray) -> Path:
    p = tmp_path / "v.ome.zarr"
    write_ome_zarr(p, Volume(arr, voxel_size_um=0.5), chunks=(4, 4, 4))
    return p


def _chunk_files(store: Path) -> list[Path]:
    return sorted(f for f in (store / "0" / "c").rglob("*") if f.is_file())


def test_missing_zarr_chunk_is_an_error(tmp_path):
    arr = np.arange(512, dtype=np.float32).reshape(8, 8, 8) + 1.0
    store = _store(tmp_path, arr)
    chunks = _chunk_files(store)
    assert len(chunks) == 8
    chunks[3].unlink()  # the trial: a lost chunk read back as zeros, exit 0
    with pytest.raises(InputFileError, match="1 of 8 chunks are missing"):
        read_volume(store)
    with pytest.raises(InputFileError, match="missing"):
        read_volume(store, lazy=True)


def test_all_zero_regions_written_by_litomo_are_not_missing(tmp_path):
    # zarr skips chunks equal to the fill value unless told otherwise; litomo writes them all,
    # so a label volume with empty corners is complete
    arr = np.zeros((8, 8, 8), np.uint8)
    arr[:4, :4, :4] = 3
    store = _store(tmp_path, arr)
    assert len(_chunk_files(store)) == 8
    np.testing.assert_array_equal(read_volume(store).numpy(), arr)


def test_corrupt_zarr_chunk_names_the_store(tmp_path):
    store = _store(tmp_path, np.ones((8, 8, 8), np.float32))
    _chunk_files(store)[0].write_bytes(b"\x00garbage, not a zstd frame\xff" * 3)
    vol = read_volume(store, lazy=True)  # opening reads metadata only
    with pytest.raises(InputFileError, match="chunk is corrupt"):
        vol.numpy()


# ------------------------------------------------------------------ item 7: complex input


def test_complex_tiff_refused(tmp_path):
    p = tmp_path / "c.tif"
    tifffile.imwrite(p, (np.ones((3, 4, 5)) + 2j).astype(np.complex64), photometric="minisblack")
    with pytest.raises(InputFileError, match="complex voxel type complex64"):
        read_volume(p)


def test_complex_hdf5_refused(tmp_path):
    p = tmp_path / "c.h5"
    with h5py.File(p, "w") as f:
        f["volume"] = (np.ones((3, 4, 5)) + 1j).astype(np.complex64)
    with pytest.raises(InputFileError, match="complex"):
        read_volume(p, lazy=True)


def test_negated_edge_volume_fails_with_the_clipped_fraction():
    # the trial: a negated edge volume mapped to x_Li = 0 everywhere with only a warning
    rng = np.random.default_rng(0)
    pre = rng.normal(1.0, 0.01, 2000)
    post = pre + 1.0
    edge = pre + 0.6  # R = 0.6 on every voxel: between the references below
    r_ok = te.edge_ratio(pre, edge, post, jump_threshold=0.5)
    x_ok, f_ok = te.calibrate_li(r_ok, 0.7, 0.4)
    assert f_ok == 0.0 and te.check_clipped_fraction(f_ok, (0.0, 1.2), "state I") is None
    r_bad = te.edge_ratio(pre, -edge, post, jump_threshold=0.5)
    _, f_bad = te.calibrate_li(r_bad, 0.7, 0.4)
    assert f_bad > 0.99
    with pytest.raises(DataError, match=r"state I: 100\.0% of active-material voxels"):
        te.check_clipped_fraction(f_bad, (0.0, 1.2), "state I")
    # a few percent: a warning line naming the fraction; beyond 5 % it names the likely causes
    assert "3.0%" in te.check_clipped_fraction(0.03, (0.0, 1.2), "state I")
    loud = te.check_clipped_fraction(0.149, (0.0, 1.2), "state I")  # unregistered phantom data
    assert "14.9%" in loud and "misregistration" in loud


# ------------------------------------------------------------------ item 8: NaN-aware binning


def test_half_percent_nan_no_longer_spoils_the_bins():
    rng = np.random.default_rng(1)
    a = rng.normal(5.0, 1.0, (70, 70, 70)).astype(np.float32)
    a[rng.random(a.shape) < 0.005] = np.nan
    b = bin_array(a, 7)
    # before: 81 % of the 7^3 bins were NaN; a bin of 343 voxels with 0.5 % NaN is never empty
    assert np.isfinite(b).all()
    truth = np.nanmean(a.reshape(10, 7, 10, 7, 10, 7), axis=(1, 3, 5))
    np.testing.assert_allclose(b, truth, rtol=2e-6)
    lazy = bin_array(da.from_array(a, chunks=(14, 70, 70)), 7).compute()
    np.testing.assert_allclose(lazy, truth, rtol=2e-6)
    out, finite = bin_multi([da.from_array(a, chunks=(14, 70, 70))], [7, (1, 7, 7)], return_finite=True)
    np.testing.assert_allclose(out[0][0], truth, rtol=2e-6)
    expected = float(np.isfinite(a).mean())
    assert finite[0] == pytest.approx(expected, abs=1e-12) and finite_fraction(a) == pytest.approx(expected)


def test_all_nan_bin_stays_nan_and_wording():
    from litomo.workflows.limap.read import check_volume_values

    a = np.ones((4, 4, 4), np.float32)
    a[:2] = np.nan
    b = bin_array(a, 2)
    assert np.isnan(b[0]).all() and (b[1] == 1.0).all()
    # a 17 %-NaN volume used to be called "all zero (or all NaN)"
    rng = np.random.default_rng(2)
    v = rng.normal(3.0, 0.5, (20, 20, 20)).astype(np.float32)
    v[rng.random(v.shape) < 0.17] = np.nan
    assert check_volume_values("v", bin_array(v, 2)) == []
    with pytest.raises(DataError, match="every bin is NaN/inf"):
        check_volume_values("v", np.full((2, 2, 2), np.nan, np.float32))
    with pytest.raises(DataError, match="finite voxels are all zero"):
        check_volume_values("v", np.zeros((2, 2, 2), np.float32))


# ------------------------------------------------------------------ item 9: garbled files


def test_garbled_hdf5_header(tmp_path):
    p = tmp_path / "g.h5"
    with h5py.File(p, "w") as f:
        f["volume"] = np.ones((4, 5, 6), np.float32)
    raw = bytearray(p.read_bytes())
    raw[0:64] = os.urandom(64)  # superblock gone
    p.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match="not a readable HDF5 file"):
        read_volume(p)


def test_garbled_hdf5_chunk_fails_when_read(tmp_path):
    p = tmp_path / "g.h5"
    data = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    with h5py.File(p, "w") as f:
        f.create_dataset("volume", data=data, chunks=(8, 32, 32), compression="gzip")
        offset = f["volume"].id.get_chunk_info(0).byte_offset
    raw = bytearray(p.read_bytes())
    raw[offset : offset + 200] = b"\x00" * 200
    p.write_bytes(bytes(raw))
    vol = read_volume(p, lazy=True)
    with pytest.raises(InputFileError, match="truncated or corrupt"):
        vol.numpy()


def _patch_tiff_size(path: Path, width: int, length: int) -> None:
    with tifffile.TiffFile(path, mode="r+") as t:
        for page in t.pages:
            page.tags["ImageWidth"].overwrite(width)
            page.tags["ImageLength"].overwrite(length)
            page.tags["RowsPerStrip"].overwrite(length)


def test_tiff_header_claiming_huge_image_is_refused_before_allocating(tmp_path):
    p = tmp_path / "huge.tif"
    tifffile.imwrite(p, np.zeros((16, 16), np.float32), compression="zlib", rowsperstrip=16)
    _patch_tiff_size(p, 100_000, 100_000)  # a 37 GiB float32 page in a 288-byte file
    t0 = time.process_time()
    for lazy in (False, True):
        with pytest.raises(InputFileError, match=r"37\.25 GiB.*corrupt"):
            read_volume(p, lazy=lazy)
    assert time.process_time() - t0 < 5.0


def test_tiff_header_claiming_2000_cubed_is_refused(tmp_path):
    p = tmp_path / "cube.tif"
    tifffile.imwrite(p, np.zeros((2, 16, 16), np.uint8), imagej=True, compression="zlib")
    _patch_tiff_size(p, 2000, 2000)
    with tifffile.TiffFile(p, mode="r+") as t:
        d = t.pages[0].tags["ImageDescription"]
        d.overwrite(d.value.replace("images=2", "images=2000").replace("slices=2", "slices=2000"))
    with pytest.raises(InputFileError, match="corrupt|truncated"):
        read_volume(p, lazy=True)


def test_memory_check_against_available_memory():
    with pytest.raises(InputFileError, match="GiB available"):
        check_fits_in_memory((100_000, 100_000, 1000), np.float32, "x.tif")
    assert check_fits_in_memory((10, 10, 10), np.float32, "x.tif") == 4000


# ------------------------------------------------------------------ item 11: a FIFO as a volume


@pytest.mark.timeout(30)
def test_fifo_as_volume_is_refused_not_opened(tmp_path):
    fifo = tmp_path / "edge.tif"
    os.mkfifo(fifo)  # opening it for reading would block for ever
    with pytest.raises(InputFileError, match="FIFO"):
        read_volume(fifo)


# ------------------------------------------------------------------ issue 21 item 1: 72 dpi


def test_nrel_72dpi_is_no_voxel_size(shared_data):
    path = shared_data / NREL
    with tifffile.TiffFile(path) as t:  # the file really carries the 72 dpi default
        assert t.pages[0].tags["XResolution"].value == (72, 1)
    vol = read_volume(path, lazy=True)
    assert vol.metadata["voxel_size_known"] is False
    with pytest.raises(InputFileError, match="records no voxel size.*--voxel-size-um"):
        require_voxel_size(vol)
    given = read_volume(path, lazy=True, voxel_size_um=0.37)
    assert given.voxel_size_um == (0.37, 0.37, 0.37) and require_voxel_size(given) is given


@pytest.mark.parametrize("dpi", [72, 96, 300])
def test_default_dpi_and_unit_less_resolutions_are_no_scale(tmp_path, dpi):
    p = tmp_path / "v.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 4), np.uint8), resolution=(dpi, dpi), resolutionunit="INCH")
    assert read_volume(p).metadata["voxel_size_known"] is False
    q = tmp_path / "w.tif"
    tifffile.imwrite(q, np.zeros((2, 3, 4), np.uint8), resolution=(1, 1), resolutionunit="CENTIMETER")
    assert read_volume(q).metadata["voxel_size_known"] is False
    # a real scale in cm survives: 2e4 px/cm = 0.5 um
    r = tmp_path / "r.tif"
    tifffile.imwrite(r, np.zeros((2, 3, 4), np.uint8), resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    vol = read_volume(r)
    assert vol.metadata["voxel_size_known"] is True
    np.testing.assert_allclose(vol.voxel_size_um, (0.5, 0.5, 0.5))

"""Forest prediction reading the grey volume block by block (lazy TIFF / OME-Zarr via dask) with
the feature halo: bit-identical to the prediction of the same volume held in memory."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from litomo.io import read_volume
from litomo.io.omezarr import write_ome_zarr
from litomo.segment.forest import ForestSettings, train_forest
from litomo.volume import Volume


class CountingReads:
    """An array-like that records the shape of every region read from it."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, sl):
        out = self.array[sl]
        self.reads.append(out.shape)
        return out


@pytest.fixture(scope="module")
def grey_and_model():
    rng = np.random.default_rng(3)
    z, y, x = np.ogrid[:40, :36, :44]
    grey = (100 * (((z - 20) ** 2 + (y - 18) ** 2 + (x - 22) ** 2) < 12 ** 2) + 40 * (x > 36)
            + rng.normal(0, 15, (40, 36, 44))).astype(np.float32)
    scrib = np.zeros(grey.shape, np.uint8)
    scrib[20, 18, 15:30] = 2
    scrib[::4, ::4, 1] = 1
    scrib[::4, ::4, 41] = 3
    model = train_forest(grey, scrib, ForestSettings(sigmas=(1.0, 2.0), n_estimators=10, n_jobs=1))
    return grey, model


def read_store(path):
    g = zarr.open_group(str(path), mode="r")
    return g["labels"][...], g["probability"][...]


def test_lazy_tiff_and_ome_zarr_prediction_bit_identical(grey_and_model, tmp_path):
    grey, model = grey_and_model
    ref_labels, ref_prob = read_store(model.predict_to_zarr(grey, tmp_path / "mem.zarr", chunks=16))
    assert len(np.unique(ref_labels)) == 3
    tif = tmp_path / "grey.tif"
    tifffile.imwrite(tif, grey)
    omz = write_ome_zarr(tmp_path / "grey.ome.zarr", Volume(grey, 1.0), chunks=(16, 16, 16))
    for path in (tif, omz):
        vol = read_volume(path, voxel_size_um=1.0, lazy=True)
        assert vol.is_lazy
        labels, prob = read_store(model.predict_to_zarr(vol.array, tmp_path / f"{path.stem}.zarr", chunks=16))
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(prob, ref_prob)


def test_prediction_reads_blocks_with_the_sigma_halo_only(grey_and_model, tmp_path):
    grey, model = grey_and_model
    src = CountingReads(grey)
    labels, _ = read_store(model.predict_to_zarr(src, tmp_path / "counted.zarr", chunks=16))
    np.testing.assert_array_equal(labels, model.predict(grey, chunks=16))
    halo = model.halo
    block = model.block_shape(grey.shape, 16)
    block_reads = [r for r in src.reads if r != tuple(-(-n // 4) for n in grey.shape)]  # not check_grey's sample
    n_blocks = int(np.prod([-(-n // b) for n, b in zip(grey.shape, block, strict=True)]))
    assert n_blocks > 8 and len(block_reads) == n_blocks  # each block read once
    # every read is one block plus at most the halo on each side (clipped at the faces)
    for r in block_reads:
        assert all(e <= b + 2 * halo for e, b in zip(r, block, strict=True)), (r, block, halo)
        assert np.prod(r) < grey.size

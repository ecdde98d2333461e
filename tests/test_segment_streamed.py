"""Forest prediction reading the grey volume block by block (lazy TIFF / OME-Zarr via dask) with
the feature halo: bit-identical to the prediction of the same volume held in memory."""

from __future__ import annotations

import time

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


# ------------------------------------------------------------ the streamed `litomo segment` workflow

def _phantom(shape, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    ball = ((z % 24 - 12) ** 2 + (y % 24 - 12) ** 2 + (x % 24 - 12) ** 2) < 8 ** 2
    grey = (40 + 140 * ball + 60 * ((x % 24) < 3) * ~ball + rng.normal(0, 15, shape)).astype(np.float32)
    scrib = np.zeros(shape, np.uint8)
    truth = np.where(ball, 2, np.where((x % 24) < 3, 3, 1)).astype(np.uint8)  # pore 1, am 2, cbd 3
    for c in (1, 2, 3):
        idx = rng.choice(np.flatnonzero(truth.ravel() == c), 60, replace=False)
        scrib.ravel()[idx] = c
    return grey, scrib


@pytest.mark.parametrize(("method", "majority"), [("forest", False), ("multi-otsu", False), ("forest", True)])
def test_streamed_segment_equals_in_memory(method, majority, tmp_path):
    """run_segment reads the TIFF lazily (z-slabs), denoises and stages it block-wise and sums
    fractions over blocks: labels and every reported figure equal segment_volume's in memory
    (with ``--majority`` too: the vote crosses the block boundaries through a one-voxel halo)."""
    from litomo.workflows.segment import SegmentSettings, run_segment, segment_volume

    grey, scrib = _phantom((30, 34, 38))
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    tifffile.imwrite(tmp_path / "scrib.tif", scrib)
    settings = SegmentSettings(method=method, denoise=("median",), voxel_size_um=1.0, sigmas=(0.7, 1.5),
                               n_estimators=8, n_jobs=1, memory_mb=0.2, majority=majority)  # many blocks
    ref = segment_volume(grey, settings, scribbles=scrib if method == "forest" else None)
    got = run_segment(tmp_path / "grey.tif", tmp_path / "out", settings,
                      scribbles_path=tmp_path / "scrib.tif" if method == "forest" else None)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "labels.tif"), ref.labels)
    np.testing.assert_array_equal(np.asarray(got.labels), ref.labels)
    for key in ("volume_fractions", "am_fraction_sensitivity", "otsu_interclass_variance"):
        assert got.report[key] == ref.report[key], key
    assert 0.05 < ref.report["volume_fractions"]["am"] < 0.95  # a non-trivial segmentation
    assert not (tmp_path / "out" / "work").exists()  # staged grey and prediction store removed
    if majority:  # the vote changed something here, so the equality above tested it
        plain = segment_volume(grey, SegmentSettings(**{**settings.__dict__, "majority": False}), scribbles=scrib)
        assert (plain.labels != ref.labels).sum() > 0


_PEAK_SCRIPT = """
import sys, tracemalloc
from pathlib import Path
import litomo.workflows.segment as seg
from litomo.workflows.segment import SegmentSettings, run_segment
seg.OTSU_SAMPLES = seg.MULTI_OTSU_SAMPLES = 100_000  # the sample is a fixed cost (~28 B/sample), not the volume
d = Path(sys.argv[1])
s = SegmentSettings(voxel_size_um=1.0, sigmas=(1.0,), n_estimators=5, n_jobs=1, memory_mb=4.0)
run_segment(d / "small.tif", d / "warm", s, scribbles_path=d / "small_scrib.tif")  # imports, numba
tracemalloc.start()
run_segment(d / "grey.tif", d / "out", s, scribbles_path=d / "scrib.tif")
print(tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.slow  # ~28 s CPU: two run_segment calls in a child process, 125 prediction blocks
def test_streamed_segment_peak_memory_bounded(tmp_path):
    """A 128^3 float32 volume (8 MiB) segmented with --memory-mb 4: the traced peak (numpy, zarr,
    dask buffers) measured 7.4 MiB, against 88 MiB for segment_volume on the same array in
    memory (volume + features). Run in a child process so that other tests' allocations do
    not count."""
    import subprocess
    import sys

    grey, _ = _phantom((128, 128, 128))
    scrib = np.zeros(grey.shape, np.uint8)  # painted on the first slices (as in napari): training
    scrib[:8] = _phantom((8, 128, 128))[1]  # reads the blocks there only
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    tifffile.imwrite(tmp_path / "scrib.tif", scrib)
    small, small_scrib = _phantom((24, 24, 24))  # a first run imports what run_segment imports lazily
    tifffile.imwrite(tmp_path / "small.tif", small)
    tifffile.imwrite(tmp_path / "small_scrib.tif", small_scrib)
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    peak = int(out.stdout.split()[-1])
    print("peak traced MiB", peak / 2**20)
    assert peak < 2 * grey.nbytes, peak / 2**20
    labels = tifffile.imread(tmp_path / "out" / "labels.tif")
    assert labels.shape == grey.shape and 0.05 < (labels == 1).mean() < 0.95


# ------------------------------------------------- scribbles and --reference read slab by slab

def test_scribbles_streamed_identical_and_memory_bounded(grey_and_model, tmp_path):
    """Scribbles read lazily in z-slabs keep only the painted voxels: the same training set
    (hence the same model: identical probabilities) as the array in memory, and a traced peak
    of one slab, not the volume (an 8 MiB TIFF, 512 painted voxels)."""
    import tracemalloc

    from litomo.segment.scribbles import sparse_labels

    grey, _ = grey_and_model
    scrib = np.zeros(grey.shape, np.float32)  # float scribbles holding whole numbers are accepted
    scrib[20, 18, 15:30] = 2
    scrib[::4, ::4, 1] = 1
    scrib[::4, ::4, 41] = 3
    tifffile.imwrite(tmp_path / "scrib.tif", scrib)
    lazy = read_volume(tmp_path / "scrib.tif", voxel_size_um=1.0, lazy=True, chunks=(5, 36, 44)).array
    sparse = sparse_labels(lazy, depth=5)
    assert sparse.index.tolist() == np.flatnonzero(scrib).tolist()
    assert sparse.values.tolist() == scrib[scrib != 0].astype(int).tolist()
    settings = ForestSettings(sigmas=(1.0,), n_estimators=5, n_jobs=1)
    whole = train_forest(grey, scrib.astype(np.uint8), settings)
    streamed = train_forest(grey, sparse, settings)
    np.testing.assert_array_equal(next(streamed.iter_proba(grey, 40))[1], next(whole.iter_proba(grey, 40))[1])
    big = np.zeros((32, 256, 256), np.float32)  # 8 MiB
    big[::4, ::32, ::32] = 1
    tifffile.imwrite(tmp_path / "big.tif", big)
    lazy = read_volume(tmp_path / "big.tif", voxel_size_um=1.0, lazy=True, chunks=(4, 256, 256)).array
    tracemalloc.start()
    s = sparse_labels(lazy, depth=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert s.index.size == 512
    assert peak < big.nbytes / 4, peak  # measured 1.21 MiB (one 4-slice slab is 1 MiB)


def test_reference_compared_slab_by_slab_equals_whole(tmp_path):
    from litomo.metrics.agreement import reference_agreement
    from litomo.workflows.segment_stream import compare_reference

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (17, 12, 9)).astype(np.uint8)
    ref = np.where(rng.random(lab.shape) < 0.8, lab + 1, rng.integers(1, 5, lab.shape)).astype(np.uint8)
    values = {"pore": 1, "am": 2, "cbd": 3}  # 4 = unlabelled
    seen = []
    got = compare_reference(lab, ref, values, depth=4, progress=lambda d, t, s: seen.append((d, t)))
    assert got == reference_agreement(lab, ref, values)
    # expected: 95 % of the voxels compared, 0.85 / 0.95 = 0.895 of them equal
    assert seen[-1] == (5, 5) and 0.87 < got["accuracy"] < 0.92 and 0.94 < got["compared_fraction"] < 0.965


def test_forest_prediction_on_a_cluster_equals_in_process(tmp_path):
    """``--scheduler``: the blocks are predicted by tasks on the dask.distributed workers (model
    and compiled forest pickled and scattered once to a worker *process*, each task writes its
    own chunks of the prediction store); labels and probabilities equal the in-process
    prediction bit for bit."""
    from distributed import LocalCluster

    from litomo.workflows.execution import dask_client
    from litomo.workflows.segment import SegmentSettings, run_segment

    grey, scrib = _phantom((24, 26, 28))
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    tifffile.imwrite(tmp_path / "scrib.tif", scrib)
    settings = SegmentSettings(voxel_size_um=1.0, sigmas=(0.7, 1.5), n_estimators=5, n_jobs=1, memory_mb=0.1)
    a = run_segment(tmp_path / "grey.tif", tmp_path / "a", settings, scribbles_path=tmp_path / "scrib.tif")
    seen = []
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster, \
            dask_client(cluster.scheduler_address):
        b = run_segment(tmp_path / "grey.tif", tmp_path / "b", settings, scribbles_path=tmp_path / "scrib.tif",
                        progress=lambda d, t, s: seen.append((s, d, t)))
        ran = cluster.scheduler.task_prefixes["predict_block_task"].state_counts["memory"]
    blocks = [t for s, _, t in seen if s == "pixel classification"]
    assert ran == blocks[-1] > 4  # every block was a task there (memory_mb 0.2: many blocks)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b" / "labels.tif"),
                                  tifffile.imread(tmp_path / "a" / "labels.tif"))
    za, zb = (zarr.open_group(str(tmp_path / k / "segmentation.ome.zarr"), mode="r") for k in "ab")
    for name in za.group_keys():
        np.testing.assert_array_equal(zb[name]["0"][...], za[name]["0"][...])
    assert a.report["volume_fractions"] == b.report["volume_fractions"]


BLOCKS_RUN: list = []


def _block_task_failing_first(model, compiled, grey, sl, store):
    if all(s.start == 0 for s in sl):
        raise RuntimeError("block at the origin unreadable")
    time.sleep(0.1)
    BLOCKS_RUN.append(sl)


def test_a_failed_block_on_the_cluster_stops_the_others(grey_and_model, tmp_path, monkeypatch):
    """The first block's error is raised and the blocks not yet run are cancelled: they do not go
    on running (and writing into the prediction store) after the call has failed."""
    from distributed import LocalCluster

    import litomo.segment.model as sm
    from litomo.workflows.execution import dask_client

    grey, model = grey_and_model
    zgrey = zarr.create_array(str(tmp_path / "grey.zarr"), shape=grey.shape, chunks=(8, 8, 8), dtype=grey.dtype)
    zgrey[...] = grey
    monkeypatch.setattr(sm, "predict_block_task", _block_task_failing_first)
    BLOCKS_RUN.clear()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            dask_client(cluster.scheduler_address):
        with pytest.raises(RuntimeError, match="at the origin"):
            model.predict_to_zarr(zgrey, tmp_path / "p.zarr", chunks=8)
        after_error = len(BLOCKS_RUN)
        time.sleep(1.0)  # ten more blocks' time: without the cancel they ran on (measured: +9)
        assert len(BLOCKS_RUN) <= after_error + 1  # at most the one running when it failed
    assert after_error <= 2  # the failing block is the first submitted (measured: 0 had run)

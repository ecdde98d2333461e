"""``--scheduler`` of ``litomo segment``, ``micro`` and ``tortuosity`` (issue 18 item 5), and the
progress each long step of theirs reports.

A dask.distributed ``LocalCluster(processes=False)`` started here is the "remote" scheduler:
the commands connect to its address; the numbers must equal those of a run without it, and the
cluster's scheduler must have run the chunked steps' tasks.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import tifffile

from micro_helpers import ball_electrode, run_cli


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    c = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0")
    yield c
    c.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Jittered AM balls with a patchy CBD rim (labels 0/85/170) and a noisy grey rendering."""
    rng = np.random.default_rng(1)
    lab = ball_electrode(36, rng)
    d = tmp_path_factory.mktemp("sched")
    tifffile.imwrite(d / "labels.tif", lab * 85)
    grey = np.array([40.0, 180.0, 100.0])[lab] + rng.normal(0, 20, lab.shape)
    tifffile.imwrite(d / "grey.tif", np.clip(grey, 0, 255).astype(np.uint8))
    return d, lab


def _run(args, capsys):
    return run_cli(args, capsys)


def _prefixes(cluster) -> set[str]:
    return set(cluster.scheduler.task_prefixes)


def _n_computed(cluster) -> int:
    """Tasks the cluster's scheduler has seen finish so far (cumulative over its life)."""
    return sum(tp.state_counts["memory"] for tp in cluster.scheduler.task_prefixes.values())


#: multi-Otsu + median on the fixture: measured 0.895 voxel accuracy; bound at twice its error
#: (a constant map scores 0.42)
ACCURACY_MIN = 0.79

MICRO = ["--voxel-size-um", "0.4", "--labels", "pore=0,am=85,cbd=170", "--json", "--no-figures"]


# first in this file: scripts/test.sh starts it beside tests/test_pipeline.py, whose fixture
# compiles the flood segmentation's kernels within seconds; the micro tests below compile the
# same ones, and run first they compiled them at the same moment in the other worker (~6 s CPU)
def test_tortuosity_on_a_cluster_equals_in_process(files, cluster, tmp_path, capsys):
    d, _ = files
    args = ["tortuosity", str(d / "labels.tif"), "--labels", "pore=0,am=85,cbd=170", "--voxel-size-um", "0.4",
            "--json", "--rtol", "1e-8"]
    code, plain, err = _run(args, capsys)
    assert code == 0, err
    before = _n_computed(cluster)
    code, dist, err = _run([*args, "--scheduler", cluster.scheduler_address, "--flux-map",
                            str(tmp_path / "flux.tif")], capsys)
    assert code == 0, err
    assert _n_computed(cluster) > before  # the slabs were read there
    a, b = json.loads(plain), json.loads(dist)
    assert a["tau"] == b["tau"] and 1.0 < a["tau"]["z"] < 10.0
    assert (tmp_path / "flux.tif").exists()


def test_micro_out_of_core_on_a_cluster_equals_in_process(files, cluster, tmp_path, capsys):
    d, lab = files
    args = ["micro", str(d / "labels.tif"), *MICRO, "--chunk-size", "16", "--axes", "all"]
    code, plain, err = _run([*args, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    code, dist, err = _run([*args, "--out", str(tmp_path / "b"), "--scheduler", cluster.scheduler_address], capsys)
    assert code == 0, err
    a, b = json.loads(plain), json.loads(dist)
    a.pop("input"), b.pop("input")
    assert a == b  # every number bit-identical (blocks merged in the same order)
    assert a["volume_fraction"]["am"] == pytest.approx((lab == 1).mean(), abs=1e-12)
    # the blocks (3 z-slabs: 16, 16, 4) and the S2 slabs ran as tasks of this cluster
    assert {"measure_slab", "slab_power"} <= _prefixes(cluster)
    for name in ("s2", "rev", "z_profile"):
        assert (tmp_path / "a" / "tables" / f"{name}.csv").read_bytes() == \
            (tmp_path / "b" / "tables" / f"{name}.csv").read_bytes()


def test_micro_in_memory_and_local_cluster(files, tmp_path, capsys):
    d, _ = files
    args = ["micro", str(d / "labels.tif"), *MICRO, "--no-transport", "--no-pore-sizes"]
    code, plain, err = _run([*args, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    code, local, err = _run([*args, "--out", str(tmp_path / "b"), "--scheduler", "local"], capsys)
    assert code == 0, err
    a, b = json.loads(plain), json.loads(local)
    assert a["volume_fraction"] == b["volume_fraction"] and a["tpb_density_um-2"] == b["tpb_density_um-2"]
    assert a["sphericity_median"] == b["sphericity_median"] and a["n_particles"] == b["n_particles"] > 0


def test_segment_on_a_cluster_equals_in_process(files, cluster, tmp_path, capsys):
    d, lab = files
    args = ["segment", str(d / "grey.tif"), "--method", "multi-otsu", "--denoise", "median", "--json", "-q"]
    code, plain, err = _run([*args, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    before = _n_computed(cluster)
    code, dist, err = _run([*args, "--out", str(tmp_path / "b"), "--scheduler", cluster.scheduler_address], capsys)
    assert code == 0, err
    a, b = json.loads(plain), json.loads(dist)
    assert a["volume_fractions"] == b["volume_fractions"]
    assert a["otsu_interclass_variance"] == b["otsu_interclass_variance"]
    la, lb = (tifffile.imread(tmp_path / k / "labels.tif") for k in "ab")
    assert np.array_equal(la, lb) and (la == lab).mean() > ACCURACY_MIN
    assert _n_computed(cluster) > before  # staging / writing ran there


@pytest.mark.parametrize("command", ["micro", "segment", "tortuosity"])
def test_bad_scheduler_address_is_one_line_and_writes_nothing(files, tmp_path, capsys, command):
    d, _ = files
    out = tmp_path / "out"
    args = {"micro": ["micro", str(d / "labels.tif"), *MICRO, "--out", str(out)],
            "segment": ["segment", str(d / "grey.tif"), "--method", "multi-otsu", "--out", str(out)],
            "tortuosity": ["tortuosity", str(d / "labels.tif"), "--labels", "pore=0,am=85,cbd=170",
                           "--flux-map", str(out)]}[command]
    import dask
    import distributed

    before = dask.config.get("scheduler", None)
    code, _, err = _run([*args, "--scheduler", "nosuch://x", "-q"], capsys)
    assert code == 2 and dask.config.get("scheduler", None) == before  # the failed client left no trace:
    with pytest.raises(ValueError):  # no default client either (later computes hung waiting for it)
        distributed.default_client()
    assert err.count("\n") == 1 and "cannot reach the dask scheduler at 'nosuch://x'" in err
    assert "Traceback" not in err and not out.exists()


def test_petsc_backend_takes_no_scheduler(files, capsys):
    d, _ = files
    code, _, err = _run(["tortuosity", str(d / "labels.tif"), "--backend", "petsc", "--scheduler", "local"], capsys)
    assert code == 2 and "--scheduler does not apply to --backend petsc" in err


class Recorder:
    """A progress callback that keeps every ``done`` per description."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def __call__(self, done: int, total: int, desc: str) -> None:
        self.calls[desc].append((done, total))

    def check(self, *expected: str) -> None:
        for desc, seq in self.calls.items():
            dones = [k for k, _ in seq]
            assert dones == sorted(dones) and all(k <= t for k, t in seq), (desc, seq)
        for desc in expected:  # each long step reports and reaches its total
            assert desc in self.calls and self.calls[desc][-1][0] == self.calls[desc][-1][1], \
                (desc, sorted(self.calls))


@pytest.fixture()
def small_slabs(monkeypatch):
    """Read the 36^3 fixture in 9 z-slabs (the default slab is 2^24 voxels: one read, no progress)."""
    import litomo.metrics.chunked

    monkeypatch.setattr(litomo.metrics.chunked, "SLAB_VOXELS", 36 * 36 * 4)


def test_micro_reports_progress_for_each_long_step(files, tmp_path, small_slabs):
    from litomo.workflows.micro import MicroSettings, run_micro

    d, _ = files
    base = dict(label_mapping={"pore": 0, "am": 85, "cbd": 170}, figures=False)
    rec = Recorder()
    run_micro(d / "labels.tif", tmp_path / "a", MicroSettings(0.4, chunk_vox=16, **base), progress=rec)
    rec.check("microstructure: blocks", "REV", "S2 along z: slabs")
    rec = Recorder()
    run_micro(d / "labels.tif", tmp_path / "b", MicroSettings(0.4, transport=False, **base), progress=rec)
    rec.check("reading labels", "pore sizes", "S2", "REV", "microstructure: particles")


def test_tortuosity_reports_reading_and_solving(files, monkeypatch, capsys, small_slabs):
    import litomo.cli.tortuosity as cli_tau

    d, _ = files
    rec = Recorder()
    monkeypatch.setattr(cli_tau, "progress_bar", lambda enabled=True: rec)
    code, _, err = _run(["tortuosity", str(d / "labels.tif"), "--labels", "pore=0,am=85,cbd=170",
                         "--voxel-size-um", "0.4"], capsys)
    assert code == 0, err
    rec.check("reading labels")
    assert rec.calls["reading labels"][-1] == (9, 9)
    assert any("tortuosity" in k for k in rec.calls)


def test_segment_forest_reports_training_and_prediction(files, tmp_path):
    from litomo.workflows.segment import SegmentSettings, run_segment

    d, lab = files
    scribbles = np.zeros(lab.shape, np.uint8)
    rng = np.random.default_rng(0)
    for code in range(3):
        idx = rng.choice(np.flatnonzero(lab.ravel() == code), 100, replace=False)
        scribbles.ravel()[idx] = code + 1
    tifffile.imwrite(tmp_path / "scribbles.tif", scribbles)
    rec = Recorder()
    run_segment(d / "grey.tif", tmp_path / "out", SegmentSettings(sigmas=(1.0, 2.0), n_estimators=15, n_jobs=1,
                                                                  chunks=16),
                scribbles_path=tmp_path / "scribbles.tif", progress=rec)
    rec.check("training features", "pixel classification")
    assert rec.calls["pixel classification"][-1][1] > 1  # several blocks, each reported


@pytest.mark.parametrize("where", ["address", "local"])
def test_bad_label_value_found_on_a_worker_is_one_line(files, cluster, tmp_path, capsys, where):
    """The worker's DataError comes back as one line (no logged task traceback: execution.py)."""
    d, lab = files
    bad = lab * 85
    bad[30, 5, 5] = 7  # in the last z-slab, read and checked on the cluster's worker
    tifffile.imwrite(tmp_path / "bad.tif", bad)
    code, _, err = _run(["micro", str(tmp_path / "bad.tif"), *MICRO, "--chunk-size", "16", "-q",
                         "--out", str(tmp_path / "out"),
                         "--scheduler", cluster.scheduler_address if where == "address" else "local"], capsys)
    assert code == 2 and err.count("\n") == 1 and ": 7" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

"""End-to-end tests of the operando Li-mapping pipeline (``litomo run`` / ``litomo demo``).

One small synthetic operando electrode (64^3 raw voxels, 2 charge states, binned 7x7x7) is
generated once per module; its ground truth (true x_Li per voxel, true state means) comes
from :mod:`litomo.phantom.operando`. Registration is rigid only (B-spline costs ~10 s per
pair) and runs once; the scheduler comparison runs without registration.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_helpers import cli, make_phantom, variant

STATE_COLUMNS = ["state", "mean_li", "std_li", "frac_li_rich", "frac_li_moderate", "frac_li_poor",
                 "total_li_um3", "n_particles"]
TABLES = ["states", "particles", "z_profile", "core_shell", "registration", "matching", "evolution"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return make_phantom(tmp_path_factory)


@pytest.fixture(scope="module")
def cli_run(phantom, tmp_path_factory):
    """``litomo run manifest --out DIR --tiff`` with rigid registration."""
    d = tmp_path_factory.mktemp("cli-run")
    toml = variant(phantom / "experiment.toml", d / "rigid.toml", register=True, bspline=False)
    out = d / "out"
    code, stdout, stderr = cli(["run", str(toml), "--out", str(out), "--tiff",
                                 "--scheduler", "synchronous", "-q"])
    assert code == 0, stderr
    return out, stdout, toml


def test_run_cli_writes_tables(cli_run):
    out, stdout, _ = cli_run
    assert "I: mean x_Li" in stdout and "report:" in stdout
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").is_file(), name
    states = pd.read_csv(out / "tables" / "states.csv")
    assert set(STATE_COLUMNS) <= set(states.columns)
    assert list(states["state"].astype(str)) == ["I", "II"]
    fr = states[["frac_li_rich", "frac_li_moderate", "frac_li_poor"]].sum(axis=1)
    np.testing.assert_allclose(fr, 1.0, atol=1e-9)
    assert states[STATE_COLUMNS[1:]].notna().all().all()
    assert (states["n_particles"] >= 1).all() and (states["total_li_um3"] > 0).all()
    reg = pd.read_csv(out / "tables" / "registration.csv")
    # pre_edge and edge onto post_edge in each state, plus state II onto state I
    assert len(reg) == 5 and set(reg["mode"]) == {"rigid"}
    assert (reg["ncc_after"] >= reg["ncc_before"] - 1e-6).all()
    parts = pd.read_csv(out / "tables" / "particles.csv")
    assert set(parts["state"].astype(str)) == {"I", "II"}
    assert len(pd.read_csv(out / "tables" / "matching.csv")) == 1


def test_run_volumes_and_tiff(cli_run):
    import tifffile

    from litomo.io import read_ome_zarr
    from litomo.workflows.limap.cache import load_array

    out, _, _ = cli_run
    for name in ("I", "II"):
        li = read_ome_zarr(out / "volumes" / name / "li.ome.zarr")
        post = load_array(out / "work" / name / "warp" / "plain" / "post_edge.zarr")
        am = load_array(out / "work" / name / "map" / "am.zarr").astype(bool)
        assert li.shape == post.shape == (64 // 7,) * 3
        tif = tifffile.imread(out / "volumes" / name / "li.tif")
        assert tif.dtype == np.float32 and tif.shape == post.shape
        # NaN exactly outside the AM mask, finite x_Li inside
        np.testing.assert_array_equal(np.isnan(tif), ~am)
        np.testing.assert_array_equal(tif, li.numpy())
        assert 0.0 <= np.nanmin(tif) and np.nanmax(tif) <= 1.2


def test_run_json_and_report(cli_run):
    out, _, toml = cli_run
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["numpy"] == np.__version__ and run["versions"]["litomo"]
    assert run["parameters"]["li_rich_min"] == 0.9 and run["parameters"]["register"] is True
    assert run["command"].startswith("litomo ")
    assert run["states"] == ["I", "II"]
    # one checksum per input volume and reference, each the file's real SHA-256
    assert len(run["inputs"]) == 2 * 3 + 2
    for path, digest in run["inputs"].items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    stages = ["read", "separate", "register", "warp", "map", "particles", "li", "statistics", "context"]
    assert {*stages, "tracking", "outputs", "report", "total"} <= set(run["timings_s"])
    assert all(v >= 0 for v in run["timings_s"].values())
    # every stage of every state ran once, with its wall and CPU time and the peak RSS so far
    rows = run["stages"]
    assert [(r["state"], r["stage"]) for r in rows] == [
        *((s, n) for s in ("I", "II") for n in stages), ("", "tracking"), ("", "outputs"), ("", "report")]
    assert all(r["ran"] and r["wall_s"] >= 0 and r["cpu_s"] >= 0 for r in rows)
    rss = [r["peak_rss_mib"] for r in rows]
    assert rss == sorted(rss) and 50 < rss[-1] < 64 * 1024
    html = (out / "report.html").read_text()
    assert "<html" in html.lower() and "II" in html
    assert "peak RSS (MiB)" in html and ">particles<" in html  # the stage table
    assert (out / "figures" / "li_projection.png").is_file() and "2-D projection versus 3-D" in html
    # report.html before run.json: the completion record is written last
    assert (out / "report.html").stat().st_mtime_ns <= (out / "run.json").stat().st_mtime_ns


def test_run_accuracy_vs_truth(cli_run, phantom):
    """Bounds at about twice the measured errors (9^3 binned grid, a few particles): a constant
    map or a swapped calibration fails them."""
    from litomo.phantom.scoring import score_run

    out, _, _ = cli_run
    truth = {s["name"]: s["mean_li"] for s in json.loads((phantom / "truth" / "truth.json").read_text())["states"]}
    states = pd.read_csv(out / "tables" / "states.csv").set_index("state")
    run_means = states["mean_li"].to_dict()
    # ordered like the truth (state I pristine, II delithiated)
    assert (run_means["I"] - run_means["II"]) * (truth["I"] - truth["II"]) > 0
    err = {k: run_means[k] - truth[k] for k in truth}
    assert max(abs(e) for e in err.values()) < 0.02, err  # measured 0.008 (I), 0.003 (II)
    np.testing.assert_allclose(states["li_error_vs_expected"], states["mean_li"] - states["expected_li"],
                               atol=1e-9)
    score = score_run(out, phantom)
    assert score["rmse_li"] < 0.09, score["rmse_li"]  # measured 0.044
    assert score["max_total_li_error_pct"] < 3.0, score["max_total_li_error_pct"]  # measured 1.4
    assert score["max_class_fraction_error_pp"] < 6.5, score  # measured 3.1


@pytest.fixture()
def no_report(monkeypatch):
    """Skip the HTML report (checked above; it costs seconds per run)."""
    import litomo.report.html as html

    monkeypatch.setattr(html, "build_report", lambda out, *a, **k: None)


def test_schedulers_give_identical_results(phantom, tmp_path, no_report):
    from litomo.workflows.limap import RunOptions, run_experiment

    toml = variant(phantom / "experiment.toml", tmp_path / "noreg.toml", register=False)
    results = {}
    for name, opts in [("sync", RunOptions(scheduler="synchronous")),
                       ("local", RunOptions()),
                       ("two-processes", RunOptions(n_workers=2))]:
        results[name] = run_experiment(toml, tmp_path / name, opts).tables
    for name in ("local", "two-processes"):
        for t in ("states", "particles", "z_profile", "core_shell", "evolution"):
            pd.testing.assert_frame_equal(results["sync"][t], results[name][t], rtol=1e-6,
                                          obj=f"{name}:{t}")


def test_unreachable_scheduler_is_a_clear_error(phantom, tmp_path):
    from litomo.errors import LitomoError
    from litomo.workflows.execution import dask_client

    with pytest.raises(LitomoError, match="cannot reach the dask scheduler at 'tcp://127.0.0.1:1'"):
        with dask_client("tcp://127.0.0.1:1", connect_timeout_s=1):
            pass
    toml = variant(phantom / "experiment.toml", tmp_path / "noreg.toml", register=False)
    code, _, err = cli(["run", str(toml), "--out", str(tmp_path / "o"), "--scheduler", "nosuch://x", "-q"])
    assert code == 2
    assert err.count("\n") == 1 and "cannot reach the dask scheduler" in err and "Traceback" not in err


def test_demo_end_to_end(tmp_path, no_report):
    """``litomo demo`` generates, runs (with registration) and scores.

    Registration stays on: this test used to patch ``RunOptions`` with ``register=False``, which
    the demo command overrode with its own ``register=None``, so it always registered; without
    registration the 64^3 phantom clips 15 % of its AM voxels (a loud warning; more than 50 % is
    refused, see litomo.xanes.threeenergy.check_clipped_fraction)."""
    code, out, err = cli(["demo", "--out", str(tmp_path / "demo"), "--size", "64", "--states", "2", "-q"])
    assert code == 0, err
    m = re.search(r"accuracy vs truth: x_Li RMSE ([\d.]+), worst class-fraction error ([\d.]+) pp, "
                  r"total Li error ([\d.]+) %", out)
    assert m, out
    rmse, class_pp, total_pct = (float(g) for g in m.groups())
    assert 0 < rmse < 0.05, out  # measured 0.025
    # measured 0.2 pp, 2.5 % with the defaults (li_shrinkage = "none"; total Li from the summed
    # images); 1.1 pp with li_shrinkage = "constrained_bayes"
    assert class_pp < 1.0 and total_pct < 5.0, out
    assert (tmp_path / "demo" / "data" / "truth" / "truth.json").is_file()
    assert (tmp_path / "demo" / "results" / "tables" / "states.csv").is_file()


def test_denoise_setting_is_applied_before_the_map(phantom, tmp_path, no_report):
    """``processing.denoise = "median"`` maps the 3^3-median-filtered binned volumes."""
    from litomo.denoise import median_filter
    from litomo.manifest import load_manifest
    from litomo.workflows.limap.calibration import calibration_for
    from litomo.workflows.limap.mapping import map_li

    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.05, (12, 12, 12)).astype(np.float32)
    base[3:9, 3:9, 3:9] += 2.0
    reg = {"pre_edge": base, "edge": base + 2.5 * (base > 2), "post_edge": base + 2.0 * (base > 2)}
    reg = {k: (v + rng.normal(0, 0.1, v.shape)).astype(np.float32) for k, v in reg.items()}
    m_none = load_manifest(variant(phantom / "experiment.toml", tmp_path / "a.toml", denoise="none"))
    m_med = load_manifest(variant(phantom / "experiment.toml", tmp_path / "b.toml", denoise="median"))
    cal = calibration_for(m_none)

    def stage_map(volumes, m):
        return map_li(volumes, {}, m.processing, cal, m.xanes.li_pristine, m.xanes.li_charged).li_plain

    got = stage_map(reg, m_med)
    filtered = {k: np.asarray(median_filter(v, 3)) for k, v in reg.items()}
    expected = stage_map(filtered, m_none)
    plain = stage_map(reg, m_none)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], rtol=1e-6)
    assert not np.allclose(np.nan_to_num(got), np.nan_to_num(plain))  # the setting did something

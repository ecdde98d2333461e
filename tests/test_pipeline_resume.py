"""Output-directory rules, ``--resume`` (per-stage resume keys) and interrupted runs of the
Li-mapping pipeline.

Runs use the 64^3, 2-state phantom without registration (registration is covered in
test_pipeline.py) and skip the HTML report, so each run costs about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_helpers import cli, make_phantom, variant

STAGES = ("read", "separate", "register", "warp", "map", "particles", "li", "statistics", "context")
STORED = STAGES[1:]  # "read" is recomputed when needed, never stored
COMPARED = ("states", "particles", "z_profile", "core_shell", "histograms", "evolution", "matching")


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {n: pd.read_csv(out / "tables" / f"{n}.csv") for n in COMPARED}


def _assert_same_tables(a: dict, b: dict) -> None:
    for n in COMPARED:
        pd.testing.assert_frame_equal(a[n], b[n], rtol=1e-6, obj=n)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    ph = make_phantom(tmp_path_factory)
    return variant(ph / "experiment.toml", tmp_path_factory.mktemp("resume") / "noreg.toml", register=False)


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    import litomo.report.html as html

    monkeypatch.setattr(html, "build_report", lambda out, *a, **k: None)


@pytest.fixture(scope="module")
def reference_run(manifest, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """An uninterrupted run: the tables every resumed run must reproduce."""
    from litomo.workflows.limap import RunOptions, run_experiment

    out = tmp_path_factory.mktemp("reference") / "out"
    with pytest.MonkeyPatch.context() as mp:
        import litomo.report.html as html

        mp.setattr(html, "build_report", lambda out, *a, **k: None)
        run_experiment(manifest, out, RunOptions(scheduler="synchronous"))
    return _tables(out)


def _run(manifest: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    return cli(["run", str(manifest), "--out", str(out), "--scheduler", "synchronous", "-q", *flags])


def test_existing_out_dir_rules(manifest, tmp_path, reference_run):
    out = tmp_path / "out"
    assert _run(manifest, out)[0] == 0
    record = out / "work" / "I" / "statistics.json"
    before = record.stat().st_mtime_ns

    code, _, err = _run(manifest, out)
    assert code == 2 and err.count("\n") == 1
    assert "not empty" in err and "--resume" in err and "--force" in err

    code, _, err = _run(manifest, out, "--force", "--resume")
    assert code == 2 and err.count("\n") == 1 and "exclude each other" in err

    code, _, err = _run(manifest, out, "--force")
    assert code == 0, err
    assert record.stat().st_mtime_ns != before  # started over: the stage was redone
    _assert_same_tables(_tables(out), reference_run)

    # an --out holding the inputs (here the manifest's own folder) is refused, and so is
    # --force on a non-empty folder that no run wrote
    code, _, err = _run(manifest, manifest.parent, "--force")
    assert code == 2 and "contains input" in err and err.count("\n") == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, _, err = _run(manifest, other, "--force")
    assert code == 2 and "no earlier litomo run" in err
    assert (other / "notes.txt").read_text() == "keep me"


def _records(out: Path) -> dict[str, str]:
    return {f"{r.parent.name}/{r.stem}": json.loads(r.read_text())["key"]
            for r in sorted((out / "work").glob("*/*.json"))}


def test_resume_skips_finished_stages(manifest, tmp_path, monkeypatch, reference_run):
    from litomo.workflows.limap import STATE_STAGES, RunOptions, run_experiment

    out = tmp_path / "out"
    run_experiment(manifest, out, RunOptions(scheduler="synchronous"))
    records = sorted((out / "work").glob("*/*.json"))
    assert sorted(f"{r.parent.name}/{r.stem}" for r in records) == sorted(
        f"{s}/{n}" for s in ("I", "II") for n in STORED)
    mtimes = [r.stat().st_mtime_ns for r in records]

    def fail(*a, **k):
        raise AssertionError("a finished stage was redone on --resume")

    for stage in STATE_STAGES:
        monkeypatch.setattr(type(stage), "run", fail)
    res = run_experiment(manifest, out, RunOptions(scheduler="synchronous", resume=True))
    assert [r.stat().st_mtime_ns for r in records] == mtimes
    assert not any(t.ran for t in res.stages if t.state)  # every state's stages were reused
    _assert_same_tables(_tables(out), reference_run)
    assert (out / "run.json").is_file()
    record = json.loads((out / "run.json").read_text())
    assert [r["ran"] for r in record["stages"] if r["state"]] == [False] * 2 * len(STORED)
    # the run process's peak (at least every stage's peak so far) and the largest child's (issue 22)
    peaks = record["peak_rss_mib"]
    assert peaks["run_process"] >= max(r["peak_rss_mib"] for r in record["stages"]) > 50
    assert peaks["largest_child_process"] >= 0


def test_changed_parameter_reruns_only_the_stages_that_read_it(manifest, tmp_path):
    """--resume with a new class threshold reruns the two stages that classify (statistics,
    context) only; a new interior erosion reruns the warp and everything after it, but not the
    registration."""
    from litomo.workflows.limap import RunOptions, run_experiment
    from litomo.workflows.limap.cache import load_array

    out = tmp_path / "out"
    run_experiment(manifest, out, RunOptions(scheduler="synchronous"))
    keys = _records(out)
    changed = variant(manifest, tmp_path / "rich08.toml", li_rich_min=0.8)
    res = run_experiment(changed, out, RunOptions(scheduler="synchronous", resume=True))
    classify = ("statistics", "context")
    assert {n: res.ran(n) for n in STAGES} == {n: (["I", "II"] if n in classify else []) for n in STAGES}
    new = _records(out)
    assert {k for k in keys if new[k] != keys[k]} == {f"{s}/{n}" for s in ("I", "II") for n in classify}
    states = pd.read_csv(out / "tables" / "states.csv").set_index("state")
    assert json.loads((out / "run.json").read_text())["parameters"]["li_rich_min"] == 0.8
    for name in ("I", "II"):
        li = load_array(out / "work" / name / "li" / "li.zarr")
        v = li[np.isfinite(li)]
        # the counted fraction (frac_li_rich is deconvolved from the map's noise, issue 16)
        assert states.loc[name, "frac_li_rich_map"] == pytest.approx((v >= 0.8).mean())

    eroded = variant(manifest, tmp_path / "ero2.toml", li_rich_min=0.8, surface_erosion_vox=2)
    res = run_experiment(eroded, out, RunOptions(scheduler="synchronous", resume=True))
    rerun = {n for n in STAGES if res.ran(n) == ["I", "II"]}
    assert rerun == {"read", "warp", "map", "particles", "li", "statistics", "context"}
    assert res.ran("register") == []


_KILLER = r"""
import os, signal, sys
import litomo.workflows.limap.cache as p
from litomo.io.atomic import atomic_path
import litomo.report.html as html
html.build_report = lambda *a, **k: None
calls = []
orig = p.save_array
def save_array(path, array):
    if sys.argv[1] in path.parts:
        calls.append(path)
    if len(calls) == 3:
        # killed in the middle of writing the state's third array (after separate and register)
        print("KILLED-AT", path, file=sys.stderr, flush=True)
        with atomic_path(path, directory=True) as tmp:
            (tmp / "half-written").write_bytes(b"0" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    return orig(path, array)
p.save_array = save_array
from litomo.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_interrupted_run_resumes_to_identical_tables(manifest, tmp_path, reference_run):
    from litomo.workflows.limap.cache import load_array

    out = tmp_path / "out"
    # SIGKILL while state II writes its third array: state I is finished, II half-written
    argv = [sys.executable, "-c", _KILLER, "II", "run", str(manifest), "--out", str(out),
            "--scheduler", "synchronous", "-q"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    killed = Path(proc.stderr.split("KILLED-AT ")[1].split("\n")[0])

    work = out / "work"
    # state I finished; state II's separation and registration were stored, its warp was cut short
    assert all((work / "I" / f"{n}.json").is_file() for n in STORED)
    assert (work / "II" / "register.json").is_file() and (work / "II" / "separate.json").is_file()
    assert not (work / "II" / "warp.json").exists()
    # every record points only at complete, readable outputs
    for rec in work.glob("*/*.json"):
        for p in json.loads(rec.read_text())["outputs"]:
            f = out / "work" / p
            assert f.exists(), f
            if f.suffix == ".zarr":
                assert load_array(f).size > 0
    # no finished-looking result: no tables, no run.json; the half-written array is only a
    # hidden partial, never under its final name
    assert not (out / "tables").exists() and not (out / "run.json").exists()
    assert killed.parent == out / "work" / "II" / "warp" / "plain" and not killed.exists()
    assert list(killed.parent.glob(f".{killed.name}.partial-*"))

    code, _, err = _run(manifest, out, "--resume")
    assert code == 0, err
    assert not list(out.rglob(".*.partial-*"))
    _assert_same_tables(_tables(out), reference_run)

"""Output-folder safety (issue #20 items 1, 2, 4, 6, 12, 13): :class:`litomo.io.rundir.RunDir`
on its own, then the exact reproductions of the issue through ``litomo run``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from litomo.errors import InputFileError, LitomoError
from litomo.io.rundir import RunDir, check_path_component
from pipeline_helpers import cli, make_phantom, variant


def _tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` (except the marker folder) with its content."""
    return {p.relative_to(root).as_posix(): p.read_bytes().decode(errors="replace")
            for p in sorted(root.rglob("*")) if p.is_file() and ".litomo" not in p.parts}


def _a_run(out: Path, *, complete: bool = True) -> None:
    with RunDir.open(out, kind="run") as rd:
        rd.output("tables/states.csv").write_text("state\nI\n")
        (rd.work / "cache.bin").write_text("c")
        rd.output("volumes/I/li.ome.zarr").mkdir()
        rd.keep()
        if complete:
            rd.complete({"states": ["I"]})


# ----------------------------------------------------------------------- RunDir alone


def test_new_refuses_a_non_empty_folder(tmp_path):
    _a_run(tmp_path / "out")
    with pytest.raises(InputFileError, match="not empty .*--resume.*--force"):
        with RunDir.open(tmp_path / "out", kind="run"):
            pass
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("a")
    for mode in ("new", "force", "resume"):
        with pytest.raises(InputFileError, match="holds no earlier litomo run"):
            with RunDir.open(tmp_path / "mine", kind="run", mode=mode):
                pass
    assert _tree(tmp_path / "mine") == {"a.txt": "a"}
    assert not (tmp_path / "mine" / ".litomo").exists()


def test_force_deletes_only_owned_files_and_refuses_foreign_ones(tmp_path):
    out = tmp_path / "out"
    _a_run(out)
    (out / "tables" / "my_notes.txt").write_text("mine")
    with pytest.raises(InputFileError, match=r"holds files litomo did not write \(tables/my_notes\.txt\)"):
        with RunDir.open(out, kind="run", mode="force"):
            pass
    assert (out / "tables" / "my_notes.txt").read_text() == "mine" and (out / "run.json").is_file()
    (out / "tables" / "my_notes.txt").unlink()
    with RunDir.open(out, kind="run", mode="force") as rd:
        assert rd.owned == []
        assert sorted(p.name for p in out.iterdir()) == [".litomo"]


def test_resume_keeps_work_and_removes_other_outputs_completion_record_first(tmp_path):
    out = tmp_path / "out"
    _a_run(out)
    # leftovers of atomic writes cut short by a kill are litomo's and go too
    (out / "work" / ".x.zarr.partial-1234").mkdir()
    (out / "tables" / ".states.csv.partial-ab").write_text("half")
    with RunDir.open(out, kind="run", mode="resume") as rd:
        assert rd.owned == ["work"]
        assert _tree(out) == {"work/cache.bin": "c"}
    with pytest.raises(InputFileError, match="litomo run output, not a micro"):
        with RunDir.open(out, kind="micro", mode="resume"):
            pass


def test_early_error_leaves_no_folder_that_blocks_the_next_try(tmp_path):
    out = tmp_path / "deep" / "out"
    with pytest.raises(LitomoError, match="bad volume"):
        with RunDir.open(out, kind="run") as rd:
            rd.output("work/stages/x.json").write_text("{}")
            raise LitomoError("bad volume")
    assert not out.exists()
    # an empty folder the user made stays, empty
    (tmp_path / "empty").mkdir()
    with pytest.raises(LitomoError):
        with RunDir.open(tmp_path / "empty", kind="run") as rd:
            rd.output("tables/a.csv").write_text("a")
            raise LitomoError("bad")
    assert list((tmp_path / "empty").iterdir()) == []
    # once a stage finished (keep), a failure leaves the folder for --resume
    with pytest.raises(LitomoError):
        with RunDir.open(out, kind="run") as rd:
            rd.output("work/stages/x.json").write_text("{}")
            rd.keep()
            raise LitomoError("late failure")
    assert (out / "work" / "stages" / "x.json").is_file()
    with RunDir.open(out, kind="run", mode="resume") as rd:
        assert (rd.work / "stages" / "x.json").is_file()


def test_out_that_is_a_file_or_holds_inputs(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputFileError, match="--out .*f is an existing file"):
        with RunDir.open(tmp_path / "f", kind="micro"):
            pass
    with pytest.raises(InputFileError, match="--out .*f/sub: cannot create the folder \\(Not a directory\\)"):
        with RunDir.open(tmp_path / "f" / "sub", kind="micro"):
            pass
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "v.tif").write_text("v")
    with pytest.raises(InputFileError, match="contains input .*v.tif"):
        with RunDir.open(tmp_path / "in", kind="run", mode="force", inputs=[tmp_path / "in" / "v.tif"]):
            pass
    assert (tmp_path / "f").read_text() == "x"


def test_lock_refuses_a_second_command_on_the_same_folder(tmp_path):
    out = tmp_path / "out"
    with RunDir.open(out, kind="run") as rd:
        rd.output("tables/a.csv").write_text("a")
        rd.keep()
        with pytest.raises(InputFileError, match=f"in use by another litomo process \\(pid {os.getpid()}\\)"):
            with RunDir.open(out, kind="run", mode="force"):
                pass
        assert (out / "tables" / "a.csv").read_text() == "a"
    with RunDir.open(out, kind="run", mode="force"):  # released at exit
        pass


def test_update_takes_the_lock_and_never_overwrites_a_foreign_report(tmp_path):
    """`litomo report DIR` (RunDir.update): lock, marker required, only its own report/figures."""
    from litomo.report.html import rebuild_report

    out = tmp_path / "out"
    _a_run(out)
    with RunDir.open(out, kind="run", mode="resume") as rd:  # holds the lock
        rd.keep()
        with pytest.raises(InputFileError, match="in use by another litomo process"):
            rebuild_report(out)
    with pytest.raises(InputFileError, match="holds no litomo output"):
        rebuild_report(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my report")
    with pytest.raises(InputFileError, match="holds no litomo output"):
        rebuild_report(mine)
    assert (mine / "report.html").read_text() == "my report"
    (out / "report.html").write_text("not litomo's")  # a report litomo did not record
    with pytest.raises(InputFileError, match="was not written by litomo"):
        rebuild_report(out)
    assert (out / "report.html").read_text() == "not litomo's"
    (out / "report.html").unlink()
    assert rebuild_report(out, kind="limap") == out / "report.html"
    assert "report.html" in json.loads((out / ".litomo" / "owner.json").read_text())["owned"]


def test_run_layout_is_the_one_description_of_the_folder(tmp_path):
    from litomo.io.rundir import RunLayout

    with RunDir.open(tmp_path / "o", kind="run") as rd:
        lay = RunLayout(rd.root)
        assert rd.tables == lay.tables and rd.volumes("I") == lay.volumes("I")
        assert rd.report == lay.report and rd.work == lay.work and rd.figures == lay.figures
        assert lay.volume("I", "li") == rd.root / "volumes" / "I" / "li.ome.zarr"
        rd.output("volumes/II/li.ome.zarr").mkdir()
        rd.output("volumes/I/li.ome.zarr").mkdir()
        assert lay.state_folders() == ["I", "II"]
        with pytest.raises(LitomoError):
            lay.volumes("..")


def test_output_paths_and_state_names():
    for bad in ("..", ".", "", "I ", " I", "a/b", "a\\b", "a\0b", ".hidden", "tab\t"):
        with pytest.raises(LitomoError, match="not a safe folder name"):
            check_path_component(bad, "state name")
    assert check_path_component("state 3 (50% SOC)") == "state 3 (50% SOC)"


def test_output_refuses_paths_outside(tmp_path):
    with RunDir.open(tmp_path / "o", kind="run") as rd:
        for bad in ("../x", "/etc/passwd", ".litomo/owner.json", "a/../../b"):
            with pytest.raises(ValueError):
                rd.output(bad)
        with pytest.raises(LitomoError):
            rd.volumes("..")
        assert rd.volumes("I") == tmp_path / "o" / "volumes" / "I"


# ----------------------------------------------------------------------- issue #20 through `litomo run`


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """The 64^3 2-state phantom, unregistered (fast: these tests are about the folder)."""
    ph = make_phantom(tmp_path_factory)
    return variant(ph / "experiment.toml", tmp_path_factory.mktemp("rundir") / "noreg.toml", register=False)


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    import litomo.report.html as html

    monkeypatch.setattr(html, "build_report", lambda out, *a, **k: Path(out) / "report.html")


def _run(manifest: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    return cli(["run", str(manifest), "--out", str(out), "--scheduler", "synchronous", "-q", *flags])


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("litomo: error: "), err
    assert "Traceback" not in err and all(n in err for n in needles), err


def test_item1_force_never_deletes_a_folder_it_did_not_write(manifest, tmp_path):
    # mkdir -p F/work F/thesis; echo x > F/precious.txt; echo y > F/thesis/ch1.tex; run --out F --force
    f = tmp_path / "F"
    (f / "work").mkdir(parents=True)
    (f / "thesis").mkdir()
    (f / "precious.txt").write_text("x\n")
    (f / "thesis" / "ch1.tex").write_text("y\n")
    before = _tree(f)
    _one_line_error(*_run(manifest, f, "--force")[::2], "holds no earlier litomo run")
    assert _tree(f) == before and (f / "work").is_dir()
    # a real earlier run plus a user's file: --force deletes nothing and says which file
    g = tmp_path / "G"
    assert _run(manifest, g)[0] == 0
    (g / "precious.txt").write_text("x\n")
    before = _tree(g)
    _one_line_error(*_run(manifest, g, "--force")[::2], "did not write (precious.txt)")
    assert _tree(g) == before


def test_item2_resume_touches_only_litomos_files_and_drops_removed_states(manifest, tmp_path):
    from litomo.manifest import load_manifest, write_manifest
    from litomo.report import run_states

    # a folder with work/ plus a user's report.html and run.json (no run wrote it)
    f = tmp_path / "F"
    (f / "work").mkdir(parents=True)
    (f / "report.html").write_text("my report")
    (f / "run.json").write_text("{}")
    _one_line_error(*_run(manifest, f, "--resume")[::2], "holds no earlier litomo run")
    assert _tree(f) == {"report.html": "my report", "run.json": "{}"}
    # a resume with fewer states leaves none of the removed state's outputs behind
    out = tmp_path / "out"
    assert _run(manifest, out)[0] == 0
    assert run_states(out) == ["I", "II"]
    m = load_manifest(manifest)
    one = write_manifest(dataclasses.replace(m, states=m.states[:1]), tmp_path / "one.toml")
    code, _, err = _run(one, out, "--resume")
    assert code == 0, err
    assert run_states(out) == ["I"]
    assert not (out / "volumes" / "II").exists() and not (out / "work" / "II").exists()
    assert not [p for p in out.rglob("*") if p.name == "II"]
    assert json.loads((out / "run.json").read_text())["states"] == ["I"]


_HOLDER = r"""
import sys, time
from pathlib import Path
from litomo.io.rundir import RunDir
with RunDir.open(sys.argv[1], kind="run") as rd:
    rd.output("tables/states.csv").write_text("state\nI\n")
    rd.keep()
    print("READY", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
    rd.complete({"states": ["I"]})
"""


def test_item4_a_second_run_is_refused_while_the_first_runs(manifest, tmp_path):
    out, release = tmp_path / "out", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(release)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "READY"
        for flags in (["--force"], ["--resume"], []):
            code, _, err = _run(manifest, out, *flags)
            _one_line_error(code, err, "in use by another litomo process")
        assert (out / "tables" / "states.csv").read_text() == "state\nI\n"
    finally:
        release.touch()
        assert first.wait(timeout=60) == 0
    assert json.loads((out / "run.json").read_text()) == {"states": ["I"]}


def test_item13_the_completion_record_is_written_last(manifest, tmp_path, monkeypatch):
    import litomo.report.html as html

    seen = {}

    def report(out, *a, run=None, **k):
        seen["run.json existed"] = (Path(out) / "run.json").exists()
        seen["stages in record"] = [r["stage"] for r in run["stages"]][-2:]
        raise RuntimeError("killed while writing the report")

    monkeypatch.setattr(html, "build_report", report)
    out = tmp_path / "out"
    from litomo.workflows.limap import RunOptions, run_experiment

    with pytest.raises(RuntimeError, match="killed while writing the report"):
        run_experiment(manifest, out, RunOptions(scheduler="synchronous"))
    assert seen == {"run.json existed": False, "stages in record": ["tracking", "outputs"]}
    # the interrupted run does not look finished, and its finished stages are kept for --resume
    assert not (out / "run.json").exists() and (out / "work" / "II" / "statistics.json").is_file()
    monkeypatch.setattr(html, "build_report", lambda out, *a, **k: Path(out) / "report.html")
    code, _, err = _run(manifest, out, "--resume")
    assert code == 0, err
    assert (out / "run.json").is_file()


def test_item6_and_12_state_names_and_out_that_is_a_file(manifest, tmp_path):
    text = manifest.read_text()
    for bad, needle in (("..", "not a safe folder name"), ("I ", "duplicate state name 'I'"),
                        ("a\\u0000b", "not a safe folder name"), ("x/y", "path separators")):
        m = tmp_path / "bad.toml"
        m.write_text(text.replace('name = "II"', f'name = "{bad}"'))
        _one_line_error(*_run(m, tmp_path / "o")[::2], "states[1].name", needle)
        assert not (tmp_path / "o").exists()
    (tmp_path / "afile").write_text("keep")
    _one_line_error(*_run(manifest, tmp_path / "afile")[::2], "is an existing file")
    assert (tmp_path / "afile").read_text() == "keep"


def test_demo_data_folder_follows_the_rules(tmp_path):
    """`litomo demo` writes OUT/data through RunDir: a user's files there are never replaced."""
    data = tmp_path / "d" / "data"
    data.mkdir(parents=True)
    (data / "experiment.toml").write_text("mine")
    for extra in ([], ["--force"]):
        code, _, err = cli(["demo", "--out", str(tmp_path / "d"), "--size", "24", "--states", "1", "-q", *extra])
        assert code == 2 and "holds no earlier litomo run" in err and "Traceback" not in err
    assert (data / "experiment.toml").read_text() == "mine"
    assert not (tmp_path / "d" / "results").exists()


def test_deadangle_out_follows_the_rules(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    code, _, err = cli(["deadangle", "--size", "16", "--ranges", "180", "--out", str(tmp_path / "o"), "-q"])
    assert code == 2 and "holds no earlier litomo run" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["notes.txt"]

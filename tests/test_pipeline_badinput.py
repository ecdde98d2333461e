"""Bad input to the Li-mapping pipeline: a clear LitomoError (CLI: one line, exit 2) or a
warning with the affected fraction; never a traceback or a silent NaN table."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from litomo.errors import DataError, InputFileError, LitomoError, ManifestError
from pipeline_helpers import cli, make_phantom


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return make_phantom(tmp_path_factory)


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    import litomo.report.html as html

    monkeypatch.setattr(html, "build_report", lambda out, *a, **k: None)


@pytest.fixture()
def data(phantom, tmp_path) -> Path:
    """A writable copy of the phantom's data (no truth) with registration switched off."""
    from litomo.manifest import load_manifest, write_manifest

    d = tmp_path / "data"
    shutil.copytree(phantom, d, ignore=shutil.ignore_patterns("truth"))
    m = load_manifest(d / "experiment.toml")
    write_manifest(dataclasses.replace(m, processing=dataclasses.replace(m.processing, register=False)),
                   d / "experiment.toml")
    return d


def _edit_toml(d: Path, pattern: str, repl: str) -> None:
    toml = d / "experiment.toml"
    text, n = re.subn(pattern, repl, toml.read_text(), flags=re.M)
    assert n >= 1, pattern
    toml.write_text(text)


def _run(d: Path, out: Path):
    from litomo.workflows.limap import RunOptions, run_experiment

    return run_experiment(d / "experiment.toml", out, RunOptions(scheduler="synchronous"))


def _shape_mismatch(d: Path) -> None:
    a = tifffile.imread(d / "II" / "edge.tif")
    tifffile.imwrite(d / "II" / "edge.tif", a[:60])


def _all_zero(d: Path) -> None:
    a = tifffile.imread(d / "I" / "post_edge.tif")
    tifffile.imwrite(d / "I" / "post_edge.tif", np.zeros_like(a))


def _truncated(d: Path) -> None:
    p = d / "II" / "edge.tif"
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _refs_too_short(d: Path) -> None:
    _edit_toml(d, r"^post_edge_ev = .*$", "post_edge_ev = 9100.0")


def _edge_outside(d: Path) -> None:
    _edit_toml(d, r"^edge_ev = .*$", "edge_ev = 8500.0")


def _duplicate_state(d: Path) -> None:
    _edit_toml(d, r'^name = "II"$', 'name = "I"')


CASES = {
    "shape-mismatch": (_shape_mismatch, DataError, r"state 'II'.*differ in shape.*\(60, 64, 64\)"),
    "all-zero": (_all_zero, DataError, r"state I post_edge: the finite voxels are all zero"),
    "truncated-tiff": (_truncated, InputFileError, r"II/edge\.tif.*truncated"),
    "refs-do-not-cover": (_refs_too_short, DataError,
                          r"reference spectrum .*refs/pristine\.csv covers [\d.]+-9000\.00 eV but "
                          r"xanes\.post_edge_ev is 9100\.00 eV"),
    "edge-outside": (_edge_outside, ManifestError, r"experiment\.toml: field 'xanes\.edge_ev'.*pre_edge_ev < edge_ev"),
    "duplicate-state": (_duplicate_state, ManifestError, r"field 'states\[1\]\.name'.*duplicate state name 'I'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error(case, data, tmp_path):
    spoil, error, message = CASES[case]
    spoil(data)
    with pytest.raises(error, match=message):
        _run(data, tmp_path / "out")
    # no table that could be mistaken for a result, and no output folder that would block the
    # next try: the up-front checks run before the folder is made, and a run that fails before
    # it finished a stage removes the folder it made (issue #20 item 12)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["shape-mismatch", "refs-do-not-cover", "duplicate-state"])
def test_bad_input_cli_one_line_exit_2(case, data, tmp_path):
    spoil, _, message = CASES[case]
    spoil(data)
    code, _, err = cli(["run", str(data / "experiment.toml"), "--out", str(tmp_path / "out"),
                         "--scheduler", "synchronous", "-q"])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("litomo: error: ") and "Traceback" not in err
    assert re.search(message, err)


def test_constant_volume_is_refused(data, tmp_path):
    a = tifffile.imread(data / "I" / "pre_edge.tif")
    tifffile.imwrite(data / "I" / "pre_edge.tif", np.full_like(a, 0.5))
    with pytest.raises(DataError, match="state I pre_edge: the volume is constant"):
        _run(data, tmp_path / "out")


def test_nan_voxels_warn_with_fraction_and_run_continues(data, tmp_path):
    a = tifffile.imread(data / "I" / "pre_edge.tif")
    a[:8] = np.nan  # z-slices 0-7 fill bin 0 and touch bin 1 (slices 7-13)
    a[40, 40, 40] = np.inf  # one voxel of another bin (z 35-41, y 35-41, x 35-41)
    tifffile.imwrite(data / "I" / "pre_edge.tif", a)
    res = _run(data, tmp_path / "out")
    nb = 64 // 7
    # the raw non-finite fraction, and the bins with no finite voxel left (issue #20 item 8:
    # a bin averages its finite voxels, so bin 1 and the inf voxel's bin keep a value)
    raw = [w for w in res.warnings if "of the voxels are NaN/inf" in w]
    assert len(raw) == 1 and raw[0].startswith("state I pre_edge")
    frac = float(re.search(r"([\d.]+)% of the voxels", raw[0]).group(1)) / 100
    assert frac == pytest.approx((8 * 64 * 64 + 1) / 64**3, abs=1e-4)
    empty = [w for w in res.warnings if "hold no finite voxel" in w]
    assert len(empty) == 1 and empty[0].startswith("state I pre_edge")
    frac = float(re.search(r"([\d.]+)% of the bins", empty[0]).group(1)) / 100
    assert frac == pytest.approx(nb * nb / nb**3, abs=1e-4)
    states = pd.read_csv(tmp_path / "out" / "tables" / "states.csv")
    cols = ["mean_li", "std_li", "frac_li_rich", "frac_li_moderate", "frac_li_poor", "total_li_um3"]
    assert states[cols].notna().all().all()
    # the empty bins are excluded from the map, not given a made-up value; the others are mapped
    from litomo.io import read_ome_zarr

    li = read_ome_zarr(tmp_path / "out" / "volumes" / "I" / "li.ome.zarr").numpy()
    assert np.isnan(li[0]).all() and np.isfinite(li[1]).any()


def test_bad_run_options(data, tmp_path):
    from litomo.workflows.limap import RunOptions, run_experiment

    with pytest.raises(LitomoError, match="exclude each other"):
        run_experiment(data / "experiment.toml", tmp_path / "o", RunOptions(force=True, resume=True))
    with pytest.raises(LitomoError, match="number of dask workers must be >= 1"):
        run_experiment(data / "experiment.toml", tmp_path / "o2", RunOptions(n_workers=0))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LitomoError, match="is an existing file"):
        run_experiment(data / "experiment.toml", tmp_path / "afile", RunOptions(scheduler="synchronous"))
    # --out holding a reference spectrum is refused too
    with pytest.raises(LitomoError, match="contains input .*pristine.csv"):
        run_experiment(data / "experiment.toml", data / "refs", RunOptions(scheduler="synchronous", force=True))

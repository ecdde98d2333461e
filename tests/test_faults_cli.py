"""Issue #20 "done when": no command shows a Python traceback for bad input or a failing
environment; each gives one line on stderr and exit code 2 (items 9, 11, 12 and the CLI sweep).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from litomo.cli import app, main
from litomo.io import write_ome_zarr, write_tiff
from litomo.volume import Volume

NREL = "micro/nrel_nmc1cal_generatedCBD_bridge_251x301x301.tif"


def _fails(capsys, args: list[str]) -> str:
    """Run ``litomo ARGS`` in-process; assert exit 2, no traceback, one error line; its text."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("litomo: error: ") or "Error" in err, err
    return last


@pytest.fixture
def junk(tmp_path: Path) -> dict[str, Path]:
    """Broken inputs of every kind a command takes."""
    rng = np.random.default_rng(0)
    files = {
        "tif": tmp_path / "bad.tif", "xrm": tmp_path / "bad.xrm", "csv": tmp_path / "bad.csv",
        "toml": tmp_path / "bad.toml", "file": tmp_path / "afile", "dir": tmp_path / "emptydir",
    }
    files["tif"].write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    files["xrm"].write_bytes(files["tif"].read_bytes())
    files["csv"].write_text("hello world\n")
    files["toml"].write_text("[sample\nname=")
    files["file"].write_text("x")
    files["dir"].mkdir()
    return files


def _labels(tmp_path: Path) -> Path:
    lab = np.ones((8, 8, 8), np.uint8)
    lab[:, 2:5, 2:5] = 0  # a straight pore channel along z
    return write_tiff(tmp_path / "labels.tif", Volume(lab, voxel_size_um=0.5))


# one broken invocation per command; `version` takes no input
BROKEN = {
    "info": lambda j, t: ["info", j["tif"]],
    "spectrum": lambda j, t: ["spectrum", j["csv"]],
    "advise-energies": lambda j, t: ["advise-energies", j["toml"]],
    "run": lambda j, t: ["run", j["toml"], "--out", t / "o1"],
    "demo": lambda j, t: ["demo", "--out", j["file"]],
    "damage": lambda j, t: ["damage", j["tif"], "--voxel-size-um", "1", "--out", t / "o3"],
    "deadangle": lambda j, t: ["deadangle", "--ranges", "banana", "--out", t / "o4"],
    "map2d": lambda j, t: ["map2d", "--sample", j["xrm"], "--flat", j["xrm"], "--out", t / "o5"],
    "micro": lambda j, t: ["micro", j["tif"], "--voxel-size-um", "1", "--out", t / "o6"],
    "report": lambda j, t: ["report", j["dir"]],
    "segment": lambda j, t: ["segment", j["tif"], "--method", "otsu", "--out", t / "o7"],
    "tortuosity": lambda j, t: ["tortuosity", j["tif"]],
    "view": lambda j, t: ["view", j["dir"], "--export-vti"],
    "phantom": lambda j, t: ["phantom", "operando", "--out", j["file"]],
    "reconstruct": lambda j, t: ["reconstruct", j["tif"], "--out", t / "o8"],
    "phase": lambda j, t: ["phase", j["tif"], "--out", t / "o9"],
}


@pytest.mark.parametrize("command", sorted(BROKEN))
def test_every_command_fails_in_one_line(capsys, tmp_path, junk, command):
    _fails(capsys, BROKEN[command](junk, tmp_path))


def test_the_sweep_covers_every_command():
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    assert names - {"version"} <= set(BROKEN), names - set(BROKEN)


def test_memory_limit_banana(capsys, tmp_path, junk):
    line = _fails(capsys, ["run", junk["toml"], "--out", tmp_path / "o", "--memory-limit", "banana"])
    assert "--memory-limit 'banana'" in line


@pytest.mark.timeout(60)
def test_rtol_negative_is_refused_not_run_for_ever(capsys, tmp_path):
    assert "--rtol must be between 0 and 1" in _fails(capsys, ["tortuosity", _labels(tmp_path), "--rtol", "-1"])


def test_flux_map_in_missing_folder_creates_nothing(capsys, tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "f.tif"
    line = _fails(capsys, ["tortuosity", _labels(tmp_path), "--flux-map", target])
    assert "does not exist" in line and not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize(("code", "text"), [(errno.ENOSPC, "No space left on device"),
                                            (errno.EROFS, "Read-only file system")])
def test_disk_full_and_read_only_output(capsys, tmp_path, monkeypatch, code, text):
    labels = _labels(tmp_path)
    out = tmp_path / "flux.tif"

    def fail(*args, **kwargs):
        raise OSError(code, text, str(out))

    # the write itself fails the way the kernel reports it
    monkeypatch.setattr(tifffile.TiffWriter, "write", fail)
    line = _fails(capsys, ["tortuosity", labels, "--flux-map", out])
    assert text in line and str(out) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]  # no partial file left


def test_info_on_store_with_missing_chunk(capsys, tmp_path):
    store = tmp_path / "v.ome.zarr"
    write_ome_zarr(store, Volume(np.ones((8, 8, 8), np.float32), voxel_size_um=0.5), chunks=(4, 4, 4))
    next(f for f in (store / "0" / "c").rglob("*") if f.is_file()).unlink()
    assert "1 of 8 chunks are missing" in _fails(capsys, ["info", store])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "command"), [("v.tif", "info"), ("v.xrm", "info"), ("s.xdi", "spectrum")])
def test_fifo_blocks_nothing(capsys, tmp_path, name, command):
    fifo = tmp_path / name
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    assert "FIFO" in _fails(capsys, [command, fifo])


def test_info_on_complex_volume(capsys, tmp_path):
    p = tmp_path / "c.tif"
    tifffile.imwrite(p, np.ones((2, 3, 4), np.complex64), photometric="minisblack")
    assert "complex" in _fails(capsys, ["info", p])


def test_nrel_tiff_needs_voxel_size(capsys, shared_data):
    # the 72 dpi tag used to give 352.78 um voxels; now one line asks for the flag
    line = _fails(capsys, ["tortuosity", shared_data / NREL])
    assert "records no voxel size" in line and "--voxel-size-um" in line
    with pytest.raises(SystemExit) as exc:
        main(["info", str(shared_data / NREL), "--json"])
    assert exc.value.code in (0, None)
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["voxel_size_um_zyx"] is None and info["extent_um_zyx"] is None
    assert "--voxel-size-um" in info["voxel_size_note"]


def test_phantom_writes_per_axis_bin(capsys, tmp_path):
    # issue #21 item 6: per-axis factors wherever a factor is given
    from litomo.manifest import load_manifest

    with pytest.raises(SystemExit) as exc:
        main(["phantom", "operando", "--out", str(tmp_path / "ph"), "--size", "24", "--states", "1",
              "--bin", "1,4,4", "-q"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    assert load_manifest(tmp_path / "ph" / "experiment.toml").processing.bin == (1, 4, 4)
    assert "--bin" in _fails(capsys, ["phantom", "operando", "--out", tmp_path / "q", "--bin", "1,x,4"])

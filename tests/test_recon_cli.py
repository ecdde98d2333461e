"""``litomo reconstruct`` end to end and its bad-input handling (one-line errors, exit code 2,
inputs untouched, no partial result presented as complete)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from litomo.errors import InputFileError
from litomo.io.projections import ProjectionSeries, check_series, read_projections
from recon_helpers import sphere_volume, txm_series


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "litomo", "reconstruct", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli_inprocess(capsys, *args):
    """The CLI entry point in this process (no interpreter start-up per bad-input case)."""
    from litomo.cli import main

    try:
        main(["reconstruct", *map(str, args)])
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return _Result(rc, cap.out, cap.err)


def _write_dxchange(path, series, *, theta=None):
    with h5py.File(path, "w") as f:
        f["exchange/data"] = series.data
        f["exchange/data_white"] = series.flats
        f["exchange/data_dark"] = series.darks
        f["exchange/theta"] = series.angles_deg if theta is None else theta
    return path


@pytest.fixture(scope="module")
def small_series():
    series, _, _ = txm_series(sphere_volume(n=32, nz=8), n_views=91, span_deg=180.0, jitter_px=(0.0, 0.0))
    return series


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_end_to_end_and_resume(tmp_path, small_series):
    src = _write_dxchange(tmp_path / "scan.h5", small_series)
    before = _sha(src)
    out = tmp_path / "out"
    r = _cli(src, "--out", out, "--center", "15.5", "--quiet", "--json", "--scheduler", "synchronous")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["status"] == "complete" and rec["shape_zyx"] == [8, 33, 33]
    assert (out / "volume.ome.zarr").is_dir() and (out / "run.json").is_file()
    owner = json.loads((out / ".litomo" / "owner.json").read_text())
    assert owner["kind"] == "reconstruct" and {"volume.ome.zarr", "figures", "run.json"} <= set(owner["owned"])
    assert {"figures/sinogram_alignment.png", "figures/orthoslices.png"} <= set(rec["figures"])
    assert not (out / "work").exists()
    assert _sha(src) == before
    # a second run into the same folder needs --resume; with it, nothing is recomputed
    r2 = _cli(src, "--out", out, "--center", "15.5", "--quiet")
    assert r2.returncode == 2 and "--resume" in r2.stderr and len(r2.stderr.strip().splitlines()) == 1
    r3 = _cli(src, "--out", out, "--center", "15.5", "--quiet", "--resume")
    assert r3.returncode == 0 and "already complete" in r3.stdout, r3.stderr
    from litomo.io.omezarr import read_ome_zarr

    vol = np.asarray(read_ome_zarr(out / "volume.ome.zarr").array)
    assert vol.shape == (8, 33, 33) and float(np.nanmax(vol)) > 0.01
    assert np.isnan(vol[:, 0, 0]).all() and np.isfinite(vol[:, 16]).all()  # outside the field of view: missing


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("angles_count", "--angles"),
        ("swapped", "swapped"),
        ("zero_frame", "all zero"),
        ("saturated", "saturated"),
        ("non_monotonic", "not monotonic"),
        ("center_outside", "--center"),
        ("unknown_method", "--method"),
        ("out_not_empty", "--out"),
        ("out_is_file", "--out"),
        ("truncated_txrm", "truncated"),
        ("missing", "not found"),
    ],
)
def test_bad_input_one_line(tmp_path, small_series, shared_data, capsys, case, needle):
    s = small_series
    data, flats, darks, theta = s.data.copy(), s.flats, s.darks, s.angles_deg.copy()
    args: list = ["--center", "15.5"]
    out = tmp_path / "out"
    if case == "swapped":
        flats, darks = darks, flats
    elif case == "zero_frame":
        data[5] = 0
    elif case == "saturated":
        data = np.full(data.shape, 65535, np.uint16)
    elif case == "non_monotonic":
        theta[[10, 11]] = theta[[11, 10]]
    elif case == "center_outside":
        args = ["--center", "40"]
    elif case == "unknown_method":
        args += ["--method", "art"]
    elif case == "angles_count":
        (tmp_path / "angles.txt").write_text("\n".join(str(a) for a in theta[:-3]))
        args += ["--angles", tmp_path / "angles.txt"]
    elif case == "out_not_empty":
        out.mkdir()
        (out / "precious.txt").write_text("mine")
    elif case == "out_is_file":
        out.write_text("mine")
    series = ProjectionSeries(data, flats, darks, theta)
    src = _write_dxchange(tmp_path / "scan.h5", series)
    if case == "truncated_txrm":
        frame = sorted((shared_data / "xanes" / "xanespy" / "txm-data-aps").glob("fov*.xrm"))[0]
        src = tmp_path / "scan.txrm"
        src.write_bytes(frame.read_bytes()[: 600_000])
    elif case == "missing":
        src = tmp_path / "nothing.h5"
    before = _sha(src) if src.exists() else None
    r = _cli_inprocess(capsys, src, "--out", out, "--quiet", *args)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("litomo: error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    if before is not None:
        assert _sha(src) == before
    if case in ("out_not_empty", "out_is_file"):
        assert (out / "precious.txt").read_text() == "mine" if out.is_dir() else out.read_text() == "mine"
    elif out.exists():
        assert not (out / "run.json").exists()


def test_energy_mismatch(small_series):
    with pytest.raises(InputFileError, match="does not match the manifest"):
        check_series(small_series, expected_energy_ev=8250.0)
    assert check_series(small_series, expected_energy_ev=8353.5) is small_series


def test_xrm_folder_reader(tmp_path, shared_data):
    src = shared_data / "xanes" / "xanespy" / "txm-data-aps"
    folder = tmp_path / "frames"
    folder.mkdir()
    for f in list(src.glob("fov07_*.xrm")) + list(src.glob("ref_xanessoc01_*.xrm")):
        shutil.copy(f, folder / f.name)
    s = read_projections(folder, angles=[0.0, 1.0, 2.0])
    assert s.shape == (3, 1024, 1024) and s.flats.shape == (2, 1024, 1024) and len(s.darks) == 0
    assert s.pixel_size_um == pytest.approx(0.0389, abs=1e-4)
    # without --angles the frames' own ImageInfo/Angles are read: all equal here, so not a tomography series
    with pytest.raises(InputFileError, match="not monotonic"):
        read_projections(folder)


def test_manifest_section():
    from litomo.errors import ManifestError
    from litomo.workflows.reconstruct import ReconstructionConfig

    cfg = ReconstructionConfig.from_manifest({"method": "sirt", "center_px": "auto", "align": "reprojection",
                                              "rings": "sorting", "n_iter": 50}, "exp.toml")
    assert cfg.method == "sirt" and cfg.center_px is None and cfg.align == "reprojection" and cfg.n_iter == 50
    with pytest.raises(ManifestError, match=r"exp.toml: field 'reconstruction.centre'"):
        ReconstructionConfig.from_manifest({"centre": 3}, "exp.toml")
    with pytest.raises(ManifestError, match="--align"):
        ReconstructionConfig.from_manifest({"align": "magic"}, "exp.toml")
    with pytest.raises(ManifestError, match="must be a number"):
        ReconstructionConfig.from_manifest({"center_px": "middle"}, "exp.toml")


def test_interrupted_run_resumes_by_slab(tmp_path, small_series, monkeypatch):
    import litomo.workflows.reconstruct as wf

    src = _write_dxchange(tmp_path / "scan.h5", small_series)
    cfg = wf.ReconstructionConfig(center_px=15.5, slab_rows=2)
    series = read_projections(src)

    class Stop(Exception):
        pass

    def stop_after_first_batch(done, total, desc):
        if desc.startswith("reconstructing") and done < total:
            raise Stop

    out = tmp_path / "out"
    with pytest.raises(Stop):
        wf.run_reconstruction(src, out, cfg, series=series, scheduler="synchronous", progress=stop_after_first_batch)
    assert not (out / "run.json").exists() and not (out / "volume.ome.zarr").exists()
    done_before = json.loads((out / wf.SLAB_RECORD).read_text())["done"]
    assert 0 < len(done_before) < 4
    calls = []
    real = wf.reconstruct_slab
    monkeypatch.setattr(wf, "reconstruct_slab", lambda p, *a, **k: calls.append(p.shape[1]) or real(p, *a, **k))
    res, record = wf.run_reconstruction(src, out, cfg, series=series, mode="resume", scheduler="synchronous")
    assert len(calls) == 4 - len(done_before)  # only the missing slabs were computed
    fresh = wf.reconstruct_series(series, cfg)
    np.testing.assert_allclose(res.volume, fresh.volume, atol=1e-6)
    assert record["status"] == "complete" and (out / "run.json").is_file() and not (out / "work").exists()


def test_tiff_stack_reader_with_angle_list(tmp_path, small_series):
    import tifffile

    tifffile.imwrite(tmp_path / "proj.tif", small_series.data)
    with pytest.raises(InputFileError, match="--angles"):
        read_projections(tmp_path / "proj.tif")
    s = read_projections(tmp_path / "proj.tif", angles=small_series.angles_deg)
    np.testing.assert_array_equal(s.data, small_series.data)
    np.testing.assert_allclose(s.angles_deg, small_series.angles_deg)


def test_dxchange_energy_is_read_and_checked(tmp_path, small_series):
    src = _write_dxchange(tmp_path / "scan.h5", small_series)
    with h5py.File(src, "a") as f:
        f["measurement/instrument/monochromator/energy"] = 8.3435
        f["measurement/instrument/monochromator/energy"].attrs["units"] = "keV"
    s = read_projections(src)
    assert s.energy_ev == pytest.approx(8343.5)
    with pytest.raises(InputFileError, match="does not match the manifest"):
        check_series(s, expected_energy_ev=8353.0)

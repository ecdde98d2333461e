"""`litomo phase` inputs: ESRF EDF scan folders and `litomo reconstruct`'s projection files (DXchange
HDF5 per distance) give the same volume as litomo's HDF5 layout of the same data; bad input one-liners."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from litomo.cli import main
from litomo.errors import DataError, InputFileError
from litomo.holo import write_holo_hdf5
from litomo.holo.io import read_edf_distances
from litomo.io.edf import read_edf, write_edf


def _write_folder(folder, data, flats, darks, *, info=True, n_extra=0):
    """One ESRF-style scan folder: projections, refHST flats, darks, .info (+ reference views after the scan)."""
    folder.mkdir(parents=True)
    for i, img in enumerate(data):
        write_edf(folder / f"holo_1_{i:04d}.edf", img.astype(np.uint16), {"SRCUR": "200"})
    for i in range(n_extra):  # ESRF scans append a few views at fixed angles after TOMO_N
        write_edf(folder / f"holo_1_{len(data) + i:04d}.edf", data[0].astype(np.uint16))
    for i, img in enumerate(flats):
        write_edf(folder / f"refHST{i * 100:04d}.edf", img.astype(np.uint16))
    for i, img in enumerate(darks):
        write_edf(folder / f"dark{i:04d}.edf", img.astype(np.uint16))
    if info:
        (folder / "holo_1_.info").write_text(f"Energy= 29.6\nTOMO_N= {len(data)}\nScanRange= 180\n")
    return folder


def _write_dxchange(path, data, flats, darks, angles_deg):
    """A Data Exchange file as `litomo reconstruct` reads it (energy recorded in keV)."""
    import h5py

    with h5py.File(path, "w") as f:
        f["exchange/data"] = data.astype(np.uint16)
        f["exchange/data_white"] = flats.astype(np.uint16)
        f["exchange/data_dark"] = darks.astype(np.uint16)
        f["exchange/theta"] = np.asarray(angles_deg, float)
        f["measurement/instrument/monochromator/energy"] = 29.6
    return path


def _scan(rng, n_angles=4, shape=(16, 16), n_dist=2):
    data = rng.poisson(800.0, (n_dist, n_angles, *shape)).astype(np.float32)
    flats = rng.poisson(1000.0, (n_dist, 3, *shape)).astype(np.float32)
    darks = np.full((n_dist, 2, *shape), 100.0, np.float32)
    return data, flats, darks


def test_edf_round_trip_keeps_values_and_header(tmp_path):
    img = np.arange(20, dtype=np.uint16).reshape(4, 5)
    back, hdr = read_edf(write_edf(tmp_path / "a.edf", img, {"motor_pos": "1.5"}))
    assert back.dtype == np.uint16 and np.array_equal(back, img)
    assert hdr["motor_pos"] == "1.5"


def test_edf_folders_equal_hdf5(tmp_path):
    data, flats, darks = _scan(np.random.default_rng(0))
    folders = [_write_folder(tmp_path / f"d{j}", data[j], flats[j], darks[j], n_extra=2 * j) for j in range(2)]
    edf = read_edf_distances(folders)
    assert edf.n_distances == 2 and edf.image_shape == (16, 16)
    assert edf.angles_deg.tolist() == [0.0, 45.0, 90.0, 135.0]  # the extra views of d1 are not projections
    h5 = write_holo_hdf5(tmp_path / "h.h5", list(data), list(flats), edf.angles_deg, darks=list(darks))
    from litomo.holo import read_holo_hdf5

    ref = read_holo_hdf5(h5)
    for i in range(4):
        for a, b in zip(edf.intensities(i), ref.intensities(i), strict=True):
            assert np.array_equal(a, b)


def _truncate(path):
    b = path.read_bytes()
    path.write_bytes(b[:-100])


@pytest.mark.parametrize(
    ("damage", "error", "needle"),
    [
        (lambda d: (d / "holo_1_.info").unlink(), InputFileError, "no .info file"),
        (lambda d: [p.unlink() for p in d.glob("refHST*")], InputFileError, "missing flats"),
        (lambda d: (d / "holo_1_0000.edf").write_text("not an EDF"), InputFileError, "not a readable EDF"),
        (lambda d: _truncate(d / "refHST0000.edf"), InputFileError, "truncated"),
        (lambda d: (d / "holo_1_.info").write_text("TOMO_N= 9\nScanRange= 180\n"), InputFileError, "TOMO_N = 9"),
        (lambda d: [p.unlink() for p in d.glob("holo_1_*.edf")], InputFileError, "no EDF projections"),
        (lambda d: [write_edf(p, np.ones((16, 18), np.uint16)) for p in d.glob("refHST*")], DataError,
         "do not match"),
    ],
)
def test_edf_bad_input_one_line(tmp_path, damage, error, needle):
    data, flats, darks = _scan(np.random.default_rng(1))
    folders = [_write_folder(tmp_path / f"d{j}", data[j], flats[j], darks[j]) for j in range(2)]
    damage(folders[1])
    with pytest.raises(error, match=needle) as info:
        read_edf_distances(folders)
    assert "\n" not in str(info.value)


def test_projection_of_another_size_is_an_error(tmp_path):
    data, flats, darks = _scan(np.random.default_rng(2))
    folders = [_write_folder(tmp_path / f"d{j}", data[j], flats[j], darks[j]) for j in range(2)]
    write_edf(folders[0] / "holo_1_0002.edf", np.ones((16, 18), np.uint16))
    scan = read_edf_distances(folders)  # projections are read lazily
    with pytest.raises(DataError, match="holo_1_0002.edf is"):
        scan.intensities(2)


def test_cli_edf_folders_same_volume_as_hdf5(tmp_path, capsys):
    from holo_forward import holograms, projected_phase

    n, n_det, e, z1, z12, vox = 12, 24, 29.6, (5.0, 6.0), 100.0, 0.4
    zz, yy, xx = np.mgrid[0:n, 0:n, 0:n] - (n - 1) / 2
    lab = np.where(zz**2 + yy**2 + xx**2 < 5**2, 85, 0).astype(np.uint8)
    ang = np.linspace(0, 180, 24, endpoint=False)
    phi, att = projected_phase(lab, ang, n_det, vox, e)
    data, flats, darks = holograms(phi, att, energy_kev=e, z1_mm=z1, z12_mm=z12, voxel_um=vox,
                                   shifts_px=[(0, 0), (0.5, -0.5)], rng=np.random.default_rng(0), field=64)
    folders = [_write_folder(tmp_path / f"d{j}", data[j], flats[j], darks[j]) for j in range(2)]
    h5 = write_holo_hdf5(tmp_path / "h.h5", list(data), list(flats), ang, darks=list(darks))
    dx = [_write_dxchange(tmp_path / f"dx{j}.h5", data[j], flats[j], darks[j], ang) for j in range(2)]
    geo = ["--z1-mm", "5,6", "--z12-mm", "100", "--pixel-um", str(vox * z12 / z1[0])]
    e_opt = ["--energy-kev", "29.6"]
    # the DXchange files record the energy: no --energy-kev for them
    for src, out, extra in ((",".join(map(str, folders)), "edf", e_opt), (str(h5), "h5", e_opt),
                            (",".join(map(str, dx)), "dx", [])):
        with pytest.raises(SystemExit) as exc:
            main(["phase", src, "--out", str(tmp_path / out), "--quiet", *extra, *geo])
        assert exc.value.code == 0
    a, b, c = (tifffile.imread(tmp_path / o / "volume.tif") for o in ("edf", "h5", "dx"))
    assert a.shape == b.shape and np.array_equal(a, b)  # EDF holds the counts as uint16, exactly
    assert np.array_equal(b, c)
    capsys.readouterr()
    (folders[1] / "holo_1_.info").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["phase", ",".join(map(str, folders)), "--out", str(tmp_path / "bad"), "--quiet", *e_opt, *geo])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and ".info" in err
    assert not (tmp_path / "bad").exists()

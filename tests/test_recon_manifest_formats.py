"""``litomo run`` manifests whose states are ``.xrm`` folders or TIFF stacks + an angle list (issue 14).

One raw series (a sphere phantom projected by astra, Poisson-noisy) is stored three ways: a folder
of Xradia ``.xrm`` frames (real APS 32-ID-C frames from the test data with their image, angle and
energy streams overwritten in place by olefile), a TIFF stack of transmission with
``[reconstruction] angles``, and DXchange HDF5. The manifest check must read all three and give
the same projections and angles (truth: the written arrays).
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from litomo.errors import LitomoError
from pipeline_helpers import cli
from recon_helpers import sphere_volume, txm_series

ENERGIES = {"pre_edge": 8330.0, "edge": 8345.0, "post_edge": 8430.0}
N_VIEWS = 13


def _patch_xrm(template, out, frame: np.ndarray, angle_deg: float, energy_ev: float) -> None:
    """A copy of a real .xrm frame holding ``frame`` (uint16), its angle and energy."""
    import olefile

    shutil.copyfile(template, out)
    out.chmod(0o644)
    with olefile.OleFileIO(str(out), write_mode=True) as ole:
        img = ole.openstream("ImageData1/Image1").read()
        raw = np.ascontiguousarray(frame, "<u2").tobytes()
        ole.write_stream("ImageData1/Image1", raw + img[len(raw):])
        ole.write_stream("ImageInfo/ImageWidth", np.uint32(frame.shape[1]).tobytes())
        ole.write_stream("ImageInfo/ImageHeight", np.uint32(frame.shape[0]).tobytes())
        ole.write_stream("ImageInfo/Angles", np.float32(angle_deg).tobytes())
        ole.write_stream("ImageInfo/Energy", np.float32(energy_ev).tobytes())


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, shared_data):
    from litomo.io import write_tiff
    from litomo.phantom.writer import write_operando_phantom
    from litomo.volume import Volume

    d = tmp_path_factory.mktemp("formats")
    write_operando_phantom(d / "ph", size=16, n_states=1, seed=0, bin_factor=4)
    series, _, _ = txm_series(sphere_volume(24, 6, seed=2), n_views=N_VIEWS, span_deg=180.0, jitter_px=(0.0, 0.0),
                              seed=3, photons=2e4)
    data = np.round(series.data).astype(np.uint16)
    flat = np.round(np.median(series.flats, axis=0)).astype(np.uint16)
    template = next((shared_data / "xanes" / "xanespy" / "txm-data-aps").glob("fov07*8353*.xrm"))
    xrm = d / "ph" / "pre_xrm"
    xrm.mkdir()
    for i, th in enumerate(series.angles_deg):
        _patch_xrm(template, xrm / f"proj_{i:03d}.xrm", data[i], th, ENERGIES["pre_edge"])
    _patch_xrm(template, xrm / "ref_000.xrm", flat, 0.0, ENERGIES["pre_edge"])
    transmission = (data.astype(np.float32) / flat.astype(np.float32)).clip(1e-3, 1.5)
    write_tiff(d / "ph" / "edge_proj.tif", Volume(transmission, voxel_size_um=0.5))
    (d / "ph" / "angles.txt").write_text("# degrees\n" + "\n".join(f"{a:.6f}" for a in series.angles_deg) + "\n")
    with h5py.File(d / "ph" / "post.h5", "w") as f:
        f["exchange/data"] = data
        f["exchange/data_white"] = flat[None]
        f["exchange/data_dark"] = np.zeros((1, *flat.shape), np.uint16)
        f["exchange/theta"] = series.angles_deg
    text = (d / "ph" / "experiment.toml").read_text()
    for role, new in (("pre_edge", "pre_xrm"), ("edge", "edge_proj.tif"), ("post_edge", "post.h5")):
        text = text.replace(f'{role} = "I/{role}.tif"', f'{role} = "{new}"')
    return d / "ph", text, data, flat, series.angles_deg


def _write(folder, text, section):
    toml = folder / f"m{abs(hash(section)) % 10**8}.toml"
    toml.write_text(text + "\n[reconstruction]\n" + section)
    return toml


def test_xrm_folder_tiff_and_hdf5_states_read_alike(experiment):
    from litomo.manifest import load_manifest
    from litomo.workflows.limap.reconstruct import (
        _read_checked,
        check_input_projections,
        reconstruction_config,
    )

    folder, text, data, flat, theta = experiment
    m = load_manifest(_write(folder, text, 'angles = "angles.txt"\n'))
    warn: list[str] = []
    shapes, _ = check_input_projections(m, warn)
    assert shapes["I"] == (6, 24, 24)
    cfg = reconstruction_config(m)
    st = m.states[0]
    read = {p.name: _read_checked(p, e, cfg.angles) for p, e in zip(st.volumes, st.energies_ev, strict=True)}
    xrm, tif, h5 = read["pre_xrm"], read["edge_proj.tif"], read["post.h5"]
    assert xrm.metadata["format"] == "xrm-folder" and xrm.flats.shape == (1, 6, 24)
    assert np.array_equal(xrm.data, data) and np.array_equal(xrm.flats[0], flat)
    assert xrm.energy_ev == pytest.approx(8330.0)
    for s in (xrm, tif, h5):
        assert np.allclose(s.angles_deg, theta, atol=1e-5)
    from litomo.tomo.prep import normalize

    # the same line integrals from the three formats (TIFF: transmission, float32 rounding)
    assert np.allclose(normalize(xrm), normalize(h5), atol=1e-6)
    assert np.allclose(normalize(tif), normalize(h5), atol=1e-5)


@pytest.mark.parametrize(("section", "needle"), [
    ("", "reconstruction.angles"),                       # TIFF stack and no angle list
    ('angles = "missing.txt"\n', "reconstruction.angles"),
    ('angles = "0:180:5"\n', "5 angles for 13 projections"),
])
def test_tiff_state_angle_problems_are_one_line(experiment, tmp_path, section, needle):
    folder, text, *_ = experiment
    code, _, err = cli(["run", str(_write(folder, text, section)), "--out", str(tmp_path / "o"),
                        "--scheduler", "synchronous", "-q"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "o").exists()


def test_manifest_angles_must_be_text():
    from litomo.workflows.reconstruct import ReconstructionConfig

    with pytest.raises(LitomoError, match="reconstruction.angles"):
        ReconstructionConfig.from_manifest({"angles": 3}, "/x/m.toml")
    cfg = ReconstructionConfig.from_manifest({"angles": "-90:90:181"}, "/x/m.toml")
    assert cfg.angles == "-90:90:181"

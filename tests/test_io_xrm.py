"""Xradia .xrm reader on the real APS 32-ID-C and SSRL 6-2c TXM frames (xanespy test data)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from litomo.errors import InputFileError
from litomo.io import energy_from_filename, read_volume, read_xrm


def _frames(shared_data, beamline):
    files = sorted((shared_data / "xanes" / "xanespy" / f"txm-data-{beamline}").glob("*.xrm"))
    assert files, f"no {beamline} frames found"
    return files


def test_all_aps_frames(shared_data):
    files = _frames(shared_data, "aps")
    assert len(files) == 10
    for f in files:
        img = read_xrm(f)
        assert img.image.shape == (1024, 1024) and img.image.dtype == np.uint16, f.name
        assert img.pixel_size_um == pytest.approx(0.0389, abs=1e-4), f.name
        assert img.metadata["energy_source"] == "file"
        nominal = 8250.0 if "_8250_" in f.name else 8353.0
        # APS stores the true monochromator energy (8249.9 / 8353.0 eV) in the file
        assert img.energy_ev == pytest.approx(nominal, abs=0.2), f.name
        assert img.exposure_s in (35.0, 50.0)
        assert img.image.min() >= 0 and img.image.max() > 100


def test_all_ssrl_frames_energy_from_name(shared_data):
    files = _frames(shared_data, "ssrl")
    assert len(files) == 8
    for f in files:
        img = read_xrm(f)
        assert img.image.shape == (1024, 1024) and img.image.dtype == np.uint16
        assert img.pixel_size_um == pytest.approx(0.0312, abs=1e-4)
        assert img.metadata["energy_source"] == "filename"
        assert img.energy_ev == (8324.0 if "_08324.0_eV_" in f.name else 8354.0)
        assert img.exposure_s == pytest.approx(0.3 if "_ref_" in f.name else 0.5, abs=1e-6)


def _od(sample, ref):
    i = np.clip(sample.image.astype(float), 1, None) / sample.exposure_s
    i0 = np.clip(ref.image.astype(float), 1, None) / ref.exposure_s
    return -np.log(i / i0)


def test_flat_sample_relation_and_ni_edge(shared_data):
    """Sample frames transmit less than their flats; particles absorb more above the Ni K edge."""
    aps = shared_data / "xanes" / "xanespy" / "txm-data-aps"
    od = {}
    for e in ("8250", "8353"):
        s, r = read_xrm(aps / f"fov07_xanessoc01_{e}_0eV.xrm"), read_xrm(aps / f"ref_xanessoc01_{e}_0eV.xrm")
        assert np.median(r.image) > np.median(s.image)
        od[e] = _od(s, r)
        assert 0.0 < np.median(od[e]) < 3.0
    assert np.percentile(od["8353"], 99) > np.percentile(od["8250"], 99) + 0.2
    ssrl = _frames(shared_data, "ssrl")
    for e in ("08324.0", "08354.0"):
        s = read_xrm(next(f for f in ssrl if e in f.name and "_ref_" not in f.name))
        r = read_xrm(next(f for f in ssrl if e in f.name and "_ref_" in f.name))
        assert 0.0 < np.median(_od(s, r)) < 3.0


def test_filename_patterns():
    assert energy_from_filename("rep01_000051_ref_x_08324.0_eV_001of010.xrm") == 8324.0
    assert energy_from_filename("fov07_xanessoc01_8353_0eV.xrm") == 8353.0
    assert energy_from_filename("scan_8333.5eV.xrm") == 8333.5
    assert energy_from_filename("fov07_xanessoc01.xrm") is None
    assert energy_from_filename("sample_12_eV.xrm") is None  # below 100 eV: not an energy tag


def test_no_energy_gives_none_with_warning(shared_data, tmp_path, caplog):
    src = _frames(shared_data, "ssrl")[-1]
    dst = tmp_path / "frame_without_energy.xrm"
    shutil.copyfile(src, dst)
    with caplog.at_level("WARNING"):
        img = read_xrm(dst)
    assert img.energy_ev is None and "energy" in caplog.text
    np.testing.assert_array_equal(img.image, read_xrm(src).image)


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.9])
def test_truncated_copy_raises(shared_data, tmp_path, fraction):
    data = _frames(shared_data, "aps")[0].read_bytes()
    cut = tmp_path / "cut_8353_0eV.xrm"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputFileError, match="cut_8353_0eV.xrm"):
        read_xrm(cut)


def test_read_volume_on_xrm(shared_data):
    f = _frames(shared_data, "ssrl")[0]
    v = read_volume(f)
    assert v.shape == (1, 1024, 1024)
    assert v.voxel_size_um == pytest.approx((0.0312,) * 3, abs=1e-6)
    assert v.metadata["energy_ev"] == 8324.0


def test_real_frame_as_txrm_reads_its_angle(shared_data, tmp_path):
    """The .txrm path (ImageData1/Image1 + ImageInfo/Angles) on real Xradia bytes: an APS frame is an
    OLE2 container with the same streams, so copied to ``.txrm`` it is a one-view stack. Not a multi-view
    .txrm (none is public here; olefile cannot write one): angle grouping over 100 images is untested."""
    from litomo.io.projections import read_projections

    f = _frames(shared_data, "aps")[0]
    src = tmp_path / "one.txrm"
    shutil.copy(f, src)
    s = read_projections(src)
    assert s.data.shape == (1, 1024, 1024)
    np.testing.assert_array_equal(s.data[0], read_xrm(f).image)
    assert s.angles_deg[0] == pytest.approx(-0.042, abs=1e-3)  # the file's ImageInfo/Angles
    assert src.read_bytes() == f.read_bytes()  # input untouched

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


def _write_ole2(path, streams):
    """Minimal Compound File Binary (OLE2, MS-CFB version 3) writer, for building multi-view ``.txrm`` files.

    No maintained PyPI package writes new compound files (olefile only reads and overwrites streams
    in place), so the format is written here from MS-CFB sections 2.2-2.6: 512-byte sectors, a FAT,
    streams under 4096 bytes in 64-byte mini sectors of the mini stream (with a mini FAT), and
    the directory of each storage as a chain of right siblings in CFB name order (all black: olefile
    walks the tree without checking its balance). ``streams`` maps ``"Storage/Stream"`` to bytes.
    """
    import struct

    end, free, fatsect, nostream = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    entries = [{"name": "Root Entry", "type": 5, "kids": [], "data": b""}]
    index = {"": 0}
    for full, data in streams.items():
        parent = ""
        for depth, part in enumerate(full.split("/")):
            key = f"{parent}/{part}" if parent else part
            if key not in index:
                index[key] = len(entries)
                last = depth == len(full.split("/")) - 1
                entries.append({"name": part, "type": 2 if last else 1, "kids": [], "data": bytes(data) if last else b""})
                entries[index[parent]]["kids"].append(index[key])
            parent = key
    sectors, fat = [], []

    def put(blob):  # consecutive sectors, one FAT chain; returns the first sector
        n = max(1, -(-len(blob) // 512))
        first = len(sectors)
        for i in range(n):
            sectors.append(blob[512 * i : 512 * (i + 1)].ljust(512, b"\0"))
            fat.append(first + i + 1 if i < n - 1 else end)
        return first

    mini, minifat = bytearray(), []
    for e in entries[1:]:
        e["start"] = end
        if e["type"] == 2 and len(e["data"]) >= 4096:
            e["start"] = put(e["data"])
        elif e["type"] == 2 and e["data"]:
            e["start"] = len(mini) // 64
            n = -(-len(e["data"]) // 64)
            minifat += [e["start"] + i + 1 if i < n - 1 else end for i in range(n)]
            mini += e["data"].ljust(64 * n, b"\0")
    entries[0]["start"], entries[0]["size"] = (put(bytes(mini)), len(mini)) if mini else (end, 0)
    minifat_start = put(struct.pack(f"<{len(minifat)}I", *minifat)) if minifat else end
    n_minifat = -(-len(minifat) // 128)
    for e in entries:
        kids = sorted(e["kids"], key=lambda k: (len(entries[k]["name"]), entries[k]["name"].upper()))
        e["child"] = kids[0] if kids else nostream
        for a, b in zip(kids, [*kids[1:], nostream], strict=False):  # no kids: no pairs
            entries[a]["right"] = b
    dirs = b""
    for e in entries:
        name = (e["name"] + "\0").encode("utf-16-le")
        size = e.get("size", len(e["data"]))
        dirs += (name.ljust(64, b"\0") + struct.pack("<HBBIII", len(name), e["type"], 1, nostream,
                                                     e.get("right", nostream), e["child"])
                 + b"\0" * 36 + struct.pack("<IQ", e["start"], size))
    dir_start = put(dirs.ljust(-(-len(dirs) // 512) * 512, b"\0"))
    n_fat = 1
    while n_fat * 128 < len(sectors) + n_fat:
        n_fat += 1
    assert n_fat <= 109, "more FAT sectors than the header's DIFAT holds"
    fat_at = list(range(len(sectors), len(sectors) + n_fat))
    table = fat + [fatsect] * n_fat
    table += [free] * (128 * n_fat - len(table))
    header = (bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 16 + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
              + b"\0" * 6 + struct.pack("<IIIIIIIII", 0, n_fat, dir_start, 0, 4096, minifat_start, n_minifat, end, 0)
              + struct.pack("<109I", *(fat_at + [free] * (109 - n_fat))))
    path.write_bytes(header + b"".join(sectors) + struct.pack(f"<{len(table)}I", *table))
    return path


def test_multi_view_txrm_reads_all_views_angles_and_reference(tmp_path):
    """A 105-view .txrm (two ImageData storages: Image1..100 and Image101..105), float32 images in
    regular sectors, metadata in the mini stream, a uint16 reference frame: read back exactly."""
    import olefile

    from litomo.io.projections import read_projections

    rng = np.random.default_rng(0)
    n, h, w = 105, 40, 60
    frames = rng.uniform(100, 4000, (n, h, w)).astype("<f4")
    angles = np.sort(rng.uniform(-120, 120, n)).astype("<f4")  # not evenly spaced: must be read, not assumed
    ref = rng.integers(3000, 5000, (h, w)).astype("<u2")
    streams = {"ImageInfo/ImageWidth": np.uint32(w).tobytes(), "ImageInfo/ImageHeight": np.uint32(h).tobytes(),
               "ImageInfo/DataType": np.uint32(10).tobytes(), "ImageInfo/NoOfImages": np.uint32(n).tobytes(),
               "ImageInfo/Angles": angles.tobytes(), "ImageInfo/Energy": np.full(n, 8353.0, "<f4").tobytes(),
               "ImageInfo/PixelSize": np.float32(0.03).tobytes(), "ReferenceData/Image": ref.tobytes()}
    streams.update({f"ImageData{(i // 100) + 1}/Image{i + 1}": frames[i].tobytes() for i in range(n)})
    src = _write_ole2(tmp_path / "series.txrm", streams)
    with olefile.OleFileIO(str(src)) as ole:  # the container itself is valid for the peer reader
        assert ole.exists("ImageData2/Image105") and ole.get_size("ImageInfo/Angles") == 4 * n
    before = src.read_bytes()
    s = read_projections(src)
    assert s.data.shape == (n, h, w)
    np.testing.assert_array_equal(s.data, frames)
    np.testing.assert_allclose(s.angles_deg, angles.astype(float), atol=1e-4)
    np.testing.assert_array_equal(s.flats, ref[None].astype(np.float32))
    assert s.energy_ev == pytest.approx(8353.0) and s.pixel_size_um == pytest.approx(0.03)
    assert src.read_bytes() == before  # input untouched
    # the 100-image grouping is real: without the second storage the reader names the missing stream
    del streams["ImageData2/Image101"]
    bad = _write_ole2(tmp_path / "missing.txrm", streams)
    with pytest.raises(InputFileError, match="ImageData2/Image101"):
        read_projections(bad)

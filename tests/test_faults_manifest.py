"""Issue #20 items 9-11 and issue #21 item 6: the manifest bounds the work and says what is wrong.

Huge ``histogram_bins``, deeply nested arrays, a B-spline spacing finer than the registration
grid (elastix hung or aborted), a FIFO as an image, 100,000 states; ``energy_unit`` for
reference spectra in keV; per-axis bin and registration factors.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from litomo.errors import LitomoError, ManifestError
from litomo.manifest import check_bspline_spacing, load_manifest, write_manifest

BASE = """\
[sample]
name = "MX-A"
voxel_size_um = 0.03
[xanes]
pre_edge_ev = 8330.0
edge_ev = 8345.0
post_edge_ev = 8430.0
reference_pristine = "refs/pristine.csv"
reference_charged = "refs/charged.csv"
[processing]
bin = 7
"""

STATE = """
[[states]]
name = "{name}"
pre_edge = "I/pre_edge.tif"
edge = "I/edge.tif"
post_edge = "I/post_edge.tif"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ("refs/pristine.csv", "refs/charged.csv", "I/pre_edge.tif", "I/edge.tif", "I/post_edge.tif"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path


def _load(tree: Path, text: str):
    p = tree / "experiment.toml"
    p.write_text(text)
    return load_manifest(p)


def _error(tree: Path, text: str, match: str) -> str:
    with pytest.raises(ManifestError, match=match) as exc:
        _load(tree, text)
    msg = str(exc.value)
    assert "\n" not in msg and "experiment.toml" in msg
    return msg


def test_huge_histogram_bins_refused(tree):
    # the trial: histogram_bins = 3000000000 allocated 22 GiB
    _error(tree, BASE.replace("bin = 7", "histogram_bins = 3000000000") + STATE.format(name="I"),
           r"processing.histogram_bins.*<= 100000")


def test_deeply_nested_array_is_one_line(tree):
    nested = "x = " + "[" * 50_000 + "]" * 50_000 + "\n"
    _error(tree, nested + BASE + STATE.format(name="I"), "nested too deeply")


@pytest.mark.parametrize("spacing", ["1e-6", "0.1"])
def test_bspline_spacing_finer_than_the_grid_refused(tree, spacing):
    # 1e-6 um aborted inside elastix (heap corruption), 0.1 um hung; the registration grid is
    # at least 2 x 0.03 um here, so 0.1 um is 1.7 grid voxels per control point
    _error(tree, BASE.replace("bin = 7", f"bspline_spacing_um = {spacing}") + STATE.format(name="I"),
           r"bspline_spacing_um.*voxels of the 0\.06 um registration grid; give at least 0\.24 um")


def test_bspline_spacing_checked_against_an_explicit_register_bin(tree):
    text = BASE.replace("bin = 7", "bspline_spacing_um = 0.5\nregister_bin = [1, 8, 8]") + STATE.format(name="I")
    # coarsest axis 8 x 0.03 = 0.24 um: 0.5 um is 2.1 voxels -> refused
    _error(tree, text, r"0\.24 um registration grid")
    assert _load(tree, text.replace("0.5", "1.0")).processing.bspline_spacing_um == 1.0
    assert check_bspline_spacing(4.5, (0.06, 0.06, 0.06)) == pytest.approx(75.0)


@pytest.mark.timeout(30)
def test_fifo_in_manifest_refused(tree):
    os.remove(tree / "I/edge.tif")
    os.mkfifo(tree / "I/edge.tif")
    _error(tree, BASE + STATE.format(name="I"), r"states\[0\]\.edge.*FIFO")


@pytest.mark.timeout(60)
def test_hundred_thousand_states_refused_quickly(tree):
    # the trial: 54 s to load, then a hang; now refused before any state is parsed
    text = BASE + "".join(STATE.format(name=f"s{i}") for i in range(100_000))
    t0 = time.process_time()
    _error(tree, text, r"100000 states; at most 1000")
    assert time.process_time() - t0 < 1.0  # measured 0.2 s (the [[states]] headers are counted first)


def test_manifest_that_is_a_fifo_refused(tmp_path):
    p = tmp_path / "experiment.toml"
    os.mkfifo(p)
    with pytest.raises(ManifestError, match="not a regular file"):
        load_manifest(p)


def test_per_axis_bin_and_register_bin(tree):
    m = _load(tree, BASE.replace("bin = 7", "bin = [1, 8, 8]\nregister_bin = [1, 4, 4]\nbspline_spacing_um = 1.0")
              + STATE.format(name="I"))
    assert m.processing.bin == (1, 8, 8) and m.processing.register_bin == (1, 4, 4)
    again = load_manifest(write_manifest(m, tree / "again.toml"))
    assert again.processing.bin == (1, 8, 8) and again.processing.register_bin == (1, 4, 4)
    from litomo.preprocess import bin_factors, bin_volume
    from litomo.volume import Volume
    from litomo.workflows.limap.read import auto_register_bin

    assert bin_factors(auto_register_bin((64, 512, 512), m.processing.register_bin)) == (1, 4, 4)
    assert auto_register_bin((64, 512, 512), 3) == 3
    v = bin_volume(Volume(np.ones((2, 16, 16), np.float32), voxel_size_um=0.03), m.processing.bin)
    assert v.shape == (2, 2, 2) and v.voxel_size_um == pytest.approx((0.03, 0.24, 0.24))
    _error(tree, BASE.replace("bin = 7", "register_bin = [1, 0, 4]") + STATE.format(name="I"),
           r"processing.register_bin\[1\]")


def test_energy_unit_for_reference_spectra_in_kev(tree, shared_data):
    from litomo.workflows.limap.calibration import calibration_for
    from litomo.xanes.spectra import read_spectrum

    pyxas = shared_data / "xanes/pyxas"
    shutil.copy(pyxas / "ref_LiNiO2.txt", tree / "refs/pristine.txt")
    shutil.copy(pyxas / "ref_NiO.txt", tree / "refs/charged.txt")  # both files in keV
    text = BASE.replace("refs/pristine.csv", "refs/pristine.txt").replace("refs/charged.csv", "refs/charged.txt")
    without = _load(tree, text + STATE.format(name="I"))
    with pytest.raises(LitomoError, match="keV"):
        calibration_for(without)
    m = _load(tree, text.replace("[processing]", 'energy_unit = "keV"\n[processing]') + STATE.format(name="I"))
    assert m.xanes.energy_unit == "keV"
    cal = calibration_for(m)
    from litomo.xanes.threeenergy import reference_ratios

    p = read_spectrum(tree / "refs/pristine.txt", energy_unit="keV")
    c = read_spectrum(tree / "refs/charged.txt", energy_unit="keV")
    assert (cal.r_pristine, cal.r_charged) == pytest.approx(reference_ratios(p, c, (8330.0, 8345.0, 8430.0)))
    assert load_manifest(write_manifest(m, tree / "again.toml")).xanes.energy_unit == "keV"
    _error(tree, text.replace("[processing]", 'energy_unit = "kev"\n[processing]') + STATE.format(name="I"),
           "xanes.energy_unit.*did you mean 'keV'")

"""Experiment manifest: the documented example loads; every error names file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from litomo.errors import ManifestError
from litomo.manifest import (
    ProcessingSpec,
    load_manifest,
    parse_energy_ev,
    write_manifest,
)

EXAMPLE = """\
[sample]
name = "MX-A"
voxel_size_um = 0.03
[xanes]
pre_edge_ev = 8330.0
edge_ev = 8345.0
post_edge_ev = 8430.0
reference_pristine = "refs/pristine.csv"   # columns: energy_ev, mu (normalised)
reference_charged = "refs/charged.csv"
li_pristine = 1.0
li_charged = 0.38
[processing]
bin = 7
[[states]]
name = "I"
pre_edge = "I/pre_edge.tif"
edge = "I/edge.tif"
post_edge = "I/post_edge.tif"
"""

STATE_II = """
[[states]]
name = "II"
pre_edge = "II/pre_edge.tif"
edge = "II/edge.tif"
post_edge = "II/post_edge.tif"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A folder with the files the example manifest names (contents are irrelevant here)."""
    for rel in ("refs/pristine.csv", "refs/charged.csv", "I/pre_edge.tif", "I/edge.tif", "I/post_edge.tif",
                "II/pre_edge.tif", "II/edge.tif", "II/post_edge.tif", "S/e0.tif", "S/e1.tif", "S/e2.tif",
                "S/e3.tif"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path


def _write(tree: Path, text: str) -> Path:
    p = tree / "experiment.toml"
    p.write_text(text)
    return p


def _error(tree: Path, text: str) -> str:
    path = _write(tree, text)
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    msg = str(exc.value)
    assert str(path) in msg  # every error names the file
    return msg


def test_example_loads_with_defaults(tree: Path) -> None:
    m = load_manifest(_write(tree, EXAMPLE))
    assert m.sample.name == "MX-A"
    assert m.sample.voxel_size_um == (0.03, 0.03, 0.03)
    assert m.xanes.three_energies_ev == (8330.0, 8345.0, 8430.0)
    assert m.xanes.reference_pristine == (tree / "refs/pristine.csv").resolve()
    assert m.xanes.reference_pristine.is_absolute()
    assert (m.xanes.li_pristine, m.xanes.li_charged) == (1.0, 0.38)
    assert m.processing == ProcessingSpec(bin=(7, 7, 7))
    (s,) = m.states
    assert s.three_energy and s.energies_ev == (8330.0, 8345.0, 8430.0)
    assert s.volume_for("edge") == (tree / "I/edge.tif").resolve()
    assert s.volume_for("post_edge") == s.volumes[2]
    assert s.label is None and s.expected_li is None
    assert m.three_energy


def test_optional_fields_and_units(tree: Path) -> None:
    text = (EXAMPLE.replace("voxel_size_um = 0.03", "voxel_size_um = [0.04, 0.03, 0.03]\n"
                            "expected = {am = 0.6, cbd = 0.1, pore = 0.3, tortuosity_pore = 2.5}")
            .replace("edge_ev = 8345.0", 'edge_ev = "8.345 keV"\nenergy_shift_ev = -1.5')
            .replace("post_edge_ev = 8430.0", 'post_edge_ev = "8430 eV"')
            .replace("bin = 7", 'bin = [1, 7, 7]\nregister = false\ndenoise = "nlm"\njump_threshold = 0.002\n'
                     'sign_convention = "printed"\nclip_li = false\nhistogram_bins = 20')
            + 'label = "pristine"\nvoltage_v = 3.0\nexpected_li = 0.98\nnote = "OCV"\n')
    m = load_manifest(_write(tree, text))
    assert m.sample.voxel_size_um == (0.04, 0.03, 0.03)
    assert m.sample.expected == {"am": 0.6, "cbd": 0.1, "pore": 0.3, "tortuosity_pore": 2.5}
    assert m.xanes.edge_ev == pytest.approx(8345.0) and m.xanes.post_edge_ev == 8430.0
    # the shift is added to the nominal energies
    assert m.xanes.calibrated_ev(m.states[0].energies_ev) == pytest.approx((8328.5, 8343.5, 8428.5))
    p = m.processing
    assert p.bin == (1, 7, 7) and p.register is False and p.bspline is True
    assert (p.denoise, p.jump_threshold, p.sign_convention, p.clip_li, p.histogram_bins) == (
        "nlm", 0.002, "printed", None, 20)
    s = m.states[0]
    assert (s.label, s.voltage_v, s.expected_li, s.note) == ("pristine", 3.0, 0.98, "OCV")


def test_energy_list_mode(tree: Path) -> None:
    text = """
[sample]
name = "S"
voxel_size_um = 0.05
[[states]]
name = "S"
energies_ev = [8330.0, "8.340 keV", 8345, 8400.0]
volumes = ["S/e0.tif", "S/e1.tif", "S/e2.tif", "S/e3.tif"]
"""
    m = load_manifest(_write(tree, text))
    s = m.states[0]
    assert not s.three_energy and not m.three_energy
    assert s.energies_ev == pytest.approx((8330.0, 8340.0, 8345.0, 8400.0))
    assert s.volumes[3] == (tree / "S/e3.tif").resolve()
    assert m.xanes.three_energies_ev is None and m.xanes.reference_pristine is None
    with pytest.raises(ManifestError, match="energy-list state"):
        s.volume_for("edge")


def test_round_trip(tree: Path) -> None:
    text = EXAMPLE.replace("voxel_size_um = 0.03", "voxel_size_um = 0.03\nexpected = {am = 0.6}") + STATE_II
    text += 'label = "charged \\"40%\\""\nvoltage_v = 4.3\n'
    m = load_manifest(_write(tree, text))
    out = write_manifest(m, tree / "copy.toml")
    m2 = load_manifest(out)
    assert m2.path == out
    for attr in ("sample", "xanes", "processing", "states"):
        assert getattr(m2, attr) == getattr(m, attr)
    # paths are written relative to the manifest folder
    assert 'edge = "I/edge.tif"' in out.read_text()


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        # missing fields
        (lambda t: t.replace('name = "MX-A"\n', ""), "sample.name", "missing"),
        (lambda t: t.replace("edge_ev = 8345.0\n", ""), "xanes.edge_ev", "missing"),
        (lambda t: t.replace('edge = "I/edge.tif"\n', ""), "states[0].edge", "missing"),
        (lambda t: t.replace('reference_charged = "refs/charged.csv"\n', ""), "xanes.reference_charged", "missing"),
        (lambda t: t.split("[[states]]")[0], "states", "missing"),
        # wrong types
        (lambda t: t.replace("voxel_size_um = 0.03", 'voxel_size_um = "fine"'), "sample.voxel_size_um", "expected a number"),
        (lambda t: t.replace("voxel_size_um = 0.03", "voxel_size_um = -0.03"), "sample.voxel_size_um", "must be >"),
        (lambda t: t.replace("voxel_size_um = 0.03", "voxel_size_um = [0.03, 0.03]"), "sample.voxel_size_um", "three"),
        (lambda t: t.replace("bin = 7", "bin = 2.5"), "processing.bin", "integer"),
        (lambda t: t.replace("bin = 7", "bin = 0"), "processing.bin", ">= 1"),
        (lambda t: t.replace("bin = 7", "bin = [1, 7, true]"), "processing.bin[2]", "integer"),
        (lambda t: t.replace("bin = 7", 'register = "yes"'), "processing.register", "true or false"),
        (lambda t: t.replace("bin = 7", 'denoise = "medain"'), "processing.denoise", "did you mean 'median'"),
        (lambda t: t.replace("bin = 7", 'jump_threshold = "high"'), "processing.jump_threshold", "'auto'"),
        (lambda t: t.replace("bin = 7", 'sign_convention = "paper"'), "processing.sign_convention", "conventional"),
        (lambda t: t.replace("bin = 7", "clip_li = [1.2, 0.0]"), "processing.clip_li", "low < high"),
        (lambda t: t.replace("bin = 7", "clip_li = true"), "processing.clip_li", "or false"),
        (lambda t: t.replace("bin = 7", "li_poor_max = 0.95"), "processing.li_poor_max", "below li_rich_min"),
        (lambda t: t.replace("bin = 7", "histogram_bins = 0"), "processing.histogram_bins", "integer >= 1"),
        (lambda t: t.replace("li_pristine = 1.0", 'li_pristine = "one"'), "xanes.li_pristine", "expected a number"),
        (lambda t: t.replace('name = "I"', "name = 1"), "states[0].name", "expected a string"),
        (lambda t: t.replace('name = "I"', 'name = "a/b"'), "states[0].name", "path separators"),
        (lambda t: t.replace('[sample]\nname = "MX-A"\nvoxel_size_um = 0.03\n', "sample = 3\n"), "sample",
         "expected a table"),
        (lambda t: t + 'voltage_v = "high"\n', "states[0].voltage_v", "expected a number"),
        # unknown keys, with suggestions
        (lambda t: t.replace("edge_ev = 8345.0", "edge_eV = 8345.0"), "xanes.edge_eV", "did you mean 'edge_ev'?"),
        (lambda t: t.replace("[processing]", "[procesing]"), "procesing", "did you mean 'processing'?"),
        (lambda t: t.replace('post_edge = "I/post_edge.tif"', 'postedge = "I/post_edge.tif"'),
         "states[0].postedge", "did you mean 'post_edge'?"),
        (lambda t: t.replace("name = \"MX-A\"", 'name = "MX-A"\nvoxel = 1'), "sample.voxel", "did you mean"),
        # files
        (lambda t: t.replace('edge = "I/edge.tif"', 'edge = "I/edge_missing.tif"'), "states[0].edge", "file not found"),
        (lambda t: t + STATE_II.replace("II/edge.tif", "II/nope.tif"), "states[1].edge", "file not found"),
        (lambda t: t.replace("refs/pristine.csv", "refs/p.csv"), "xanes.reference_pristine", "file not found"),
        # consistency
        (lambda t: t + STATE_II.replace('name = "II"', 'name = "I"'), "states[1].name", "duplicate state name"),
        (lambda t: t.replace("pre_edge_ev = 8330.0", "pre_edge_ev = 8350.0"), "xanes.edge_ev", "pre_edge_ev < edge_ev"),
        (lambda t: t.replace("post_edge_ev = 8430.0", "post_edge_ev = 8340.0"), "xanes.edge_ev", "pre_edge_ev < edge_ev"),
        (lambda t: t.replace("li_charged = 0.38", "li_charged = 1.0"), "xanes.li_charged", "must be smaller"),
        (lambda t: t.replace("voxel_size_um = 0.03", "voxel_size_um = 0.03\nexpected = {am = 1.5}"),
         "sample.expected.am", "<= 1"),
        (lambda t: t.replace("voxel_size_um = 0.03", "voxel_size_um = 0.03\nexpected = {am = 0.6, cbd = 0.3, pore = 0.3}"),
         "sample.expected", "sum to 1"),
        (lambda t: t.replace("li_charged = 0.38", "li_charged = 0.38\nenergy_shift_ev = 300.0"),
         "xanes.energy_shift_ev", "implausible"),
        # energies
        (lambda t: t.replace("edge_ev = 8345.0", "edge_ev = 8.345"), "xanes.edge_ev",
         '8.345 looks like keV; write 8345.0 or "8.345 keV"'),
        (lambda t: t.replace("edge_ev = 8345.0", 'edge_ev = "8345 volts"'), "xanes.edge_ev", "cannot read energy"),
        (lambda t: t.replace("edge_ev = 8345.0", "edge_ev = true"), "xanes.edge_ev", "expected an energy"),
    ],
)
def test_errors_name_field(tree: Path, edit, field: str, message: str) -> None:
    msg = _error(tree, edit(EXAMPLE))
    assert f"field '{field}'" in msg
    assert message in msg


ENERGY_LIST = """
[sample]
name = "S"
voxel_size_um = 0.05
[[states]]
name = "S"
energies_ev = {energies}
volumes = {volumes}
"""


@pytest.mark.parametrize(
    ("energies", "volumes", "field", "message"),
    [
        ("[8330.0, 8340.0, 8345.0]", '["S/e0.tif", "S/e1.tif"]', "states[0].volumes", "has 3 values but volumes has 2"),
        ("[8330.0, 8345.0, 8340.0]", '["S/e0.tif", "S/e1.tif", "S/e2.tif"]', "states[0].energies_ev[2]",
         "strictly increasing"),
        ("[8330.0, 8.34, 8345.0]", '["S/e0.tif", "S/e1.tif", "S/e2.tif"]', "states[0].energies_ev[1]", "looks like keV"),
        ("[8330.0]", '["S/e0.tif"]', "states[0].energies_ev", "at least two"),
        ("8330.0", '["S/e0.tif"]', "states[0].energies_ev", "expected a list"),
        ("[8330.0, 8340.0]", '["S/e0.tif", "S/zz.tif"]', "states[0].volumes[1]", "file not found"),
    ],
)
def test_energy_list_errors(tree: Path, energies: str, volumes: str, field: str, message: str) -> None:
    msg = _error(tree, ENERGY_LIST.format(energies=energies, volumes=volumes))
    assert f"field '{field}'" in msg and message in msg


def test_energy_list_needs_both_lists_and_not_roles(tree: Path) -> None:
    text = ENERGY_LIST.format(energies="[8330.0, 8340.0]", volumes='["S/e0.tif", "S/e1.tif"]')
    msg = _error(tree, text.replace('volumes = ["S/e0.tif", "S/e1.tif"]', ""))
    assert "field 'states[0].volumes'" in msg and "missing" in msg
    msg = _error(tree, text + 'edge = "S/e0.tif"\n')
    assert "field 'states[0]'" in msg and "not both" in msg


def test_invalid_toml_reports_line(tree: Path) -> None:
    msg = _error(tree, EXAMPLE.replace("bin = 7", "bin = = 7"))
    assert "invalid TOML" in msg and "line 13" in msg


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest file not found"):
        load_manifest(tmp_path / "nope.toml")


def test_parse_energy_units() -> None:
    assert parse_energy_ev(8345) == 8345.0
    assert parse_energy_ev("8.345 keV") == pytest.approx(8345.0)
    assert parse_energy_ev("8345eV") == 8345.0
    assert parse_energy_ev(" 8.3 KEV ") == pytest.approx(8300.0)
    with pytest.raises(ManifestError, match="looks like keV"):
        parse_energy_ev("8.345")
    with pytest.raises(ManifestError, match="positive"):
        parse_energy_ev(-8345.0)


def test_registration_and_background_keys(tree: Path) -> None:
    m = load_manifest(_write(tree, EXAMPLE))
    assert m.processing.register_bin == "auto"
    assert m.processing.background_exponent is None
    text = EXAMPLE.replace("bin = 7", "bin = 7\nregister_bin = 2\nbspline_spacing_um = 3.5\nbackground_exponent = 2.8")
    m = load_manifest(_write(tree, text))
    assert (m.processing.register_bin, m.processing.bspline_spacing_um, m.processing.background_exponent) == (2, 3.5, 2.8)
    back = load_manifest(write_manifest(m, tree / "copy.toml"))
    assert back.processing == m.processing
    for bad, field in (("register_bin = 0", "processing.register_bin"),
                       ('register_bin = "fine"', "processing.register_bin"),
                       ("background_exponent = -1", "processing.background_exponent"),
                       ("bspline_spacing_um = 0", "processing.bspline_spacing_um")):
        with pytest.raises(ManifestError, match=field.replace(".", r"\.")):
            load_manifest(_write(tree, EXAMPLE.replace("bin = 7", f"bin = 7\n{bad}")))

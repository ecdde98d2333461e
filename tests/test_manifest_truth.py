"""Manifest fields of issue 16: [sample] composition and [xanes] energies_ev (N-energy mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from litomo.errors import ManifestError
from litomo.manifest import load_manifest, write_manifest

HEAD = """\
[sample]
name = "MX-A"
voxel_size_um = 0.03
{sample}
[xanes]
reference_pristine = "refs/pristine.csv"
reference_charged = "refs/charged.csv"
{xanes}
"""
THREE = """pre_edge_ev = 8330.0
edge_ev = 8345.0
post_edge_ev = 8430.0
[[states]]
name = "I"
pre_edge = "I/pre_edge.tif"
edge = "I/edge.tif"
post_edge = "I/post_edge.tif"
"""
ENERGIES = [8250.0, 8300.0, 8330.0, 8340.0, 8345.0, 8380.0, 8420.0]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    names = ["refs/pristine.csv", "refs/charged.csv", "I/pre_edge.tif", "I/edge.tif", "I/post_edge.tif"]
    names += [f"S/e{k}.tif" for k in range(len(ENERGIES))]
    for rel in names:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path


def _load(tree: Path, sample: str = "", xanes: str = THREE):
    p = tree / "experiment.toml"
    p.write_text(HEAD.format(sample=sample, xanes=xanes))
    return load_manifest(p)


def test_composition_round_trips(tree):
    m = _load(tree, 'composition = "LiNi0.8Mn0.1Co0.1O2"')
    assert m.sample.composition == "LiNi0.8Mn0.1Co0.1O2"
    assert m.processing.background_exponent is None
    assert load_manifest(write_manifest(m, tree / "copy.toml")).sample.composition == m.sample.composition


@pytest.mark.parametrize("value, message", [
    ('"LiNi0.8Xx0.2O2"', "'Xx' is not an element"),
    ('"Li(Ni0.8O2"', "cannot read the formula"),
    ('"LiCoO2"', "has no Ni"),
    ('""', "expected a chemical formula"),
    ("3", "expected a chemical formula"),
])
def test_bad_composition_names_the_field(tree, value, message):
    with pytest.raises(ManifestError, match=message) as exc:
        _load(tree, f"composition = {value}")
    assert "sample.composition" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cbd_labels_round_trip(tree):
    (tree / "phases.tif").write_bytes(b"x")
    m = _load(tree, 'labels = "phases.tif"\ncbd_value = 3')
    assert m.sample.labels == (tree / "phases.tif").resolve() and m.sample.cbd_value == 3
    back = load_manifest(write_manifest(m, tree / "copy.toml")).sample
    assert (back.labels, back.cbd_value) == (m.sample.labels, 3)
    assert _load(tree).sample.labels is None


@pytest.mark.parametrize("sample, field, message", [
    ('labels = "missing.tif"', "sample.labels", "missing.tif"),
    ("labels = 3", "sample.labels", "expected a file path"),
    ('labels = "I/edge.tif"\ncbd_value = -1', "sample.cbd_value", "non-negative integer"),
    ('labels = "I/edge.tif"\ncbd_value = 2.5', "sample.cbd_value", "non-negative integer"),
    ("cbd_value = 2", "sample.cbd_value", "sample.labels, which is missing"),
])
def test_bad_cbd_labels_name_the_field(tree, sample, field, message):
    with pytest.raises(ManifestError, match=message) as exc:
        _load(tree, sample)
    assert field in str(exc.value) and "\n" not in str(exc.value)


def test_bad_composition_in_run_is_one_line_exit_2(tree):
    # the CLI's answer to a formula naming an unknown element: one line naming the field, no folder
    from pipeline_helpers import cli

    p = tree / "experiment.toml"
    p.write_text(HEAD.format(sample='composition = "LiNi0.8Qq0.2O2"', xanes=THREE))
    code, _, err = cli(["run", str(p), "--out", str(tree / "out"), "-q"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "sample.composition" in err and "'Qq' is not an element" in err
    assert not (tree / "out").exists()


def _nmode(energies, n_volumes=len(ENERGIES)):
    vols = ", ".join(f'"S/e{k}.tif"' for k in range(n_volumes))
    return f"energies_ev = {energies!r}\n[[states]]\nname = \"S\"\nvolumes = [{vols}]\n"


def test_energy_list_shared_by_states(tree):
    m = _load(tree, xanes=_nmode(ENERGIES))
    assert m.xanes.energies_ev == tuple(ENERGIES)
    assert m.states[0].energies_ev == tuple(ENERGIES) and not m.states[0].three_energy
    assert load_manifest(write_manifest(m, tree / "copy.toml")).xanes.energies_ev == tuple(ENERGIES)


@pytest.mark.parametrize("energies, n, field, message", [
    ([8250.0, 8300.0, 8300.0, 8340.0, 8345.0, 8380.0, 8420.0], 7, "xanes.energies_ev[2]", "listed twice"),
    ([8250.0, 8300.0, 8340.0, 8330.0, 8345.0, 8380.0, 8420.0], 7, "xanes.energies_ev[3]", "must increase"),
    ([8320.0, 8325.0, 8330.0, 8340.0, 8345.0, 8380.0, 8420.0], 7, "xanes.energies_ev", "do not cover"),
    ([8250.0, 8300.0, 8330.0, 8340.0, 8345.0, 8350.0, 8360.0], 7, "xanes.energies_ev", "do not cover"),
    (ENERGIES, 6, "states[0].volumes", "6 volumes for the 7 energies"),
])
def test_bad_energy_lists_name_the_field(tree, energies, n, field, message):
    with pytest.raises(ManifestError, match=message) as exc:
        _load(tree, xanes=_nmode(energies, n))
    assert field in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("sample, processing, law, f_post", [
    ('composition = "LiNi0.8Mn0.1Co0.1O2"', "", "tabulated", None),
    # an explicit exponent overrides the composition: (8430 / 8330) ** -2.8
    ('composition = "LiNi0.8Mn0.1Co0.1O2"', "background_exponent = 2.8", "power", (8430 / 8330) ** -2.8),
    ("", "", "none", 1.0),
])
def test_run_calibration_uses_the_manifest_background_law(tree, sample, processing, law, f_post):
    """``litomo run``'s calibration carries the law the map removes (issue 16 item 3)."""
    import shutil

    from litomo.workflows.limap.calibration import calibration_for
    from litomo.xanes.background import matrix_background

    data = Path(__file__).resolve().parents[1] / "src" / "litomo" / "xanes" / "data"
    shutil.copy(data / "ni_kedge_LiNiO2.csv", tree / "refs/pristine.csv")
    shutil.copy(data / "ni_kedge_NiO.csv", tree / "refs/charged.csv")
    m = _load(tree, sample, THREE.replace("[[states]]", f"[processing]\n{processing}\n[[states]]"))
    bg = calibration_for(m).background
    assert bg.law == law
    if f_post is None:  # the tabulated cross-sections of the composition, relative to pre-edge
        mu = matrix_background("LiNi0.8Mn0.1Co0.1O2", [8330.0, 8345.0, 8430.0])
        f_post = float(mu[2] / mu[0])
        assert 0.96 < f_post < 0.98  # a falling background (Elam tables: 0.969, effective E^-2.65)
    assert bg.factors[2] == pytest.approx(f_post, rel=1e-9)

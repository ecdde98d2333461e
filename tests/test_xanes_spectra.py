"""Spectrum readers on the real reference files in ../shared/data/xanes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from litomo.errors import DataError, InputFileError
from litomo.xanes.spectra import Spectrum, read_spectrum


def test_xdi_reads_mutrans(shared_data):
    s = read_spectrum(shared_data / "xanes/xraylarch/ni_metal_rt.xdi")
    assert s.energy_ev.size == 418  # README: 418 points
    assert s.energy_ev[0] == pytest.approx(8133.0)
    assert s.mu[0] == pytest.approx(-1.1873423)
    assert s.metadata["column"] == "mutrans"


def test_xdi_without_mu_column_uses_ln_i0_over_itrans(tmp_path):
    e = np.linspace(8300, 8400, 20)
    i0, it = np.full(20, 1000.0), 1000.0 * np.exp(-np.linspace(0.1, 1.0, 20))
    rows = "\n".join(f"{a} {b} {c}" for a, b, c in zip(e, i0, it, strict=True))
    f = tmp_path / "x.xdi"
    f.write_text(
        f"# XDI/1.0\n# Column.1: energy eV\n# Column.2: i0\n# Column.3: itrans\n#----\n{rows}\n"
    )
    s = read_spectrum(f)
    np.testing.assert_allclose(s.mu, np.linspace(0.1, 1.0, 20), rtol=1e-9)


def test_athena_project_default_is_the_merge_and_groups_selectable(shared_data):
    prj = shared_data / "xanes/xraylarch/NiO.prj"
    merged = read_spectrum(prj)
    assert merged.metadata["group"] == "NiO"
    # the derived CSV was written from the same merge by larch (README)
    csv = read_spectrum(shared_data / "xanes/xraylarch/NiO_merged_and_Ni_foil_ref.csv")
    np.testing.assert_allclose(merged.energy_ev, csv.energy_ev, atol=1e-4)
    np.testing.assert_allclose(merged.mu, csv.mu, atol=1e-4)
    first = read_spectrum(prj, column="NiO.000")
    ref = read_spectrum(prj, column="Ref NiO.000")
    assert first.energy_ev.size == ref.energy_ev.size == 522
    assert not np.allclose(first.mu, ref.mu)
    # 11 scans + 11 refs + merge + its ref, two labels used twice (NiO.000, Ref NiO.000): listed once
    assert len(merged.metadata["groups"]) == 22
    with pytest.raises(DataError, match="no group 'NiO.005'"):
        read_spectrum(prj, column="NiO.005")  # README: .005 is missing


def test_csv_column_selection(shared_data):
    f = shared_data / "xanes/xraylarch/NiO_merged_and_Ni_foil_ref.csv"
    nio = read_spectrum(f, column="mu_NiO_merged")
    foil = read_spectrum(f, column="mu_Ni_foil_reference")
    assert nio.energy_ev.size == foil.energy_ev.size == 520
    assert nio.mu[0] == pytest.approx(0.55295) and foil.mu[0] == pytest.approx(0.48495)
    with pytest.raises(DataError, match="no column 'nope'"):
        read_spectrum(f, column="nope")


def test_kev_requires_explicit_unit(shared_data):
    f = shared_data / "xanes/pyxas/ref_NiO.txt"
    with pytest.raises(DataError, match=r"energies look like keV \(largest 9, .*pass --energy-unit keV"):
        read_spectrum(f)
    s = read_spectrum(f, energy_unit="keV")
    assert s.energy_ev[0] == pytest.approx(8200.0) and s.energy_ev[-1] == pytest.approx(9000.0)


def test_header_kev_unit_is_honoured(tmp_path):
    f = tmp_path / "k.csv"
    f.write_text("energy_kev,mu\n8.30,0\n8.33,0.2\n8.35,1.1\n8.40,1.0\n")
    np.testing.assert_allclose(read_spectrum(f).energy_ev, [8300, 8330, 8350, 8400])


def test_bundled_references_match_pyxas_originals(shared_data):
    from importlib.resources import files

    ours = read_spectrum(files("litomo.xanes") / "data" / "ni_kedge_LiNiO2.csv")
    orig = read_spectrum(shared_data / "xanes/pyxas/ref_LiNiO2.txt", energy_unit="keV")
    np.testing.assert_allclose(ours.energy_ev, orig.energy_ev)
    np.testing.assert_allclose(ours.mu, orig.mu)


@pytest.mark.parametrize(
    "body, match",
    [
        ("energy_ev,mu\n8300,0\n8300,1\n8400,1\n8500,1\n", "duplicate"),
        ("energy_ev,mu\n8300,0\n8350,1\n8340,1\n8500,1\n", "decreasing"),
        ("energy_ev,mu\n8300,0\n8350,nan\n8400,1\n8500,1\n", "NaN"),
        ("energy_ev,mu\n8300,0\n8350,1\n", "at least"),
    ],
)
def test_bad_spectra_raise(tmp_path, body, match):
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(DataError, match=match):
        read_spectrum(f)


def test_missing_and_gzip(tmp_path):
    with pytest.raises(InputFileError):
        read_spectrum(tmp_path / "none.csv")
    f = tmp_path / "s.txt.gz"
    f.write_bytes(gzip.compress(b"8300 0\n8330 0.1\n8350 1.0\n8400 1.0\n"))
    assert read_spectrum(f).mu[2] == 1.0


def test_at_interpolates_and_refuses_extrapolation():
    s = Spectrum(np.array([8300.0, 8340.0, 8350.0, 8400.0]), np.array([0.0, 0.4, 1.4, 1.0]), "ref")
    assert s.at(8345.0) == pytest.approx(0.9)
    np.testing.assert_allclose(s.at([8300.0, 8400.0]), [0.0, 1.0])
    with pytest.raises(DataError, match=r"'ref' covers 8300.00-8400.00 eV.*8450.00"):
        s.at([8320.0, 8450.0])


def test_kev_message_shows_the_real_largest_energy(tmp_path):
    """Issue #21 item 8: the message printed "9" for a spectrum ending at 9.1 keV."""
    f = tmp_path / "kev.csv"
    e = np.linspace(8.2, 9.1234, 40)
    np.savetxt(f, np.c_[e, np.linspace(0, 1, 40)], delimiter=",", header="energy,mu", comments="")
    with pytest.raises(DataError, match=r"largest 9\.1234,") as exc:
        read_spectrum(f)
    assert "--energy-unit keV" in str(exc.value) and "\n" not in str(exc.value)


def test_athena_group_list_has_no_repeats(shared_data):
    """Issue #21 item 8: NiO.prj's group list named 'NiO.000' and 'Ref NiO.000' twice."""
    with pytest.raises(DataError, match="no group 'nope'") as exc:
        read_spectrum(shared_data / "xanes/xraylarch/NiO.prj", column="nope")
    listed = str(exc.value).split("groups are ", 1)[1]
    names = [n.strip(" '[]") for n in listed.split(",")]
    assert "NiO.000" in names and len(names) == len(set(names)) == 22

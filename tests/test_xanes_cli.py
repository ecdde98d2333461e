"""`litomo spectrum` and `litomo advise-energies` end to end."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import pytest

from litomo.cli import main


def _run(capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _run_ok(capsys, args):
    try:
        main(args)
    except SystemExit as exc:  # typer exits 0 after a command
        assert exc.code in (0, None)
    return capsys.readouterr().out


def test_spectrum_json_matches_readme(shared_data, capsys):
    out = json.loads(
        _run_ok(
            capsys, ["spectrum", str(shared_data / "xanes/xraylarch/ni_metal_rt.xdi"), "--json"]
        )
    )
    assert out["e0_ev"] == pytest.approx(8331.5, abs=0.5)  # README (larch)
    assert out["edge_half_ev"] == pytest.approx(
        8339.3, abs=1.0
    )  # README uses larch default windows
    assert out["edge_step"] > 0 and out["white_line_height"] > 1.0


def test_spectrum_kev_needs_unit(shared_data, capsys):
    f = str(shared_data / "xanes/pyxas/ref_LiNiO2.txt")
    code, _, err = _run(capsys, ["spectrum", f])
    assert code == 2 and "energy_unit='keV'" in err and "Traceback" not in err
    out = json.loads(_run_ok(capsys, ["spectrum", f, "--energy-unit", "keV", "--json"]))
    assert out["white_line_ev"] == pytest.approx(8349.5, abs=0.6)  # README


def test_spectrum_athena_group(shared_data, capsys):
    f = str(shared_data / "xanes/xraylarch/NiO.prj")
    out = json.loads(_run_ok(capsys, ["spectrum", f, "--column", "NiO.000", "--json"]))
    assert out["name"].endswith("NiO.000")
    assert out["e0_ev"] == pytest.approx(8343.75, abs=0.5)  # README


def test_advise_energies(tmp_path, capsys):
    data = files("litomo.xanes") / "data"
    for n in ("ni_kedge_NiO.csv", "ni_kedge_LiNiO2.csv"):
        shutil.copy(data / n, tmp_path / n)
    for n in ("pre.tif", "edge.tif", "post.tif"):
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "exp.toml").write_text(
        '[sample]\nname = "t"\nvoxel_size_um = 0.05\n'
        "[xanes]\npre_edge_ev = 8300.0\nedge_ev = 8348.5\npost_edge_ev = 8400.0\n"
        'reference_pristine = "ni_kedge_NiO.csv"\nreference_charged = "ni_kedge_LiNiO2.csv"\n'
        '[[states]]\nname = "I"\npre_edge = "pre.tif"\nedge = "edge.tif"\npost_edge = "post.tif"\n'
    )
    out = json.loads(_run_ok(capsys, ["advise-energies", str(tmp_path / "exp.toml"), "--json"]))
    assert out["configured_edge_ev"] == 8348.5
    best = max(out["table"], key=lambda r: abs(r["dr_dx"]))
    assert out["best_edge_ev"] == best["edge_ev"]
    assert out["ratio"] > 5  # 8348.5 eV sits where the two references cross
    text = _run_ok(capsys, ["advise-energies", str(tmp_path / "exp.toml")])
    assert "best edge" in text and "configured edge" in text

"""Laser-diffraction-style PSD, supplier comparison, coverage vs size and representative particle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from litomo.errors import DataError
from litomo.metrics.psd import (
    coverage_vs_size,
    d_values,
    particle_psd,
    representative_particle,
    volume_psd,
)


def _hatch_choate(mu: float, s: float, q: float) -> float:
    """Volume-weighted quantile of a log-normal number distribution (Hatch-Choate: median e^(mu + 3 s^2))."""
    return float(np.exp(mu + 3 * s * s + norm.ppf(q) * s))


def test_volume_psd_d_values_of_lognormal_spheres():
    rng = np.random.default_rng(0)
    mu, s = np.log(5.0), 0.35
    d = np.exp(rng.normal(mu, s, 200_000))
    psd = volume_psd(d, np.pi / 6 * d**3, classes_per_decade=20)
    assert psd["q3_percent"].sum() == pytest.approx(100.0)
    got = d_values(psd)
    # measured: -0.40 %, +0.02 %, +0.47 %
    for name, q in (("d10", 0.1), ("d50", 0.5), ("d90", 0.9)):
        assert got[f"{name}_um"] == pytest.approx(_hatch_choate(mu, s, q), rel=0.01)
    # the number median (5 um) is far from the volume median (7.2 um): the weighting matters
    assert got["d50_um"] > 1.4 * np.exp(mu)


def test_edge_correction_removes_the_boundary_exclusion_bias():
    """Spheres with uniform centres in a 60 um box; only those wholly inside are kept."""
    rng = np.random.default_rng(0)
    box, mu, s, n = 60.0, np.log(12.0), 0.3, 40_000
    d = np.exp(rng.normal(mu, s, n))
    c = rng.uniform(0, box, (n, 3))
    inner = np.all((c - d[:, None] / 2 > 0) & (c + d[:, None] / 2 < box), axis=1)
    t = pd.DataFrame({"eq_diameter_um": d, "volume_um3": np.pi / 6 * d**3, "touches_boundary": ~inner})
    _, got = particle_psd(t, (box, box, box), supplier_um=(10.0, 15.0, 22.0))
    # measured corrected / uncorrected errors: d10 -0.5 % / -6.8 %, d50 +0.6 % / -8.3 %, d90 +3.8 % / -10.4 %
    for name, q, tol in (("d10", 0.1, 0.012), ("d50", 0.5, 0.013), ("d90", 0.9, 0.075)):
        truth = _hatch_choate(mu, s, q)
        assert got[f"{name}_um"] == pytest.approx(truth, rel=tol)
        assert got[f"{name}_uncorrected_um"] < 0.95 * truth
    assert got["d50_supplier_um"] == 15.0
    assert got["d50_ratio"] == pytest.approx(got["d50_um"] / 15.0)
    with pytest.raises(DataError, match="--supplier-psd"):
        particle_psd(t, (box, box, box), supplier_um=(5.0, 3.0, 9.0))


def test_coverage_vs_size_classes_and_rank_correlation():
    d = np.arange(1.0, 11.0)
    t = pd.DataFrame({"eq_diameter_um": d, "coverage_cbd": 0.05 * d, "coverage_am": 1.0 / d,
                      "touches_boundary": [False] * 9 + [True]})
    classes, rho = coverage_vs_size(t, n_classes=3)
    assert rho["coverage_cbd"] == pytest.approx(1.0) and rho["coverage_am"] == pytest.approx(-1.0)
    assert classes["n"].sum() == 9  # the boundary particle is left out
    assert classes["coverage_cbd"].is_monotonic_increasing
    assert classes["coverage_cbd"].iloc[0] == pytest.approx(0.05 * 2.0)  # median of 1, 2, 3 um


def test_representative_particle_is_the_median_one():
    rng = np.random.default_rng(1)
    n = 41
    t = pd.DataFrame({"particle": np.arange(1, n + 1),
                      "eq_diameter_um": np.exp(rng.normal(1.5, 0.4, n)),
                      "sphericity": rng.uniform(0.6, 0.95, n), "coverage_cbd": rng.uniform(0, 0.4, n),
                      "touches_boundary": False})
    med = t[["eq_diameter_um", "sphericity", "coverage_cbd"]].median()
    t.loc[17, ["eq_diameter_um", "sphericity", "coverage_cbd"]] = med.to_numpy()  # particle 18 = the median
    assert representative_particle(t) == 18
    t.loc[17, "touches_boundary"] = True
    assert representative_particle(t) != 18
    assert representative_particle(t.iloc[:0]) == -1


def test_micro_cli_supplier_psd_and_particle_summary(tmp_path, capsys):
    import json

    import tifffile

    from litomo.cli import main

    n = 32
    z, y, x = np.ogrid[:n, :n, :n]
    lab = np.zeros((n, n, n), np.uint8)
    for k, c in enumerate([(8, 8, 8), (8, 22, 20), (22, 10, 21), (21, 22, 9)]):
        r = 4.0 + k
        lab[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = 1
    path = tmp_path / "balls.tif"
    tifffile.imwrite(path, lab)
    out = tmp_path / "out"
    argv = ["micro", str(path), "--voxel-size-um", "0.5", "--out", str(out), "--json", "--no-transport",
            "--no-pore-sizes", "--supplier-psd", "4,5,6", "--tile-um", "8"]
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None)
    rep = json.loads(capsys.readouterr().out)
    dv = rep["particle_psd_volume"]
    assert dv["d50_supplier_um"] == 5.0 and dv["d50_ratio"] == pytest.approx(dv["d50_um"] / 5.0)
    # balls of radius 4-7 voxels (0.5 um): diameters 4-7 um, volume-weighted D50 near the largest
    assert 5.0 < dv["d50_um"] < 7.5
    assert rep["representative_particle"] >= 1
    table = pd.read_csv(out / "tables" / "metrics_table.csv")
    row = table[table.metric == "D50 by volume"].iloc[0]
    assert row["balls Expected"] == 5.0
    assert pd.read_csv(out / "tables" / "particle_size_distribution.csv")["q3_percent"].sum() == pytest.approx(100)
    assert (out / "tables" / "coverage_by_size.csv").exists()
    assert (out / "figures" / "particle_summary.png").exists()
    local = pd.read_csv(out / "tables" / "local_maps.csv")  # 8 um tiles of 16 voxels: 2 x 2 x 2
    assert len(local) == 8
    assert (local["volume_fraction_am"] * 1).mean() == pytest.approx((lab == 1).mean())
    assert len(pd.read_csv(out / "tables" / "local_profile.csv")) == 2
    try:
        code = main(["micro", str(path), "--voxel-size-um", "0.5", "--out", str(tmp_path / "o2"),
                     "--supplier-psd", "6,5,4"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "--supplier-psd" in capsys.readouterr().err

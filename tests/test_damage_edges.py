"""The crack paper's Canny damage method on constructed cracks, depth windows and CBD gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from litomo.damage import particle_hull
from litomo.damage_edges import EdgeDamageParams, edge_damage
from litomo.errors import DataError


def _grey(am: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Partial-volume blur and noise (SNR 10) of an AM mask."""
    return ndimage.gaussian_filter(am.astype(np.float32), 0.7) + rng.normal(0, 0.1, am.shape).astype(np.float32)


def test_planar_crack_edge_density_and_intact_particle():
    rng = np.random.default_rng(0)
    n = 48
    z, y, x = np.ogrid[:n, :n, :n]
    ball = (z - 24) ** 2 + (y - 24) ** 2 + (x - 24) ** 2 <= 18**2
    am = ball & ~(np.abs(x - 24) <= 1)  # a 3-voxel crack through the centre
    per, _ = edge_damage(_grey(am, rng), am.astype(np.int32), 0.5)
    # truth from the geometry alone: two straight crack traces per slice, one edge pixel per row
    interior = ndimage.binary_erosion(np.pad(particle_hull(am, 3), 1), iterations=2)[1:-1, 1:-1, 1:-1]
    expected = 2 * interior[:, :, 24].sum() * 0.5 / (interior.sum() * 0.25)
    assert per["edge_density_per_um"][0] == pytest.approx(expected, rel=0.25)  # measured +11 % (noisy traces)
    intact, _ = edge_damage(_grey(ball, rng), ball.astype(np.int32), 0.5)
    assert intact["edge_density_per_um"][0] < 0.1 * expected  # measured 2.6 %


def test_depth_windows_from_either_side():
    """Two particles, the cracked one near z = 0: its window carries the damage."""
    rng = np.random.default_rng(1)
    z, y, x = np.ogrid[:64, :24, :24]
    lab = np.zeros((64, 24, 24), np.int32)
    lab[(z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 100] = 1
    lab[(z - 50) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 100] = 2
    lab[(lab == 1) & (np.abs(x - 12) <= 1)] = 0
    params = EdgeDamageParams(window_um=16.0)
    per, depth = edge_damage(_grey(lab > 0, rng), lab, 1.0, params=params)
    assert len(depth) == 4 and depth["n_particles"].tolist() == [1, 0, 0, 1]
    assert depth["edge_density_per_um"][0] > 10 * depth["edge_density_per_um"][3]
    assert per.set_index("particle").loc[1, "edge_density_per_um"] > 0.1
    _, flipped = edge_damage(_grey(lab > 0, rng), lab, 1.0, params=EdgeDamageParams(window_um=16.0,
                                                                                      separator_side="z_max"))
    assert flipped["edge_density_per_um"][3] > 10 * flipped["edge_density_per_um"][0]
    with pytest.raises(DataError, match="--separator-side"):
        EdgeDamageParams(separator_side="top")


def test_cbd_gap_half_detached_shell():
    """A ball with a CBD shell touching it on one half and 2 voxels away on the other."""
    n = 40
    z, y, x = np.ogrid[:n, :n, :n]
    r = np.sqrt((z - 20) ** 2 + (y - 20) ** 2 + (x - 20.0) ** 2)
    ball = r <= 10
    near = (r > 10) & (r <= 13) & (x < 20)
    far = (r > 12) & (r <= 15) & (x >= 20)  # gap: the shell starts 2 voxels beyond the surface
    lab = ball.astype(np.int32)
    per, depth = edge_damage(ball.astype(float), lab, 0.5, cbd=near | far)
    row = per.iloc[0]
    # measured: contact 0.53, detached 0.47, mean gap 0.80 um (voxelised sphere vs shell)
    assert row["cbd_contact_fraction"] == pytest.approx(0.5, abs=0.08)
    assert row["cbd_detached_fraction"] == pytest.approx(0.5, abs=0.08)
    assert row["cbd_contact_fraction"] + row["cbd_detached_fraction"] == pytest.approx(1.0)
    assert row["cbd_gap_mean_um"] == pytest.approx(2 * 0.5, abs=0.25)
    assert depth["cbd_detached_fraction"].dropna().iloc[0] == pytest.approx(row["cbd_detached_fraction"])


def test_damage_workflow_canny_tables_on_the_crack_phantom():
    """Intact < planar < double/branching; the median-filtered Canny misses the sub-voxel crack."""
    from litomo.phantom.cracks import make_damage_phantom
    from litomo.workflows.damage import DamageSettings, analyse_damage

    levels = ("intact", "subvoxel", "planar", "double", "branching")
    ph = make_damage_phantom(levels, radius_vox=10, noise=0.03, seed=3)
    # a Li run of the same particles (centroids from the phantom's truth, 0.02 um off), Li falling
    # with the damage level, plus one Li particle far from any damaged one
    centres = np.asarray(ph.centres_vox, float) * ph.voxel_size_um + 0.02
    li = pd.DataFrame({"state": "s1", "particle": np.arange(11, 11 + len(levels)),
                       "centroid_z_um": centres[:, 0], "centroid_y_um": centres[:, 1], "centroid_x_um": centres[:, 2],
                       "mean_li": np.linspace(0.95, 0.55, len(levels))})
    li.loc[len(li)] = ["s1", 99, 50.0, 50.0, 50.0, 0.9]
    r = analyse_damage(ph.grey, DamageSettings(ph.voxel_size_um, window_um=0.5), li_particles=li)
    m = r.particles[["particle", "centroid_x_um"]].merge(r.edge_particles, on="particle").sort_values("centroid_x_um")
    e = dict(zip(levels, m["edge_density_per_um"], strict=True))
    # measured (um^-1): intact 0, subvoxel 0, planar 1.35, double 3.89, branching 3.97
    assert e["intact"] == 0.0 and e["subvoxel"] == 0.0
    assert e["planar"] > 0.6
    assert min(e["double"], e["branching"]) > 2 * e["planar"]
    assert r.edge_depth["n_particles"].sum() == len(levels)
    assert r.summary["separator_side"] == "z_min"
    assert r.summary["crack_li_pairs"] == len(levels) and r.summary["crack_li_unpaired"] == 0
    corr = r.crack_li_correlation.set_index(["damage_metric", "li_metric"])
    assert corr.loc[("damage_index", "mean_li"), "spearman_rho"] == pytest.approx(-1.0)
    assert corr.loc[("damage_index", "mean_li"), "n"] == len(levels)
    with pytest.raises(DataError, match="--separator-side"):
        DamageSettings(0.05, separator_side="left")


def test_centroid_pairing_and_correlation():
    from litomo.damage_li import crack_li_correlation, crack_li_table, match_by_centroid

    rng = np.random.default_rng(4)
    g = np.stack(np.meshgrid(*(np.arange(4) * 10.0,) * 3, indexing="ij"), -1).reshape(-1, 3)[:30]
    damage = pd.DataFrame({"particle": np.arange(1, 31), "centroid_z_um": g[:, 0], "centroid_y_um": g[:, 1],
                           "centroid_x_um": g[:, 2], "eq_diameter_um": 6.0, "damage_index": rng.random(30)})
    keep = np.arange(3, 30)  # three damaged particles have no Li partner
    jitter = rng.normal(0, 0.3, (keep.size, 3))
    li = pd.DataFrame({"particle": 100 + keep, "centroid_z_um": g[keep, 0] + jitter[:, 0],
                       "centroid_y_um": g[keep, 1] + jitter[:, 1], "centroid_x_um": g[keep, 2] + jitter[:, 2]})
    li["mean_li"] = 1.0 - damage["damage_index"].to_numpy()[keep] ** 2  # monotone decreasing
    li = li.sample(frac=1.0, random_state=0)  # order must not matter
    pairs = match_by_centroid(damage, li)
    assert len(pairs) == 27 and (pairs["particle_b"] - pairs["particle_a"] == 99).all()
    t = crack_li_table(damage, li)
    c = crack_li_correlation(t)
    assert c["n"].iloc[0] == 27 and c["spearman_rho"].iloc[0] == pytest.approx(-1.0)
    assert c["p_value"].iloc[0] < 1e-6
    with pytest.raises(DataError, match="--li-state"):
        crack_li_table(damage, li.assign(state="a"), state="b")


def test_cli_damage_li_run_errors(tmp_path, capsys):
    import tifffile

    from litomo.cli import main

    vol = tmp_path / "v.tif"
    tifffile.imwrite(vol, np.zeros((4, 4, 4), np.uint8))
    (tmp_path / "bad.csv").write_text("particle,x\n1,2\n")
    for li_run, msg in ((tmp_path / "nothing", "not found"), (tmp_path / "bad.csv", "no mean_li")):
        try:
            code = main(["damage", str(vol), "--voxel-size-um", "1", "--out", str(tmp_path / "o"), "--li-run",
                         str(li_run)])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert "--li-run" in err and msg in err
    assert not (tmp_path / "o").exists()

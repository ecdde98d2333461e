"""Crack/damage quantification (litomo.damage) on analytic masks and the cracked-particle phantom."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from litomo.damage import (
    DamageParams,
    close_cracks,
    damage_table,
    depth_profile,
    severe_network,
    sphere_pack,
)
from litomo.errors import DataError, LitomoError
from litomo.phantom.cracks import make_damage_phantom

LEVELS = ("intact", "subvoxel", "planar", "double", "branching")


@pytest.fixture(scope="module")
def phantom():
    return make_damage_phantom(LEVELS, radius_vox=10, noise=0.03, seed=3)


def test_crack_fraction_and_surface_of_a_slab_crack():
    lab = np.zeros((24, 24, 24), np.int32)
    lab[4:20, 4:20, 4:20] = 1
    lab[11:13, 6:18, 6:18] = 0  # internal crack 2 x 12 x 12 voxels
    t = damage_table(lab, 0.5)
    assert len(t) == 1
    # hole filling closes the crack: hull = full 16^3 cube
    assert t.loc[0, "hull_volume_um3"] == pytest.approx(16**3 * 0.125)
    assert t.loc[0, "crack_fraction"] == pytest.approx(2 * 12 * 12 / 16**3)
    # crack walls: 2 x 144 faces + 4 x 24 side faces, 0.25 um^2 each, per hull volume
    assert t.loc[0, "crack_surface_density_per_um"] == pytest.approx((288 + 96) * 0.25 / (16**3 * 0.125))
    # a crack open to the surface is caught by the closing (up to its mouths at the cube edges)
    lab[11:13, 4:20, 6:18] = 0
    t2 = damage_table(lab, 0.5)
    assert 0.8 * 2 * 16 * 12 / 16**3 < t2.loc[0, "crack_fraction"] <= 2 * 16 * 12 / 16**3


def test_gap_between_particles():
    lab = np.zeros((10, 10, 30), np.int32)
    lab[2:8, 2:8, 2:10] = 1
    lab[2:8, 2:8, 13:21] = 2  # 3 empty voxels between
    t = damage_table(lab, 0.2)
    assert np.allclose(t["gap_um"], 3 * 0.2)
    alone = damage_table((lab == 1).astype(np.int32), 0.2)
    assert np.isinf(alone.loc[0, "gap_um"])


def test_phantom_damage_ordered_and_classified_with_grey(phantom):
    t = damage_table(phantom.labels, phantom.voxel_size_um, grey=phantom.grey).sort_values("particle")
    d = t["damage_index"].to_numpy()
    assert np.all(np.diff(d) > 0), d  # intact < subvoxel < planar < double < branching
    assert t["damage_class"].tolist() == phantom.expected_class


def test_subvoxel_crack_needs_greyscale(phantom):
    labels_only = damage_table(phantom.labels, phantom.voxel_size_um).sort_values("particle")
    grey = damage_table(phantom.labels, phantom.voxel_size_um, grey=phantom.grey).sort_values("particle")
    sub = LEVELS.index("subvoxel")
    # the 0.4-voxel crack is lost by thresholding ...
    assert labels_only["crack_fraction"].iloc[sub] < 0.005
    # ... but its partial-volume grey dip raises the edge density well above the intact particle
    assert grey["edge_density_per_um"].iloc[sub] > 3 * grey["edge_density_per_um"].iloc[0]
    # resolved cracks are ordered without the greyscale too
    d = labels_only["damage_index"].to_numpy()
    resolved = [LEVELS.index(x) for x in ("intact", "planar", "double", "branching")]
    assert np.all(np.diff(d[resolved]) > 0)


def test_close_cracks_keeps_particle_whole(phantom):
    from scipy import ndimage

    am = phantom.labels > 0
    n_raw = ndimage.label(am)[1]
    n_closed = ndimage.label(close_cracks(am) & ~np.zeros_like(am))[1]
    assert n_closed <= n_raw
    assert close_cracks(am).sum() > am.sum()


def test_thresholds_configurable(phantom):
    t = damage_table(phantom.labels, phantom.voxel_size_um, grey=phantom.grey,
                     params=DamageParams(mild_threshold=0.5, severe_threshold=2.0))
    assert set(t["damage_class"]) <= {"least", "mild"}
    with pytest.raises(LitomoError):
        DamageParams(mild_threshold=0.5, severe_threshold=0.1)


def test_bad_input():
    with pytest.raises(DataError):
        damage_table(np.random.default_rng(0).random((8, 8, 8)), 1.0)
    with pytest.raises(DataError):
        damage_table(np.zeros((8, 8, 8), np.int32), 1.0)


def test_depth_network_and_sphere_pack():
    t = pd.DataFrame({
        "particle": [1, 2, 3, 4, 5],
        "centroid_z_um": [1.0, 4.0, 12.0, 15.0, 25.0],
        "centroid_y_um": [0.0] * 5,
        "centroid_x_um": [0.0, 3.0, 0.0, 7.0, 0.0],
        "volume_um3": [4 / 3 * np.pi * r**3 for r in (1, 2, 1, 1, 3)],
        "damage_index": [0.0, 0.7, 0.9, 0.1, 0.8],
        "damage_class": ["least", "severe", "severe", "mild", "severe"],
    })
    dp = depth_profile(t, window_um=10.0, depth_um=30.0)
    assert dp["n_particles"].tolist() == [2, 2, 1]
    assert dp["n_severe"].tolist() == [1, 1, 1]
    net = severe_network(t, k=1)
    # severe particles 2, 3, 5: nearest neighbours 2-3 (d = sqrt(64 + 9)) and 5-3 (13)
    assert set(zip(net["particle_a"], net["particle_b"], strict=True)) == {(2, 3), (3, 5)}
    assert net.loc[net["particle_a"] == 2, "distance_um"].item() == pytest.approx(np.sqrt(73))
    sp = sphere_pack(t, ((0, 20), (-1, 1), (-1, 5)))
    assert sp["particle"].tolist() == [1, 2, 3]
    assert np.allclose(sp["radius_um"], [1, 2, 1])


def test_cli_damage_on_grey_phantom(tmp_path, phantom):
    import tifffile

    from litomo.cli import main

    tifffile.imwrite(tmp_path / "grey.tif", phantom.grey)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["damage", str(tmp_path / "grey.tif"), "--voxel-size-um", str(phantom.voxel_size_um),
              "--out", str(out), "--window-um", "0.5", "-q"])
    assert exc.value.code == 0
    t = pd.read_csv(out / "tables" / "damage_particles.csv")
    # Otsu + separation on the crack-closed mask recovers one particle per sphere and the classes
    assert len(t) == len(LEVELS)
    assert sorted(t["damage_class"]) == sorted(phantom.expected_class)
    for name in ("damage_depth", "damage_network", "sphere_pack"):
        assert (out / "tables" / f"{name}.csv").is_file()
    for stem in ("damage_index_histogram", "damage_classes_vs_depth"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0
        assert (out / "figures" / f"{stem}.svg").is_file()
    net = pd.read_csv(out / "tables" / "damage_network.csv")
    assert len(net) == 1  # the two severe particles link to each other


def test_cli_damage_rejects_bad_bbox(tmp_path, phantom):
    import tifffile

    from litomo.cli import main

    tifffile.imwrite(tmp_path / "lab.tif", (phantom.labels > 0).astype(np.uint8))
    with pytest.raises(SystemExit) as exc:
        main(["damage", str(tmp_path / "lab.tif"), "--voxel-size-um", "0.05", "--out", str(tmp_path / "o"),
              "--bbox-um", "0:1,0:1"])
    assert exc.value.code == 2

"""litomo.metrics against published values on real third-party volumes (../shared/data/micro/README.txt)."""

from __future__ import annotations

import pytest
import tifffile

from litomo.metrics.fractions import volume_fractions
from litomo.metrics.percolation import percolation
from litomo.metrics.surface import surface_areas
from litomo.metrics.tpb import tpb_stats
from litomo.phases import to_canonical


@pytest.fixture(scope="module")
def polaron(shared_data):
    """TauFactor's electrode.tiff (Polaron GAN NMC, 256^3): 0 pore, 85 NMC, 170 CBD."""
    raw = tifffile.imread(shared_data / "micro" / "taufactor_electrode_polaron_nmc_256.tiff")
    return to_canonical(raw, {"pore": 0, "am": 85, "cbd": 170})


@pytest.fixture(scope="module")
def nrel(shared_data):
    """NREL nmc-1-cal with MATBOX 'bridge' CBD (251x301x301): 0 pore, 1 NMC, 2 CBD."""
    raw = tifffile.imread(shared_data / "micro" / "nrel_nmc1cal_generatedCBD_bridge_251x301x301.tif")
    return to_canonical(raw)


def test_polaron_published_fractions_and_face_ssa(polaron):
    vf = volume_fractions(polaron)
    assert vf["pore"] == pytest.approx(0.449917, abs=1e-5)
    assert vf["am"] == pytest.approx(0.400466, abs=1e-5)
    assert vf["cbd"] == pytest.approx(0.149616, abs=1e-5)
    ssa = surface_areas(polaron, 1.0)["specific"]  # TauFactor notebook: spacing 1, per voxel
    assert ssa["pore"] == pytest.approx(0.30684, rel=0.005)
    assert ssa["am"] == pytest.approx(0.14610, rel=0.005)
    assert ssa["cbd"] == pytest.approx(0.34223, rel=0.005)
    # the published value in 1/m at 390.6 nm voxels is the same number in physical units
    ssa_um = surface_areas(polaron, 100 / 256)["specific"]
    assert ssa_um["pore"] * 1e6 == pytest.approx(785502, rel=0.005)


def test_polaron_published_through_fractions(polaron):
    # TauFactor's "x" is numpy axis 0 (its front face is img[0]), our z
    for phase, ref in (("pore", 0.9989), ("am", 0.9611), ("cbd", 0.9740)):
        r = percolation(polaron, "z", phase=phase)
        assert r["through"] == pytest.approx(ref, abs=0.005)
        assert r["through"] + r["dead_end"] + r["isolated"] == pytest.approx(1.0)
    # CBD with 26-connectivity (TauFactor connectivity 3): 0.9936
    assert percolation(polaron, "z", phase="cbd", connectivity=26)["through"] == pytest.approx(0.9936, abs=0.005)


def test_nrel_regression_anchors(nrel):
    vf = volume_fractions(nrel)
    assert [vf[p] for p in ("pore", "am", "cbd")] == pytest.approx([0.40055, 0.49945, 0.10000], abs=1e-5)
    s = surface_areas(nrel, 1.0)
    assert s["specific"]["pore"] == pytest.approx(0.13833, rel=1e-3)
    assert [s["interfacial"][k] for k in ("pore/am", "pore/cbd", "am/cbd")] == pytest.approx(
        [0.05677, 0.08155, 0.09595], rel=1e-3)
    assert tpb_stats(nrel)["edge_fraction"] == pytest.approx(0.016306, rel=1e-3)
    assert percolation(nrel, 0, phase="cbd")["through"] == pytest.approx(0.65960, abs=1e-4)
    # thin CBD bridges are only edge-connected
    assert percolation(nrel, 0, phase="cbd", connectivity=18)["through"] == pytest.approx(0.99718, abs=1e-4)
    assert percolation(nrel, 0, phase="am")["through"] == pytest.approx(0.99814, abs=1e-4)
    # marching cubes gives a smaller area than face counting (SPEC: 1.2-1.5x); the default
    # smoothing erases part of the thin CBD bridges, the binary mesh does not
    crop = nrel[:64, :64, :64]
    fc = surface_areas(crop, 1.0)["specific"]
    mc = surface_areas(crop, 1.0, method="mc")["specific"]
    mc0 = surface_areas(crop, 1.0, method="mc", smooth_sigma_vox=0)["specific"]
    for p in ("pore", "am"):
        assert 1.1 < fc[p] / mc[p] < 2.2
    for p in ("pore", "am", "cbd"):
        assert 1.2 < fc[p] / mc0[p] < 1.6
    assert fc["cbd"] / mc["cbd"] > fc["cbd"] / mc0["cbd"]

"""Surface share of bins at a volume face that a shifted energy did not image (issue 16, session 9).

A registered state's edge bins lack the rows that a shifted energy did not image; their AM
fraction and interior count are of the observed voxels. Measured on the forward model
no_background S1: full Li-rich bins on the faces read 0.04-0.05 low because the surface share is
computed against all 343 voxels of the bin. Since session 11 the warp stage counts the observed
voxels per bin and the li stage passes them (docs/science.md, "Bins on the volume faces").
"""

from __future__ import annotations

import numpy as np
import pytest

from litomo.xanes.interior import interior_surface_li


def _particle():
    """One particle of three 7^3 bins: a Li-poor surface bin (plain mean 0.45, 40 interior voxels),
    a full Li-rich core bin (0.95) and a full core bin on the volume face of which one 7x7 row
    was not observed at every energy (294 observed voxels, all interior, AM fraction 1 of them)."""
    x_int = np.array([0.95, 0.95, 0.95])  # the surface bin's few interior voxels reach the core
    x_mass = np.array([0.45, 0.95, 0.95])
    count = np.array([40.0, 343.0, 294.0])
    am = np.array([0.6, 1.0, 1.0])
    return x_int, x_mass, count, am, np.ones(3, int)


def test_counting_all_bin_voxels_takes_the_face_bin_for_surface():
    x_int, x_mass, count, am, lab = _particle()
    x = interior_surface_li(x_int, x_mass, count, am, lab, 343)
    # surface share 1 - 294/343 = 0.14 of the Li-poor offset (what the run did before)
    assert x[2] < 0.90


def test_observed_voxels_per_bin_keep_the_face_bin_whole():
    """Given the voxels observed per bin (the warp stage's ``interior["observed"]``), the face
    bin has no surface share and keeps its Li-rich value; the Li-poor layer goes to the surface
    bin alone (the suite's no_background S1 2.36 -> 1.07 pp)."""
    x_int, x_mass, count, am, lab = _particle()
    observed = np.array([343.0, 343.0, 294.0])
    x = interior_surface_li(x_int, x_mass, count, am, lab, observed, shrink_offset=False)
    assert abs(x[2] - 0.95) < 1e-6 and abs(x[1] - 0.95) < 1e-6
    # the particle's Li (AM-weighted) is kept
    assert float(np.sum(am * x)) == pytest.approx(float(np.sum(am * x_mass)), rel=1e-6)

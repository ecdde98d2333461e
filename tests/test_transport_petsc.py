"""The PETSc backend (``mpiexec -n 2 litomo tortuosity --backend petsc``) against the native solver.

Skipped where petsc4py, mpi4py or mpiexec are not installed (optional third-party dependencies:
``pip install 'litomo[petsc]'`` next to an MPI and a PETSc build)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("petsc4py")
pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec")


@pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not installed")
@pytest.mark.parametrize("axis", ["z", "x"])
def test_petsc_two_ranks_match_native(shared_data, tmp_path, axis):
    """2 ranks, each reading its own z-slab of a 64^3 crop of the real electrode (pore phase).

    Along z the inlet and outlet lie on different ranks and the percolating clusters must be
    joined across the slab boundary; along x both faces are split between the ranks."""
    import tifffile

    from litomo.transport.diffusion import tortuosity

    img = tifffile.imread(shared_data / "micro" / "taufactor_electrode_polaron_nmc_256.tiff")[:64, :64, :64]
    path = tmp_path / "crop.tif"
    tifffile.imwrite(path, img)
    native = tortuosity(img == 0, axis, rtol=1e-8)
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "litomo", "tortuosity", str(path), "--axis", axis,
           "--labels", "pore=0,am=85,cbd=170", "--voxel-size-um", "1", "--backend", "petsc",
           "--rtol", "1e-8", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["backend"] == {"name": "petsc", "ranks": 2}
    assert out["converged"] and out["flux_balance"][axis] < 1e-3
    assert out["eps"] == pytest.approx(native.eps, rel=1e-12)
    assert out["percolating_fraction"][axis] == pytest.approx(native.percolating_fraction, rel=1e-12)
    assert out["tau"][axis] == pytest.approx(native.tau, rel=5e-8)  # measured 1-2.3e-8
    assert np.isfinite(native.tau) and native.tau > 1.5

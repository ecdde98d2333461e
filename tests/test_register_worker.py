"""itk-elastix in a worker process, and the itk-free evaluation of elastix transforms.

Truth: elastix itself. The numpy evaluation of rigid and B-spline parameter maps
(:mod:`litomo.elastix_field`) is compared with transformix's deformation field on maps whose
parameters are set far from identity; a registration run in the worker is compared with the
same registration run in this process.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from litomo import elastix, register_worker
from litomo.elastix_field import displacement
from litomo.errors import DataError, LitomoError
from litomo.register import RegistrationParams, displacement_field, register_pair

pytestmark = pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")


def _pair(n: int = 24, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    fixed = ndi.gaussian_filter(rng.random((n, n, n)), 2).astype(np.float32)
    moving = ndi.shift(fixed, (1.2, -0.8, 0.6), order=1, mode="nearest") + rng.normal(0, 0.002, fixed.shape)
    return fixed, moving.astype(np.float32)


@pytest.fixture(scope="module")
def bspline_maps():
    """Rigid + B-spline maps of a real (small) registration, parameters then pushed far from identity."""
    fixed, moving = _pair()
    params = RegistrationParams(mode="rigid+bspline", bspline_grid_spacing_vox=6, iterations=20, resolutions=1)
    res = register_pair(fixed, moving, params=params, voxel_size_um=(0.5, 0.4, 0.3), resample=False)
    rigid, bspl = (dict(m) for m in res.parameter_maps)
    assert rigid["Transform"] == ["EulerTransform"] and bspl["Transform"] == ["BSplineTransform"]
    rigid["TransformParameters"] = [repr(v) for v in (0.08, -0.12, 0.15, 0.7, -0.4, 0.9)]  # rad, um (x-first)
    rng = np.random.default_rng(0)
    n = len(bspl["TransformParameters"])
    bspl["TransformParameters"] = [repr(float(v)) for v in rng.normal(0, 0.6, n)]  # um
    return [rigid, bspl]


def _transformix_field(maps, shape, spacing) -> np.ndarray:
    itk = elastix.load_itk()
    img = elastix.to_itk(np.zeros(shape, np.float32), spacing)
    f = elastix.deformation_field(img, elastix.parameter_object(elastix.with_grid(maps, shape, spacing)))
    return np.moveaxis(np.asarray(itk.array_from_image(f), np.float32)[..., ::-1], -1, 0)


@pytest.mark.parametrize("zyx", ["false", "true"])
def test_native_field_matches_transformix(bspline_maps, zyx):
    rigid, bspl = ({**m, "ComputeZYX": [zyx]} if m["Transform"] == ["EulerTransform"] else m for m in bspline_maps)
    # another grid than the registration's, of the same physical frame (as the warp uses it)
    shape, spacing = (9, 13, 11), (1.2, 0.85, 0.61)
    for maps in ([rigid], [rigid, bspl]):
        ref = _transformix_field(maps, shape, spacing)
        got = displacement(maps, shape, spacing)
        assert np.abs(ref).max() > 0.5  # a transform far from identity: a wrong convention shows
        # measured: 2e-7 um (float32 rounding of transformix's output)
        np.testing.assert_allclose(got, ref, atol=2e-6)
    np.testing.assert_array_equal(displacement_field([rigid, bspl], shape, voxel_size_um=spacing), got)


def test_native_field_declines_what_it_does_not_evaluate(bspline_maps):
    rigid, bspl = bspline_maps
    assert displacement([{**rigid, "Transform": ["SimilarityTransform"]}], (4, 4, 4), (1.0,) * 3) is None
    assert displacement([rigid, {**bspl, "HowToCombineTransforms": ["Add"]}], (4, 4, 4), (1.0,) * 3) is None


def test_worker_gives_the_same_registration_and_one_line_errors(monkeypatch):
    monkeypatch.setenv(register_worker.ENV_SWITCH, "1")  # tests/conftest.py turns it off for the suite
    # every array goes to the worker as a file (as 256^3 volumes do), not pickled through its pipe
    monkeypatch.setattr(register_worker, "FILE_MIN_BYTES", 0)
    fixed, moving = _pair(20, seed=4)
    params = RegistrationParams(mode="rigid", iterations=40, resolutions=2)
    here = register_pair(fixed, moving, params=params, voxel_size_um=0.5, resample=False)
    with register_worker.session() as worker:
        assert worker is not None and register_worker.active() is worker and worker.pid != os.getpid()
        there = register_pair(fixed, moving, params=params, voxel_size_um=0.5, resample=False)
        # errors raised in the worker arrive as themselves
        with pytest.raises(DataError, match="constant"):
            register_pair(fixed, np.ones_like(fixed))
        os.kill(worker.pid, signal.SIGKILL)  # a worker killed (e.g. by the OOM killer) must not hang the run
        with pytest.raises(LitomoError, match="worker process died during register_pair"):
            register_pair(fixed, moving, params=params, voxel_size_um=0.5)
    assert register_worker.active() is None
    assert there.parameter_maps[0]["TransformParameters"] == here.parameter_maps[0]["TransformParameters"]


def test_worker_switched_off(monkeypatch):
    monkeypatch.setenv(register_worker.ENV_SWITCH, "0")
    with register_worker.session() as worker:
        assert worker is None and register_worker.active() is None


def test_arrays_travel_as_files_that_are_removed_after_the_call(monkeypatch, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    seen = []

    def spy(a, b, *, scale):
        seen.append(sorted(p.name for p in tmp_path.rglob("*.npy")))
        return (a + b) * scale

    worker = register_worker.ElastixWorker.__new__(register_worker.ElastixWorker)  # no process: a thread
    worker._pool = ThreadPoolExecutor(1)
    big = np.arange(register_worker.FILE_MIN_BYTES // 8, dtype=np.float64)  # exactly the limit
    out = worker.call(spy, big, np.ones(1), scale=np.float64(2.0))
    assert seen == [["0.npy"]]  # the large array as a file, the small ones pickled
    np.testing.assert_array_equal(out, (big + 1) * 2)
    assert not list(tmp_path.rglob("*"))  # the temporary folder is gone

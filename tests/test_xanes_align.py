"""Energy alignment of an image stack: known shifts and magnification changes are undone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from litomo.errors import DataError

pytest.importorskip("itk")
from litomo.register import RegistrationParams
from litomo.xanes.align import align_energy_stack


def _stack():
    rng = np.random.default_rng(0)
    base = ndi.gaussian_filter(rng.random((80, 80)), 3)
    base = (base - base.mean()) / base.std()
    shifts = [(2.0, -1.5), (0.0, 0.0), (-1.0, 2.5)]
    scales = [1.0, 1.0, 0.99]  # TXM magnification drifts with energy
    frames = []
    c = np.array(base.shape) / 2
    for k, (s, sc) in enumerate(zip(shifts, scales, strict=True)):
        m = np.eye(2) / sc
        img = ndi.affine_transform(base, m, offset=c - m @ c - np.array(s), order=3)
        frames.append((1 + 0.3 * k) * img + 0.2 * k)  # contrast changes across the edge
    return np.stack(frames).astype(np.float32), shifts


def test_alignment_recovers_shifts_and_improves_ncc():
    stack, shifts = _stack()
    res = align_energy_stack(
        stack,
        energies_ev=[8330.0, 8345.0, 8360.0],
        reference_index=1,
        params=RegistrationParams(iterations=100, resolutions=2, seed=0),
    )
    assert res.aligned.shape == stack.shape and res.reference_index == 1
    for i in (0, 2):
        q = res.qa[i]
        assert q["fixed_index"] == 1 and q["energy_ev"] == [8330.0, 8345.0, 8360.0][i]
        assert q["ncc_after"] > 0.97 > q["ncc_before"]
        np.testing.assert_allclose(q["translation_vox"], shifts[i], atol=0.5)
    assert res.qa[2]["scale"] == pytest.approx(0.99, abs=0.005)
    # the aligned frames agree with the reference frame in the interior (up to contrast)
    inner = (slice(1, None), slice(10, -10), slice(10, -10))
    a = res.aligned[inner]
    r = np.corrcoef(a[0].ravel(), a[1].ravel())[0, 1]
    assert r > 0.97


def test_bad_stacks():
    with pytest.raises(DataError, match="at least two"):
        align_energy_stack(np.zeros((1, 8, 8)))
    with pytest.raises(DataError, match="reference_index"):
        align_energy_stack(np.random.default_rng(0).random((2, 8, 8)), reference_index=5)

"""The automatic edge-jump threshold on reconstructions with empty space (issue #14).

A TXM sample sits inside a detector with a margin, and volumes are padded or masked outside the
field of view: voxels with exactly zero attenuation at both energies are not measurements. Before
session 8 they entered the background noise estimate; where they dominated it its median and MAD
were exactly 0 and the threshold was 0 (``litomo run`` stopped: "jump_threshold must be a positive
number, got 0.0"). Truth: the threshold of the same measured voxels without the padding.
"""

from __future__ import annotations

import numpy as np

from litomo.xanes.threeenergy import am_mask_from_jump, jump_threshold


def _measured(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Background and material (jump 1); the jump's noise is sigma 0.01."""
    rng = np.random.default_rng(seed)
    pre = rng.normal(0.2, 0.01, n)
    post = pre + np.r_[np.zeros(n // 2), np.ones(n - n // 2)] + rng.normal(0, 0.01, n)
    return pre, post


def test_padding_zeros_do_not_move_the_threshold():
    pre, post = _measured()
    ref = jump_threshold(pre, post)
    # 5 sigma of the jump noise above 0: 0.05 (measured 0.0495)
    assert 0.045 < ref < 0.055
    pad = np.zeros(4 * pre.size)  # 80 % of the volume: empty margin / masked corners
    padded = jump_threshold(np.r_[pre, pad], np.r_[post, pad])
    assert padded == ref  # exactly: the padding is left out, not down-weighted
    # NaN (the field-of-view mask since session 8) is left out too
    nan = np.full(pre.size, np.nan)
    assert jump_threshold(np.r_[pre, nan], np.r_[post, nan]) == ref


def test_noise_free_volume_with_padding_gets_a_positive_threshold():
    # a simulation without noise: background jump exactly constant (0.0), material 0.3 (and partial
    # volume 0.15 at its surface); exact zeros (padding) dominate
    pre = np.r_[np.zeros(50000), np.full(3000, 0.1), np.full(1000, 0.1), np.full(500, 0.1)]
    post = np.r_[np.zeros(50000), np.full(3000, 0.1), np.full(1000, 0.4), np.full(500, 0.25)]
    t = jump_threshold(pre, post)
    # noise rule's limit: just above the background (1e-3 of the class separation), not 0
    assert 0.0 < t < 0.01
    am = np.asarray(am_mask_from_jump(pre, post, threshold=t))
    assert am.sum() == 1500 and am[-1500:].all()  # all material and partial-volume voxels, nothing else

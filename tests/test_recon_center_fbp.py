"""Centre of rotation on every real projection dataset, and the batched numba FBP (issue 14).

Truth from outside the code under test: algotom's ``find_center_vo`` (the primary estimate the
second method must agree with), astra's CPU back-projector (a peer implementation of the same
geometry) and algotom's own CPU FBP with its default edge padding.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from litomo.io.projections import read_projections
from litomo.tomo.center import center_entropy, center_opposite, center_vo
from litomo.tomo.prep import normalize
from litomo.tomo.recon import reconstruct_fbp
from litomo.tomo.slabs import reconstruct_slab
from recon_helpers import corr_with_algotom


def _k11(shared_data):
    s = read_projections(shared_data / "recon" / "httomo_k11_diad" / "k11-18014.nxs")
    return normalize(s), s.angles_deg


def _dendrite(shared_data, bin_factor=2):
    from scipy.io import loadmat

    m = loadmat(shared_data / "recon" / "tomobar" / "RealDataDend.mat")
    sino = np.ascontiguousarray(m["sinoRD"].T, dtype=np.float32)  # (360 angles, 1260)
    th = np.rad2deg(m["anglesRad"].ravel() - m["anglesRad"].ravel()[0])
    return sino.reshape(360, -1, bin_factor).mean(axis=2), th


def test_center_opposite_synthetic():
    from litomo.tomo.project import Projector2D

    rng = np.random.default_rng(0)
    n = 97
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.zeros((n, n), np.float32)
    for _ in range(15):
        c, r = rng.uniform(-30, 30, 2), rng.uniform(3, 9)
        img[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r * r] += rng.uniform(0.01, 0.03)
    th = np.linspace(0, 360, 240, endpoint=False)
    sino = Projector2D(n, th).forward(img)
    for true in (43.3, 50.0, 52.75):
        # move the axis from column 48 to `true` (Fourier shift; the object stays inside the detector)
        moved = np.real(np.fft.ifft(ndimage.fourier_shift(np.fft.fft(sino, axis=1), true - 48.0, axis=1), axis=1))
        got = center_opposite(moved, th)
        assert got is not None and abs(got - true) < 0.1, (true, got)
    assert center_opposite(sino[:120], th[:120]) is None  # [0, 180): no opposite views


def test_k11_two_methods_agree(shared_data):
    from litomo.tomo.center import CenterResult

    p, th = _k11(shared_data)
    sino = p[:, 7:14].mean(axis=1)
    vo, opp = center_vo(sino, th), center_opposite(sino, th)
    # algotom Vo 12.5; mirror registration of 64 opposite pairs 12.56 (the entropy search fails on
    # this 26-px crop of a sample wider than the field: 22.5, at its search edge)
    assert vo == pytest.approx(12.5, abs=0.25)
    assert opp is not None and abs(opp - vo) < 0.15
    res = CenterResult(vo, vo, 22.5, 0.5, np.zeros(1), np.zeros(1), opp)  # what find_center_auto builds
    assert res.check_method == "opposite" and res.agree and res.to_json()["opposite_px"] == opp
    from litomo.tomo.center import VO_MIN_DEPTH, vo_depth

    # Vo is the confident method here (its metric rises 3.8 % 2 px either side; the dendrite's 0.55 % at bin 2)
    assert vo_depth(sino, th, vo) > VO_MIN_DEPTH  # measured 0.0375 vs the threshold 0.03: a narrow margin


def test_tooth_vo_and_entropy_agree(shared_data):
    from algotom.prep.calculation import find_center_vo

    s = read_projections(shared_data / "recon" / "tomopy" / "tooth.h5")
    sino = normalize(s)[:, 0]
    vo = center_vo(sino, s.angles_deg)
    ent, trials, curve = center_entropy(sino, s.angles_deg, init=vo)
    # measured: litomo Vo 295.85 (row 1: 295.90), parabola-refined entropy 295.78 (295.76): 0.07 px apart.
    # algotom's find_center_vo says 295.0: its angular smoothing, reflected at the 180-degree seam,
    # pulls the minimum low on this asymmetric sample (see center_vo); with the file's angles read as
    # 1-degree steps instead (0..180 inclusive, as tomopy's examples assume) Vo, entropy and the exact
    # 0/180-degree mirror pair give 295.5 / 295.49 / 295.56 while algotom's find_center_vo gives 294.7
    assert abs(vo - ent) < 0.25
    assert vo == pytest.approx(295.85, abs=0.1) and ent == pytest.approx(295.78, abs=0.1)
    assert find_center_vo(np.asarray(sino, np.float32), ncore=1) == pytest.approx(295.0, abs=0.1)
    assert trials[0] <= ent <= trials[-1] and ent != pytest.approx(trials[int(np.argmin(curve))], abs=1e-9)
    # the mirror of the first view (0 deg) onto the last one (179 deg, 1 degree short of a pair) is a
    # further estimate independent of both: 295.56
    from skimage.registration import phase_cross_correlation

    sh, _, _ = phase_cross_correlation(np.tile(sino[-1][::-1], (4, 1)), np.tile(sino[0], (4, 1)),
                                       upsample_factor=50, normalization=None)
    assert abs((sino.shape[1] - 1 - sh[1]) / 2 - ent) < 0.5


def test_dendrite_auto_centre_prefers_the_confident_entropy_search(shared_data):
    from litomo.tomo.center import VO_MIN_DEPTH, find_center_auto

    sd, th = _dendrite(shared_data)
    res = find_center_auto(sd, th)
    # algotom's find_center_based_slice_metric (CPU FBP, step 0.25) on the same 2x-binned sinogram:
    # entropy 314.75, sharpness 314.25 (35 s / 69 s CPU, too slow to rerun here); litomo's entropy 314.34.
    # Vo's Fourier metric is flat on this truncated, noisy sinogram: it rises 0.55 % 2 px either side of
    # its minimum (tooth 134 %, K11 3.8 %) and reads 311.45 (algotom's find_center_vo 313.25), so the
    # automatic choice must not take it
    assert res.vo_depth < VO_MIN_DEPTH / 2 and not res.confident("vo")
    assert res.method == "entropy" and res.entropy_interior and res.opposite_px is None
    assert abs(res.center_px - 314.75) <= 0.5 and abs(res.center_px - 314.25) <= 0.5  # both algotom metrics
    assert abs(res.vo_px - res.center_px) > 0.5 and not res.agree  # the unconfident Vo still disagrees: warned


def test_numba_fbp_matches_astra_on_tooth(shared_data):
    from litomo.tomo.center import center_sinogram

    s = read_projections(shared_data / "recon" / "tomopy" / "tooth.h5")
    sino = center_sinogram(normalize(s)[:, 0], 295.0)
    a = reconstruct_fbp(sino, s.angles_deg, backend="astra")
    b = reconstruct_fbp(sino, s.angles_deg)
    n = a.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    m = np.hypot(yy, xx) < 0.45 * n
    rel = float(np.linalg.norm((a - b)[m]) / np.linalg.norm(a[m]))
    # measured 0.042 relative, correlation 0.999 (astra's linear kernel is ray-driven, ours pixel-driven)
    assert rel < 0.08 and np.corrcoef(a[m], b[m])[0, 1] > 0.998
    assert abs(b[m].mean() / a[m].mean() - 1) < 0.01


def test_truncated_slices_match_algotom(shared_data):
    sd, th = _dendrite(shared_data)
    c = (627.75 + 0.5) / 2 - 0.5  # algotom Vo on the full-width sinogram, in 2x-binned pixels
    mine = reconstruct_slab(sd[:, None, :], th, c)[0]
    # measured 0.967 (was 0.91 against algotom's astra FBP before edge-extended filtering)
    assert corr_with_algotom(mine, sd, th, c, "fbp_padded") > 0.94
    p, thk = _k11(shared_data)
    sk = np.ascontiguousarray(p[:, 10])
    mine = reconstruct_slab(sk[:, None, :], thk, 12.5)[0]
    assert corr_with_algotom(mine, sk, thk, 12.5, "fbp_padded") > 0.85  # measured 0.908 (26-px crop; was 0.80)

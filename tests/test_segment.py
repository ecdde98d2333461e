"""Thresholds, filter features, random-forest segmentation (phantoms from real label volumes
and the real FiberForm CT), model persistence and AM-fraction sensitivity."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from litomo.errors import DataError, InputFileError
from litomo.phases import to_canonical
from litomo.segment.features import (
    feature_halo,
    feature_names,
    feature_params,
    filter_features,
    symmetric_eigvals3,
)
from litomo.segment.forest import am_fraction_sensitivity, load_model, train_forest
from litomo.segment.threshold import multi_otsu_labels, otsu_mask

# grey levels of the rendered phantom: pore dark, CBD intermediate, AM (NMC) bright
LEVELS = np.array([40.0, 180.0, 100.0], np.float32)  # indexed by canonical code 0 pore, 1 AM, 2 CBD
SIGMAS = (0.7, 1.5, 3.0)


@pytest.fixture(scope="module")
def phantom(shared_data):
    """A 40^3 crop of the TauFactor/Polaron NMC label volume rendered as blurred, noisy greyscale."""
    lab = tifffile.imread(shared_data / "micro" / "taufactor_electrode_polaron_nmc_256.tiff")
    truth = to_canonical(lab[100:140, 60:100, 20:60], {"pore": 0, "am": 85, "cbd": 170})
    rng = np.random.default_rng(1)
    blurred = ndimage.gaussian_filter(LEVELS[truth], 1.0)
    grey = (blurred + rng.normal(0, 25, truth.shape)).astype(np.float32)
    # sparse scribbles: 200 random voxels per phase, values 1 pore, 2 AM, 3 CBD
    scribbles = np.zeros(truth.shape, np.uint8)
    for code in range(3):
        idx = rng.choice(np.flatnonzero(truth.ravel() == code), 200, replace=False)
        scribbles.ravel()[idx] = code + 1
    return grey, truth, scribbles, blurred


@pytest.fixture(scope="module")
def phantom_model(phantom):
    grey, _, scribbles, _ = phantom
    return train_forest(grey, scribbles, sigmas=SIGMAS, n_estimators=30, n_jobs=2, seed=0)


def test_symmetric_eigvals_match_numpy():
    rng = np.random.default_rng(0)
    elems = [rng.normal(size=5000) for _ in range(6)]
    elems[1][:10] = elems[2][:10] = elems[4][:10] = 0  # diagonal (degenerate-prone) matrices
    elems[0][:5] = elems[3][:5] = elems[5][:5] = 1.0
    a = np.empty((5000, 3, 3))
    for v, (i, j) in zip(elems, [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)], strict=True):
        a[:, i, j] = a[:, j, i] = v
    np.testing.assert_allclose(symmetric_eigvals3(elems).T, np.linalg.eigvalsh(a), atol=1e-9)


def test_features_shape_and_halo():
    g = np.random.default_rng(0).normal(size=(18, 20, 22)).astype(np.float32)
    f = filter_features(g, sigmas=(1.0, 2.0))
    params = feature_params((1.0, 2.0))
    assert f.shape == (len(feature_names(params)), 18, 20, 22) and f.dtype == np.float32
    assert feature_halo((1.0, 2.0)) == 10  # Gaussian support 8 + 2 for the central differences
    # the smoothed-intensity channel is scipy's Gaussian with reflecting edges
    np.testing.assert_allclose(f[feature_names(params).index("gauss_2")],
                               ndimage.gaussian_filter(g, 2.0, mode="reflect"), atol=1e-5)
    # Hessian eigenvalues of a bright blob centre are all negative
    blob = np.zeros((21, 21, 21), np.float32)
    blob[10, 10, 10] = 1000
    fb = filter_features(blob, sigmas=(2.0, 3.0))
    names = feature_names(feature_params((2.0, 3.0)))
    assert all(fb[names.index(f"hessian_eig{i}_2"), 10, 10, 10] < 0 for i in range(3))


def test_multi_otsu_three_phase_synthetic():
    rng = np.random.default_rng(0)
    truth = rng.choice(3, size=(30, 30, 30), p=[0.4, 0.45, 0.15]).astype(np.uint8)
    grey = LEVELS[truth] + rng.normal(0, 8, truth.shape)
    labels = multi_otsu_labels(grey)
    assert labels.dtype == np.uint8
    assert (labels == truth).mean() > 0.99
    # a wrong phase order maps the classes to other codes
    swapped = multi_otsu_labels(grey, order=("pore", "am", "cbd"))
    assert (swapped == truth).mean() < 0.7
    two = multi_otsu_labels(grey, classes=2, order=("pore", "am"))
    assert set(np.unique(two).tolist()) == {0, 1}
    np.testing.assert_array_equal(otsu_mask(grey), two == 1)
    with pytest.raises(DataError, match="order names"):
        multi_otsu_labels(grey, classes=3, order=("pore", "am"))


def test_forest_beats_multi_otsu_on_real_microstructure(phantom, phantom_model):
    grey, truth, _, blurred = phantom
    pred = phantom_model.predict(grey) - 1  # scribble values 1..3 -> canonical 0..2
    acc_rf = (pred == truth).mean()
    acc_otsu = (multi_otsu_labels(grey) == truth).mean()
    # Ceiling for this blur: assign each voxel of the NOISE-FREE blurred image to the nearest
    # grey level (~0.84 here: partial-volume voxels near interfaces are lost to any local
    # classifier). The forest must recover >= 95 % of it from the noisy image (measured
    # 0.97-0.99 on three crops/seeds) and beat multi-Otsu clearly (measured +0.09 to +0.14).
    ceiling = (np.argmin(np.abs(blurred[..., None] - LEVELS), axis=-1) == truth).mean()
    assert acc_rf > 0.95 * ceiling
    assert acc_rf > acc_otsu + 0.05
    # out-of-bag estimate is a fair proxy of the true accuracy (scribbles are random voxels)
    assert abs(phantom_model.oob_accuracy - acc_rf) < 0.06
    assert set(phantom_model.oob_accuracy_per_class) == {1, 2, 3}
    assert phantom_model.n_samples_per_class == {1: 200, 2: 200, 3: 200}


def test_chunked_prediction_equals_whole(phantom, phantom_model):
    grey = phantom[0][:30, :30, :30]
    whole = phantom_model.predict(grey, chunks=30)
    seen = []
    chunked = phantom_model.predict(grey, chunks=(13, 16, 30), progress=lambda d, t, s: seen.append((d, t)))
    np.testing.assert_array_equal(chunked, whole)
    assert seen[-1] == (6, 6)
    np.testing.assert_array_equal(phantom_model.predict_dask(grey, chunks=15).compute(), whole)
    # a lazy (dask-backed) volume is read block by block
    np.testing.assert_array_equal(phantom_model.predict(da.from_array(grey, chunks=10), chunks=15), whole)


def test_save_load_roundtrip_and_determinism(tmp_path, phantom, phantom_model):
    grey, _, scribbles, _ = phantom
    sub = grey[:24, :24, :24]
    path = phantom_model.save(tmp_path / "m.joblib")
    loaded = load_model(path, feature_params_expected=feature_params(SIGMAS))
    np.testing.assert_array_equal(loaded.predict(sub), phantom_model.predict(sub))
    assert loaded.oob_accuracy_per_class == phantom_model.oob_accuracy_per_class
    with pytest.raises(DataError, match="trained with features"):
        load_model(path, feature_params_expected=feature_params((1.0, 2.0)))
    (tmp_path / "junk.joblib").write_bytes(b"not a model")
    with pytest.raises(InputFileError):
        load_model(tmp_path / "junk.joblib")
    # same seed -> identical forest (n_jobs does not matter)
    again = train_forest(grey, scribbles, sigmas=SIGMAS, n_estimators=30, n_jobs=1, seed=0)
    np.testing.assert_array_equal(again.predict(sub), phantom_model.predict(sub))


def test_forest_on_real_fiberform_ct(shared_data):
    """Real greyscale CT: scribbles only on clearly dark / bright voxels.

    PuMA's test suite gives solid fraction 0.16714 for the grey cutoff 90 (of 255). That
    cutoff is itself a choice: moving it +-10 grey levels inside the valley between the void
    peak and the fibres gives 0.1608-0.1731. We require the forest to land in that bracket
    (measured 0.164), i.e. agree with PuMA within the uncertainty of the cutoff itself.
    """
    g = tifffile.imread(shared_data / "micro" / "puma_100_fiberform_greyscale.tif")
    rng = np.random.default_rng(0)
    scribbles = np.zeros(g.shape, np.uint8)
    for lo, hi, value in [(0, 50, 1), (140, 256, 2)]:
        idx = rng.choice(np.flatnonzero((g.ravel() >= lo) & (g.ravel() < hi)), 400, replace=False)
        scribbles.ravel()[idx] = value
    model = train_forest(g, scribbles, sigmas=(0.7, 1.5), n_estimators=20, n_jobs=2, seed=0)
    solid = (model.predict(g) == 2).mean()
    assert (g >= 90).mean() == pytest.approx(0.16714, abs=1e-5)  # the published number
    assert (g >= 100).mean() <= solid <= (g >= 80).mean()
    assert solid == pytest.approx(0.16714, abs=0.0065)


def test_train_forest_bad_input(phantom):
    grey, truth, scribbles, _ = phantom
    with pytest.raises(DataError, match="shape"):
        train_forest(grey, scribbles[:-1], sigmas=(1.0, 2.0))
    one = np.where(scribbles == 1, 1, 0).astype(np.uint8)
    with pytest.raises(DataError, match="at least two classes"):
        train_forest(grey, one, sigmas=(1.0, 2.0))
    with pytest.raises(DataError, match="label volume"):
        train_forest(truth, scribbles, sigmas=(1.0, 2.0))
    bad = grey.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        train_forest(bad, scribbles, sigmas=(1.0, 2.0))


def test_am_fraction_sensitivity_analytic():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[3:7, 3:7, 3:7] = 1  # a 4^3 cube of AM
    s = am_fraction_sensitivity(lab)
    assert s["fraction"] == pytest.approx(64 / 1000)
    assert s["dilated"] == pytest.approx((64 + 6 * 16) / 1000)  # one face layer on each side
    assert s["eroded"] == pytest.approx(8 / 1000)  # 2^3 core
    # AM on a face of the box is not eroded by the box edge
    full = np.ones((5, 5, 5), np.uint8)
    assert am_fraction_sensitivity(full)["eroded"] == 1.0

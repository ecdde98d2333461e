"""``[data]``: the linear encoding of integer volume files (``mu = value * scale - offset``, issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litomo.errors import ManifestError
from litomo.manifest import DataSpec, load_manifest, write_manifest

BASE = """\
[sample]
name = "S"
voxel_size_um = 0.1
[xanes]
pre_edge_ev = 8330.0
edge_ev = 8345.0
post_edge_ev = 8430.0
reference_pristine = "p.csv"
reference_charged = "c.csv"
[[states]]
name = "I"
pre_edge = "a.tif"
edge = "b.tif"
post_edge = "c.tif"
"""


def _manifest(tmp_path: Path, data: str) -> Path:
    for name in ("p.csv", "c.csv", "a.tif", "b.tif", "c.tif"):
        (tmp_path / name).write_bytes(b"x")
    p = tmp_path / "experiment.toml"
    p.write_text(BASE + data)
    return p


def test_encoding_is_read_written_back_and_undone(tmp_path: Path) -> None:
    m = load_manifest(_manifest(tmp_path, "[data]\nmu_scale_per_count = 2.5e-6\nmu_offset_per_um = 0.05\n"))
    assert m.data == DataSpec(2.5e-6, 0.05)
    assert load_manifest(write_manifest(m, tmp_path / "again.toml")).data == m.data
    # truth written independently: attenuation 0.0 / 0.064 / 0.111 /um stored as uint16 (mu + 0.05) / 2.5e-6
    mu = np.array([0.0, 0.064, 0.111])
    stored = np.round((mu + 0.05) / 2.5e-6).astype(np.uint16)
    back = m.data.to_mu(stored)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, mu, atol=2e-6)  # uint16 rounding: 1.25e-6 /um
    # no [data]: the stored values are attenuation already, untouched
    plain = load_manifest(_manifest(tmp_path, ""))
    assert plain.data.identity and plain.data.to_mu(stored) is stored
    assert "[data]" not in write_manifest(plain, tmp_path / "plain.toml").read_text()


def test_encoding_is_lazy_on_dask(tmp_path: Path) -> None:
    import dask.array as da

    enc = DataSpec(1e-5, 0.02)
    lazy = enc.to_mu(da.from_array(np.array([2000, 12000], np.uint16), chunks=1))
    assert type(lazy).__module__.startswith("dask")
    np.testing.assert_allclose(lazy.compute(), [0.0, 0.1], atol=1e-7)


@pytest.mark.parametrize(("text", "field"), [
    ("mu_scale_per_count = 0.0", "data.mu_scale_per_count"),
    ("mu_scale_per_count = -1e-5", "data.mu_scale_per_count"),
    ("mu_scale_per_count = nan", "data.mu_scale_per_count"),
    ('mu_scale_per_count = "1e-5"', "data.mu_scale_per_count"),
    ("mu_offset_per_um = inf", "data.mu_offset_per_um"),
    ("mu_offset_per_um = true", "data.mu_offset_per_um"),
    ("mu_offset = 0.05", "data.mu_offset"),
])
def test_bad_encoding_is_one_line_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ManifestError) as exc:
        load_manifest(_manifest(tmp_path, f"[data]\n{text}\n"))
    msg = str(exc.value)
    assert field in msg and "\n" not in msg


def test_read_stage_undoes_the_encoding(tmp_path: Path) -> None:
    """uint16 files with ``[data]`` bin like the float32 attenuation they encode (forward model)."""
    import dask
    import tifffile

    import forward_models as fm
    from litomo.workflows.limap.options import RunOptions
    from litomo.workflows.limap.read import BinStage
    from litomo.workflows.limap.run import prepare_context

    # (mu + offset) / scale within 0..65535 for mu in -0.08..0.24 /um (noise sd 0.013)
    scale, offset = 5e-6, 0.08
    fm.write_case(fm.Case("enc", ("uniform",), size=14, seed=1), tmp_path / "f32")
    enc = tmp_path / "u16"
    (enc / "S1").mkdir(parents=True)
    truth = {}
    for role in ("pre_edge", "edge", "post_edge"):
        mu = tifffile.imread(tmp_path / "f32" / "S1" / f"{role}.tif").astype(np.float64)
        truth[role] = mu.reshape(2, 7, 2, 7, 2, 7).mean(axis=(1, 3, 5))  # the 7^3 bin means
        counts = np.round((mu + offset) / scale)
        assert 0 < counts.min() and counts.max() < 65535
        tifffile.imwrite(enc / "S1" / f"{role}.tif", counts.astype(np.uint16))
    manifest = (tmp_path / "f32" / "experiment.toml").read_text().replace('"ref_', '"../f32/ref_')
    (enc / "experiment.toml").write_text(f"{manifest}\n[data]\nmu_scale_per_count = {scale}\n"
                                         f"mu_offset_per_um = {offset}\n")
    (enc / "raw.toml").write_text(manifest)
    binned = {}
    with dask.config.set(scheduler="synchronous"):
        for name in ("experiment", "raw"):
            m = load_manifest(enc / f"{name}.toml")
            ctx = prepare_context(m, RunOptions(scheduler="synchronous", register=False), None, [])
            binned[name] = BinStage().run(ctx, m.states[0]).map_grid
    for role, ref in truth.items():
        # uint16 rounding in 7^3 means: measured at most 1.7e-7 /um
        np.testing.assert_allclose(binned["experiment"][role], ref, atol=4e-7)
        # the same files read without [data]: counts, not attenuation (16000 for mu = 0)
        assert np.min(binned["raw"][role]) > 1e4

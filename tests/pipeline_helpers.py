"""Helpers shared by the pipeline test files (imported; not a test module)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile
from pathlib import Path


def make_phantom(tmp_path_factory) -> Path:
    """The 64^3, 2-state phantom, written once per session (shared by the pipeline test files)."""
    from litomo.phantom.writer import write_operando_phantom

    base = tmp_path_factory.getbasetemp()
    d = base / "operando-phantom-64x2"
    if not (d / "experiment.toml").exists():
        tmp = Path(tempfile.mkdtemp(dir=base))
        write_operando_phantom(tmp / "ph", size=64, n_states=2, seed=0)
        os.replace(tmp / "ph", d)
    return d


def variant(manifest_path: Path, out_toml: Path, **processing) -> Path:
    """A copy of the manifest (paths re-anchored) with some ``[processing]`` fields changed."""
    from litomo.manifest import load_manifest, write_manifest

    m = load_manifest(manifest_path)
    m = dataclasses.replace(m, processing=dataclasses.replace(m.processing, **processing))
    return write_manifest(m, out_toml)


def cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``litomo ARGV`` in-process; returns (exit code, stdout, stderr)."""
    from litomo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def translated_energies(shape: tuple[int, int, int], occupancy, seed: int = 3):
    """Three energies of one occupancy volume with noise, the sub-voxel translation maps of pre-edge
    and edge onto post-edge (elastix parameter-map form), their 7^3 bins and the voxel sizes (um):
    the set-up of the warp + bin tests against their definitions (trilinear and cubic paths)."""
    import numpy as np

    from litomo.preprocess import bin_array

    rng = np.random.default_rng(seed)
    vols = {r: (occupancy * s + rng.normal(0, 0.05, shape)).astype(np.float32)
            for r, s in (("pre_edge", 1.0), ("edge", 1.6), ("post_edge", 2.0))}
    maps = {"pre_edge": [{"Transform": ["TranslationTransform"], "FixedImageDimension": ["3"],
                          "TransformParameters": ["0.031", "-0.024", "0.052"]}],
            "edge": [{"Transform": ["TranslationTransform"], "FixedImageDimension": ["3"],
                      "TransformParameters": ["-0.043", "0.018", "-0.027"]}]}
    binned = {k: bin_array(v, 7) for k, v in vols.items()}
    return vols, maps, binned, (0.7,) * 3, (0.1,) * 3

"""Shared helpers of the microstructure CLI tests: a small electrode of known phases, and the CLI
run in-process with its exit code and captured output."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from litomo.cli import main


def ball_electrode(n: int, rng: np.random.Generator) -> np.ndarray:
    """Balls of AM (label 1, radius 4-5 voxels) on a jittered 10-voxel grid, a patchy CBD rim
    (label 2) and pores (0) elsewhere: a ``(n, n, n)`` uint8 label volume (draws from ``rng``)."""
    z, y, x = np.ogrid[:n, :n, :n]
    lab = np.zeros((n, n, n), np.uint8)
    for cz in range(5, n, 10):
        for cy in range(5, n, 10):
            for cx in range(5, n, 10):
                c = np.array([cz, cy, cx]) + rng.integers(-1, 2, 3)
                r = rng.uniform(4, 5)
                lab[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = 1
    rim = (ndi.distance_transform_edt(lab != 1) <= 2) & (lab != 1)
    lab[rim & (ndi.gaussian_filter(rng.random(lab.shape), 1.5) > 0.5)] = 2
    return lab


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``litomo ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    cap = capsys.readouterr()
    return code or 0, cap.out, cap.err

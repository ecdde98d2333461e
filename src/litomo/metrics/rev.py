"""Representativeness: REV curves and directional two-point correlation (SPEC 3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.fft

from litomo.errors import DataError
from litomo.metrics.fractions import axis_index, check_labels, volume_fractions
from litomo.metrics.surface import specific_surface_area
from litomo.phases import PHASE_CODES, PHASES
from litomo.progress import ProgressCallback
from litomo.volume import as_voxel_size


def default_rev_metric(sub: np.ndarray, voxel_size_um: tuple[float, float, float]) -> dict[str, float]:
    """Volume fraction and face-counting specific surface area (um^-1) of each phase."""
    vf = volume_fractions(sub)
    ssa = specific_surface_area(sub, voxel_size_um, method="face")
    return {**{f"vf_{p}": vf[p] for p in PHASES}, **{f"ssa_face_{p}": ssa[p] for p in PHASES}}


def rev_curve(
    labels: np.ndarray,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    *,
    edge_lengths_vox: Sequence[int] | None = None,
    n_samples: int = 8,
    mode: str = "random",
    seed: int = 0,
    metric: Callable[[np.ndarray, tuple[float, float, float]], dict[str, float]] | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Metric versus cubic sub-volume edge length (representative-volume-element curve).

    Parameters
    ----------
    labels : ndarray of uint8
        Canonical labels.
    voxel_size_um : float or (z, y, x)
    edge_lengths_vox : sequence of int, optional
        Sub-volume edges in voxels (clipped to the volume); default: 8 values from 8 voxels
        to the smallest dimension, spaced geometrically.
    n_samples : int
        Random sub-volumes per edge length (``mode="random"``).
    mode : {"random", "centred"}
        Random positions (seeded) or one sub-volume centred in the volume.
    seed : int
    metric : callable, optional
        ``metric(sub_labels, voxel_size_um) -> {name: value}``; default
        :func:`default_rev_metric`.

    Returns
    -------
    pandas.DataFrame
        Long format: ``edge_vox, edge_um, quantity, mean, std, n``; ``edge_um`` uses the
        geometric-mean voxel size.

    Examples
    --------
    >>> lab = np.zeros((16, 16, 16), np.uint8); lab[:, :, 8:] = 1
    >>> df = rev_curve(lab, edge_lengths_vox=[16], n_samples=1)
    >>> float(df.loc[df.quantity == "vf_am", "mean"].iloc[0])
    0.5
    """
    labels = check_labels(labels)
    v = as_voxel_size(voxel_size_um)
    metric = default_rev_metric if metric is None else metric
    edges = rev_edges(labels.shape, edge_lengths_vox)
    if mode not in ("random", "centred", "centered"):
        raise DataError(f"REV mode must be 'random' or 'centred', got {mode!r}")
    plan = rev_plan(labels.shape, edges, n_samples=n_samples, mode=mode, seed=seed)
    return rev_table(plan, lambda st, e: metric(labels[st[0]:st[0] + e, st[1]:st[1] + e, st[2]:st[2] + e], v),
                     v, progress=progress)


def rev_edges(shape: tuple[int, ...], edge_lengths_vox: Sequence[int] | None = None) -> list[int]:
    """Sub-volume edges of :func:`rev_curve` (default: 8 from 8 voxels to the smallest dimension).

    Examples
    --------
    >>> rev_edges((16, 20, 40))
    [8, 9, 10, 11, 12, 13, 14, 16]
    """
    nmin = min(shape)
    if edge_lengths_vox is None:
        lo = min(8, nmin)
        edge_lengths_vox = np.unique(np.geomspace(lo, nmin, 8).round().astype(int))
    return sorted({int(min(max(e, 1), nmin)) for e in edge_lengths_vox})


def rev_plan(shape: tuple[int, ...], edges: Sequence[int], *, n_samples: int = 8, mode: str = "random",
             seed: int = 0) -> list[tuple[int, list[list[int]]]]:
    """Sub-volume corners of :func:`rev_curve`: ``[(edge_vox, [start (z, y, x), ...]), ...]``.

    One seeded sequence, shared by the in-memory and the out-of-core REV
    (:mod:`litomo.metrics.chunked_report`), so both evaluate the same sub-volumes.

    Examples
    --------
    >>> rev_plan((16, 16, 16), [16], n_samples=3)
    [(16, [[0, 0, 0]])]
    """
    rng = np.random.default_rng(seed)
    plan = []
    for e in edges:
        if mode == "random":
            # a sub-volume as large as the volume has one position only along that axis
            reps = n_samples if any(s > e for s in shape) else 1
            starts = [[int(rng.integers(0, s - e + 1)) for s in shape] for _ in range(reps)]
        else:
            starts = [[(s - e) // 2 for s in shape]]
        plan.append((int(e), starts))
    return plan


def rev_table(plan: list[tuple[int, list[list[int]]]], evaluate: Callable[[list[int], int], dict[str, float]],
              voxel_size_um: tuple[float, float, float], progress: ProgressCallback | None = None
              ) -> pd.DataFrame:
    """The REV curve table of ``evaluate(start, edge) -> {name: value}`` over a :func:`rev_plan`."""
    rows = []
    vmean = float(np.prod(voxel_size_um) ** (1 / 3))
    for k, (e, starts) in enumerate(plan):
        values: dict[str, list[float]] = {}
        for st in starts:
            for name, val in evaluate(st, e).items():
                values.setdefault(name, []).append(float(val))
        for name, vals in values.items():
            arr = np.asarray(vals)
            rows.append({"edge_vox": e, "edge_um": e * vmean, "quantity": name, "mean": float(arr.mean()),
                         "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)})
        if progress is not None:
            progress(k + 1, len(plan), "REV")
    return pd.DataFrame(rows)


def two_point_correlation(
    labels_or_mask: np.ndarray,
    axis: int | str,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    *,
    phase: str | int | None = None,
    max_lag_vox: int | None = None,
) -> pd.DataFrame:
    """Directional two-point correlation S2(r) of a phase along one axis, by FFT.

    ``S2(r)`` is the probability that two points ``r`` apart along ``axis`` both lie in the
    phase: ``S2(0) = phi`` and ``S2(r) -> phi^2`` for large ``r`` in a random medium.

    The volume is not periodic, so lines are zero-padded to twice their length before the
    FFT (a linear, not circular, autocorrelation) and each lag is divided by the number of
    pairs that actually fit in the volume, ``n - r`` per line. Large lags rest on few pairs;
    the default ``max_lag_vox`` is half the length along ``axis``.

    Returns
    -------
    pandas.DataFrame
        ``r_vox, r_um, s2``.

    Examples
    --------
    >>> m = np.zeros((4, 4, 8), bool); m[..., ::2] = True
    >>> two_point_correlation(m, "x")["s2"].round(3).tolist()[:3]
    [0.5, 0.0, 0.5]
    """
    arr = np.asarray(labels_or_mask)
    if arr.dtype == bool:
        mask = arr
    else:
        if phase is None:
            raise DataError("a label volume needs phase= ('pore', 'am' or 'cbd'); or pass a boolean mask")
        code = PHASE_CODES[phase] if isinstance(phase, str) else int(phase)
        mask = check_labels(arr) == code
    ax = axis_index(axis)
    v = as_voxel_size(voxel_size_um)
    n = mask.shape[ax]
    max_lag = n // 2 if max_lag_vox is None else int(min(max_lag_vox, n - 1))
    power, n_lines = s2_power(mask, ax)
    return s2_from_power(power, n_lines, n, max_lag, v[ax])


def s2_power(mask: np.ndarray, ax: int) -> tuple[np.ndarray, int]:
    """Summed power spectrum of the lines of ``mask`` along axis ``ax`` (zero-padded to twice
    their length) and the number of lines: the additive part of :func:`two_point_correlation`,
    so slabs of a volume too large for memory can be summed (``metrics.chunked_report``)."""
    n = mask.shape[ax]
    m = np.moveaxis(mask, ax, -1).reshape(-1, n)
    nfft = 2 * n
    power = np.zeros(nfft // 2 + 1)
    # chunk over lines: the padded complex spectrum of all lines at once would be large
    chunk = max(1, (1 << 22) // nfft)
    for i in range(0, m.shape[0], chunk):
        # float64: float32 sums over ~10^7 voxels lose S2(0) = phi in the 6th digit
        f = scipy.fft.rfft(m[i:i + chunk].astype(np.float64), n=nfft, axis=-1, workers=-1)
        power += (f.real ** 2 + f.imag ** 2).sum(axis=0)
    return power, int(m.shape[0])


def s2_from_power(power: np.ndarray, n_lines: int, n: int, max_lag: int, voxel_um: float) -> pd.DataFrame:
    """S2 table (``r_vox, r_um, s2``) from :func:`s2_power`'s sums over lines of length ``n``."""
    acf = scipy.fft.irfft(power, n=2 * n)[: max_lag + 1]
    r = np.arange(max_lag + 1)
    s2 = acf / (n_lines * (n - r))
    return pd.DataFrame({"r_vox": r, "r_um": r * voxel_um, "s2": s2})


def characteristic_length_um(s2: pd.DataFrame, phi: float | None = None) -> float:
    """Correlation length of a phase: the lag where the normalised autocovariance
    ``f(r) = (S2(r) - phi^2) / (phi - phi^2)`` first falls to ``1/e`` (linear interpolation).

    For a Debye random medium (``f = exp(-r/a)``) this is ``a``. NaN when the phase is absent
    or fills the volume, or when ``f`` stays above ``1/e`` up to the largest lag.

    Parameters
    ----------
    s2 : pandas.DataFrame
        ``r_um, s2`` from :func:`two_point_correlation` (``r = 0`` first).
    phi : float, optional
        Volume fraction; default ``S2(0)``.

    Examples
    --------
    >>> r = np.arange(20.0); phi = 0.3
    >>> s2 = pd.DataFrame({"r_um": r, "s2": phi**2 + (phi - phi**2) * np.exp(-r / 4)})
    >>> round(characteristic_length_um(s2), 2)
    4.0
    """
    r = s2["r_um"].to_numpy(float)
    v = s2["s2"].to_numpy(float)
    phi = float(v[0]) if phi is None else float(phi)
    if not 0 < phi < 1:
        return float("nan")
    f = (v - phi * phi) / (phi - phi * phi)
    below = np.flatnonzero(f <= np.exp(-1))
    if below.size == 0 or below[0] == 0:
        return float("nan")
    k = below[0]
    return float(r[k - 1] + (f[k - 1] - np.exp(-1)) / (f[k - 1] - f[k]) * (r[k] - r[k - 1]))


def rev_size(rev: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """REV size per quantity: the smallest sub-volume edge from which the mean stays within
    ``tolerance`` (relative) of the largest sub-volume's value and the spread between
    sub-volumes (std) stays within ``tolerance`` of it too, for every larger edge.

    Parameters
    ----------
    rev : pandas.DataFrame
        :func:`rev_curve` output (``edge_vox, edge_um, quantity, mean, std``).
    tolerance : float
        Relative tolerance (0.05 = 5 %).

    Returns
    -------
    pandas.DataFrame
        ``quantity, rev_edge_vox, rev_edge_um, reference, converged`` (``converged`` is False,
        and the edges NaN, when only the largest edge meets the criterion: the volume may be
        smaller than an REV).

    Examples
    --------
    >>> rev = pd.DataFrame({"edge_vox": [8, 16, 32, 64], "edge_um": [4.0, 8, 16, 32], "quantity": "vf_am",
    ...                     "mean": [0.7, 0.52, 0.51, 0.5], "std": [0.2, 0.04, 0.01, 0.0]})
    >>> rev_size(rev, 0.05)[["rev_edge_vox", "converged"]].values.tolist()
    [[32.0, True]]
    """
    rows = []
    for q, g in rev.sort_values("edge_vox").groupby("quantity", sort=False):
        ref = float(g["mean"].iloc[-1])
        scale = abs(ref) if ref != 0 else 1.0
        ok = ((g["mean"] - ref).abs() <= tolerance * scale) & (g["std"] <= tolerance * scale)
        bad = np.flatnonzero(~ok.to_numpy())
        first = 0 if bad.size == 0 else bad[-1] + 1
        converged = first < len(g) - 1
        rows.append({"quantity": q,
                     "rev_edge_vox": float(g["edge_vox"].iloc[first]) if converged else float("nan"),
                     "rev_edge_um": float(g["edge_um"].iloc[first]) if converged else float("nan"),
                     "reference": ref, "converged": bool(converged)})
    return pd.DataFrame(rows, columns=["quantity", "rev_edge_vox", "rev_edge_um", "reference", "converged"])

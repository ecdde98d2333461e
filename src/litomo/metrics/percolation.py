"""Percolation of a phase: through / dead-end / isolated fractions (SPEC 3)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from litomo.errors import DataError
from litomo.metrics.fractions import axis_index, check_labels
from litomo.phases import PHASE_CODES

_CONNECTIVITY = {6: 1, 18: 2, 26: 3}


def _mask_of(labels_or_mask: np.ndarray, phase: str | int | None) -> np.ndarray:
    arr = np.asarray(labels_or_mask)
    if arr.dtype == bool:
        if phase is not None:
            raise DataError("pass either a boolean mask or labels with phase=, not both")
        return arr
    if phase is None:
        raise DataError("a label volume needs phase= ('pore', 'am' or 'cbd'); or pass a boolean mask")
    code = PHASE_CODES[phase] if isinstance(phase, str) else int(phase)
    return check_labels(arr) == code


def percolation(
    labels_or_mask: np.ndarray,
    axis: int | str,
    *,
    phase: str | int | None = None,
    connectivity: int = 6,
) -> dict[str, float]:
    """Fractions of a phase in through, dead-end and isolated clusters along ``axis``.

    Clusters are connected components (``connectivity`` 6 = faces, SPEC default; 18 or 26
    optional). A cluster is "through" if it touches both faces normal to ``axis``,
    "dead_end" if it touches exactly one, "isolated" if it touches neither. Fractions are
    relative to the phase volume and sum to 1.

    Parameters
    ----------
    labels_or_mask : ndarray
        Boolean phase mask, or canonical labels together with ``phase``.
    axis : {"z", "y", "x"} or int
        Transport axis.
    phase : str or int, optional
        Phase name or code when ``labels_or_mask`` is a label volume.
    connectivity : {6, 18, 26}

    Returns
    -------
    dict
        ``through``, ``dead_end``, ``isolated`` (fractions), ``n_clusters``; for an absent
        phase the fractions are NaN and ``reason`` says why.

    Examples
    --------
    >>> m = np.zeros((4, 3, 3), bool); m[:, 1, 1] = True
    >>> percolation(m, "z")["through"]
    1.0
    """
    mask = _mask_of(labels_or_mask, phase)
    if mask.ndim != 3:
        raise DataError(f"percolation needs a 3D volume, got shape {mask.shape}")
    ax = axis_index(axis)
    if connectivity not in _CONNECTIVITY:
        raise DataError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    n_phase = int(mask.sum())
    if n_phase == 0:
        nan = float("nan")
        return {"through": nan, "dead_end": nan, "isolated": nan, "n_clusters": 0, "reason": "phase absent"}
    structure = ndi.generate_binary_structure(3, _CONNECTIVITY[connectivity])
    lab, n = ndi.label(mask, structure=structure)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    first = np.zeros(n + 1, bool)
    last = np.zeros(n + 1, bool)
    first[np.take(lab, 0, axis=ax).ravel()] = True
    last[np.take(lab, -1, axis=ax).ravel()] = True
    first[0] = last[0] = False
    through = first & last
    dead = first ^ last
    return {
        "through": float(sizes[through].sum() / n_phase),
        "dead_end": float(sizes[dead].sum() / n_phase),
        "isolated": float(sizes[1:][~(first | last)[1:]].sum() / n_phase),
        "n_clusters": int(n),
    }

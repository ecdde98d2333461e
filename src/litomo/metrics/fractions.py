"""Volume fractions of three-phase label volumes (SPEC 3).

All functions take canonical labels (``uint8``: 0 pore, 1 AM, 2 CBD; see
:func:`litomo.phases.to_canonical`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from litomo.errors import DataError
from litomo.phases import PHASE_CODES, PHASES
from litomo.volume import as_voxel_size

AXES: dict[str, int] = {"z": 0, "y": 1, "x": 2}


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Validate a canonical label volume (3D, integer codes 0/1/2) and return it as ``uint8``.

    Raises :class:`~litomo.errors.DataError` for other values (convert stored values with
    :func:`litomo.phases.to_canonical` first).

    Examples
    --------
    >>> check_labels(np.zeros((2, 2, 2), int)).dtype
    dtype('uint8')
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise DataError(f"label volume must be 3D (z, y, x); got shape {labels.shape}")
    if labels.size == 0:
        raise DataError("label volume is empty")
    if labels.dtype.kind not in "uib":
        raise DataError(f"label volume must hold integer phase codes, got dtype {labels.dtype}; "
                        "convert with litomo.phases.to_canonical")
    if labels.dtype != np.uint8:
        if labels.min() < 0 or labels.max() > 2:
            raise DataError("label volume holds values other than 0 (pore), 1 (AM), 2 (CBD); "
                            "convert with litomo.phases.to_canonical")
        labels = labels.astype(np.uint8)
    elif labels.max() > 2:
        raise DataError("label volume holds values other than 0 (pore), 1 (AM), 2 (CBD); "
                        "convert with litomo.phases.to_canonical")
    return labels


def axis_index(axis: int | str) -> int:
    """``"z"/"y"/"x"`` or 0/1/2 -> array axis index."""
    if isinstance(axis, str):
        if axis.lower() not in AXES:
            raise DataError(f"axis must be one of z, y, x (or 0, 1, 2), got {axis!r}")
        return AXES[axis.lower()]
    if int(axis) not in (0, 1, 2):
        raise DataError(f"axis must be 0, 1 or 2, got {axis!r}")
    return int(axis)


def volume_fractions(labels: np.ndarray) -> dict[str, float]:
    """Volume fraction ``V_i / V`` of each phase (pore, am, cbd).

    Examples
    --------
    >>> volume_fractions(np.array([[[0, 1, 1, 2]]], np.uint8))
    {'pore': 0.25, 'am': 0.5, 'cbd': 0.25}
    """
    labels = check_labels(labels)
    counts = np.bincount(labels.ravel(), minlength=3)
    return {p: float(counts[PHASE_CODES[p]] / labels.size) for p in PHASES}


def am_fraction_bracket(labels: np.ndarray) -> dict[str, float]:
    """Sensitivity of the AM volume fraction to a one-voxel segmentation error.

    AM is eroded and dilated by one voxel (6-connected structuring element; the dilation
    only grows into the other phases). Returns ``{"nominal", "eroded", "dilated"}``.

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), np.uint8); lab[1:4, 1:4, 1:4] = 1
    >>> am_fraction_bracket(lab)["eroded"] == 1 / 125
    True
    """
    labels = check_labels(labels)
    am = labels == PHASE_CODES["am"]
    st = ndi.generate_binary_structure(3, 1)
    # border_value=1 for erosion: the volume edge is a crop, not an AM surface
    eroded = ndi.binary_erosion(am, st, border_value=1)
    dilated = ndi.binary_dilation(am, st)
    n = labels.size
    return {"nominal": float(am.sum() / n), "eroded": float(eroded.sum() / n), "dilated": float(dilated.sum() / n)}


def z_profile_fractions(labels: np.ndarray, voxel_size_um: float | tuple[float, float, float] = 1.0) -> pd.DataFrame:
    """Phase fractions per z slice (through-plane profile).

    Returns a DataFrame with ``z_index``, ``z_um`` (slice centre depth) and one column per phase.

    Examples
    --------
    >>> lab = np.zeros((2, 2, 2), np.uint8); lab[1] = 1
    >>> z_profile_fractions(lab, 0.5)["am"].tolist()
    [0.0, 1.0]
    """
    labels = check_labels(labels)
    vz = as_voxel_size(voxel_size_um)[0]
    nz = labels.shape[0]
    per_slice = labels.shape[1] * labels.shape[2]
    # bincount on (slice * 3 + phase) gives all counts in one pass
    idx = (np.arange(nz, dtype=np.int64)[:, None, None] * 3 + labels).ravel()
    counts = np.bincount(idx, minlength=3 * nz).reshape(nz, 3) / per_slice
    df = pd.DataFrame({"z_index": np.arange(nz), "z_um": (np.arange(nz) + 0.5) * vz})
    for p in PHASES:
        df[p] = counts[:, PHASE_CODES[p]]
    return df

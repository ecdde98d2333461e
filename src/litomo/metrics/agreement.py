"""Agreement of a segmentation with a reference labelling (FIB-SEM, hand-labelled sub-volume).

Per phase: Dice ``2 |A & B| / (|A| + |B|)``, IoU (Jaccard) ``|A & B| / |A | B|`` and the
volume-fraction difference ``phi(A) - phi(B)`` over the voxels the reference labels; plus the
overall accuracy (fraction of compared voxels with the same phase).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.phases import PHASE_CODES


def reference_agreement(labels: np.ndarray, reference: np.ndarray,
                        reference_values: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Dice, IoU and volume-fraction differences of ``labels`` against ``reference``.

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
        Canonical labels (0 pore, 1 AM, 2 CBD).
    reference : ndarray of int, same shape
        Reference labelling; voxels whose value is not in ``reference_values`` are unlabelled
        and not compared.
    reference_values : mapping, optional
        Stored value of each phase in the reference (default canonical: pore=0, am=1, cbd=2).

    Returns
    -------
    dict
        ``dice``, ``iou``, ``volume_fraction``, ``volume_fraction_reference``,
        ``volume_fraction_difference`` (phase -> value; NaN for a phase in neither),
        ``accuracy``, ``n_compared_voxels``, ``compared_fraction``, ``reference_values``.

    Raises
    ------
    DataError
        Shapes differ or the reference labels no voxel (``--reference``).

    Examples
    --------
    >>> lab = np.array([[[0, 1, 1, 2]]], np.uint8); ref = np.array([[[0, 1, 2, 2]]])
    >>> r = reference_agreement(lab, ref)
    >>> r["dice"]["am"], r["iou"]["am"], r["volume_fraction_difference"]["cbd"], r["accuracy"]
    (0.6666666666666666, 0.5, -0.25, 0.75)
    """
    lab = np.asarray(labels)
    ref = np.asarray(reference)
    if lab.shape != ref.shape:
        raise DataError(f"--reference: shape {ref.shape} differs from the segmentation's {lab.shape}")
    values = dict(reference_values) if reference_values else dict(PHASE_CODES)
    unknown = sorted(set(values) - set(PHASE_CODES))
    if unknown:
        raise DataError(f"--reference-values: unknown phase(s) {', '.join(unknown)}; use pore, am, cbd")
    canon = np.full(ref.shape, 255, np.uint8)
    for name, val in values.items():
        canon[ref == val] = PHASE_CODES[name]
    known = canon != 255
    n = int(np.count_nonzero(known))
    if n == 0:
        raise DataError(f"--reference: no voxel holds a phase value of --reference-values {values}")
    a, b = lab[known], canon[known]
    out: dict[str, Any] = {k: {} for k in ("dice", "iou", "volume_fraction", "volume_fraction_reference",
                                           "volume_fraction_difference")}
    for name in values:
        code = PHASE_CODES[name]
        ma, mb = a == code, b == code
        inter, na, nb = int(np.count_nonzero(ma & mb)), int(np.count_nonzero(ma)), int(np.count_nonzero(mb))
        union = na + nb - inter
        out["dice"][name] = 2 * inter / (na + nb) if na + nb else float("nan")
        out["iou"][name] = inter / union if union else float("nan")
        out["volume_fraction"][name] = na / n
        out["volume_fraction_reference"][name] = nb / n
        out["volume_fraction_difference"][name] = (na - nb) / n
    out.update(accuracy=float(np.count_nonzero(a == b)) / n, n_compared_voxels=n,
               compared_fraction=n / ref.size, reference_values=values)
    return out


__all__ = ["reference_agreement"]

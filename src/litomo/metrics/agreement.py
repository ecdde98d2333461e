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
    values = check_reference_values(reference_values)
    return agreement_from_confusion(reference_confusion(lab, ref, values), values, ref.size)


def check_reference_values(reference_values: Mapping[str, int] | None) -> dict[str, int]:
    """The phase -> stored value mapping of a reference (default canonical), checked."""
    values = dict(reference_values) if reference_values else dict(PHASE_CODES)
    unknown = sorted(set(values) - set(PHASE_CODES))
    if unknown:
        raise DataError(f"--reference-values: unknown phase(s) {', '.join(unknown)}; use pore, am, cbd")
    return values


def reference_confusion(labels: np.ndarray, reference: np.ndarray, values: Mapping[str, int]) -> np.ndarray:
    """Voxel counts ``(3, 256)``: reference phase code x label value, over the labelled reference voxels.

    Counts add up over sub-volumes, so a volume can be compared slab by slab
    (:func:`agreement_from_confusion` of the sum equals :func:`reference_agreement`).
    """
    canon = np.full(reference.shape, 255, np.uint8)
    for name, val in values.items():
        canon[reference == val] = PHASE_CODES[name]
    known = canon != 255
    lab = np.asarray(labels)[known].astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise DataError("labels must be canonical phase codes (0 pore, 1 AM, 2 CBD)")
    return np.bincount(canon[known].astype(np.int64) * 256 + lab, minlength=3 * 256).reshape(3, 256)


def agreement_from_confusion(confusion: np.ndarray, values: Mapping[str, int], n_total: int) -> dict[str, Any]:
    """:func:`reference_agreement`'s figures from a :func:`reference_confusion` matrix (``n_total`` voxels)."""
    n = int(confusion.sum())
    if n == 0:
        raise DataError(f"--reference: no voxel holds a phase value of --reference-values {dict(values)}")
    out: dict[str, Any] = {k: {} for k in ("dice", "iou", "volume_fraction", "volume_fraction_reference",
                                           "volume_fraction_difference")}
    for name in values:
        code = PHASE_CODES[name]
        inter, na, nb = int(confusion[code, code]), int(confusion[:, code].sum()), int(confusion[code].sum())
        union = na + nb - inter
        out["dice"][name] = 2 * inter / (na + nb) if na + nb else float("nan")
        out["iou"][name] = inter / union if union else float("nan")
        out["volume_fraction"][name] = na / n
        out["volume_fraction_reference"][name] = nb / n
        out["volume_fraction_difference"][name] = (na - nb) / n
    equal = int(sum(confusion[c, c] for c in range(3)))
    out.update(accuracy=float(equal) / n, n_compared_voxels=n, compared_fraction=n / n_total,
               reference_values=dict(values))
    return out


__all__ = ["agreement_from_confusion", "check_reference_values", "reference_agreement", "reference_confusion"]

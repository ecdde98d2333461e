"""Clean-up of a voxel classification after prediction.

A pixel classifier decides each voxel on its own features; near a thin phase (carbon binder a
few voxels thick) its errors are isolated voxels and one-voxel boundary excursions, which the
face surface area counts twice each. A strict 3x3x3 majority vote removes them without a
parameter to tune (docs/science.md, "Majority clean-up of the labels").
"""

from __future__ import annotations

import numpy as np

#: a voxel takes another class when at least this many of the 27 voxels of its 3x3x3
#: neighbourhood (itself included) are of that class: a strict majority, so at most one class
#: can qualify and the result does not depend on the order of the classes
MAJORITY_VOXELS = 14


def majority_filter(labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Relabel a voxel when a strict majority (>= 14 of 27) of its 3x3x3 neighbourhood is another class.

    Parameters
    ----------
    labels : numpy.ndarray of int, (z, y, x)
        Class codes 0 .. ``n_classes - 1``.
    n_classes : int, optional
        Number of classes (default ``labels.max() + 1``).

    Returns
    -------
    numpy.ndarray of uint8
        The cleaned labels. Outside the volume the labels are mirrored (``scipy.ndimage``'s
        ``reflect`` mode), so a block with a one-voxel halo gives the same interior.

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), np.uint8); lab[2, 2, 2] = 1   # an isolated voxel
    >>> int(majority_filter(lab).sum())
    0
    >>> lab[:, :, 3:] = 2                                        # a flat boundary stays
    >>> bool((majority_filter(lab)[:, :, 3:] == 2).all())
    True
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    n = int(lab.max()) + 1 if n_classes is None else int(n_classes)
    out = lab.astype(np.uint8, copy=True)
    for c in range(n):
        # counts as float32 sums of 27 ones are exact; uniform_filter returns means
        votes = ndimage.uniform_filter((lab == c).astype(np.float32), 3, mode="reflect") * 27
        out[(votes >= MAJORITY_VOXELS - 0.5) & (lab != c)] = c
    return out


__all__ = ["MAJORITY_VOXELS", "majority_filter"]

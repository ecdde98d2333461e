"""Energy alignment of a spectral image stack ``(E, y, x)`` or ``(E, z, y, x)``.

Between energies a TXM's zone plate is refocused, so frames shift and the magnification changes
slightly with energy. Each energy is registered onto its already-aligned neighbour, chaining
outwards from a reference energy: neighbouring energies look most alike (absorption contrast
changes gradually across the edge), so each registration is easy and the chain carries every
frame into the reference frame. The default transform is a similarity (rotation, translation,
isotropic scale: it absorbs the magnification change); a B-spline stage can be added for
residual distortions. Registration itself is :func:`litomo.register.register_pair`
(itk-elastix, NCC metric: insensitive to the linear contrast change between energies).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from litomo.errors import DataError
from litomo.progress import ProgressCallback


@dataclass
class AlignResult:
    """Aligned stack and per-energy QA.

    Attributes
    ----------
    aligned : ndarray (E, ...) float32
        Every energy resampled into the reference energy's frame (fill value outside the
        moving frame: ``fill_value``).
    reference_index : int
    qa : list of dict
        Per energy: ``index``, ``energy_ev`` (if given), ``fixed_index`` (the neighbour it was
        registered to), ``ncc_before``, ``ncc_after``, ``translation_vox``, ``scale``,
        ``rotation_angle_deg``; the reference row has NCC 1 and no transform.
    """

    aligned: np.ndarray
    reference_index: int
    qa: list[dict]


def align_energy_stack(
    stack,
    *,
    energies_ev=None,
    reference_index: int | None = None,
    mode: str = "similarity",
    bspline: bool = False,
    voxel_size_um: float | tuple[float, ...] = 1.0,
    params=None,
    fill_value: float = 0.0,
    progress: ProgressCallback | None = None,
) -> AlignResult:
    """Register every energy of ``stack`` into the frame of ``reference_index``.

    Parameters
    ----------
    stack : array (E, y, x) or (E, z, y, x)
        Images (e.g. optical density) at each energy.
    energies_ev : array (E,), optional
        Energies in eV, only reported in the QA.
    reference_index : int, optional
        Energy whose frame the others are brought into (default: the middle one).
    mode : {"similarity", "rigid", "translation"}
        Linear transform model (similarity absorbs the magnification change with energy).
    bspline : bool
        Add a B-spline stage after the linear one.
    voxel_size_um : float or tuple
        Pixel/voxel size in um.
    params : litomo.register.RegistrationParams, optional
        Further settings (iterations, grid spacing, seed); ``mode`` and ``fill_value`` override.
    fill_value : float
        Value where an aligned frame has no data.
    progress : ProgressCallback, optional

    Returns
    -------
    AlignResult

    Examples
    --------
    >>> res = align_energy_stack(stack, energies_ev=energies)  # doctest: +SKIP
    >>> [round(r["ncc_after"], 3) for r in res.qa]  # doctest: +SKIP
    """
    from litomo.register import RegistrationParams, register_pair

    a = np.asarray(stack)
    if a.ndim not in (3, 4):
        raise DataError(f"stack must be (E, y, x) or (E, z, y, x), got shape {a.shape}")
    n_e = a.shape[0]
    if n_e < 2:
        raise DataError("need at least two energies to align")
    if not np.all(np.isfinite(a)):
        raise DataError("stack contains NaN or infinite values; fill them before aligning")
    if energies_ev is not None and len(energies_ev) != n_e:
        raise DataError(f"{len(energies_ev)} energies for a stack of {n_e} images")
    if mode not in ("similarity", "rigid", "translation"):
        raise DataError(f"mode must be similarity, rigid or translation, got '{mode}'")
    ref = n_e // 2 if reference_index is None else int(reference_index)
    if not 0 <= ref < n_e:
        raise DataError(f"reference_index {ref} outside 0..{n_e - 1}")
    full_mode = f"{mode}+bspline" if bspline else mode
    p = replace(params or RegistrationParams(), mode=full_mode, fill_value=fill_value)

    aligned = np.empty(a.shape, np.float32)
    aligned[ref] = a[ref]
    qa: list[dict] = [{}] * n_e
    qa[ref] = {
        "index": ref,
        "fixed_index": None,
        "ncc_before": 1.0,
        "ncc_after": 1.0,
        "translation_vox": (0.0,) * (a.ndim - 1),
        "scale": 1.0,
        "rotation_angle_deg": 0.0,
    }
    order = [*range(ref + 1, n_e), *range(ref - 1, -1, -1)]
    for done, i in enumerate(order, start=1):
        j = i - 1 if i > ref else i + 1  # the neighbour towards the reference, already aligned
        res = register_pair(aligned[j], a[i], params=p, voxel_size_um=voxel_size_um)
        aligned[i] = res.moved
        qa[i] = {
            "index": i,
            "fixed_index": j,
            "ncc_before": float(res.ncc_before),
            "ncc_after": float(res.ncc_after),
            "translation_vox": tuple(float(t) for t in res.translation_vox),
            "scale": float(res.scale),
            "rotation_angle_deg": float(res.rotation_angle_deg),
        }
        if progress is not None:
            progress(done, len(order), "aligning energies")
    if energies_ev is not None:
        for row, e in zip(qa, energies_ev, strict=True):
            row["energy_ev"] = float(e)
    return AlignResult(aligned, ref, qa)

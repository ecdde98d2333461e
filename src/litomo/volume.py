"""The :class:`Volume` data model: an array plus its voxel size and provenance."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from litomo.errors import DataError


def _is_dask_array(x: Any) -> bool:
    # dask.array costs ~1 s to import; an array cannot be a dask array before it is imported,
    # so `import litomo` (and the CLI's --help) need not pay for it
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


def as_voxel_size(voxel_size_um: float | tuple[float, ...] | list[float] | None) -> tuple[float, float, float]:
    """Normalise a voxel size to a ``(z, y, x)`` tuple of positive floats in micrometres.

    Examples
    --------
    >>> as_voxel_size(0.03)
    (0.03, 0.03, 0.03)
    >>> as_voxel_size([1, 2, 2])
    (1.0, 2.0, 2.0)
    """
    if voxel_size_um is None:
        return (1.0, 1.0, 1.0)
    if np.isscalar(voxel_size_um):
        v = (float(voxel_size_um),) * 3
    else:
        v = tuple(float(x) for x in voxel_size_um)
        if len(v) != 3:
            raise DataError(f"voxel size (--voxel-size-um; manifest: sample.voxel_size_um) must be one number "
                            f"or three (z, y, x) in um, got {voxel_size_um!r}")
    if not all(np.isfinite(x) and x > 0 for x in v):
        raise DataError(f"voxel size (--voxel-size-um; manifest: sample.voxel_size_um) must be positive "
                        f"and finite, got {voxel_size_um!r}")
    return v  # type: ignore[return-value]


@dataclass
class Volume:
    """A 3D image with physical voxel size and a provenance record.

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array
        Voxel values indexed ``(z, y, x)``; z is the through-plane axis.
    voxel_size_um : float or (z, y, x) tuple
        Voxel edge length(s) in micrometres.
    metadata : dict
        Free-form metadata (source file, energy_ev, ...). ``metadata["provenance"]`` is a list
        of processing steps, each a dict with at least ``"step"``.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((4, 5, 6), np.float32), voxel_size_um=0.5)
    >>> v.shape, v.voxel_size_um, v.voxel_volume_um3
    ((4, 5, 6), (0.5, 0.5, 0.5), 0.125)
    >>> v.with_array(v.array + 1, step="add_one").provenance[-1]["step"]
    'add_one'
    """

    array: Any
    voxel_size_um: tuple[float, float, float] = (1.0, 1.0, 1.0)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.array, np.ndarray) or _is_dask_array(self.array)):
            self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise DataError(f"a Volume is 3D (z, y, x); got an array of shape {tuple(self.array.shape)}")
        self.voxel_size_um = as_voxel_size(self.voxel_size_um)
        self.metadata = dict(self.metadata)
        self.metadata.setdefault("provenance", [])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def is_lazy(self) -> bool:
        """True when the array is a dask array (nothing is in memory yet)."""
        return _is_dask_array(self.array)

    @property
    def voxel_volume_um3(self) -> float:
        z, y, x = self.voxel_size_um
        return z * y * x

    @property
    def extent_um(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, self.voxel_size_um, strict=True))  # type: ignore[return-value]

    @property
    def provenance(self) -> list[dict[str, Any]]:
        return self.metadata["provenance"]

    def with_array(self, array: Any, *, voxel_size_um: Any = None, step: str | None = None, **params: Any) -> Volume:
        """A new Volume with ``array`` and the same metadata, plus one provenance step."""
        meta = copy.deepcopy({k: v for k, v in self.metadata.items() if k != "provenance"})
        meta["provenance"] = list(self.provenance)
        if step is not None:
            meta["provenance"].append({"step": step, **params})
        return Volume(array, self.voxel_size_um if voxel_size_um is None else voxel_size_um, meta)

    def compute(self) -> Volume:
        """A Volume whose array is a numpy array (computes a dask array)."""
        if self.is_lazy:
            return Volume(np.asarray(self.array.compute()), self.voxel_size_um, self.metadata)
        return self

    def to_dask(self, chunks: Any = "auto") -> Volume:
        """A Volume backed by a dask array with the given chunks."""
        import dask.array as da

        arr = self.array.rechunk(chunks) if self.is_lazy else da.from_array(self.array, chunks=chunks)
        return Volume(arr, self.voxel_size_um, self.metadata)

    def numpy(self) -> np.ndarray:
        """The voxel values as a numpy array (computing if lazy)."""
        return np.asarray(self.array.compute() if self.is_lazy else self.array)

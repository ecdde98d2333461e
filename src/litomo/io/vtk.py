"""VTK XML ImageData (``.vti``) for ParaView: point or cell arrays on a regular grid.

Written directly (the format is a short XML header plus raw appended binary) because the
``vtk`` package is a 100+ MB dependency for what is a few lines of bytes layout; the tests
read our files back with ``vtk.vtkXMLImageDataReader`` when it is installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from litomo.errors import DataError, InputFileError
from litomo.io.atomic import atomic_path
from litomo.volume import Volume, as_voxel_size

_VTK_TYPES = {
    np.dtype(np.int8): "Int8", np.dtype(np.uint8): "UInt8",
    np.dtype(np.int16): "Int16", np.dtype(np.uint16): "UInt16",
    np.dtype(np.int32): "Int32", np.dtype(np.uint32): "UInt32",
    np.dtype(np.int64): "Int64", np.dtype(np.uint64): "UInt64",
    np.dtype(np.float32): "Float32", np.dtype(np.float64): "Float64",
}
_HEADER = np.dtype("<u8")  # header_type="UInt64": byte count before each array


def _iter_bytes(arr: Any, dtype: np.dtype) -> Iterator[bytes]:
    """Little-endian bytes of ``arr`` in VTK order (x fastest = C order of (z, y, x)), slab by slab."""
    slab = max(1, (32 * 1024**2) // max(1, int(np.prod(arr.shape[1:])) * dtype.itemsize))
    for z0 in range(0, arr.shape[0], slab):
        block = arr[z0:z0 + slab]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        yield np.ascontiguousarray(block, dtype=dtype.newbyteorder("<")).tobytes()


def write_vti(
    path: str | os.PathLike,
    volume: Volume | Mapping[str, Volume | Any],
    *,
    voxel_size_um: float | Sequence[float] | None = None,
    cell_data: bool = True,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    name: str = "values",
) -> Path:
    """Write one or several same-shape volumes as a VTK XML ImageData file (atomic).

    Parameters
    ----------
    path : path-like
        Output ``.vti`` file.
    volume : Volume or dict of str -> Volume/array
        ``(z, y, x)`` data; a dict writes one named data array per entry (e.g. phase labels
        and a Li map). bool is stored as UInt8.
    voxel_size_um : optional
        Grid spacing in micrometres; default the (first) Volume's voxel size.
    cell_data : bool
        True (default): each voxel is a VTK cell (ParaView's "Threshold" and "Volume"
        rendering treat labels as blocks). False: values sit on grid points.
    origin_um : (z, y, x)
        Position of the first voxel corner (cell data) or centre (point data), in um.
    name : str
        Array name for a single volume.

    Returns
    -------
    Path

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.vti"
    >>> write_vti(p, Volume(np.zeros((2, 3, 4), np.uint8), voxel_size_um=0.5)).name
    'v.vti'
    """
    items = dict(volume) if isinstance(volume, Mapping) else {name: volume}
    if not items:
        raise DataError("write_vti: nothing to write (empty dict)")
    arrays: dict[str, Any] = {}
    first_vox = None
    for key, vol in items.items():
        if isinstance(vol, Volume):
            first_vox = first_vox or vol.voxel_size_um
            arr = vol.array
        else:
            arr = vol if hasattr(vol, "compute") else np.asarray(vol)
        if arr.ndim != 3:
            raise DataError(f"write_vti: array {key!r} has shape {tuple(arr.shape)}, expected 3D (z, y, x)")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if np.dtype(arr.dtype) not in _VTK_TYPES:
            raise DataError(f"write_vti: array {key!r} has dtype {arr.dtype}, which VTK cannot store")
        arrays[key] = arr
    shapes = {tuple(a.shape) for a in arrays.values()}
    if len(shapes) != 1:
        raise DataError(f"write_vti: arrays differ in shape {sorted(shapes)}")
    nz, ny, nx = shapes.pop()
    vz, vy, vx = as_voxel_size(voxel_size_um if voxel_size_um is not None else first_vox)
    oz, oy, ox = (float(o) for o in origin_um)
    if cell_data:
        extent = f"0 {nx} 0 {ny} 0 {nz}"
    else:
        if min(nx, ny, nz) < 1:
            raise InputFileError("write_vti: empty volume")
        extent = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
    section = "CellData" if cell_data else "PointData"
    offset = 0
    entries = []
    for key, arr in arrays.items():
        dtype = np.dtype(arr.dtype)
        entries.append(
            f'        <DataArray type="{_VTK_TYPES[dtype]}" Name={quoteattr(key)} '
            f'NumberOfComponents="1" format="appended" offset="{offset}"/>'
        )
        offset += _HEADER.itemsize + int(np.prod(arr.shape)) * dtype.itemsize
    first = next(iter(arrays))
    header = "\n".join([
        '<?xml version="1.0"?>',
        '<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
        f'  <ImageData WholeExtent="{extent}" Origin="{ox!r} {oy!r} {oz!r}" Spacing="{vx!r} {vy!r} {vz!r}" '
        'Direction="1 0 0 0 1 0 0 0 1">',
        f'    <Piece Extent="{extent}">',
        f"      <{section} Scalars={quoteattr(first)}>",
        *entries,
        f"      </{section}>",
        "    </Piece>",
        "  </ImageData>",
        '  <AppendedData encoding="raw">',
        "   _",
    ])
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        for arr in arrays.values():
            dtype = np.dtype(arr.dtype)
            fh.write(np.asarray(int(np.prod(arr.shape)) * dtype.itemsize, _HEADER).tobytes())
            for chunk in _iter_bytes(arr, dtype):
                fh.write(chunk)
        fh.write(b"\n  </AppendedData>\n</VTKFile>\n")
    return path

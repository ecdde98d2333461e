"""VTK XML ImageData writer: header, spacing and raw appended arrays."""

from __future__ import annotations

import re

import numpy as np
import pytest

from litomo.errors import DataError
from litomo.io import write_vti
from litomo.volume import Volume


def _parse_vti(path):
    """Minimal independent parser: XML attributes + UInt64-prefixed raw blocks."""
    raw = path.read_bytes()
    head, _, tail = raw.partition(b'<AppendedData encoding="raw">')
    text = head.decode()
    data = tail[tail.index(b"_") + 1:]
    arrays = {}
    for m in re.finditer(r'<DataArray type="(\w+)" Name="([^"]+)"[^>]*offset="(\d+)"', text):
        vtype, name, off = m.group(1), m.group(2), int(m.group(3))
        n = int(np.frombuffer(data[off:off + 8], "<u8")[0])
        dtype = np.dtype({"Float32": "<f4", "UInt8": "u1", "Int32": "<i4", "Float64": "<f8"}[vtype])
        arrays[name] = np.frombuffer(data[off + 8:off + 8 + n], dtype)
    attrs = dict(re.findall(r'(WholeExtent|Spacing|Origin)="([^"]+)"', text))
    return text, attrs, arrays


@pytest.mark.parametrize("cell", [True, False])
def test_roundtrip_named_arrays(tmp_path, cell):
    rng = np.random.default_rng(0)
    li = rng.random((3, 4, 5)).astype(np.float32)
    lab = rng.integers(0, 3, (3, 4, 5)).astype(np.uint8)
    ids = np.arange(60, dtype=np.int32).reshape(3, 4, 5)
    p = tmp_path / "v.vti"
    write_vti(p, {"li": Volume(li, (0.1, 0.2, 0.3)), "labels": lab, "ids": ids}, cell_data=cell)
    text, attrs, arrays = _parse_vti(p)
    assert attrs["Spacing"].split() == ["0.3", "0.2", "0.1"]  # VTK order x y z
    assert attrs["WholeExtent"] == ("0 5 0 4 0 3" if cell else "0 4 0 3 0 2")
    assert ("<CellData" in text) == cell
    for name, a in (("li", li), ("labels", lab), ("ids", ids)):
        np.testing.assert_array_equal(arrays[name].reshape(a.shape), a)


def test_vtk_reader_if_installed(tmp_path):
    vtk = pytest.importorskip("vtk")
    import dask.array as da
    from vtk.util.numpy_support import vtk_to_numpy

    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    p = tmp_path / "d.vti"
    write_vti(p, Volume(da.from_array(a, chunks=(1, 5, 6)), (1.0, 0.5, 0.25)), name="mu")
    r = vtk.vtkXMLImageDataReader()
    r.SetFileName(str(p))
    r.Update()
    im = r.GetOutput()
    assert im.GetDimensions() == (7, 6, 5)
    assert im.GetSpacing() == pytest.approx((0.25, 0.5, 1.0))
    np.testing.assert_array_equal(vtk_to_numpy(im.GetCellData().GetArray("mu")).reshape(a.shape), a)


def test_shape_mismatch_and_bad_dtype(tmp_path):
    with pytest.raises(DataError, match="shape"):
        write_vti(tmp_path / "x.vti", {"a": np.zeros((2, 2, 2)), "b": np.zeros((2, 2, 3))})
    with pytest.raises(DataError, match="dtype"):
        write_vti(tmp_path / "x.vti", np.zeros((2, 2, 2), np.complex64))
    assert not (tmp_path / "x.vti").exists()

"""From raw projection series to volumes: pre-processing, alignment, centre, slab-wise reconstruction.

:func:`reconstruct_series` does one series in memory-sized slabs through dask;
:func:`reconstruct_state` does the energies of one XANES state with one shared geometry (the
post-edge series is aligned, every other energy is registered to it, one centre for all);
:func:`run_reconstruction` writes a result folder (a :class:`~litomo.io.rundir.RunDir`, resumable
slab by slab).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import InputFileError, LitomoError, ManifestError
from litomo.io.projections import ProjectionSeries
from litomo.progress import ProgressCallback
from litomo.tomo.align import (
    AlignmentResult,
    align_consistency,
    align_reprojection,
    align_to_reference,
    apply_shifts,
)
from litomo.tomo.center import CenterResult, find_center_auto
from litomo.tomo.prep import RING_METHODS, bin_projections, normalize, remove_rings, remove_zingers
from litomo.tomo.recon import METHODS
from litomo.tomo.slabs import field_of_view_mask, reconstruct_slab, slice_width

log = logging.getLogger(__name__)

ALIGN_METHODS = ("none", "xcorr", "reprojection")


@dataclass
class ReconstructionConfig:
    """Settings of a reconstruction (CLI flags and the manifest's ``[reconstruction]`` section).

    Attributes
    ----------
    method : {"fbp", "sirt", "tv"}
    center_px : float or None
        Rotation centre in detector columns of the *unbinned* detector; None = automatic.
    align : {"none", "xcorr", "reprojection"}
        ``xcorr``: the fast consistency pass; ``reprojection``: that pass, then iterative
        reprojection alignment.
    rings : {"none", "sorting", "filtering", "wavelet-fft"}
    zingers : bool
    bin : int
        Detector binning factor.
    n_iter, tv_weight : SIRT/TV settings.
    align_iter : int
        Maximum reprojection-alignment iterations.
    slab_rows : int
        Detector rows per dask task.
    center_tolerance_px : float
        The two automatic centres must agree within this (else a warning).
    fov_mask : bool
        Set the slice pixels outside the field of view (the circle every view saw,
        :func:`litomo.tomo.slabs.field_of_view_mask`) to NaN: not measured, so missing (algotom's
        and tomopy's circle masks write 0, which downstream reads as attenuation 0); without it
        the FBP corners hold the edge-extended sinogram smeared out.
    angles : str or None
        Manifest only: angle list (file, resolved against the manifest's folder, or
        ``start:stop:count``) for projection series that record no angles (TIFF stacks); series
        with angles in the file keep theirs.
    """

    method: str = "fbp"
    center_px: float | None = None
    align: str = "none"
    rings: str = "none"
    zingers: bool = True
    bin: int = 1
    n_iter: int = 100
    tv_weight: float = 0.02
    align_iter: int = 10
    slab_rows: int = 16
    center_tolerance_px: float = 1.0
    fov_mask: bool = True
    angles: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LitomoError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.align not in ALIGN_METHODS:
            raise LitomoError(f"--align must be one of {', '.join(ALIGN_METHODS)}, got {self.align!r}")
        if self.rings not in RING_METHODS:
            raise LitomoError(f"--rings must be one of {', '.join(RING_METHODS)}, got {self.rings!r}")
        if int(self.bin) < 1 or int(self.slab_rows) < 1 or int(self.n_iter) < 1 or int(self.align_iter) < 1:
            raise LitomoError("--bin, slab rows, --n-iter and alignment iterations must be >= 1")

    @classmethod
    def from_manifest(cls, table: dict[str, Any], path: str | None = None) -> ReconstructionConfig:
        """Parse the ``[reconstruction]`` manifest table (keys = attribute names; ``center_px = "auto"``)."""
        known = {f.name for f in fields(cls)}
        for key in table:
            if key not in known:
                raise ManifestError(f"unknown key (known: {', '.join(sorted(known))})", path=path,
                                    field=f"reconstruction.{key}")
        kw = dict(table)
        if kw.get("center_px") == "auto":
            kw["center_px"] = None
        for key in ("center_px", "tv_weight", "center_tolerance_px"):
            if kw.get(key) is not None and not isinstance(kw[key], int | float):
                raise ManifestError(f"must be a number, got {kw[key]!r}", path=path, field=f"reconstruction.{key}")
        if "angles" in kw:
            kw["angles"] = _manifest_angles(kw["angles"], path)
        try:
            return cls(**kw)
        except (LitomoError, TypeError) as exc:
            raise ManifestError(str(exc), path=path, field="reconstruction") from None


def _manifest_angles(value: Any, manifest_path: str | None) -> str:
    """``[reconstruction] angles``: a file (relative to the manifest) or ``start:stop:count``, checked now."""
    from litomo.io.projections import read_angle_list

    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"expected an angle-list file or \"start:stop:count\", got {value!r}", path=manifest_path,
                            field="reconstruction.angles")
    spec = value.strip()
    if manifest_path is not None and not Path(spec).is_absolute():
        candidate = Path(manifest_path).parent / spec
        if candidate.exists() or spec.count(":") != 2:
            spec = str(candidate.resolve())
    try:
        read_angle_list(spec)
    except InputFileError as exc:
        raise ManifestError(str(exc).replace("--angles: ", ""), path=manifest_path, field="reconstruction.angles") from None
    return spec


@dataclass
class ReconstructionResult:
    """A reconstructed volume with everything needed to judge it (report figures, JSON)."""

    volume: np.ndarray
    voxel_size_um: float | None
    center: CenterResult | None
    center_px: float
    alignment: AlignmentResult | None
    sinogram_before: np.ndarray = field(repr=False)
    sinogram_after: np.ndarray = field(repr=False)
    angles_deg: np.ndarray = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"shape_zyx": list(self.volume.shape), "voxel_size_um": self.voxel_size_um,
                "center_px": self.center_px, "center": self.center.to_json() if self.center else None,
                "alignment": self.alignment.to_json() if self.alignment else None, **self.info}


def prepare_projections(series: ProjectionSeries, config: ReconstructionConfig, *,
                        progress: ProgressCallback | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """-log projections after zinger removal, binning and ring removal; and what was done."""
    proj = normalize(series)
    info: dict[str, Any] = {}
    if config.zingers:
        proj, info["zingers_replaced"] = remove_zingers(proj)
    proj = bin_projections(proj, config.bin)
    if config.rings != "none":
        before = proj
        proj = remove_rings(proj, config.rings, progress=progress)
        info["ring_removal_relative_change"] = float(np.linalg.norm(proj - before) / max(np.linalg.norm(before), 1e-12))
    return proj, info


def _center_sinogram_band(proj: np.ndarray) -> np.ndarray:
    """Mean sinogram of the middle third of the rows: a valid parallel-beam sinogram, less noisy."""
    r = proj.shape[1]
    return proj[:, r // 3 : max(r // 3 + 1, 2 * r // 3), :].mean(axis=1)


def _align(proj: np.ndarray, theta: np.ndarray, config: ReconstructionConfig,
           progress: ProgressCallback | None) -> tuple[np.ndarray, AlignmentResult | None, CenterResult | None, float]:
    """Alignment and centre in the order they need each other: consistency pass, centre, reprojection."""
    raw, alignment = proj, None
    if config.align != "none":
        alignment = align_consistency(raw, theta)
        proj = apply_shifts(raw, -alignment.shifts_px)
    center, center_px = None, None
    if config.center_px is None:
        center = find_center_auto(_center_sinogram_band(proj), theta, tolerance_px=config.center_tolerance_px)
        center_px = center.center_px
    else:
        center_px = (float(config.center_px) - (config.bin - 1) / 2.0) / config.bin
        if not 0 <= center_px <= proj.shape[2] - 1:
            raise LitomoError(f"--center {config.center_px:g} px is outside the detector "
                              f"(0 .. {proj.shape[2] * config.bin - 1})")
    if config.align == "reprojection":
        alignment = align_reprojection(raw, theta, center_px, init=alignment, max_iter=config.align_iter,
                                       progress=progress)
        proj = apply_shifts(raw, -alignment.shifts_px, out=None if proj is raw else proj)  # reuse the first pass's copy
    return proj, alignment, center, center_px


def reconstruct_projections(proj: np.ndarray, theta: np.ndarray, center_px: float, config: ReconstructionConfig, *,
                            out: Any = None, done: set[int] | None = None,
                            on_slab: Any = None, progress: ProgressCallback | None = None) -> Any:
    """Reconstruct ``(n_angles, rows, n)`` slab by slab through dask (threads).

    ``out`` (array-like ``(rows, w, w)``, e.g. a zarr array) receives each slab; slabs whose
    start row is in ``done`` are skipped (resume) and ``on_slab(start)`` is called after each
    one is stored.
    """
    import dask

    rows, n = proj.shape[1], proj.shape[2]
    w = slice_width(n, center_px)
    if out is None:
        out = np.empty((rows, w, w), np.float32)
    kw: dict[str, Any] = {"n_iter": config.n_iter} if config.method in ("sirt", "tv") else {}
    if config.method == "tv":
        kw["tv_weight"] = config.tv_weight
    starts = [s for s in range(0, rows, config.slab_rows) if not done or s not in done]
    batch = max(1, os.cpu_count() or 1)
    finished = rows - sum(min(config.slab_rows, rows - s) for s in starts)
    outside = ~field_of_view_mask(n, center_px) if config.fov_mask else None
    for b0 in range(0, len(starts), batch):
        group = starts[b0 : b0 + batch]
        tasks = [dask.delayed(reconstruct_slab)(proj[:, s : s + config.slab_rows], theta, center_px, config.method, **kw)
                 for s in group]
        # the run's scheduler (litomo.workflows.execution.dask_client); plain threads outside one
        for s, rec in zip(group, dask.compute(*tasks), strict=True):
            if outside is not None:
                rec[:, outside] = np.nan  # missing, not attenuation 0 (docs/science.md)
            out[s : s + rec.shape[0]] = rec
            finished += rec.shape[0]
            if on_slab is not None:
                on_slab(s)
        if progress is not None:
            progress(finished, rows, f"reconstructing ({config.method})")
    return out


def reconstruct_series(series: ProjectionSeries, config: ReconstructionConfig | None = None, *,
                       progress: ProgressCallback | None = None, out: Any = None,
                       done: set[int] | None = None, on_slab: Any = None) -> ReconstructionResult:
    """Raw projection series -> aligned, centred volume ``(rows, w, w)`` (see the module docstring).

    Examples
    --------
    >>> from litomo.tomo.project import project_volume
    >>> vol = np.zeros((4, 33, 33), np.float32); vol[:, 10:20, 12:18] = 0.05
    >>> th = np.linspace(0, 180, 180, endpoint=False)
    >>> raw = 1000 * np.exp(-project_volume(vol, th))
    >>> s = ProjectionSeries(raw, np.full((2, 4, 33), 1000.0), np.zeros((2, 4, 33)), th, 0.03)
    >>> res = reconstruct_series(s, ReconstructionConfig(center_px=16.0))
    >>> res.volume.shape, bool(abs(res.volume[:, 12:18, 13:17].mean() - 0.05) < 0.005)
    ((4, 33, 33), True)
    """
    res, _ = _reconstruct_keeping(series, config or ReconstructionConfig(), progress=progress, out=out, done=done,
                                  on_slab=on_slab)
    return res


def _reconstruct_keeping(series: ProjectionSeries, config: ReconstructionConfig, *, progress: ProgressCallback | None,
                         out: Any = None, done: set[int] | None = None,
                         on_slab: Any = None) -> tuple[ReconstructionResult, np.ndarray]:
    """:func:`reconstruct_series`, also returning the aligned projections (the reference of a state)."""
    theta = series.angles_deg
    proj, info = prepare_projections(series, config, progress=progress)
    mid = proj.shape[1] // 2
    before = proj[:, mid, :].copy()
    proj, alignment, center, center_px = _align(proj, theta, config, progress)
    vol = reconstruct_projections(proj, theta, center_px, config, out=out, done=done, on_slab=on_slab,
                                  progress=progress)
    voxel = None if series.pixel_size_um is None else series.pixel_size_um * config.bin
    info.update({"method": config.method, "align": config.align, "rings": config.rings, "bin": config.bin,
                 "n_angles": int(theta.size), "angle_range_deg": [float(theta.min()), float(theta.max())],
                 "center_px_unbinned": center_px * config.bin + (config.bin - 1) / 2.0})
    res = ReconstructionResult(vol, voxel, center, center_px, alignment, before, proj[:, mid, :].copy(), theta, info)
    return res, proj


@dataclass
class StateReconstruction:
    """The volumes of one XANES state's energies on one geometry (same shifts frame, same centre)."""

    volumes: dict[float, np.ndarray]
    center_px: float
    voxel_size_um: float | None
    post_edge_ev: float
    shifts_px: dict[float, np.ndarray] = field(repr=False, default_factory=dict)
    reference: ReconstructionResult | None = field(repr=False, default=None)


def reconstruct_state(series_by_energy: dict[float, ProjectionSeries], config: ReconstructionConfig | None = None, *,
                      post_edge_ev: float | None = None,
                      progress: ProgressCallback | None = None) -> StateReconstruction:
    """Reconstruct every energy of one state with one geometry.

    The post-edge series (highest energy unless given) is aligned and its centre found; every
    other energy's projections are registered view by view to the aligned post-edge projections
    (with ``align = "reprojection"`` then refined by reprojection alignment of their own,
    :func:`litomo.tomo.align.align_to_reference`) and reconstructed with the same centre, so the
    volumes share one voxel grid and one field of view.
    """
    config = config or ReconstructionConfig()
    if not series_by_energy:
        raise LitomoError("reconstruct_state: no projection series given")
    post = max(series_by_energy) if post_edge_ev is None else float(post_edge_ev)
    if post not in series_by_energy:
        raise LitomoError(f"post-edge energy {post:g} eV has no projection series")
    # the aligned post-edge projections are kept from its reconstruction (not prepared again)
    ref, ref_aligned = _reconstruct_keeping(series_by_energy[post], config, progress=progress)
    ref_theta = ref.angles_deg
    ref_shifts = ref.alignment.shifts_px if ref.alignment is not None else np.zeros((ref_theta.size, 2))
    volumes = {post: ref.volume}
    shifts = {post: ref_shifts}
    fixed = ReconstructionConfig(**{**asdict(config), "align": "none", "center_px": ref.info["center_px_unbinned"]})
    for energy, series in sorted(series_by_energy.items()):
        if energy == post:
            continue
        if series.angles_deg.shape != ref_theta.shape or not np.allclose(series.angles_deg, ref_theta, atol=0.05):
            raise InputFileError(f"{series.metadata.get('source', energy)}: its angles differ from the post-edge "
                                 "series; the energies of a state must share the angle list")
        proj, _ = prepare_projections(series, config)
        sh = np.zeros_like(ref_shifts)
        if config.align != "none":
            sh = align_to_reference(proj, ref_aligned, ref_theta, ref.center_px, refine=config.align == "reprojection",
                                    max_iter=config.align_iter, progress=progress).shifts_px
        aligned = apply_shifts(proj, -sh, out=proj)
        volumes[energy] = reconstruct_projections(aligned, ref_theta, ref.center_px, fixed, progress=progress)
        del proj, aligned
        shifts[energy] = sh
    return StateReconstruction(volumes, ref.center_px, ref.voxel_size_um, post, shifts, ref)


# ------------------------------------------------------------------------------------------
# output folder (litomo.io.rundir.RunDir, kind "reconstruct"; resumable slab by slab)
# ------------------------------------------------------------------------------------------

#: the slabs already stored in the work store, with the key of the input and settings they came from
SLAB_RECORD = "work/slabs.json"
WORK_STORE = "work/slices.zarr"


def input_key(path: str | os.PathLike, config: ReconstructionConfig) -> str:
    """Hash of the input file (path, size, mtime) and the settings: a resumed run must match it."""
    path = Path(path)
    st = path.stat()
    blob = json.dumps({"path": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
                       "config": asdict(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def completed_record(path: str | os.PathLike, out_dir: str | os.PathLike,
                     config: ReconstructionConfig) -> dict[str, Any] | None:
    """The completion record of a finished reconstruction of the same input and settings in ``out_dir``, or None."""
    from litomo.io.rundir import COMPLETION_RECORD, MARKER_DIR

    out = Path(out_dir)
    try:
        marker = json.loads((out / MARKER_DIR / "owner.json").read_text())
        record = json.loads((out / COMPLETION_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(marker, dict) and isinstance(record, dict)) or marker.get("kind") != "reconstruct" \
            or not marker.get("completed"):
        return None
    return record if record.get("key") == input_key(path, config) else None


def _done_slabs(rd: Any, key: str) -> set[int]:
    """Slabs a resumed run may keep: those recorded with the same input and settings."""
    rec_path = rd.root / SLAB_RECORD
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        rec = {}
    if isinstance(rec, dict) and rec.get("key") == key and (rd.root / WORK_STORE).is_dir():
        return {int(s) for s in rec.get("done", [])}
    if rec_path.exists() or (rd.root / WORK_STORE).exists():
        log.info("%s: the stored slabs came from other input or settings; starting over", rd.root)
        import shutil

        shutil.rmtree(rd.root / WORK_STORE, ignore_errors=True)
        rec_path.unlink(missing_ok=True)
    return set()


class _LazyStore:
    """The slab work store, created once the slice width (known only after the centre) is seen."""

    def __init__(self, path: Path, rows: int, slab_rows: int):
        self.path, self.rows, self.slab_rows, self.arr = path, rows, slab_rows, None

    def __setitem__(self, idx: Any, value: np.ndarray) -> None:
        import zarr

        if self.arr is None:
            self.arr = zarr.open_array(str(self.path), mode="a", shape=(self.rows, *value.shape[1:]),
                                       chunks=(self.slab_rows, *value.shape[1:]), dtype="f4")
        self.arr[idx] = value


def run_reconstruction(path: str | os.PathLike, out_dir: str | os.PathLike, config: ReconstructionConfig, *,
                       series: ProjectionSeries, mode: str = "new", write_tiff: bool = False,
                       scheduler: str | None = None,
                       figures: Callable[[ReconstructionResult, Path], list[Path]] | None = None,
                       progress: ProgressCallback | None = None) -> tuple[ReconstructionResult, dict[str, Any]]:
    """Reconstruct ``series`` (read from ``path``) into ``out_dir``; completion record ``run.json`` last.

    ``out_dir`` is a :class:`~litomo.io.rundir.RunDir` of kind ``"reconstruct"``: ``mode="resume"``
    keeps the slabs an interrupted run of the same input and settings stored under ``work/``.
    ``scheduler`` is as in :func:`litomo.workflows.execution.dask_client`; ``figures(result,
    figures_dir)`` writes QA figures (the report layer's) and returns their paths.
    """
    from litomo.io.atomic import write_text_atomic
    from litomo.io.rundir import RunDir
    from litomo.workflows.execution import dask_client

    t0 = time.process_time()
    key = input_key(path, config)
    with RunDir.open(out_dir, kind="reconstruct", mode=mode, inputs=[path]) as rd:
        done = _done_slabs(rd, key) if mode == "resume" else set()
        state: dict[str, Any] = {"key": key, "done": sorted(done)}
        rec_path = rd.output(SLAB_RECORD)

        def on_slab(start: int) -> None:
            state["done"] = sorted({*state["done"], start})
            write_text_atomic(rec_path, json.dumps(state))
            rd.keep()  # finished slabs are worth resuming: an error keeps the folder

        sink = _LazyStore(rd.output(WORK_STORE), series.data.shape[1] // config.bin, config.slab_rows)
        with dask_client(scheduler):
            res = reconstruct_series(series, config, progress=progress, out=sink, done=done, on_slab=on_slab)
        record = _write_volumes(rd, path, series, res, sink, write_tiff)
        record.update({"status": "complete", "key": key, "input": str(path), "config": asdict(config),
                       **res.to_json(), "cpu_s": time.process_time() - t0})
        if figures is not None:
            record["figures"] = [p.relative_to(rd.root).as_posix() for p in figures(res, rd.figures)]
        rd.remove("work")
        rd.complete(json.loads(json.dumps(record, default=_json_default)))
    return res, record


def _write_volumes(rd: Any, path: str | os.PathLike, series: ProjectionSeries, res: ReconstructionResult,
                   sink: _LazyStore, write_tiff: bool) -> dict[str, Any]:
    """The volume as OME-Zarr (and TIFF) from the slab store; ``res.volume`` becomes the array."""
    import dask.array as da
    import zarr

    from litomo.io.omezarr import write_ome_zarr
    from litomo.volume import Volume

    if sink.arr is None:  # every slab was done before (resume after the last slab)
        sink.arr = zarr.open_array(str(sink.path), mode="r")
    voxel = res.voxel_size_um
    if voxel is None:
        log.warning("%s records no pixel size; volumes written with voxel size 1 um", path)
    vol = Volume(da.from_zarr(sink.arr), voxel_size_um=voxel or 1.0,
                 metadata={"source": str(path), "energy_ev": series.energy_ev})
    write_ome_zarr(rd.output("volume.ome.zarr"), vol, name="reconstruction")
    outputs = ["volume.ome.zarr"]
    if write_tiff:
        from litomo.io.tiff import write_tiff as _write_tiff

        _write_tiff(rd.output("volume.tif"), vol)
        outputs.append("volume.tif")
    res.volume = np.asarray(sink.arr[:])
    return {"voxel_size_assumed": voxel is None, "energy_ev": series.energy_ev, "outputs": outputs}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)

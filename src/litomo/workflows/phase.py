"""``litomo phase`` as a library call: holograms -> phase projections -> FBP -> delta volume.

Out of core: projections are read one angle at a time, the phase projections and the volume
live in ``OUT/work/*.npy`` memory maps (the phase projections are kept, e.g. to reconstruct
again with another axis; the volume copy there may be deleted after the run).

Stages: flat/dark correction and Fresnel rescaling of every distance to the common effective
pixel (:mod:`litomo.holo.align`, shift and scale refined on a few projections), phase retrieval
per projection (:mod:`litomo.holo.retrieve`, recursive Paganin in :mod:`litomo.holo.recursive`),
streamed into an on-disk ``.npy`` memmap, the rotation axis (given, or found automatically by
:mod:`litomo.holo.axis`), then slab-wise FBP with :func:`litomo.tomo.recon.reconstruct_volume`.
Half-acquisition scans (``half_acquisition``) find the axis on the holograms and stitch each
hologram with the mirrored opposite one before retrieval. The volume holds the refractive
index decrement in units of 1e-6 (``delta * 1e6``, float32: values of order 1, readable in
the histogram and in any viewer; the random forest of ``litomo segment`` scales its features
and works on raw ``delta`` too) on the effective voxel grid, so
``litomo segment`` and ``litomo micro`` read it unchanged (grey order pore < carbon-binder <
active material).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.holo.align import (
    DistanceAlignment,
    combine_alignments,
    estimate_alignment,
    to_common_grid,
)
from litomo.holo.axis import (
    AxisResult,
    check_half_acquisition_angles,
    find_phase_center,
    sinogram_band,
    stitch_opposite_views,
    stitched_center,
)
from litomo.holo.geometry import HoloGeometry
from litomo.holo.io import HoloScan
from litomo.holo.recursive import build_retriever
from litomo.holo.retrieve import RetrievalSettings
from litomo.io.atomic import write_text_atomic
from litomo.progress import ProgressCallback
from litomo.tomo.correct import shift_sinogram
from litomo.tomo.recon import reconstruct_volume
from litomo.tomo.slabs import reconstruct_slab
from litomo.volume import Volume

log = logging.getLogger(__name__)

RECORD = "phase.json"
#: Detector rows reconstructed per FBP slab (bounds memory: slab x n_angles x nx floats).
SLAB_ROWS = 32
#: Grey value = delta * DELTA_UNIT.
DELTA_UNIT = 1e6


@dataclass(frozen=True)
class PhaseOptions:
    """How :func:`run_phase` aligns, reconstructs and what it writes besides the volume.

    Attributes
    ----------
    center_px : float, optional
        Rotation axis on the common grid (detector column from 0); default: found automatically
        (:func:`litomo.holo.axis.find_phase_center`).
    half_acquisition : bool
        The axis lies near one edge of the field and the scan covers 360 degrees: each
        sinogram is stitched to a 180-degree one about twice as wide before FBP
        (:func:`litomo.holo.axis.stitch_opposite_views`, on the holograms before retrieval).
    n_align : int
        Projections used for the distance alignment (0: nominal Fresnel scaling only).
    refine_scale : bool
        Refine the zoom of each distance (+-2 %) besides the shift.
    write_tiff : bool
        Also write ``volume.tif``.
    figures : bool
        Draw the figures and ``report.html``.
    """

    center_px: float | None = None
    half_acquisition: bool = False
    n_align: int = 8
    refine_scale: bool = True
    write_tiff: bool = True
    figures: bool = True


@dataclass
class PhaseResult:
    """What :func:`run_phase` produced (paths and the small arrays the report draws)."""

    volume: Volume
    outputs: dict[str, str]
    alignment: DistanceAlignment
    example_images: np.ndarray  # (n_distances, ny, nx): one projection per distance, common grid
    example_phase: np.ndarray  # (ny, nx) retrieved phase of that projection, rad
    record: dict[str, Any]
    axis: AxisResult | None = None  # the rotation axis used, with the centre search (report QA)


def check_scan(scan: HoloScan, geometry: HoloGeometry) -> None:
    """The scan and the geometry must describe the same distances and angles."""
    if scan.n_distances != geometry.n_distances:
        raise DataError(f"HOLOGRAMS has {scan.n_distances} distances but --z1-mm gives {geometry.n_distances}")
    if geometry.angles_deg is not None and len(geometry.angles_deg) != scan.angles_deg.size:
        raise DataError(f"{len(geometry.angles_deg)} angles given for {scan.angles_deg.size} projections")
    if min(scan.image_shape) < 8:
        raise DataError(f"images of {scan.image_shape} pixels are too small for phase retrieval")


def estimate_scan_alignment(scan: HoloScan, geometry: HoloGeometry, settings: RetrievalSettings, *,
                            n_align: int = 8, refine_scale: bool = True) -> DistanceAlignment:
    """Median per-distance alignment over ``n_align`` evenly spaced projections."""
    if geometry.n_distances == 1:
        return DistanceAlignment.nominal(geometry)
    n = scan.angles_deg.size
    idx = np.unique(np.linspace(0, n - 1, max(1, min(n_align, n))).round().astype(int))
    return combine_alignments([estimate_alignment(scan.intensities(int(i)), geometry, delta_beta=settings.delta_beta,
                                                  refine_scale=refine_scale) for i in idx])


def _retrieve_all(scan: HoloScan, geometry: HoloGeometry, settings: RetrievalSettings,
                  alignment: DistanceAlignment, sino_path: Path, progress: ProgressCallback | None,
                  half: tuple[int, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase of every projection into ``sino_path`` (``-phi``), one example stack and its phase.

    ``half = (k, axis)``: half acquisition; projection ``i`` (``i = 0 .. k``) is the hologram at
    ``theta_i`` stitched with the mirrored one at ``theta_i + 180`` (view ``(i + k) mod n``) at
    every distance, before retrieval (:func:`litomo.holo.axis.stitch_opposite_views`).
    """
    n = scan.angles_deg.size
    n_out = n if half is None else half[0] + 1
    sino = retriever = example_images = example_phase = None
    for i in range(n_out):
        stack = to_common_grid(scan.intensities(i), alignment)
        if half is not None:
            other = to_common_grid(scan.intensities((i + half[0]) % n), alignment)
            stack = np.stack([stitch_opposite_views(a, b, half[1])[0] for a, b in zip(stack, other, strict=True)])
        if retriever is None:
            retriever = build_retriever(stack.shape[1:], geometry.propagation_distance_mm, geometry.energy_kev,
                                        geometry.common_pixel_um, settings, detector_px=alignment.scale)
            sino = np.lib.format.open_memmap(sino_path, mode="w+", dtype=np.float32, shape=(n_out, *stack.shape[1:]))
        phi = retriever(stack)
        sino[i] = -phi  # line integral of k * delta, radians
        if i == 0:
            example_images, example_phase = stack, phi
        if progress is not None:
            progress(i + 1, n_out, "phase retrieval")
    sino.flush()
    return sino, example_images, example_phase


def _half_acquisition_axis(scan: HoloScan, theta_deg: np.ndarray, center_px: float | None) -> AxisResult:
    """Axis of a half-acquisition scan, from ``-ln I`` of the closest distance (middle third of the rows).

    Found on the holograms, before retrieval: they are mirror-symmetric like projections, and the
    stitching needs the axis (docs/science.md).
    """
    if center_px is not None:
        return AxisResult(float(center_px), "given (--center-px)", {})
    ny = scan.image_shape[0]
    rows = slice(ny // 3, max(ny // 3 + 1, 2 * ny // 3))
    band = np.stack([-np.log(np.clip(scan.intensity(i, 0)[rows].mean(axis=0), 1e-6, None))
                     for i in range(scan.angles_deg.size)])
    return find_phase_center(band, theta_deg, half_acquisition=True)


def _reconstruct(sino: np.ndarray, theta_deg: np.ndarray, center_px: float, geometry: HoloGeometry, *,
                 stitched: bool, out_path: Path, progress: ProgressCallback | None) -> np.ndarray:
    """Slab-wise FBP of the phase sinograms -> delta * 1e6 per voxel, into an on-disk ``.npy``.

    A full scan is shifted so the axis is the middle column (the slice keeps the detector
    width); a stitched half-acquisition sinogram is padded around its axis
    (:func:`litomo.tomo.slabs.reconstruct_slab`).
    """
    n_angles, ny, nx = sino.shape
    if not 0 <= center_px <= nx - 1:
        raise DataError(f"--center-px {center_px:g} is outside the detector (0 .. {nx - 1})")
    k_per_um = 2 * np.pi / geometry.wavelength_um
    scale = DELTA_UNIT / (k_per_um * geometry.common_pixel_um)  # rad per pixel -> delta * 1e6
    out = None
    for z0 in range(0, ny, SLAB_ROWS):
        slab = np.asarray(sino[:, z0 : z0 + SLAB_ROWS, :], dtype=np.float32)
        if stitched:
            rec = reconstruct_slab(slab, theta_deg, center_px)
        else:
            slab = np.stack([shift_sinogram(slab[:, r, :], center_px) for r in range(slab.shape[1])], axis=1)
            rec = reconstruct_volume(slab, theta_deg)
        if out is None:
            out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(ny, *rec.shape[1:]))
        out[z0 : z0 + rec.shape[0]] = rec * scale
        if progress is not None:
            progress(min(z0 + SLAB_ROWS, ny), ny, "FBP")
    out.flush()
    return out


def _phase_volume(scan: HoloScan, geometry: HoloGeometry, settings: RetrievalSettings, alignment: DistanceAlignment,
                  theta: np.ndarray, opt: PhaseOptions, work: Path,
                  progress: ProgressCallback | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, AxisResult]:
    """Retrieval and FBP with the axis found where each scan type needs it (before or after retrieval)."""
    sino_path = work / "phase_projections.npy"
    if opt.half_acquisition:
        theta180, close = check_half_acquisition_angles(theta)
        axis = _half_acquisition_axis(scan, theta, opt.center_px)
        sino, ex_img, ex_phi = _retrieve_all(scan, geometry, settings, alignment, sino_path, progress,
                                             half=(theta180.size - 1, axis.center_px))
        c_stitched = stitched_center(scan.image_shape[1], axis.center_px)
        axis = AxisResult(axis.center_px, axis.method, {**axis.details, "center_stitched_px": c_stitched}, axis.curve)
        delta = _reconstruct(sino, theta180, c_stitched, geometry, stitched=True, out_path=work / "delta_x1e6.npy",
                             progress=progress)
        return sino, ex_img, ex_phi, delta, axis
    sino, ex_img, ex_phi = _retrieve_all(scan, geometry, settings, alignment, sino_path, progress)
    if opt.center_px is None:
        axis = find_phase_center(sinogram_band(sino), theta)
        log.info("rotation axis %.2f px (%s)", axis.center_px, axis.method)
    else:
        axis = AxisResult(float(opt.center_px), "given (--center-px)", {})
    delta = _reconstruct(sino, theta, axis.center_px, geometry, stitched=False, out_path=work / "delta_x1e6.npy",
                         progress=progress)
    return sino, ex_img, ex_phi, delta, axis


def _write_volume(rd: Any, delta: np.ndarray, geometry: HoloGeometry, settings: RetrievalSettings,
                  write_tiff: bool) -> tuple[Volume, dict[str, str]]:
    from litomo.io.omezarr import write_ome_zarr
    from litomo.io.tiff import write_tiff as _write_tiff

    vol = Volume(delta, voxel_size_um=geometry.common_pixel_um,
                 metadata={"quantity": "delta x 1e6 (refractive index decrement)",
                           "energy_ev": geometry.energy_kev * 1e3,
                           "provenance": [{"step": "litomo phase", "method": settings.method,
                                           "delta_beta": settings.delta_beta}]})
    outputs = {"volume_ome_zarr": str(write_ome_zarr(rd.output("volume.ome.zarr"), vol, name="delta"))}
    if write_tiff:
        outputs["volume_tiff"] = str(_write_tiff(rd.output("volume.tif"), vol))
    return vol, outputs


def _record(geometry: HoloGeometry, settings: RetrievalSettings, alignment: DistanceAlignment,
            theta: np.ndarray, axis: AxisResult, half_acquisition: bool, outputs: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "phase",
        "geometry": {**asdict(geometry), "angles_deg": None, "magnification": geometry.magnification,
                     "propagation_distance_mm": geometry.propagation_distance_mm,
                     "effective_pixel_um": geometry.effective_pixel_um, "fresnel_number": geometry.fresnel_number},
        "settings": asdict(settings),
        "alignment": asdict(alignment),
        "n_angles": int(theta.size),
        "voxel_size_um": geometry.common_pixel_um,
        "center_px": axis.center_px,
        "center": axis.to_json(),
        "half_acquisition": half_acquisition,
        "outputs": outputs,
    }


def run_phase(scan: HoloScan, geometry: HoloGeometry, settings: RetrievalSettings, out_dir: str | Path,
              options: PhaseOptions | None = None, *, mode: str = "new",
              progress: ProgressCallback | None = None) -> PhaseResult:
    """Holograms -> delta volume in ``out_dir``, through :class:`litomo.io.rundir.RunDir`.

    Writes ``work/phase_projections.npy`` (the retrieved projections, kept), ``volume.ome.zarr``,
    ``volume.tif``, ``figures/`` and ``report.html`` (with ``figures``), ``phase.json`` and
    last the completion record ``run.json``.

    Parameters
    ----------
    scan : HoloScan
        Projections, flats, darks and angles (:func:`litomo.holo.io.read_holo_hdf5`).
    geometry : HoloGeometry
    settings : RetrievalSettings
    out_dir : path
        Output folder (``--out``), opened with :meth:`litomo.io.rundir.RunDir.open`
        (``kind="phase"``).
    options : PhaseOptions, optional
        Axis, alignment, extra outputs (defaults: ``PhaseOptions()``).
    mode : {"new", "force"}
        ``"new"`` refuses a non-empty folder; ``"force"`` replaces an earlier litomo output
        there (only files litomo wrote; ``--force``).
    progress : callable, optional
        ``progress(done, total, description)`` per projection and per FBP slab.

    Returns
    -------
    PhaseResult

    Raises
    ------
    LitomoError
        Scan and geometry disagree, retrieval fails (nothing of the run is left), or the
        output folder may not be written.
    """
    from litomo.io.rundir import RunDir, to_jsonable

    opt = options or PhaseOptions()
    check_scan(scan, geometry)
    theta = scan.angles_deg if geometry.angles_deg is None else np.asarray(geometry.angles_deg)
    if opt.half_acquisition:
        check_half_acquisition_angles(theta)  # before any output is written
    inputs = [s for s in scan.source.split(",") if s]
    with RunDir.open(out_dir, kind="phase", mode=mode, inputs=inputs) as rd:
        alignment = (estimate_scan_alignment(scan, geometry, settings, n_align=opt.n_align,
                                             refine_scale=opt.refine_scale)
                     if opt.n_align > 0 else DistanceAlignment.nominal(geometry))
        sino_path = rd.work / "phase_projections.npy"
        try:
            sino, ex_img, ex_phi, delta, axis = _phase_volume(scan, geometry, settings, alignment, theta, opt,
                                                              rd.work, progress)
        except BaseException:
            # a failed retrieval leaves no result behind (RunDir removes a folder this run made)
            rd.remove("work")
            raise
        vol, outputs = _write_volume(rd, delta, geometry, settings, opt.write_tiff)
        outputs["phase_projections"] = str(sino_path)
        del sino
        record = _record(geometry, settings, alignment, theta, axis, opt.half_acquisition, outputs)
        result = PhaseResult(vol, outputs, alignment, ex_img, ex_phi, record, axis)
        if opt.figures:
            from litomo.report.phase import write_phase_report

            outputs.update(write_phase_report(rd, result, geometry.z1_mm))
        write_text_atomic(rd.output(RECORD), json.dumps(to_jsonable(record), indent=2))
        rd.complete(record)
    return result

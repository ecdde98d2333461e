"""2-D TXM-XANES maps from raw frames: optical density, alignment, edge-jump / Li maps, particles.

One frame per energy (plus its flat field) of one field of view is turned into

1. an exposure-normalised optical density per energy, ``OD = -ln(rate_sample / rate_flat)``
   (:func:`litomo.xanes.txm.optical_density`; repeats are averaged as count rates);
2. a stack aligned across energies (:func:`litomo.xanes.align.align_energy_stack`: similarity
   transform by default, which absorbs the zone-plate magnification change between energies);
   pixels some frame does not cover are NaN and never mapped;
3. a map, by the number of energies (``method="auto"``):

   - ``edge-jump`` (2 energies or more): ``OD(highest) - OD(lowest)``, the Ni map; the active
     material mask is :func:`litomo.xanes.threeenergy.am_mask_from_jump`; no Li content;
   - ``three-energy`` (3): the edge ratio and calibration of the 3-D path
     (:func:`~litomo.xanes.threeenergy.edge_ratio`, :func:`~litomo.xanes.threeenergy.reference_ratios`,
     :func:`~litomo.xanes.threeenergy.calibrate_li`);
   - ``fit`` (4 or more): per pixel ``OD(E) = a + b (E - E_mean) + w_p ref_p(E) + w_c ref_c(E)``
     by :func:`litomo.xanes.lcf.lcf_fit`; the edge jump is ``w_p + w_c`` and the Li content the
     same linear interpolation between the references, ``x = li_c + (li_p - li_c) w_p / (w_p + w_c)``.

   A projection integrates along the beam, so a pixel's Li content is the Ni-weighted mean
   through the particle's thickness (OD is linear in the amount of each end member);
4. particles (:func:`litomo.segment.particles.separate_particles` on the mask) and their
   statistics (:func:`litomo.statistics.li_particle_table`, ``state_summary``, ``li_histogram``), with
   areas in um^2 in place of volumes.

:func:`compute_map2d` returns a :class:`Map2DResult`; :func:`write_map2d` writes its tables and
maps into a :class:`litomo.io.rundir.RunDir`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from litomo.errors import DataError, InputFileError
from litomo.manifest.map2d import EnergyFrames, Map2DSpec
from litomo.progress import ProgressCallback
from litomo.xanes.spectra import Spectrum, read_spectrum

log = logging.getLogger(__name__)

#: bundled references (pyxas, real spectra): NiO = Li-rich / pristine, LiNiO2 = delithiated
BUNDLED_REFERENCES = {"pristine": "ni_kedge_NiO.csv", "charged": "ni_kedge_LiNiO2.csv"}


@dataclass
class OdStack:
    """Exposure-normalised optical density per energy, before alignment."""

    od: np.ndarray  # (E, y, x) float32
    energies_ev: np.ndarray
    pixel_size_um: float
    frames: pd.DataFrame  # one row per energy: files, exposures, count rates


@dataclass
class Map2DResult:
    """Maps, tables and summary of one 2-D TXM-XANES field of view."""

    name: str
    method: str
    energies_ev: np.ndarray
    pixel_size_um: float
    od: np.ndarray  # aligned (E, y, x), NaN where a frame has no data
    edge_jump: np.ndarray  # (y, x)
    am_mask: np.ndarray  # (y, x) bool
    particles: np.ndarray  # (y, x) int32
    x_li: np.ndarray | None  # (y, x) float32, NaN outside the AM; None for edge-jump maps
    frames: pd.DataFrame
    alignment: pd.DataFrame
    particle_table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    histogram: pd.DataFrame | None = None


# ---------------------------------------------------------------------------------- frames -> OD


def _read_frame(path: Path) -> tuple[np.ndarray, float | None, float | None, float | None]:
    """(counts, energy_ev, pixel_size_um, exposure_s) of one 2-D frame (.xrm or TIFF)."""
    suffix = path.suffix.lower()
    if suffix in (".xrm", ".txrm"):
        from litomo.io.xrm import read_xrm

        x = read_xrm(path)
        if x.image.ndim != 2:
            raise InputFileError(f"{path}: holds {x.image.shape[0]} images; map2d needs one frame per file")
        exp = x.exposure_s if isinstance(x.exposure_s, float) else None
        energy = x.energy_ev if isinstance(x.energy_ev, float) else None
        return x.image.astype(np.float64), energy, x.pixel_size_um, exp
    from litomo.io import read_volume

    v = read_volume(path, voxel_size_um=1.0)
    arr = np.asarray(v.array)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputFileError(f"{path}: a frame must be one 2-D image, got shape {arr.shape}")
    return arr.astype(np.float64), None, None, None


def _rate(paths: tuple[Path, ...], dark: np.ndarray | None, role: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Mean count rate (counts/s, or counts when no exposure is recorded) over repeats."""
    total, exposures, energies, pixels = None, [], [], []
    for p in paths:
        img, e, px, exp = _read_frame(p)
        if dark is not None:
            if dark.shape != img.shape:
                raise DataError(f"{p}: frame {img.shape} and dark {dark.shape} differ in shape")
            img = img - dark
        if total is not None and img.shape != total.shape:
            raise DataError(f"{p}: frame shape {img.shape} differs from {paths[0].name} {total.shape}")
        exposures.append(exp)
        energies.append(e)
        pixels.append(px)
        scaled = img / exp if exp else img
        total = scaled if total is None else total + scaled
    if any(exposures) and not all(exposures):
        raise DataError(f"{role} frames mix files with and without exposure times")
    info = {f"n_{role}": len(paths), f"{role}_exposure_s": exposures[0],
            "energies": energies, "pixels": pixels}
    return total / len(paths), info


def frames_to_od(frames: tuple[EnergyFrames, ...], *, pixel_size_um: float | None = None) -> OdStack:
    """Optical density at each energy from raw sample, flat (and dark) frames.

    Counts are divided by the recorded exposure, so sample and flat frames of different
    exposures compare; repeats are averaged as rates. A frame's energy comes from the
    manifest, else the file (or its name).

    Examples
    --------
    >>> st = frames_to_od(spec.frames)  # doctest: +SKIP
    >>> st.od.shape, st.energies_ev.tolist()  # doctest: +SKIP
    ((2, 1024, 1024), [8249.94, 8353.03])
    """
    from litomo.xanes.txm import optical_density

    if not frames:
        raise DataError("no energies given")
    ods, energies, rows, pix = [], [], [], []
    for f in frames:
        dark = None
        if f.dark:
            # dark counts (offset + dark current) of frames as long as the ones they correct
            dark = np.mean([_read_frame(p)[0] for p in f.dark], axis=0)
        s, si = _rate(f.sample, dark, "sample")
        fl, fi = _rate(f.flat, dark, "flat")
        if s.shape != fl.shape:
            raise DataError(f"{f.sample[0].name} {s.shape} and flat {f.flat[0].name} {fl.shape} differ in shape")
        if bool(si["sample_exposure_s"]) != bool(fi["flat_exposure_s"]):
            raise DataError(f"{f.sample[0].name}: exposure recorded for only one of sample and flat frames")
        e = f.energy_ev if f.energy_ev is not None else si["energies"][0]
        if e is None:
            raise InputFileError(f"{f.sample[0]}: no energy recorded; give energy_ev in the map2d manifest")
        ods.append(optical_density(s, fl))
        energies.append(float(e))
        pix += [p for p in si["pixels"] if p]
        rows.append({"energy_ev": float(e), "sample": ";".join(p.name for p in f.sample),
                     "flat": ";".join(p.name for p in f.flat), "n_sample": si["n_sample"], "n_flat": fi["n_flat"],
                     "sample_exposure_s": si["sample_exposure_s"], "flat_exposure_s": fi["flat_exposure_s"],
                     "flat_rate_median": float(np.median(fl)), "od_median": float(np.median(ods[-1]))})
    shapes = {o.shape for o in ods}
    if len(shapes) != 1:
        raise DataError(f"frames of different shapes across energies: {sorted(shapes)}")
    order = np.argsort(energies)
    if np.any(np.diff(np.asarray(energies)[order]) <= 0):
        raise DataError(f"two frame sets share an energy: {sorted(energies)} eV")
    if pixel_size_um is None:
        if not pix:
            raise InputFileError("the frames record no pixel size; give pixel_size_um in the map2d manifest")
        if np.ptp(pix) > 1e-3 * max(pix):
            raise DataError(f"frames record different pixel sizes {sorted(set(pix))} um")
        pixel_size_um = float(pix[0])
    od = np.stack([ods[i] for i in order]).astype(np.float32)
    return OdStack(od, np.asarray(energies)[order], float(pixel_size_um),
                   pd.DataFrame([rows[i] for i in order]))


# ---------------------------------------------------------------------------------- alignment


def align_od(stack: OdStack, mode: str = "similarity", *, reference_index: int | None = None,
             progress: ProgressCallback | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Align the OD frames across energies; pixels outside any moved frame become NaN.

    Returns the aligned stack and one QA row per energy (``energy_ev``, ``ncc_before``,
    ``ncc_after``, ``translation_y_px``, ``translation_x_px`` (displacement of the image
    centre, reference -> frame), ``scale``, ``rotation_angle_deg``).
    """
    n = stack.od.shape[0]
    if mode == "none" or n < 2:
        rows = [{"energy_ev": e, "ncc_before": np.nan, "ncc_after": np.nan, "translation_y_px": 0.0,
                 "translation_x_px": 0.0, "scale": 1.0, "rotation_angle_deg": 0.0} for e in stack.energies_ev]
        return stack.od.copy(), pd.DataFrame(rows)
    from litomo.register import RegistrationParams
    from litomo.xanes.align import align_energy_stack

    res = align_energy_stack(stack.od, energies_ev=stack.energies_ev, reference_index=reference_index,
                             mode=mode, voxel_size_um=stack.pixel_size_um, fill_value=np.nan,
                             params=RegistrationParams(seed=0), progress=progress)
    rows = [{"energy_ev": q["energy_ev"], "reference": i == res.reference_index,
             "ncc_before": q["ncc_before"], "ncc_after": q["ncc_after"],
             "translation_y_px": q["translation_vox"][0], "translation_x_px": q["translation_vox"][1],
             "scale": q["scale"], "rotation_angle_deg": q["rotation_angle_deg"]} for i, q in enumerate(res.qa)]
    return res.aligned, pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- maps


def load_references(spec: Map2DSpec) -> tuple[Spectrum, Spectrum]:
    """The pristine and charged reference spectra of the spec (default: the bundled ones)."""
    r = spec.references
    if r.pristine is None:
        base = files("litomo.xanes") / "data"
        return (read_spectrum(base / BUNDLED_REFERENCES["pristine"]),
                read_spectrum(base / BUNDLED_REFERENCES["charged"]))
    return (read_spectrum(r.pristine, energy_unit=r.energy_unit),
            read_spectrum(r.charged, energy_unit=r.energy_unit))


def choose_method(method: str, n_energies: int) -> str:
    """The map method for ``n_energies`` (``"auto"``: 2 edge-jump, 3 three-energy, 4+ fit).

    Examples
    --------
    >>> choose_method("auto", 2), choose_method("auto", 3), choose_method("auto", 8)
    ('edge-jump', 'three-energy', 'fit')
    """
    need = {"edge-jump": 2, "three-energy": 3, "fit": 4}
    if method == "auto":
        method = "edge-jump" if n_energies < 3 else "three-energy" if n_energies == 3 else "fit"
    if method not in need:
        raise DataError(f"unknown map method {method!r} (auto, edge-jump, three-energy, fit)")
    if n_energies < need[method]:
        raise DataError(f"method {method} needs at least {need[method]} energies, got {n_energies}: "
                        "two energies give an edge-jump (Ni) map only")
    return method


def _edge_index(energies_ev: np.ndarray, edge_ev: float | None) -> int:
    if edge_ev is None:
        return len(energies_ev) // 2
    inner = np.abs(energies_ev[1:-1] - edge_ev)
    return int(np.argmin(inner)) + 1


def three_energy_li(od_pre, od_edge, od_post, energies_ev, refs: tuple[Spectrum, Spectrum], spec: Map2DSpec,
                    threshold: float) -> tuple[np.ndarray, dict[str, Any]]:
    """x_Li by the 3-D path's edge ratio and calibration (NaN below the jump threshold)."""
    from litomo.xanes.threeenergy import (
        background_corrected_ratio,
        calibrate_li,
        edge_ratio,
        reference_levels,
        reference_ratios,
    )

    if spec.background_exponent:
        e_true = tuple(float(e) + spec.energy_shift_ev for e in energies_ev)
        levels = reference_levels(refs[0], refs[1], e_true[0], e_true[2])
        r = background_corrected_ratio(od_pre, od_edge, od_post, energies_ev=e_true, jump_threshold=threshold,
                                       background_exponent=spec.background_exponent, reference_levels=levels)
    else:
        r = edge_ratio(od_pre, od_edge, od_post, jump_threshold=threshold)
    rp, rc = reference_ratios(refs[0], refs[1], energies_ev, energy_shift_ev=spec.energy_shift_ev)
    x, clipped = calibrate_li(r, rp, rc, li_pristine=spec.references.li_pristine,
                              li_charged=spec.references.li_charged)
    return np.asarray(x, np.float32), {"r_pristine": rp, "r_charged": rc, "clipped_fraction": float(clipped)}


def fit_li(od: np.ndarray, energies_ev: np.ndarray, refs: tuple[Spectrum, Spectrum], spec: Map2DSpec,
           valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel fit of both references plus a linear background; (edge jump, pristine share).

    Examples
    --------
    See ``tests/test_map2d.py`` (phantom with a known Li field).
    """
    from litomo.xanes.lcf import lcf_fit

    e_true = energies_ev + spec.energy_shift_ev
    a = np.stack([refs[0].at(e_true), refs[1].at(e_true), np.ones_like(e_true),
                  (e_true - e_true.mean()) / 100.0])
    y = np.where(valid[None], od, 0.0).reshape(od.shape[0], -1)
    w = lcf_fit(e_true, y, a, sum_to_one=False).weights.reshape(4, *od.shape[1:])
    jump = w[0] + w[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(valid & (jump > 0), w[0] / jump, np.nan)
    return np.where(valid, jump, np.nan), share


def _maps(od: np.ndarray, energies_ev: np.ndarray, method: str, spec: Map2DSpec,
          refs: tuple[Spectrum, Spectrum] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(edge jump, AM mask, x_Li or None, extra summary) of an aligned OD stack."""
    from scipy import ndimage as ndi

    from litomo.xanes.threeenergy import clip_li, jump_threshold

    valid = np.all(np.isfinite(od), axis=0)
    if valid.sum() < 100:
        raise DataError("fewer than 100 pixels are covered by every aligned frame: check the alignment")
    extra: dict[str, Any] = {}
    if method == "fit":
        jump, share = fit_li(od, energies_ev, refs, spec, valid)
    else:
        jump = np.where(valid, od[-1] - od[0], np.nan)
    t = jump_threshold(np.zeros_like(jump), jump)
    # one opening removes single-pixel noise above the threshold; holes inside a particle are
    # pixels whose jump fell below it by noise (a projection has no enclosed pores)
    mask = valid & (np.nan_to_num(jump, nan=-np.inf) >= t)
    mask = ndi.binary_fill_holes(ndi.binary_opening(mask)) & valid
    extra["jump_threshold"] = t
    x = None
    if method == "three-energy":
        k = _edge_index(energies_ev, spec.edge_ev)
        trio = (energies_ev[0], energies_ev[k], energies_ev[-1])
        x, more = three_energy_li(np.nan_to_num(od[0]), np.nan_to_num(od[k]), np.nan_to_num(od[-1]),
                                  trio, refs, spec, t)
        extra.update(more, energies_used_ev=list(map(float, trio)))
    elif method == "fit":
        li_p, li_c = spec.references.li_pristine, spec.references.li_charged
        x, clipped = clip_li(li_c + (li_p - li_c) * share, (0.0, 1.2))
        extra["clipped_fraction"] = float(clipped)
    if x is not None:
        x = np.where(mask, x, np.nan).astype(np.float32)
    return jump.astype(np.float32), mask, x, extra


# ---------------------------------------------------------------------------------- particles


def particle_stats_2d(values: np.ndarray | None, labels: np.ndarray, pixel_size_um: float, *,
                      jump: np.ndarray, poor_max: float = 0.6, rich_min: float = 0.9) -> pd.DataFrame:
    """Per-particle table of a 2-D map (the 3-D :func:`litomo.statistics.li_particle_table` on a
    one-slice volume), with ``area_um2`` and ``eq_circle_diameter_um`` in place of volumes and
    the particle's mean edge jump. Li columns are dropped when ``values`` is None.
    """
    from scipy import ndimage as ndi

    from litomo.particles import boundary_touching
    from litomo.statistics import li_particle_table

    x = values if values is not None else np.where(labels > 0, 0.0, np.nan)
    # boundary flags from the frame edges only: every pixel of a one-slice volume touches its
    # z faces, so the slice is padded with empty ones above and below
    edge_ids = boundary_touching(np.pad(labels[None], ((1, 1), (0, 0), (0, 0))))
    t = li_particle_table(np.asarray(x, np.float64)[None], labels[None], voxel_size_um=pixel_size_um,
                          poor_max=poor_max, rich_min=rich_min, boundary_ids=edge_ids)
    area = t["volume_um3"] / pixel_size_um
    t.insert(1, "area_um2", area)
    t.insert(2, "eq_circle_diameter_um", 2.0 * np.sqrt(area / np.pi))
    ids = t["particle"].to_numpy()
    t["mean_edge_jump"] = ndi.mean(np.nan_to_num(jump), labels, ids) if len(ids) else []
    drop = [c for c in ("volume_um3", "eq_diameter_um", "centroid_z_um", "depth_um", "n_voxels") if c in t]
    if values is None:
        drop += [c for c in ("n_li_voxels", "mean_li", "std_li", "li_rich_fraction", "surface_activity") if c in t]
    return t.drop(columns=drop).rename(columns={"n_li_voxels": "n_li_pixels", "n_surface_voxels": "n_edge_pixels"})


def _summary(res: Map2DResult, extra: dict[str, Any], spec: Map2DSpec) -> dict[str, Any]:
    from litomo.statistics import state_summary
    from litomo.xanes.txm import contrast_to_noise

    px = res.pixel_size_um
    s: dict[str, Any] = {"name": res.name, "method": res.method, "energies_ev": res.energies_ev.tolist(),
                         "pixel_size_um": px, "am_area_um2": float(res.am_mask.sum()) * px * px,
                         "n_particles": int(len(res.particle_table)), **extra}
    fin = np.isfinite(res.edge_jump)
    if res.am_mask.any() and (~res.am_mask & fin).sum() > 1:
        s["edge_jump_cnr"] = contrast_to_noise(np.where(fin, res.edge_jump, np.nan), res.am_mask)
    if res.x_li is not None:
        st = state_summary(res.x_li[None], voxel_size_um=px, poor_max=spec.li_poor_max, rich_min=spec.li_rich_min)
        s.update({k: st[k] for k in ("mean_li", "std_li", "frac_li_rich", "frac_li_moderate", "frac_li_poor")})
    return s


def compute_map2d(spec: Map2DSpec, *, progress: ProgressCallback | None = None) -> Map2DResult:
    """Raw frames of ``spec`` -> OD -> aligned stack -> map -> particles and statistics.

    Examples
    --------
    >>> res = compute_map2d(load_map2d_manifest("fov07.toml"))  # doctest: +SKIP
    >>> res.method, res.summary["n_particles"]  # doctest: +SKIP
    ('edge-jump', 9)
    """
    from litomo.segment.particles import separate_particles
    from litomo.statistics import li_histogram

    method = choose_method(spec.method, len(spec.frames))
    stack = frames_to_od(spec.frames, pixel_size_um=spec.pixel_size_um)
    od, qa = align_od(stack, spec.align, progress=progress)
    refs = load_references(spec) if method != "edge-jump" else None
    jump, mask, x, extra = _maps(od, stack.energies_ev, method, spec, refs)
    px = stack.pixel_size_um
    min_px = max(4, int(round(spec.min_particle_area_um2 / (px * px))))
    labels = separate_particles(mask[None], voxel_size_um=px, min_size_vox=min_px)[0]
    # the watershed can cut slivers off a particle's rim: they stay AM, not particles
    small = np.bincount(labels.ravel()) < min_px
    small[0] = True
    labels = np.where(small[labels], 0, labels).astype(np.int32)
    table = particle_stats_2d(x, labels, px, jump=jump, poor_max=spec.li_poor_max, rich_min=spec.li_rich_min)
    res = Map2DResult(spec.name, method, stack.energies_ev, px, od, jump, mask, labels, x,
                      stack.frames, qa, table)
    if x is not None:
        res.histogram = li_histogram(x).to_frame()
    res.summary = _summary(res, extra, spec)
    return res


def write_map2d(rd: Any, res: Map2DResult) -> list[Path]:
    """Write tables (``tables/*.csv``) and maps (``maps/*.tif``, float32/int32 with the pixel
    size) of ``res`` into the :class:`~litomo.io.rundir.RunDir` ``rd``; returns the paths."""
    import json

    from litomo.io.atomic import write_csv_atomic, write_text_atomic
    from litomo.io.tiff import write_tiff

    out = []
    tables = {"frames": res.frames, "alignment": res.alignment, "particles": res.particle_table,
              "summary": pd.DataFrame([{k: v for k, v in res.summary.items() if not isinstance(v, list)}])}
    if res.histogram is not None:
        tables["li_histogram"] = res.histogram
    for name, df in tables.items():
        out.append(write_csv_atomic(rd.output(f"tables/{name}.csv"), df))
    maps = {"edge_jump": res.edge_jump, "am_mask": res.am_mask.astype(np.uint8),
            "particles": res.particles.astype(np.int32), "od": res.od}
    if res.x_li is not None:
        maps["x_li"] = res.x_li
    for name, arr in maps.items():
        a = arr if arr.ndim == 3 else arr[None]
        out.append(write_tiff(rd.output(f"maps/{name}.tif"), a, voxel_size_um=res.pixel_size_um))
    out.append(write_text_atomic(rd.output("tables/summary.json"), json.dumps(_jsonable(res.summary), indent=2)))
    return out


def run_map2d(spec: Map2DSpec, out_dir: str | os.PathLike, *, mode: str = "new",
              progress: ProgressCallback | None = None) -> Map2DResult:
    """``litomo map2d`` from Python: compute the maps of ``spec`` and write ``out_dir``.

    Writes ``tables/{frames,alignment,particles,summary,li_histogram}.csv``,
    ``tables/summary.json``, ``maps/*.tif`` (float32 maps, with the pixel size), PNG+SVG figures,
    ``report.html`` and, last, ``run.json``, through :class:`litomo.io.rundir.RunDir`
    (``mode``: ``"new"`` or ``"force"``).
    """
    from litomo.io.rundir import RunDir
    from litomo.report.map2d import write_map2d_report
    from litomo.workflows.stage import stage

    with RunDir.open(out_dir, kind="map2d", mode=mode, inputs=spec.input_files()) as rd:
        with stage(log, "map2d", "optical density, alignment and maps"):
            res = compute_map2d(spec, progress=progress)
        with stage(log, "map2d", "writing outputs"):
            files = write_map2d(rd, res)
            files += write_map2d_report(rd, res, poor_max=spec.li_poor_max, rich_min=spec.li_rich_min)
        record = {"kind": "map2d", "name": spec.name, "method": res.method,
                  "energies_ev": res.energies_ev.tolist(),
                  "inputs": [str(p) for p in spec.input_files()],
                  "summary": _jsonable(res.summary),
                  "outputs": sorted({str(Path(p).relative_to(rd.root)) for p in files})}
        rd.complete(record)
    return res


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, (np.floating, float)):
            return None if not np.isfinite(v) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, (list, tuple)):
            return [conv(i) for i in v]
        return v

    return {k: conv(v) for k, v in d.items()}

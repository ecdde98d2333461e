"""Microstructure workflow (``litomo micro``): label volume -> metrics, tables, figures, report.

:func:`analyse_microstructure` computes (arrays in, a :class:`MicroResult` out, no I/O);
:func:`run_micro` reads a label file, validates it before any computation, computes, and
writes the output folder through :class:`litomo.io.rundir.RunDir`::

    OUT/tables/{microstructure.json, metrics_table.csv, particles.csv, z_profile.csv, rev.csv, s2.csv,
                rev_size.csv, pore_size_distribution.csv}
    OUT/volumes/pore_radius_local_um.tif, pore_radius_mip_<axis>_um.tif (bottleneck maps)
    OUT/figures/*.png|svg, OUT/report.html, OUT/run.json (completion record, last)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from litomo.errors import DataError
from litomo.progress import ProgressCallback
from litomo.workflows.micro_settings import (
    CHUNKED_ABOVE_VOXELS,
    DEFAULT_CHUNK_VOX,
    MicroResult,
    MicroSettings,
)
from litomo.workflows.stage import stage

log = logging.getLogger(__name__)


def read_labels(path: str | os.PathLike, settings: MicroSettings, progress: ProgressCallback | None = None
                ) -> np.ndarray:
    """Read a label file and map it to canonical codes (0 pore, 1 AM, 2 CBD), checking it first.

    Read lazily, z-slab by z-slab, on the dask scheduler of the moment (a ``--scheduler``
    cluster reads there), reporting ``progress``.

    Raises
    ------
    DataError
        The volume is not 3-D with at least 2 voxels along each axis (a 2-D image is refused
        here, before any computation), or holds values outside the mapping.
    """
    from litomo.io import read_volume
    from litomo.metrics.chunked import read_slabs
    from litomo.phases import parse_label_mapping, to_canonical

    vol = read_volume(path, voxel_size_um=settings.voxel_size_um, lazy=True)
    check_shape(vol.shape, str(path))
    raw = read_slabs(vol.array, progress, "reading labels")
    mapping = dict(settings.label_mapping) if settings.label_mapping else parse_label_mapping(None)
    return to_canonical(raw, mapping)


def open_labels(path: str | os.PathLike, settings: MicroSettings) -> Any:
    """A :class:`litomo.metrics.chunked.LabelSource` on the label file (read lazily, shape checked)."""
    from litomo.io import read_volume
    from litomo.metrics.chunked import LabelSource
    from litomo.phases import parse_label_mapping

    vol = read_volume(path, voxel_size_um=settings.voxel_size_um, lazy=True)
    check_shape(vol.shape, str(path))
    mapping = dict(settings.label_mapping) if settings.label_mapping else parse_label_mapping(None)
    return LabelSource(vol.array, mapping)


def chunk_for(shape: tuple[int, ...], settings: MicroSettings) -> int | None:
    """Block edge of the out-of-core path, or None for the in-memory one.

    Examples
    --------
    >>> chunk_for((256, 256, 256), MicroSettings(1.0)), chunk_for((1024,) * 3, MicroSettings(1.0))
    (None, 128)
    """
    if settings.chunk_vox is not None:
        return int(settings.chunk_vox)
    return DEFAULT_CHUNK_VOX if int(np.prod(shape, dtype=np.int64)) > CHUNKED_ABOVE_VOXELS else None


def analyse_microstructure_chunked(source: Any, settings: MicroSettings, *, sample: str = "sample",
                                   progress: ProgressCallback | None = None) -> MicroResult:
    """The out-of-core ``litomo micro``: the metrics that are exact block by block
    (:mod:`litomo.metrics.chunked_report`; equal to :func:`analyse_microstructure`'s to float
    rounding), the others NaN or empty with a note (particles, transport, pore sizes).

    ``source`` is a :class:`litomo.metrics.chunked.LabelSource` (:func:`open_labels`).
    """
    from litomo.metrics.chunked_report import chunked_microstructure
    from litomo.metrics.rev import rev_size
    from litomo.metrics.summary import normalise_expected, seed_table

    asked = [flag for flag, val in (("--tile-um", settings.tile_um), ("--supplier-psd", settings.supplier_psd_um),
                                    ("--cbd-porosity", settings.cbd_porosity)) if val is not None]
    if asked:  # both need the particles or whole-tile transport, which this path does not compute
        raise DataError(f"{' and '.join(asked)} need the in-memory path, but this volume is processed out of "
                        "core (above 2^28 voxels or --chunk-size given): crop the volume or leave them out")
    chunk = chunk_for(source.shape, settings) or DEFAULT_CHUNK_VOX
    r = chunked_microstructure(source, settings.voxel_size_um, axes=settings.axes, chunk_vox=chunk,
                               seed=settings.seed, progress=progress)
    summary = r.summary
    if settings.expected:
        summary["expected"] = normalise_expected(dict(settings.expected))
    rsize = rev_size(r.rev, settings.rev_tolerance)
    summary["rev_edge_um"] = {x.quantity: x.rev_edge_um for x in rsize.itertuples()}
    summary["rev_tolerance"] = settings.rev_tolerance
    summary["characteristic_length_um"] = _s2_lengths(r.s2)
    return MicroResult(summary=summary, particles=pd.DataFrame(columns=["particle"]), z_profile=r.z_profile,
                       rev=r.rev, s2=r.s2, metrics_table=seed_table(summary, sample=sample), rev_size=rsize)


def check_shape(shape: tuple[int, ...], what: str) -> None:
    """Refuse anything but a 3-D volume with at least 2 voxels along each axis.

    Examples
    --------
    >>> check_shape((1, 64, 64), "slice.tif")
    Traceback (most recent call last):
    ...
    litomo.errors.DataError: slice.tif: litomo micro needs a 3-D label volume (z, y, x) with at least 2 voxels along each axis, got shape (1, 64, 64)
    """
    if len(shape) != 3 or min(shape) < 2:
        raise DataError(f"{what}: litomo micro needs a 3-D label volume (z, y, x) with at least 2 voxels "
                        f"along each axis, got shape {tuple(shape)}")


def _s2_table(labels: np.ndarray, settings: MicroSettings, progress: ProgressCallback | None = None
              ) -> pd.DataFrame:
    from litomo.metrics.rev import two_point_correlation
    from litomo.phases import PHASE_CODES, PHASES
    from litomo.progress import track

    present = np.bincount(labels.ravel(), minlength=3)
    todo = [(p, a) for p in PHASES if present[PHASE_CODES[p]] for a in settings.axes]
    s2 = [two_point_correlation(labels, a, settings.voxel_size_um, phase=p).assign(phase=p, axis=a)
          for p, a in track(todo, len(todo), "S2", progress)]
    if not s2:
        return pd.DataFrame(columns=["r_vox", "r_um", "s2", "phase", "axis"])
    return pd.concat(s2, ignore_index=True)


def _pore_sizes(labels: np.ndarray, settings: MicroSettings, summary: dict[str, Any],
                progress: ProgressCallback | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Constrictivity along each of ``settings.axes``, the PSD table and the radius maps."""
    from litomo.metrics.constrictivity import constrictivity, pore_radius_maps, psd_table

    pore = labels == 0
    if not (settings.pore_sizes and pore.any()):
        return pd.DataFrame(columns=["r_um", "cpsd_fraction", "mip_fraction", "axis"]), {}
    maps: dict[str, np.ndarray] = {}
    tables = []
    for k, a in enumerate(settings.axes):
        if progress is not None:
            progress(k, len(settings.axes), "pore sizes")
        local, mip = pore_radius_maps(pore, settings.voxel_size_um, axis=a)
        c = constrictivity(pore, settings.voxel_size_um, axis=a, maps=(local, mip))
        summary.setdefault("constrictivity", {}).setdefault("pore", {})[a] = c.beta
        summary.setdefault("pore_r_min_um", {})[a] = c.r_min_um
        summary.setdefault("mip_intruded_fraction", {})[a] = c.intruded_fraction
        summary["pore_r_max_um"] = c.r_max_um
        maps["pore_radius_local_um"] = local
        maps[f"pore_radius_mip_{a}_um"] = mip
        tables.append(psd_table(local, mip, pore).assign(axis=a))
        if progress is not None:
            progress(k + 1, len(settings.axes), "pore sizes")
    return pd.concat(tables, ignore_index=True), maps


def _s2_lengths(s2: pd.DataFrame) -> dict[str, dict[str, float]]:
    from litomo.metrics.rev import characteristic_length_um

    out: dict[str, dict[str, float]] = {}
    for (p, a), g in s2.groupby(["phase", "axis"], sort=False):
        out.setdefault(str(p), {})[str(a)] = characteristic_length_um(g)
    return out


def analyse_microstructure(labels: np.ndarray, settings: MicroSettings, *, sample: str = "sample",
                           progress: ProgressCallback | None = None) -> MicroResult:
    """Every ``litomo micro`` metric of a canonical label volume (no files written).

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
        Canonical labels (0 pore, 1 AM, 2 CBD).
    settings : MicroSettings
    sample : str
        Column name of the seed-style table.
    progress : callable, optional
        ``progress(done, total, description)``.

    Examples
    --------
    >>> lab = np.zeros((12, 12, 12), np.uint8); lab[:, :, 6:] = 1; lab[:, :2] = 2
    >>> r = analyse_microstructure(lab, MicroSettings(0.5, transport=False))
    >>> r.summary["volume_fraction"]["am"], r.summary["dead_end_cluster_fraction"]["cbd"]["z"]
    (0.4166666666666667, 0.0)
    """
    from litomo.metrics.fractions import z_profile_fractions
    from litomo.metrics.rev import rev_curve, rev_size
    from litomo.metrics.summary import microstructure_report, seed_table
    from litomo.phases import PHASE_CODES, PHASES

    check_shape(labels.shape, "labels")
    v = settings.voxel_size_um
    present = np.bincount(labels.ravel(), minlength=3)
    for p in PHASES:
        if present[PHASE_CODES[p]] == 0:
            log.warning("phase %r is absent from %s: its metrics are NaN/inf", p, sample)
    summary, particles = microstructure_report(
        labels, v, axes=settings.axes, close_cracks_first=settings.close_cracks,
        expected=dict(settings.expected) if settings.expected else None,
        transport=settings.transport, progress=progress)
    summary["seed"] = settings.seed
    psd, maps = _pore_sizes(labels, settings, summary, progress)
    rev = rev_curve(labels, v, seed=settings.seed, progress=progress)
    rsize = rev_size(rev, settings.rev_tolerance)
    summary["rev_edge_um"] = {r.quantity: r.rev_edge_um for r in rsize.itertuples()}
    summary["rev_tolerance"] = settings.rev_tolerance
    s2 = _s2_table(labels, settings, progress)
    summary["characteristic_length_um"] = _s2_lengths(s2)
    ppsd, cover = _particle_summaries(particles, labels.shape, settings, summary)
    local, local_prof = _local_maps(labels, settings, progress)
    if settings.cbd_porosity is not None and settings.transport:
        summary["multiphase_tortuosity_z"] = _multiphase_tau(labels, settings, progress)
    return MicroResult(
        summary=summary,
        particles=particles if particles is not None else pd.DataFrame(columns=["particle"]),
        z_profile=z_profile_fractions(labels, v), rev=rev, s2=s2,
        metrics_table=seed_table(summary, sample=sample), rev_size=rsize, psd=psd, pore_maps=maps,
        particle_psd=ppsd, coverage_by_size=cover, local_maps=local, local_profile=local_prof)


def _multiphase_tau(labels: np.ndarray, settings: MicroSettings, progress: ProgressCallback | None
                    ) -> dict[str, float]:
    """Pore + porous-CBD tortuosity along z (CBD ``D/D_0`` by Bruggeman from ``cbd_porosity``)."""
    from litomo.transport.multiphase import (
        cbd_relative_diffusivity,
        diffusivity_map,
        multiphase_tortuosity,
    )

    d_cbd = cbd_relative_diffusivity(float(settings.cbd_porosity))
    res = multiphase_tortuosity(diffusivity_map(labels, {"pore": 1.0, "cbd": d_cbd}), "z",
                                voxel_size_um=settings.voxel_size_um, progress=progress)
    return {"cbd_porosity": float(settings.cbd_porosity), "cbd_relative_diffusivity": d_cbd,
            "tau": float(res.tau), "deff": float(res.deff), "d_mean": float(res.d_mean),
            "mcmullin": float(res.mcmullin)}


def _local_maps(labels: np.ndarray, settings: MicroSettings, progress: ProgressCallback | None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    if settings.tile_um is None:
        return pd.DataFrame(), pd.DataFrame()
    from litomo.metrics.local import local_property_maps, tile_profile

    local = local_property_maps(labels, settings.voxel_size_um, settings.tile_um,
                                tortuosity_axis="z" if settings.transport else None, progress=progress)
    return local, tile_profile(local, "z")


def _particle_summaries(particles: pd.DataFrame | None, shape: tuple[int, ...], settings: MicroSettings,
                        summary: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Volume PSD (+ supplier comparison), coverage vs size and the representative particle."""
    from litomo.metrics.psd import coverage_vs_size, particle_psd, representative_particle

    if particles is None or "touches_boundary" not in particles:
        return pd.DataFrame(), pd.DataFrame()
    box = [n * v for n, v in zip(shape, settings.voxel_size_um, strict=True)]
    ppsd, dvals = particle_psd(particles, box, supplier_um=settings.supplier_psd_um)
    cover, rho = coverage_vs_size(particles)
    summary["particle_psd_volume"] = dvals
    summary["coverage_size_spearman"] = rho
    summary["representative_particle"] = representative_particle(particles)
    if settings.supplier_psd_um is not None:  # shown in the "Expected" column of the seed table
        exp = summary.setdefault("expected", {})
        for name, val in zip(("d10", "d50", "d90"), settings.supplier_psd_um, strict=True):
            exp[f"{name}_volume_um"] = float(val)
    return ppsd, cover


def write_micro(rd: Any, result: MicroResult, labels: np.ndarray | None, settings: MicroSettings) -> list[Path]:
    """Write the tables (and, with ``settings.figures``, figures and ``report.html``) into ``rd``.

    ``rd`` is an open :class:`litomo.io.rundir.RunDir`; returns the files written.
    """
    from litomo.io.atomic import write_csv_atomic, write_text_atomic
    from litomo.io.rundir import to_jsonable

    files = [rd.output("tables/microstructure.json")]
    write_text_atomic(files[0], json.dumps(to_jsonable(result.summary), indent=2) + "\n")
    names = {"psd": "pore_size_distribution", "particle_psd": "particle_size_distribution"}
    for name in ("metrics_table", "particles", "z_profile", "rev", "s2", "rev_size", "psd", "particle_psd",
                 "coverage_by_size", "local_maps", "local_profile"):
        if name.startswith("local") and settings.tile_um is None:
            continue
        path = rd.output(f"tables/{names.get(name, name)}.csv")
        write_csv_atomic(path, getattr(result, name))
        files.append(path)
    if result.pore_maps:
        from litomo.io import write_tiff

        for name, arr in result.pore_maps.items():
            files.append(write_tiff(rd.output(f"volumes/{name}.tif"), arr, compression="zlib",
                                    voxel_size_um=settings.voxel_size_um))
    if settings.figures and labels is None:
        log.info("out-of-core run: no figures or report.html (they draw from the label volume in memory)")
    elif settings.figures:
        from litomo.report.figures import save_figure
        from litomo.report.html import build_report
        from litomo.report.workflow_figures import micro_figures

        particles = result.particles if "touches_boundary" in result.particles else None
        figs = micro_figures(labels, settings.voxel_size_um, result.summary, particles, result.rev, result.s2)
        if result.pore_maps:
            figs["pore_radius_maps"] = pore_map_figure(result.pore_maps, settings.voxel_size_um)
        if not result.particle_psd.empty:
            from litomo.report.micro import particle_summary_figure

            figs["particle_summary"] = particle_summary_figure(result.particles, result.particle_psd,
                                                               result.summary)
        if not result.local_maps.empty:
            from litomo.report.workflow_figures import local_map_figure

            figs["local_maps"] = local_map_figure(result.local_maps, result.local_profile)
        for name, fig in figs.items():
            files += list(save_figure(fig, rd.figures, name, dpi=120).values())
        report = rd.report  # records report.html as owned before it is written
        files.append(build_report(report.parent, kind="micro"))
    return files


def pore_map_figure(maps: Mapping[str, np.ndarray], voxel_size_um: tuple[float, float, float]) -> Any:
    """Centre (z, x) slices of the pore radius maps: local (c-PSD) radius and the radius that
    reaches each voxel by simulated intrusion; where the second is smaller, a bottleneck upstream
    limits transport."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(maps), 4.0), layout="constrained")
    axs = fig.subplots(1, len(maps), squeeze=False)[0]
    vmax = max(float(m.max()) for m in maps.values()) or 1.0
    for ax, (name, m) in zip(axs, maps.items(), strict=True):
        sl = m[:, m.shape[1] // 2, :]
        extent = (0, sl.shape[1] * voxel_size_um[2], sl.shape[0] * voxel_size_um[0], 0)
        im = ax.imshow(sl, cmap="magma", vmin=0, vmax=vmax, extent=extent, interpolation="nearest")
        ax.set(title=name.replace("_", " "), xlabel="x (um)", ylabel="z (um)")
    fig.colorbar(im, ax=list(axs), label="pore radius (um)")
    return fig


def run_micro(labels_path: str | os.PathLike, out_dir: str | os.PathLike, settings: MicroSettings, *,
              mode: str = "new", progress: ProgressCallback | None = None) -> MicroResult:
    """``litomo micro`` from Python: read, validate, compute, write ``out_dir``.

    Parameters
    ----------
    labels_path : path
        Three-phase label volume (TIFF, HDF5, OME-Zarr ...), indexed (z, y, x).
    out_dir : path
        Output folder (``--out``), opened with :meth:`litomo.io.rundir.RunDir.open`.
    settings : MicroSettings
    mode : {"new", "force"}
        ``"new"`` refuses a non-empty folder; ``"force"`` replaces an earlier litomo output
        there (only files litomo wrote; ``--force``).
    progress : callable, optional

    Raises
    ------
    LitomoError
        Bad input (named by its option) or an output folder that may not be written.
    """
    from litomo.io.rundir import RunDir

    labels_path = Path(labels_path)
    with RunDir.open(out_dir, kind="micro", mode=mode, inputs=[labels_path]) as rd:
        with stage(log, "micro", "reading labels"):
            source = open_labels(labels_path, settings)
            chunked = chunk_for(source.shape, settings) is not None
            labels = None if chunked else read_labels(labels_path, settings, progress)
        with stage(log, "micro", "metrics"):
            if labels is None:
                result = analyse_microstructure_chunked(source, settings, sample=labels_path.stem, progress=progress)
            else:
                result = analyse_microstructure(labels, settings, sample=labels_path.stem, progress=progress)
        result.summary["input"] = str(labels_path)
        result.summary["label_mapping"] = dict(settings.label_mapping or {})
        with stage(log, "micro", "writing outputs"):
            result.files = write_micro(rd, result, labels, settings)
        record = {"kind": "micro", "input": str(labels_path), "settings": _jsonable_settings(settings),
                  "outputs": [str(p.relative_to(rd.root)) for p in result.files]}
        result.files.append(rd.complete(record))
        result.out_dir = rd.root
    return result


def _jsonable_settings(settings: MicroSettings) -> dict[str, Any]:
    d = asdict(settings)
    d["voxel_size_um"] = list(settings.voxel_size_um)
    d["axes"] = list(settings.axes)
    d["label_mapping"] = dict(settings.label_mapping) if settings.label_mapping else None
    d["expected"] = dict(settings.expected) if settings.expected else None
    d["supplier_psd_um"] = list(settings.supplier_psd_um) if settings.supplier_psd_um else None
    return d


__all__ = ["CHUNKED_ABOVE_VOXELS", "DEFAULT_CHUNK_VOX", "MicroResult", "MicroSettings", "analyse_microstructure",
           "analyse_microstructure_chunked", "check_shape", "chunk_for", "open_labels", "read_labels",
           "run_micro", "write_micro"]

"""Damage workflow (``litomo damage``): per-particle crack/damage quantification of cycled AM.

:func:`analyse_damage` computes from arrays (no I/O); :func:`run_damage` reads a label or
greyscale volume, computes and writes the output folder through
:class:`litomo.io.rundir.RunDir`::

    OUT/tables/{damage_particles, damage_depth, damage_network, sphere_pack}.csv,
    OUT/tables/{damage_edges_particles, damage_edges_depth}.csv (the crack paper's Canny method),
    OUT/tables/{crack_li, crack_li_correlation}.csv (with a Li run: damage vs Li content),
    OUT/tables/damage.json, OUT/figures/*.png|svg, OUT/report.html, OUT/run.json (completion record, last)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from litomo.damage import DamageParams
from litomo.errors import DataError
from litomo.progress import ProgressCallback
from litomo.workflows.stage import stage

log = logging.getLogger(__name__)

KINDS = ("auto", "labels", "grey")


@dataclass(frozen=True)
class DamageSettings:
    """What ``litomo damage`` computes.

    Attributes
    ----------
    voxel_size_um : float
        Voxel edge length in um (``--voxel-size-um``).
    kind : {"auto", "labels", "grey"}
        Input kind (``--kind``; ``auto``: integer volumes with <= 16 values are labels).
    label_mapping : mapping, optional
        Phase-label mapping (``--labels``); implies a label volume.
    params : DamageParams
        Damage-index weights and class thresholds (``--mild-threshold``, ``--severe-threshold``).
    window_um : float
        Height of the depth windows (``--window-um``).
    k : int
        Neighbours per particle in the severe-damage network (``--k``).
    bbox_um : ((z0, z1), (y0, y1), (x0, x1)) or None
        Region of the sphere-pack export (``--bbox-um``).
    figures : bool
        Draw the figures.
    separator_side : {"z_min", "z_max"}
        Where the separator is: the Canny-edge damage windows count depth from it
        (``--separator-side``).
    li_state : str, optional
        State of the Li run (``--li-run``) whose particles are paired with the damaged ones
        (``--li-state``; default the last state).
    """

    voxel_size_um: float
    kind: str = "auto"
    label_mapping: Mapping[str, int] | None = None
    params: DamageParams = field(default_factory=DamageParams)
    window_um: float = 10.0
    k: int = 3
    bbox_um: tuple[tuple[float, float], ...] | None = None
    figures: bool = True
    separator_side: str = "z_min"
    li_state: str | None = None

    def __post_init__(self) -> None:
        if self.separator_side not in ("z_min", "z_max"):
            raise DataError(f"--separator-side must be z_min or z_max, got {self.separator_side!r}")
        if self.kind not in KINDS:
            raise DataError(f"--kind must be 'auto', 'labels' or 'grey', got {self.kind!r}")
        if not (np.isfinite(self.window_um) and self.window_um > 0):
            raise DataError(f"--window-um must be a positive length, got {self.window_um}")
        if self.k < 1:
            raise DataError(f"--k must be at least 1, got {self.k}")


@dataclass
class DamageResult:
    """What :func:`analyse_damage` returns (and :func:`run_damage` writes).

    Attributes
    ----------
    particles, depth, network, sphere_pack : pandas.DataFrame
        Per-particle damage table, class populations per depth window, k-NN network of the
        severely damaged particles, sphere pack (centres and radii in um).
    summary : dict
        ``n_particles``, ``class_counts``, ``input_kind``, ``mean_damage_index``,
        ``mean_crack_fraction``, ``network_edges``, ``mean_edge_density_per_um``, ``edge_class_counts``
        (``tables/damage.json``).
    edge_particles, edge_depth : pandas.DataFrame
        The crack paper's method (:func:`litomo.damage_edges.edge_damage`): Canny crack-edge
        density and CBD detachment per particle and per depth window from the separator.
    crack_li, crack_li_correlation : pandas.DataFrame
        With a Li run's particle table: paired particles (damage beside Li content) and the
        Spearman correlations (:mod:`litomo.damage_li`); empty otherwise.
    out_dir : Path or None
    files : list of Path
    """

    particles: pd.DataFrame
    depth: pd.DataFrame
    network: pd.DataFrame
    sphere_pack: pd.DataFrame
    summary: dict[str, Any]
    edge_particles: pd.DataFrame = field(default_factory=pd.DataFrame)
    edge_depth: pd.DataFrame = field(default_factory=pd.DataFrame)
    crack_li: pd.DataFrame = field(default_factory=pd.DataFrame)
    crack_li_correlation: pd.DataFrame = field(default_factory=pd.DataFrame)
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)


def input_kind(arr: np.ndarray, settings: DamageSettings) -> str:
    """``"labels"`` or ``"grey"`` for ``settings.kind == "auto"`` (integer with <= 16 values: labels).

    Examples
    --------
    >>> input_kind(np.array([[[0, 1, 2]]]), DamageSettings(0.1))
    'labels'
    """
    if settings.kind != "auto":
        return settings.kind
    if settings.label_mapping:
        return "labels"
    is_int = arr.dtype.kind in "iub" or bool(np.all(arr == np.round(arr)))
    return "labels" if is_int and np.unique(arr).size <= 16 else "grey"


def analyse_damage(arr: np.ndarray, settings: DamageSettings, *, progress: ProgressCallback | None = None,
                   li_particles: pd.DataFrame | None = None) -> DamageResult:
    """Damage quantification of a label or greyscale volume (no files written).

    With ``li_particles`` (a Li run's ``tables/particles.csv``, same frame in um) the damaged
    particles are paired with the Li-mapped ones and damage is correlated with Li content.

    AM comes from the labels, or from an Otsu threshold of the grey values (AM bright).
    Particles are separated on the crack-closed AM mask (:func:`litomo.damage.close_cracks`)
    so a crack does not split its particle, then kept on AM voxels only.
    """
    from litomo.damage import close_cracks, damage_table, depth_profile, severe_network, sphere_pack
    from litomo.phases import parse_label_mapping, to_canonical
    from litomo.segment.particles import separate_particles
    from litomo.volume import as_voxel_size

    if arr.ndim != 3 or min(arr.shape) < 2:
        raise DataError(f"litomo damage needs a 3-D volume (z, y, x), got shape {arr.shape}")
    v = as_voxel_size(settings.voxel_size_um)
    kind = input_kind(arr, settings)
    grey = cbd = None
    if kind == "labels":
        canon = to_canonical(arr, dict(settings.label_mapping or parse_label_mapping(None)))
        am, cbd = canon == 1, canon == 2
    else:
        from litomo.segment.threshold import otsu_mask

        grey = arr.astype(np.float32)
        am = otsu_mask(grey)
    if not am.any():
        raise DataError("no active material found in the volume")
    particles = separate_particles(close_cracks(am, settings.params.closing_radius_vox), voxel_size_um=v)
    particles[~am] = 0
    table = damage_table(particles, v, am_mask=am, grey=grey, params=settings.params, progress=progress)
    depth = depth_profile(table, window_um=settings.window_um, depth_um=arr.shape[0] * v[0])
    network = severe_network(table, k=settings.k)
    edge_per, edge_depth = _edge_method(grey, am, particles, cbd, v, settings, progress)
    counts = {c: int((table["damage_class"] == c).sum()) for c in ("least", "mild", "severe")}
    summary = {"n_particles": len(table), "class_counts": counts, "input_kind": kind,
               "mean_damage_index": float(table["damage_index"].mean()),
               "mean_crack_fraction": float(table["crack_fraction"].mean()),
               "network_edges": len(network),
               "mean_edge_density_per_um": float(edge_per["edge_density_per_um"].mean()),
               "edge_class_counts": {c: int((edge_per["edge_damage_class"] == c).sum())
                                     for c in ("intact", "moderate", "severe")},
               "separator_side": settings.separator_side}
    result = DamageResult(particles=table, depth=depth, network=network,
                          sphere_pack=sphere_pack(table, settings.bbox_um), summary=summary,
                          edge_particles=edge_per, edge_depth=edge_depth)
    if li_particles is not None:
        _crack_chemistry(result, li_particles, settings)
    return result


def _crack_chemistry(result: DamageResult, li: pd.DataFrame, settings: DamageSettings) -> None:
    from litomo.damage_li import crack_li_correlation, crack_li_table

    extra = [c for c in ("edge_density_per_um", "cbd_detached_fraction", "edge_damage_class")
             if c in result.edge_particles]
    damage = result.particles.merge(result.edge_particles[["particle", *extra]], on="particle", how="left")
    result.crack_li = crack_li_table(damage, li, state=settings.li_state)
    result.crack_li_correlation = crack_li_correlation(result.crack_li)
    result.summary["crack_li_pairs"] = len(result.crack_li)
    result.summary["crack_li_unpaired"] = len(damage) - len(result.crack_li)


def _edge_method(grey: np.ndarray | None, am: np.ndarray, particles: np.ndarray, cbd: np.ndarray | None,
                 v: tuple[float, float, float], settings: DamageSettings, progress: ProgressCallback | None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The crack paper's Canny method on the grey image (or on the AM mask of a label volume)."""
    from litomo.damage_edges import EdgeDamageParams, edge_damage

    params = EdgeDamageParams(window_um=settings.window_um, separator_side=settings.separator_side,
                              closing_radius_vox=settings.params.closing_radius_vox)
    image = grey if grey is not None else am.astype(np.float32)
    return edge_damage(image, particles, v, cbd=cbd if cbd is not None and cbd.any() else None, params=params,
                       progress=progress)


def write_damage(rd: Any, result: DamageResult, settings: DamageSettings) -> list[Path]:
    """Write the tables, ``damage.json`` and (with ``settings.figures``) the figures into ``rd``."""
    from litomo.io.atomic import write_csv_atomic, write_text_atomic
    from litomo.io.rundir import to_jsonable

    files = []
    for name, df in (("damage_particles", result.particles), ("damage_depth", result.depth),
                     ("damage_network", result.network), ("sphere_pack", result.sphere_pack),
                     ("damage_edges_particles", result.edge_particles), ("damage_edges_depth", result.edge_depth),
                     *((("crack_li", result.crack_li), ("crack_li_correlation", result.crack_li_correlation))
                       if not result.crack_li_correlation.empty or not result.crack_li.empty else ())):
        path = rd.output(f"tables/{name}.csv")
        write_csv_atomic(path, df)
        files.append(path)
    path = rd.output("tables/damage.json")
    write_text_atomic(path, json.dumps(to_jsonable(result.summary), indent=2) + "\n")
    files.append(path)
    if settings.figures:
        from litomo.report.figures import save_figure
        from litomo.report.workflow_figures import damage_figures

        figs = damage_figures(result.particles, result.depth, settings.params.mild_threshold,
                              settings.params.severe_threshold)
        figs.update(_edge_figures(result))
        for name, fig in figs.items():
            files += list(save_figure(fig, rd.figures, name).values())
        from litomo.report.html import build_report

        report = rd.report  # records report.html as owned before it is written
        files.append(build_report(report.parent, kind="damage"))
    return files


def _edge_figures(result: DamageResult) -> dict[str, Any]:
    from litomo.damage_edges import EdgeDamageParams
    from litomo.report.damage import crack_li_figure, damage_edge_figures

    p = EdgeDamageParams()
    figs = damage_edge_figures(result.edge_particles, result.edge_depth,
                               (p.moderate_trace_number, p.severe_trace_number))
    if not result.crack_li.empty:
        figs["crack_li"] = crack_li_figure(result.crack_li, result.crack_li_correlation)
    return figs


def read_li_particles(path: str | os.PathLike) -> pd.DataFrame:
    """A Li run's particle table: ``path`` is the run folder or its ``tables/particles.csv``."""
    from litomo.errors import InputFileError
    from litomo.io.rundir import RunLayout

    p = Path(path)
    csv = RunLayout(p).table("particles") if p.is_dir() else p
    if not csv.is_file():
        raise InputFileError(f"--li-run: {csv} not found (give a litomo run folder or its tables/particles.csv)")
    try:
        table = pd.read_csv(csv)
    except (ValueError, OSError) as exc:
        raise InputFileError(f"--li-run: {csv} is not a readable CSV table ({exc})") from None
    if "mean_li" not in table:
        raise InputFileError(f"--li-run: {csv} has no mean_li column (not a litomo run's particle table)")
    return table


def run_damage(volume_path: str | os.PathLike, out_dir: str | os.PathLike, settings: DamageSettings, *,
               mode: str = "new", progress: ProgressCallback | None = None,
               li_run: str | os.PathLike | None = None) -> DamageResult:
    """``litomo damage`` from Python: read, compute, write ``out_dir`` (``mode``: "new" or "force").

    ``li_run``: a ``litomo run`` folder (or its ``tables/particles.csv``) for the crack-chemistry
    correlation (``--li-run``).

    Raises
    ------
    LitomoError
        Bad input (named by its option) or an output folder that may not be written.
    """
    from litomo.io import read_volume
    from litomo.io.rundir import RunDir

    volume_path = Path(volume_path)
    li = read_li_particles(li_run) if li_run is not None else None
    with RunDir.open(out_dir, kind="damage", mode=mode, inputs=[volume_path]) as rd:
        with stage(log, "damage", "reading the volume"):
            arr = read_volume(volume_path, voxel_size_um=settings.voxel_size_um).numpy()
        with stage(log, "damage", "damage analysis"):
            result = analyse_damage(arr, settings, progress=progress, li_particles=li)
        result.summary["input"] = str(volume_path)
        with stage(log, "damage", "writing outputs"):
            result.files = write_damage(rd, result, settings)
        record = {"kind": "damage", "input": str(volume_path), "summary": result.summary,
                  "outputs": [str(p.relative_to(rd.root)) for p in result.files]}
        result.files.append(rd.complete(record))
        result.out_dir = rd.root
    return result


__all__ = ["DamageResult", "DamageSettings", "analyse_damage", "input_kind", "read_li_particles", "run_damage",
           "write_damage"]

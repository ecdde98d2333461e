"""``report.html``: one self-contained page per run directory.

The page is built only from the files of a run directory (``run.json``, ``tables/*.csv``,
``volumes/<state>/li.ome.zarr``), so it can be rebuilt at any time with
``build_report(run_dir)``. Images are embedded as base64 PNG data URIs and the CSS is inline:
the file opens from disk, e-mails and archives without a server or network. Every figure is
also saved under ``run_dir/figures`` as PNG and SVG.

A missing optional table skips its section with a note instead of failing the report.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from litomo.errors import DataError, LitomoError
from litomo.io.atomic import write_text_atomic
from litomo.io.rundir import RunLayout
from litomo.progress import ProgressCallback
from litomo.report import li_context as ctx_fig
from litomo.report import spectral as spectral_report
from litomo.report.blocks import (
    dict_table,
    esc,
    figure_html,
    html_page,
    html_table,
    note,
    notes_html,
    read_table,
    short_value,
)
from litomo.report.glance import background_sentence, glance_limap
from litomo.report.micro import micro_body

log = logging.getLogger(__name__)

KINDS = ("auto", "limap", "micro", "damage")

# --------------------------------------------------------------------------- Li-mapping run


@dataclass(frozen=True)
class FigureSpec:
    """A report figure: which tables it needs, how to draw it, what to look for."""

    title: str
    tables: tuple[str, ...]
    caption: str


FIGURES: dict[str, FigureSpec] = {
    "li_orthoslices": FigureSpec(
        "Li maps", (),
        "Centre slices of the Li map of every state (grey: outside the active material). The xz and "
        "yz planes show depth downwards from the separator side. Look for a colour change from "
        "particle surfaces inwards (core-shell delithiation) or from top to bottom (a reaction "
        "front through the electrode), and for stripes or edges that would betray misregistration."),
    "class_fractions": FigureSpec(
        "Li classes", ("states",),
        "Share of the active-material volume that is Li-rich, Li-moderate and Li-poor in each state. "
        "During charge the blue (Li-rich) part should shrink and the red (Li-poor) part grow."),
    "li_histograms": FigureSpec(
        "Li distributions", ("histograms",),
        "Distribution of the Li content over all active-material voxels (shared bins; shaded: the "
        "Li-poor and Li-rich class ranges). A single peak moving left means uniform delithiation; two "
        "peaks mean two coexisting phases or particles that react at different times."),
    "z_profiles": FigureSpec(
        "Through-plane profiles", ("z_profile",),
        "Mean Li (band: +- one standard deviation within the slice) and Li-rich / Li-poor shares per "
        "depth slice, from the separator side (z = 0) to the current collector. A slope means the "
        "electrode reacts unevenly through its thickness, typically limited by ionic transport."),
    "core_shell": FigureSpec(
        "Core-shell profiles", ("core_shell",),
        "Mean Li versus distance from the particle surface. Rising curves (poorer surface, richer "
        "core) indicate solid-state diffusion limitation inside the particles."),
    "particles": FigureSpec(
        "Particles", ("particles",),
        "Left: mean Li of each particle against its size (colour: Li-rich fraction). Right: the same "
        "against depth. Large particles lagging behind point to diffusion limitation; a trend with "
        "depth points to transport limitation through the electrode."),
    "evolution": FigureSpec(
        "Tracked particles", ("evolution",),
        "Mean Li of each tracked particle across the states (grey) and the median (black). Crossing "
        "or flat lines show particles that react late or not at all (possibly electrically isolated)."),
    "registration_qa": FigureSpec(
        "Registration QA", ("registration",),
        "Normalised cross-correlation between each registered pair before (grey) and after (blue) "
        "registration. After-NCC should be high and higher than before; a red x marks a pair that did "
        "not improve: check it before trusting that state's Li map."),
}
FIGURES.update({k: FigureSpec(*v) for k, v in ctx_fig.CONTEXT_FIGURES.items()})  # issue 16 item 5


#: figures of N-energy runs only (volumes/<state>/edge_ev.ome.zarr present; issue 16)
SPECTRAL_FIGURES: dict[str, FigureSpec] = {k: FigureSpec(title, (), caption)
                                           for k, (title, caption) in spectral_report.FIGURE_TEXT.items()}


def _states_from(run: dict[str, Any], tables: dict[str, pd.DataFrame | None], run_dir: Path) -> list[str]:
    if run.get("states"):
        return [str(s) for s in run["states"]]
    st = tables.get("states")
    if st is not None:
        return list(dict.fromkeys(st["state"].astype(str)))
    return RunLayout(run_dir).state_folders()


def _li_slices(run_dir: Path, states: Sequence[str], notes: list[str]) -> tuple[dict[str, Any], Any]:
    """Lazy Li maps of each state (only the slices drawn are ever read)."""
    from litomo.io import read_ome_zarr

    maps, vs = {}, None
    for s in states:
        path = RunLayout(run_dir).volume(s, "li")
        if not path.exists():
            continue
        try:
            vol = read_ome_zarr(path)
        except LitomoError as exc:
            notes.append(f"{path.relative_to(run_dir)}: {exc}")
            continue
        maps[s] = vol.array
        vs = vs or vol.voxel_size_um
    if not maps:
        notes.append("volumes/<state>/li.ome.zarr not found")
    return maps, vs


def _draw(name: str, tables: dict[str, pd.DataFrame | None], states: list[str], extra: dict[str, Any]):
    from litomo.report import figures as F

    p = extra.get("parameters", {})
    if name == "li_orthoslices":
        return F.li_orthoslices(extra["li_maps"], extra["li_voxel_size_um"])
    if name == "class_fractions":
        return F.class_fraction_bars(tables["states"], order=states)
    if name == "li_histograms":
        return F.li_histograms(tables["histograms"], order=states,
                               poor_max=float(p.get("li_poor_max", F.DEFAULT_POOR_MAX)),
                               rich_min=float(p.get("li_rich_min", F.DEFAULT_RICH_MIN)))
    if name == "z_profiles":
        return F.z_profiles(tables["z_profile"], order=states)
    if name == "core_shell":
        return F.core_shell_profiles(tables["core_shell"], order=states)
    if name == "particles":
        return F.particle_scatter(tables["particles"], order=states)
    if name == "evolution":
        return F.evolution_lines(tables["evolution"], order=states)
    if name == "registration_qa":
        return F.registration_qa(tables["registration"])
    if name in SPECTRAL_FIGURES:
        return spectral_report.draw(name, extra)
    if name in ctx_fig.CONTEXT_FIGURES:
        return ctx_fig.draw_context(name, tables, extra)
    raise KeyError(name)


def _render_figures(
    specs: dict[str, FigureSpec], available: Callable[[FigureSpec, str], str | None],
    draw: Callable[[str], Any], fig_dir: Path, progress: ProgressCallback | None,
) -> list[str]:
    from litomo.report.figures import save_figure

    parts = []
    for k, (name, spec) in enumerate(specs.items(), start=1):
        missing = available(spec, name)
        if missing:
            parts.append(f"<h3>{esc(spec.title)}</h3>" + note(f"Skipped: {missing}."))
        else:
            try:
                fig = draw(name)
                paths = save_figure(fig, fig_dir, name)
            except Exception as exc:
                # the report runs at the end of a long pipeline: one malformed optional table
                # (or a plotting corner case) must cost one figure, not the whole report
                log.warning("figure %s not drawn: %s: %s", name, type(exc).__name__, exc)
                parts.append(f"<h3>{esc(spec.title)}</h3>" + note(f"Figure not drawn: {exc}"))
            else:
                parts.append(f"<h3>{esc(spec.title)}</h3>"
                             + figure_html(paths["png"].read_bytes(), esc(spec.caption), spec.title))
        if progress is not None:
            progress(k, len(specs), "report figures")
    return parts


_STATE_COLS = ("state", "label", "mean_li", "std_li", "fwhm_li", "iqr_li", "frac_li_rich", "frac_li_moderate",
               "frac_li_poor", "total_li_um3", "n_particles", "expected_li", "li_error_vs_expected", "clipped_fraction")


def _limap_body(run_dir: Path, progress: ProgressCallback | None,
                run: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    run_path = RunLayout(run_dir).record
    notes: list[str] = []
    # a run builds its report before it writes run.json (its completion record, written last)
    if run is None:
        run = {}
        if not run_path.is_file():
            notes.append("run.json not found")
        else:
            try:
                run = json.loads(run_path.read_text())
            except json.JSONDecodeError as exc:
                notes.append(f"run.json unreadable ({exc})")
    names = ("states", "histograms", "z_profile", "particles", "core_shell", "registration",
             "evolution", "matching", "li_projection_hist", "li_context")
    tables = {n: read_table(run_dir, n, notes) for n in names}
    states = _states_from(run, tables, run_dir)
    li_maps, li_vs = _li_slices(run_dir, states, notes) if states else ({}, None)
    extra = {"parameters": run.get("parameters") or {}, "li_maps": li_maps,
             "li_voxel_size_um": li_vs or run.get("voxel_size_um") or 1.0,
             **ctx_fig.context_extra(run_dir, states, li_maps, run.get("parameters") or {}),
             "nenergy": run.get("nenergy"), "edge_ev": spectral_report.state_maps(run_dir, states, "edge_ev"),
             "r_factor": spectral_report.state_maps(run_dir, states, "r_factor")}
    figures = {**FIGURES, **SPECTRAL_FIGURES} if extra["edge_ev"] else FIGURES

    def available(spec: FigureSpec, name: str) -> str | None:
        if name == "li_orthoslices" and not li_maps:
            return "no Li maps found under volumes/<state>/li.ome.zarr"
        if name in ctx_fig.CONTEXT_FIGURES and (why := ctx_fig.context_unavailable(name, tables, extra)):
            return why
        gone = [t for t in spec.tables if tables.get(t) is None]
        return f"tables/{gone[0]}.csv not found or empty" if gone else None

    body = []
    glance = glance_limap(run, tables)
    nav = ('<nav><a href="#glance">At a glance</a><a href="#figures">Figures</a><a href="#states">States</a>'
           '<a href="#registration">Registration</a><a href="#run">Run</a></nav>')
    body.append(nav)
    body.append('<h2 id="glance">At a glance</h2>')
    body.append(f'<p class="glance">{esc(" ".join(glance)) if glance else "No summary tables found."}</p>')
    for w in run.get("warnings") or []:
        body.append(f'<div class="warning">Warning: {esc(w)}</div>')
    body.append('<h2 id="figures">Figures</h2>')
    body += _render_figures(figures, available, lambda n: _draw(n, tables, states, extra),
                            RunLayout(run_dir).figures, progress)

    body.append('<h2 id="states">Per-state statistics</h2>')
    st = tables["states"]
    if st is not None:
        cols = [c for c in _STATE_COLS if c in st] + [c for c in st.columns if c not in _STATE_COLS]
        body.append(html_table(st[cols]))
        body.append(note("Fractions are of the active-material volume; x_Li classes: Li-poor <= "
                         f"{extra['parameters'].get('li_poor_max', 0.6)}, Li-rich >= "
                         f"{extra['parameters'].get('li_rich_min', 0.9)}."))
    else:
        body.append(note("tables/states.csv not found: no per-state table."))
    m = tables["matching"]
    if m is not None:
        body.append("<h3>Particle matching</h3>" + html_table(m))

    body.append('<h2 id="registration">Registration QA</h2>')
    reg = tables["registration"]
    if reg is not None and {"ncc_before", "ncc_after"} <= set(reg.columns):
        bad = ~(reg["ncc_after"] > reg["ncc_before"]).to_numpy()
        body.append(html_table(reg, bad_rows=bad))
        body.append(note("Rows in red: NCC did not improve with registration."
                         if bad.any() else "NCC improved for every pair."))
    else:
        body.append(note("tables/registration.csv not found (registration off or not recorded): no QA table."))

    body.append('<h2 id="run">Run</h2>')
    body.append(_run_summary(run))
    body += notes_html(notes)
    subtitle = esc(f"{run_dir.resolve()} - created {run.get('created', 'unknown')} - litomo "
                   f"{run.get('litomo_version', '?')}")
    return subtitle, body


def _run_summary(run: dict[str, Any]) -> str:
    parts = []
    if run.get("command"):
        parts.append(f"<p>Command: <code>{esc(run['command'])}</code></p>")
    if run.get("manifest"):
        parts.append(f"<p>Manifest: <code>{esc(run['manifest'])}</code></p>")
    if run.get("voxel_size_um"):
        parts.append(f"<p>Voxel size of the maps (z, y, x): {esc(short_value(run['voxel_size_um']))} um</p>")
    for key, title, k, v in (("inputs", "Inputs", "file", "SHA-256"),
                             ("parameters", "Parameters", "parameter", "value"),
                             ("energy_advice", "Edge-energy advice", "item", "value"),
                             ("timings_s", "Timings", "stage", "seconds"),
                             ("versions", "Versions", "package", "version")):
        d = run.get(key)
        if d:
            parts.append(f"<h3>{title}</h3>" + dict_table(d, k, v))
    if run.get("stages"):
        parts.append("<h3>Stages</h3>" + html_table(_stage_table(run["stages"]), digits=3))
    return "".join(parts) or note("run.json not found: no run summary.")


def _stage_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-stage wall/CPU time and peak RSS (run.json ``stages``) as a table."""
    df = pd.DataFrame(rows)
    names = {"wall_s": "wall (s)", "cpu_s": "CPU (s)", "peak_rss_mib": "peak RSS (MiB)", "ran": "computed"}
    return df.rename(columns=names)


# --------------------------------------------------------------------------- entry point


def detect_kind(run_dir: str | os.PathLike) -> str:
    """``"limap"`` for a Li-mapping run, ``"micro"`` for a ``litomo micro`` output directory."""
    d = Path(run_dir)
    lay = RunLayout(d)
    # micro and damage first: their folders have a run.json (completion record) too
    if lay.table("damage", ".json").is_file():
        return "damage"
    if lay.table("microstructure", ".json").is_file() or lay.table("metrics_table").is_file():
        return "micro"
    if lay.table("states").is_file() or lay.record.is_file():
        return "limap"
    raise DataError(f"{d}: not a litomo run directory (no run.json, tables/states.csv or "
                    "tables/microstructure.json)")


def build_report(run_dir: str | os.PathLike, *, kind: str = "auto",
                 progress: ProgressCallback | None = None, run: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and the figures under ``run_dir/figures``.

    Parameters
    ----------
    run_dir : path
        A Li-mapping run directory (``run.json``, ``tables/``, ``volumes/``) or a
        ``litomo micro`` output directory (``tables/microstructure.json``, ``figures/``).
    kind : {"auto", "limap", "micro", "damage"}
        Which report; ``"auto"`` decides from the files present.
    progress : callable, optional
        ``progress(done, total, description)`` per figure.
    run : dict, optional
        The run record to show (default: ``run_dir/run.json``); a run passes it because it
        writes ``run.json`` last, after the report.

    Returns
    -------
    Path
        The written ``report.html``.

    Raises
    ------
    DataError
        ``run_dir`` is not a run directory, or ``kind`` is unknown.

    Examples
    --------
    >>> build_report("run-out")  # doctest: +SKIP
    PosixPath('run-out/report.html')
    """
    d = Path(run_dir)
    if kind not in KINDS:
        raise DataError(f"report kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not d.is_dir():
        raise DataError(f"{d}: run directory not found")
    if kind == "auto":
        kind = "limap" if run is not None else detect_kind(d)
    # no backend switch: the figures are plain Figure objects, which savefig renders with Agg
    # whatever backend pyplot uses, so a report can be built from inside napari or Jupyter
    if kind == "limap":
        subtitle, body = _limap_body(d, progress, run)
        title = "litomo Li-mapping report"
    elif kind == "damage":
        from litomo.report.damage import damage_body

        subtitle, body = damage_body(d, progress)
        title = "litomo damage report"
    else:
        subtitle, body = micro_body(d, progress)
        title = "litomo microstructure report"
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    page = html_page(title, f"{subtitle}<br>report built {esc(stamp)}", body)
    out = RunLayout(d).report
    write_text_atomic(out, page)
    log.info("report written to %s", out)
    return out


def rebuild_report(run_dir: str | os.PathLike, *, kind: str = "auto",
                   progress: ProgressCallback | None = None) -> Path:
    """Rebuild ``report.html`` and ``figures/`` of a finished folder, under its lock.

    Only a folder that litomo wrote is touched (:meth:`~litomo.io.rundir.RunDir.update`), and
    only its own ``report.html`` and ``figures/``.

    Examples
    --------
    >>> rebuild_report("run-out")  # doctest: +SKIP
    PosixPath('run-out/report.html')
    """
    from litomo.io.rundir import RunDir

    with RunDir.update(run_dir) as rd:
        rd.output(rd.layout.rel(rd.layout.figures))
        rd.output(rd.layout.rel(rd.layout.report))
        return build_report(rd.root, kind=kind, progress=progress)


__all__ = ["FIGURES", "background_sentence", "build_report", "rebuild_report", "detect_kind", "glance_limap",
           "html_table", "read_table"]

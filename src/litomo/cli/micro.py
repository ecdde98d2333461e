"""``litomo micro``: microstructure metrics of a three-phase label volume (SPEC 3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging, to_jsonable
from litomo.errors import LitomoError

log = logging.getLogger(__name__)


def _parse_voxel(text: str) -> float | tuple[float, float, float]:
    try:
        vals = [float(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise LitomoError(f"--voxel-size-um: expected a number or z,y,x in um, got {text!r}") from None
    if len(vals) not in (1, 3) or not all(np.isfinite(v) and v > 0 for v in vals):
        raise LitomoError(f"--voxel-size-um: expected one positive number or three (z,y,x), got {text!r}")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1], vals[2])


def _parse_expected(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    from litomo.phases import parse_phase_items

    return parse_phase_items(text, float, option="--expected", example="am=0.6,cbd=0.1")


def _read(path: Path, voxel_size_um: Any) -> np.ndarray:
    from litomo.io import read_volume

    return read_volume(path, voxel_size_um=voxel_size_um).numpy()


def _write_csv(df, path: Path) -> None:
    from litomo.io.atomic import write_csv_atomic

    write_csv_atomic(path, df)


def _savefig(fig, stem: Path) -> None:
    from litomo.report.figures import save_figure

    save_figure(fig, stem.parent, stem.name, dpi=120)


def _figures(fig_dir: Path, labels: np.ndarray, v: tuple, report: dict, tables: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    written = []
    cmap = ListedColormap(["#3b4cc0", "#d9a441", "#444444"])
    fig, axs = plt.subplots(1, 3, figsize=(12, 4))
    nz, ny, nx = labels.shape
    views = [(labels[nz // 2], "z (xy plane)", (nx * v[2], ny * v[1])),
             (labels[:, ny // 2], "y (xz plane)", (nx * v[2], nz * v[0])),
             (labels[:, :, nx // 2], "x (yz plane)", (ny * v[1], nz * v[0]))]
    for ax, (img, title, (w, h)) in zip(axs, views, strict=True):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=2, interpolation="nearest", extent=(0, w, h, 0))
        ax.set_title(f"centre slice normal to {title}")
        ax.set_xlabel("um")
    fig.suptitle("phases: blue pore, gold AM, grey CBD")
    _savefig(fig, fig_dir / "phase_orthoslices")
    plt.close(fig)
    written.append("phase_orthoslices")

    part = tables.get("particles")
    if part is not None and len(part):
        inner = part[~part["touches_boundary"]]
        fig, ax = plt.subplots(figsize=(6, 4))
        if len(inner):
            d = inner["eq_diameter_um"].to_numpy()
            bins = np.linspace(0, d.max() * 1.05, 30)
            ax.hist(d, bins=bins, alpha=0.6, label="by number")
            ax.hist(d, bins=bins, weights=inner["volume_um3"] / inner["volume_um3"].sum() * len(d),
                    alpha=0.4, label="by volume (scaled)")
            for q, ls in (("d10", ":"), ("d50", "--"), ("d90", "-.")):
                ax.axvline(report[f"{q}_volume_um"], color="k", ls=ls, label=f"{q.upper()} (volume)")
            ax.legend(fontsize=8)
        ax.set_xlabel("equivalent-sphere diameter (um)")
        ax.set_ylabel("particles")
        ax.set_title(f"PSD, {len(inner)} inner particles ({report['n_boundary_particles']} at the boundary excluded)")
        _savefig(fig, fig_dir / "psd")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        s = inner["sphericity"].to_numpy()
        ax.hist(s[np.isfinite(s)], bins=30, range=(0, 1.1))
        ax.set_xlabel("sphericity psi")
        ax.set_ylabel("particles")
        _savefig(fig, fig_dir / "sphericity")
        plt.close(fig)
        written += ["psd", "sphericity"]

    rev = tables.get("rev")
    if rev is not None and len(rev):
        fig, axs = plt.subplots(1, 2, figsize=(11, 4))
        for ax, prefix, ylabel in ((axs[0], "vf_", "volume fraction"), (axs[1], "ssa_face_", "a_i, faces (um^-1)")):
            for q, g in rev[rev["quantity"].str.startswith(prefix)].groupby("quantity"):
                ax.errorbar(g["edge_um"], g["mean"], yerr=g["std"], marker="o", capsize=3, label=q[len(prefix):])
            ax.set_xscale("log")
            ax.set_xlabel("sub-volume edge (um)")
            ax.set_ylabel(ylabel)
            ax.legend()
        fig.suptitle("REV: mean +- std over random sub-volumes")
        _savefig(fig, fig_dir / "rev")
        plt.close(fig)
        written.append("rev")
    s2 = tables.get("s2")
    if s2 is not None and len(s2):
        fig, ax = plt.subplots(figsize=(6, 4))
        for (ph, a), g in s2.groupby(["phase", "axis"]):
            line, = ax.plot(g["r_um"], g["s2"], label=f"{ph} along {a}")
            ax.axhline(report["volume_fraction"][ph] ** 2, color=line.get_color(), ls=":", lw=0.8)
        ax.set_xlabel("r (um)")
        ax.set_ylabel("S2(r)  (dotted: phi^2)")
        ax.legend(fontsize=8)
        _savefig(fig, fig_dir / "s2")
        plt.close(fig)
        written.append("s2")
    return written


@app.command()
def micro(
    labels_path: Path = typer.Argument(..., metavar="LABELS", help="Three-phase label volume (TIFF), indexed (z, y, x)."),
    voxel_size_um: str = typer.Option(..., "--voxel-size-um", help="Voxel edge length in um: one number or z,y,x."),
    label_map: str = typer.Option(None, "--labels", help="Which stored value is which phase, e.g. pore=0,am=85,cbd=170 (default pore=0,am=1,cbd=2)."),
    out: Path = typer.Option(..., "--out", help="Output directory (tables/ and figures/ are written inside)."),
    axes: str = typer.Option("z", "--axes", help="Percolation and S2 axes: z (through-plane) or all."),
    no_transport: bool = typer.Option(False, "--no-transport", help="Skip the tortuosity solves (pore and CBD along z)."),
    expected: str = typer.Option(None, "--expected", help="Expected volume fractions, e.g. am=0.6,cbd=0.1,pore=0.3 (shown beside the data)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random REV sub-volumes."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Write tables only."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Volume fractions, percolation, surface/interfacial areas, TPB density, particle sizes and
    sphericity, REV and two-point correlation (and tortuosity) of a pore/AM/CBD label volume.

    Writes OUT/tables/{microstructure.json, metrics_table.csv, particles.csv, z_profile.csv,
    rev.csv, s2.csv} and PNG+SVG figures under OUT/figures.
    """
    import pandas as pd

    from litomo.metrics.fractions import z_profile_fractions
    from litomo.metrics.report import microstructure_report, seed_table
    from litomo.metrics.rev import rev_curve, two_point_correlation
    from litomo.phases import PHASE_CODES, PHASES, parse_label_mapping, to_canonical
    from litomo.volume import as_voxel_size

    setup_logging(verbose)
    voxel = as_voxel_size(_parse_voxel(voxel_size_um))
    mapping = parse_label_mapping(label_map)
    exp = _parse_expected(expected)
    ax_mode = axes.strip().lower()
    if ax_mode not in ("z", "all"):
        raise LitomoError(f"--axes must be z or all, got {axes!r}")
    axis_list = ["z", "y", "x"] if ax_mode == "all" else ["z"]
    if out.resolve() == labels_path.resolve():
        raise LitomoError("--out must be a directory, not the input file")

    raw = _read(labels_path, voxel)
    if raw.ndim != 3:
        raise LitomoError(f"{labels_path}: expected a 3D label volume, got shape {raw.shape}")
    labels = to_canonical(raw, mapping)
    present = np.bincount(labels.ravel(), minlength=3)
    for p in PHASES:
        if present[PHASE_CODES[p]] == 0:
            log.warning("phase %r (value %s) is absent from %s: its metrics are NaN/inf", p, mapping.get(p), labels_path)

    progress = progress_bar(not (quiet or as_json))
    report, tables = microstructure_report(
        labels, voxel, axes=axis_list, expected=exp, transport=not no_transport,
        return_tables=True, progress=progress)
    tables["z_profile"] = z_profile_fractions(labels, voxel)
    tables["rev"] = rev_curve(labels, voxel, seed=seed, progress=progress)
    s2 = []
    for p in PHASES:
        if present[PHASE_CODES[p]] == 0:
            continue
        for a in axis_list:
            s2.append(two_point_correlation(labels, a, voxel, phase=p).assign(phase=p, axis=a))
    tables["s2"] = pd.concat(s2, ignore_index=True) if s2 else pd.DataFrame(columns=["r_vox", "r_um", "s2", "phase", "axis"])
    report["input"] = str(labels_path)
    report["label_mapping"] = mapping
    report["seed"] = seed

    from litomo.io.atomic import write_text_atomic

    tdir = out / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(tdir / "microstructure.json", json.dumps(to_jsonable(report), indent=2) + "\n")
    _write_csv(seed_table(report, sample=labels_path.stem), tdir / "metrics_table.csv")
    part = tables.get("particles")
    _write_csv(part if part is not None else pd.DataFrame(columns=["label"]), tdir / "particles.csv")
    for name in ("z_profile", "rev", "s2"):
        _write_csv(tables[name], tdir / f"{name}.csv")
    if not no_figures:
        fdir = out / "figures"
        fdir.mkdir(parents=True, exist_ok=True)
        _figures(fdir, labels, voxel, report, tables)
        from litomo.report.html import build_report

        build_report(out, kind="micro")
    if as_json:
        print_json(report)
    else:
        vf = report["volume_fraction"]
        typer.echo(f"volume fractions: pore {vf['pore']:.4f}, AM {vf['am']:.4f}, CBD {vf['cbd']:.4f}; "
                   f"TPB {report['tpb_density_um-2']:.4g} um^-2; particles {report['n_particles']}; "
                   f"written to {out}")

"""``litomo damage``: per-particle crack/damage quantification of cycled active material."""

from __future__ import annotations

from pathlib import Path

import typer

from litomo.cli._app import app
from litomo.cli._common import print_json, progress_bar, setup_logging
from litomo.errors import LitomoError


def _parse_bbox(text: str | None):
    if not text:
        return None
    try:
        parts = [tuple(float(v) for v in item.split(":")) for item in text.split(",")]
    except ValueError:
        raise LitomoError(f"--bbox-um: expected 'z0:z1,y0:y1,x0:x1' in um, got {text!r}") from None
    if len(parts) != 3 or any(len(p) != 2 for p in parts):
        raise LitomoError(f"--bbox-um: expected 'z0:z1,y0:y1,x0:x1' in um, got {text!r}")
    return tuple(parts)


def _save_figures(table, depth, params, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from litomo.io.atomic import atomic_path

    written = []

    def save(fig, stem: str) -> None:
        for ext in ("png", "svg"):
            path = fig_dir / f"{stem}.{ext}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(table["damage_index"], bins=30, color="0.4")
    for t, name in ((params.mild_threshold, "mild"), (params.severe_threshold, "severe")):
        ax.axvline(t, color="C3", ls="--", lw=1)
        ax.text(t, ax.get_ylim()[1] * 0.95, f" {name}", color="C3", va="top", fontsize=8)
    ax.set_xlabel("damage index D (-)")
    ax.set_ylabel("particles")
    save(fig, "damage_index_histogram")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    mid = (depth["z_start_um"] + depth["z_end_um"]) / 2
    width = float((depth["z_end_um"] - depth["z_start_um"]).iloc[0]) * 0.9
    bottom = 0
    for cls, colour in (("least", "C2"), ("mild", "C1"), ("severe", "C3")):
        ax.barh(mid, depth[f"n_{cls}"], height=width, left=bottom, color=colour, label=cls)
        bottom = bottom + depth[f"n_{cls}"]
    ax.invert_yaxis()
    ax.set_ylabel("depth z (um)")
    ax.set_xlabel("particles")
    ax.legend(frameon=False)
    save(fig, "damage_classes_vs_depth")
    return written


@app.command()
def damage(
    volume: Path = typer.Argument(..., help="Phase-label volume (0 pore, 1 AM, 2 CBD, or see --labels) or a greyscale volume (AM bright)."),
    voxel_size_um: float = typer.Option(..., "--voxel-size-um", help="Voxel edge length (um)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (tables/, figures/)."),
    labels: str = typer.Option(None, "--labels", help="Phase-label mapping, e.g. 'pore=0,am=85,cbd=170'. Implies a label volume."),
    kind: str = typer.Option("auto", "--kind", help="'labels', 'grey' or 'auto' (integer volumes with <= 16 values are labels)."),
    window_um: float = typer.Option(10.0, "--window-um", help="Height of the depth windows for class populations (um)."),
    mild: float = typer.Option(0.03, "--mild-threshold", help="Damage index at and above which a particle is 'mild'."),
    severe: float = typer.Option(0.6, "--severe-threshold", help="Damage index at and above which a particle is 'severe'."),
    k: int = typer.Option(3, "--k", help="Neighbours per particle in the network of severely damaged particles."),
    bbox_um: str = typer.Option(None, "--bbox-um", help="Region of the sphere-pack export, 'z0:z1,y0:y1,x0:x1' in um (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Crack/void fraction, crack surface density, edge density, detachment gap and a damage
    index per particle; classes least/mild/severe; depth profiles, the k-NN network of severely
    damaged particles and a sphere-pack (centres, radii in um) for finite-element models."""
    import numpy as np

    from litomo.damage import (
        DamageParams,
        close_cracks,
        damage_table,
        depth_profile,
        severe_network,
        sphere_pack,
    )
    from litomo.io import read_volume
    from litomo.io.atomic import write_csv_atomic
    from litomo.phases import parse_label_mapping, to_canonical
    from litomo.segment.particles import separate_particles

    setup_logging(verbose)
    if kind not in ("auto", "labels", "grey"):
        raise LitomoError(f"--kind must be 'auto', 'labels' or 'grey', got {kind!r}")
    params = DamageParams(mild_threshold=mild, severe_threshold=severe)
    bbox = _parse_bbox(bbox_um)
    vol = read_volume(volume, voxel_size_um=voxel_size_um)
    arr = vol.numpy()
    if kind == "auto":
        is_int = arr.dtype.kind in "iub" or bool(np.all(arr == np.round(arr)))
        kind = "labels" if labels or (is_int and np.unique(arr).size <= 16) else "grey"
    grey = None
    if kind == "labels":
        am = to_canonical(arr, parse_label_mapping(labels)) == 1
    else:
        from litomo.segment.threshold import otsu_mask

        grey = arr.astype(np.float32)
        am = otsu_mask(grey)
    if not am.any():
        raise LitomoError("no active material found in the volume")
    # separate on the crack-closed mask so a crack does not split its particle into fragments
    particles = separate_particles(close_cracks(am, params.closing_radius_vox), voxel_size_um=vol.voxel_size_um)
    particles[~am] = 0
    prog = progress_bar(not (quiet or json_out))
    table = damage_table(particles, vol.voxel_size_um, am_mask=am, grey=grey, params=params, progress=prog)
    depth = depth_profile(table, window_um=window_um, depth_um=vol.extent_um[0])
    network = severe_network(table, k=k)
    pack = sphere_pack(table, bbox)
    tables = out / "tables"
    for name, df in (("damage_particles", table), ("damage_depth", depth), ("damage_network", network),
                     ("sphere_pack", pack)):
        write_csv_atomic(tables / f"{name}.csv", df)
    figs = _save_figures(table, depth, params, out / "figures")
    counts = {c: int((table["damage_class"] == c).sum()) for c in ("least", "mild", "severe")}
    summary = {"n_particles": len(table), "class_counts": counts, "input_kind": kind,
               "mean_damage_index": float(table["damage_index"].mean()),
               "mean_crack_fraction": float(table["crack_fraction"].mean()),
               "network_edges": len(network), "tables": str(tables), "figures": [str(f) for f in figs]}
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"{len(table)} particles: {counts['least']} least, {counts['mild']} mild, {counts['severe']} severe "
                   f"damaged; tables in {tables}")

"""``litomo phantom operando``: write a synthetic operando XANES dataset with ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from litomo.cli._app import app
from litomo.cli._common import parse_factors, print_json, progress_bar, setup_logging
from litomo.errors import LitomoError

phantom_app = typer.Typer(
    help="Synthetic datasets with ground truth (for demos, tests and benchmarks).",
    no_args_is_help=True,
)
app.add_typer(phantom_app, name="phantom")


@phantom_app.command("operando")
def operando(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    size: int = typer.Option(192, "--size", min=16, help="Edge length of the raw cubic volume (voxels)."),
    states: int = typer.Option(4, "--states", min=1, help="Number of states; I is pristine, then delithiation."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed = bit-identical files)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (attenuation in 1/um) or uint16 (scaled counts; scale in truth/truth.json)."),
    voxel_size_um: float = typer.Option(0.125, "--voxel-size-um", min=1e-4, help="Raw voxel size (um); default puts D50 = 4.7 um over ~38 voxels."),
    bin_factor: str = typer.Option("7", "--bin", help="Bin factor written to the manifest (processing.bin): one integer or z,y,x such as 1,8,8."),
    snr: float = typer.Option(5.0, "--snr", min=0.0, help="AM edge jump / noise sigma per raw voxel (0 = no noise)."),
    energies: str = typer.Option("8330,8345,8430", "--energies", help="Imaging energies in eV, comma separated, increasing (3 = pre,edge,post); or a count such as 30 for an N-energy TXM-XANES scan across the edge."),
    final_li: float = typer.Option(0.45, "--final-li", help="Mean Li content x_Li of the last state."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    streamed: Optional[bool] = typer.Option(  # noqa: UP045 - typer needs Optional here
        None, "--streamed/--in-memory",
        help="Generate slab by slab with bounded memory (default: automatic above size 320), or all in memory."),
    json_out: bool = typer.Option(False, "--json", help="Print the truth summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Write a synthetic operando Ni K-edge dataset with its manifest and ground truth.

    Writes OUT/experiment.toml, OUT/<state>/{pre_edge,edge,post_edge}.tif, OUT/refs/*.csv and OUT/truth/ (true Li, labels and particle ids per state, transforms.json, truth.json).

    Attenuation comes from real Ni K-edge reference spectra; particles delithiate by spherical diffusion with core-shell fronts; pre-edge and edge volumes are misregistered (known rigid + smooth deformation) relative to post-edge.
    """
    if out.exists() and not out.is_dir():  # checked before the imports and minutes of generation
        raise LitomoError(f"--out {out} is a file; give a folder")
    from litomo.io.rundir import RunDir
    from litomo.phantom.writer import dataset_entries, write_operando_phantom

    setup_logging(verbose)
    try:
        energy_list = tuple(float(e) for e in energies.split(",") if e.strip())
        if len(energy_list) == 1 and energy_list[0] < 1000:  # a count: the N-energy scan (issue 16)
            from litomo.phantom.spectra import txm_energies

            energy_list = txm_energies(int(energy_list[0]))
    except ValueError:
        raise LitomoError(f"--energies: expected numbers in eV like 8330,8345,8430, got {energies!r}") from None
    if dtype not in ("float32", "uint16"):
        raise LitomoError(f"--dtype must be float32 or uint16, got {dtype!r}")
    # --overwrite replaces only a dataset litomo wrote there (the output-folder rules of RunDir)
    with RunDir.open(out, kind="phantom", mode="force" if overwrite else "new", flag="--out") as rd:
        for entry in dataset_entries(states):
            rd.output(entry)
        truth = write_operando_phantom(
            rd.root, size=size, n_states=states, seed=seed, dtype=dtype, voxel_size_um=voxel_size_um,
            bin_factor=parse_factors(bin_factor, "--bin"), overwrite=overwrite, streamed=streamed, snr=snr,
            energies_ev=energy_list, final_mean_li=final_li, progress=progress_bar(not (quiet or json_out)),
        )
        rd.complete({"kind": "phantom", "size": size, "states": states, "seed": seed})
    if json_out:
        print_json(truth)
    else:
        means = ", ".join(f"{s['name']}={s['mean_li']:.3f}" for s in truth["states"])
        f = truth["fractions"]
        typer.echo(f"wrote {out / 'experiment.toml'}: {size}^3 voxels x {len(truth['energies_ev'])} energies x "
                   f"{states} states; AM {f['am']:.3f}, CBD {f['cbd']:.3f}, pore {f['pore']:.3f}; "
                   f"D50 {truth['d50_um']:.2f} um; mean x_Li {means}")

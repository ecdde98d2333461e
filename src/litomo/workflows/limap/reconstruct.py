"""Stage ``reconstruct``: a state's projection series -> its energy volumes, on one geometry.

Runs only when the manifest has a ``[reconstruction]`` section; the states' image paths are
then projection series (any format :func:`litomo.io.projections.read_projections` reads). The
energies of a state are reconstructed with one geometry (:func:`reconstruct_state`: the
post-edge series aligned and centred, the others registered to it, one centre for all), so the
volumes share one voxel grid, and the volumes go to the ``read`` stage in place of files.
Without the section the stage is inactive (left out of the run), and ``read`` opens the files.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from litomo.manifest import Manifest, StateSpec
from litomo.workflows.limap.options import RunContext
from litomo.workflows.limap.stage import StateStage

log = logging.getLogger(__name__)


def reconstruction_config(manifest: Manifest) -> Any:
    """The manifest's ``[reconstruction]`` settings (a ``ReconstructionConfig``), or None."""
    from litomo.workflows.reconstruct import ReconstructionConfig

    if manifest.reconstruction is None:
        return None
    return ReconstructionConfig.from_manifest(dict(manifest.reconstruction), str(manifest.path))


def _read_checked(path: Any, energy_ev: float, angles: str | None) -> Any:
    from litomo.io.projections import check_series, read_projections

    return check_series(read_projections(path, fallback_angles=angles), expected_energy_ev=energy_ev)


def check_input_projections(manifest: Manifest, warn: list[str]) -> tuple[dict[str, tuple[int, ...]],
                                                                          dict[str, tuple[float, float, float]]]:
    """Read and check every projection series before anything is written.

    Returns the (estimated) volume shape and the voxel size of each state. The slice width
    depends on the rotation centre, which is found only when the state is reconstructed; the
    shape given is ``(rows, columns, columns) / bin``, used only to choose the registration
    binning. The voxel size is ``[sample] voxel_size_um``; a pixel size recorded in the files
    that disagrees with it (after binning) by more than 1 % is warned about.
    """
    cfg = reconstruction_config(manifest)
    shapes, voxels = {}, {}
    vs = tuple(float(v) for v in manifest.sample.voxel_size_um)
    for st in manifest.states:
        series = [_read_checked(p, e, cfg.angles) for p, e in zip(st.volumes, st.energies_ev, strict=True)]
        if len({s.shape for s in series}) != 1:
            from litomo.errors import InputFileError

            detail = ", ".join(f"{p.name} {s.shape}" for p, s in zip(st.volumes, series, strict=True))
            raise InputFileError(f"state {st.name!r}: the projection series differ in shape ({detail})")
        n_ang, rows, cols = series[0].shape
        shapes[st.name] = (rows // cfg.bin, cols // cfg.bin, cols // cfg.bin)
        voxels[st.name] = vs
        px = series[0].pixel_size_um
        if px is not None and abs(px * cfg.bin - vs[2]) > 0.01 * vs[2]:
            msg = (f"state {st.name}: the projections' pixel size {px:g} um x bin {cfg.bin} differs from "
                   f"[sample] voxel_size_um {vs[2]:g} um; the manifest's value is used")
            log.warning(msg)
            warn.append(msg)
    return shapes, voxels


@dataclass
class Reconstructed:
    """Output of :class:`ReconstructStage`: the state's volumes by role."""

    volumes: dict[str, np.ndarray]
    #: the shared rotation centre (detector columns of the binned detector), None when not run
    center_px: float
    #: per energy (eV as text): RMS of the per-projection shifts applied (px)
    shifts_rms_px: dict[str, float]
    warnings: list[str]


class ReconstructStage(StateStage):
    """Reconstruct a state's energies with one geometry (only with a ``[reconstruction]`` section)."""

    name = "reconstruct"
    output = Reconstructed

    def active(self, ctx: RunContext) -> bool:
        return ctx.manifest.reconstruction is not None

    def params(self, ctx: RunContext, state: StateSpec) -> dict[str, Any]:
        from pathlib import Path

        from litomo.workflows.limap.cache import file_sha256

        cfg = reconstruction_config(ctx.manifest)
        params = {"inputs": {str(v): ctx.checksums[str(v)] for v in state.volumes},
                  "energies_ev": list(state.energies_ev), "config": asdict(cfg)}
        if cfg.angles is not None and Path(cfg.angles).is_file():  # an edited angle file invalidates the volumes
            params["angles_sha256"] = file_sha256(cfg.angles)
        return params

    def run(self, ctx: RunContext, state: StateSpec) -> Reconstructed:
        from litomo.workflows.limap.read import roles_of
        from litomo.workflows.reconstruct import reconstruct_state

        cfg = reconstruction_config(ctx.manifest)
        series = {e: _read_checked(p, e, cfg.angles) for p, e in zip(state.volumes, state.energies_ev, strict=True)}

        def progress(done: int, total: int, desc: str) -> None:
            ctx.report(done, total, f"{state.name}: {desc}")

        rec = reconstruct_state(series, cfg, progress=progress)
        volumes = {role: np.asarray(rec.volumes[e], np.float32)
                   for role, e in zip(roles_of(state), state.energies_ev, strict=True)}
        rms = {f"{e:g}": float(np.sqrt(np.mean(np.square(sh)))) for e, sh in rec.shifts_px.items()}
        msgs = []
        if rec.reference is not None and rec.reference.center is not None and not rec.reference.center.agree:
            msgs.append(f"state {state.name}: the automatic rotation centres disagree "
                        f"({rec.reference.center.to_json()}); check figures or set reconstruction.center_px")
        return Reconstructed(volumes, float(rec.center_px), rms, msgs)

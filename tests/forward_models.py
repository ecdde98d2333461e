"""Forward models of operando Ni K-edge XANES tomography, independent of litomo (issue 16).

Shared by ``tests/test_limap_robust.py`` and ``benchmarks/bench_robust.py``. Nothing here
imports litomo: the geometry, Li fields, spectra, background laws and noise are written from
the physics, not from litomo.phantom or the pipeline's model, so a case can break an assumption
the pipeline makes (and the suite then shows it). Each case writes float32 TIFF attenuation
volumes (1/um), two reference spectra (CSV) and an experiment manifest (TOML); the pipeline
runs on them through ``litomo run`` and :func:`score_run` reads its outputs.

Model of one voxel at energy E (phases by volume fraction, from 2x2x2 sub-samples, so surfaces
are partial-volume)::

    mu(E) = f_am * (J * n(E, x) + B * b(E)) + f_cbd * mu_cbd(E) + f_pore * mu_pore(E)

- ``n(E, x)``: normalised spectrum of NMC with Li content ``x``, the two end-member spectra
  mixed linearly (two-phase mixture); the end members are the bundled pyxas spectra or a
  modified pair (edge shifted, white line scaled) written as the case's references;
- ``b(E)``: non-resonant background of the active material: none, a power law ``(E/E0)^-2.8``,
  or tabulated: the Chantler total attenuation of NMC811 without Ni's K shell (xraydb's
  ``mu_chantler``; litomo's background law uses the Elam tables, another source);
- noise: Gaussian on mu, or Poisson on transmitted counts: each z slice is projected (parallel
  beam, skimage ``radon``), counts ``I ~ Poisson(I0 exp(-p))``, ``-log(I/I0)`` reconstructed by
  filtered back-projection (``iradon``);
- misregistration: the sample is displaced by a sub-voxel-to-voxel translation at the pre-edge
  and edge energies (exact: the geometry is re-evaluated, not resampled); post-edge is the
  reference and the truth's grid.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

DATA = Path(__file__).resolve().parents[1] / "src" / "litomo" / "xanes" / "data"
ENERGIES_EV = (8330.0, 8345.0, 8430.0)
E0_EV = 8333.0
J_PER_UM = 0.064  # Ni K-edge jump of NMC811 at 4.7 g/cm3
B_PER_UM = 0.047  # non-resonant attenuation of NMC811 just below the edge
CBD_PER_UM = 0.0012
PORE_PER_UM = 0.0008
LI_PRISTINE, LI_CHARGED = 1.0, 0.38
SUB = 2  # sub-samples per voxel edge (partial-volume surfaces)


@dataclass
class Case:
    """One forward-model case; see :data:`CASES`."""

    name: str
    fields: tuple[str, ...]  # Li field of each state (see li_field)
    size: int = 98
    particles: str = "mixed"  # "mixed" (D 3-5 um, some touching) or "small_touching"
    spectra: str = "bundled"  # or "shifted"
    background: str = "power"  # "none", "power", "tabulated"
    noise: str = "gauss"  # or "poisson"
    snr: float = 5.0  # edge jump / sigma (gauss)
    flat_counts: float = 2.0e4  # I0 per detector pixel (poisson)
    shift_vox: float = 0.8  # largest misregistration of pre/edge (voxels)
    cbd: bool = True
    voxel_size_um: float = 0.125
    seed: int = 0
    manifest_extra: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {c.name: c for c in (
    # (a) end members other than the bundled ones (edge +1.5 eV, white line x0.85)
    Case("shifted_spectra", ("front_charge", "uniform"), spectra="shifted", seed=1),
    # (b) no background / tabulated background (the manifest sets its own law, see the bench)
    Case("no_background", ("front_charge", "plateau"), background="none", seed=2),
    Case("tabulated_background", ("front_charge", "plateau"), background="tabulated", seed=3),
    # (c) plateaus near 0.6 / 0.9, fronts both ways, uniform particles
    Case("plateaus", ("plateau", "plateau_high"), seed=4),
    Case("fronts", ("front_charge", "front_discharge"), seed=5),
    Case("uniform", ("uniform", "pristine"), seed=6),
    # (d) Poisson noise on counts (FBP of noisy projections)
    Case("poisson", ("front_charge", "plateau"), noise="poisson", seed=7),
    # (e) particles smaller than two bins, touching particles
    Case("small_touching", ("front_charge", "uniform"), particles="small_touching", seed=8),
    # (f) partial-volume surfaces without misregistration or CBD (surface voxels only)
    Case("partial_volume", ("front_discharge", "plateau"), shift_vox=0.0, cbd=False, seed=9),
)}


# --------------------------------------------------------------------------- spectra

def _read_ref(name: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in csv.reader((DATA / name).read_text().splitlines()) if r and not r[0].startswith("#")]
    a = np.array([[float(v) for v in r] for r in rows[1:]])
    return a[:, 0], a[:, 1]


def end_members(kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Normalised end-member spectra ``{"pristine": (E, mu), "charged": (E, mu)}``."""
    p = _read_ref("ni_kedge_NiO.csv")
    c = _read_ref("ni_kedge_LiNiO2.csv")
    if kind == "bundled":
        return {"pristine": p, "charged": c}
    if kind != "shifted":
        raise ValueError(kind)
    out = {}
    for key, (e, mu), de in (("pristine", p, -1.0), ("charged", c, 1.5)):
        # edge moved by de and the white line (normalised mu above 1) scaled by 0.85
        m = np.interp(e - de, e, mu)
        m = np.where(m > 1.0, 1.0 + 0.85 * (m - 1.0), m)
        out[key] = (e, m)
    return out


def background_shape(kind: str, energies_ev: np.ndarray) -> np.ndarray:
    """Non-resonant AM background relative to its value at E0 (``b(E0) = 1``)."""
    e = np.asarray(energies_ev, float)
    if kind == "none":
        return np.zeros_like(e)
    if kind == "power":
        return (e / E0_EV) ** -2.8
    if kind == "tabulated":
        import xraydb

        # LiNi0.8Mn0.1Co0.1O2 by mass, Chantler total attenuation; Ni's K shell excluded by
        # extending Ni's sub-edge (L-shell) absorption as a power law fitted below the edge
        masses = {"Li": 1.0, "Ni": 0.8, "Mn": 0.1, "Co": 0.1, "O": 2.0}
        w = {k: v * xraydb.atomic_mass(k) for k, v in masses.items()}
        tot = sum(w.values())

        def mu(el: str, en: np.ndarray) -> np.ndarray:
            return np.asarray(xraydb.mu_chantler(el, en), float)

        below = np.array([7950.0, 8000.0, 8050.0, 8100.0, 8150.0])  # clear of the near-edge rise
        slope, icpt = np.polyfit(np.log(below), np.log(mu("Ni", below)), 1)
        bg = sum(w[k] / tot * mu(k, e) for k in ("Li", "Mn", "Co", "O"))
        bg = bg + w["Ni"] / tot * np.exp(icpt + slope * np.log(e))
        ref = sum(w[k] / tot * mu(k, np.array([E0_EV])) for k in ("Li", "Mn", "Co", "O"))
        ref = ref + w["Ni"] / tot * np.exp(icpt + slope * np.log(E0_EV))
        return bg / ref
    raise ValueError(kind)


# --------------------------------------------------------------------------- geometry

def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    return np.array([[a*a+b*b-c*c-d*d, 2*(b*c-a*d), 2*(b*d+a*c)],
                     [2*(b*c+a*d), a*a-b*b+c*c-d*d, 2*(c*d-a*b)],
                     [2*(b*d-a*c), 2*(c*d+a*b), a*a-b*b-c*c+d*d]])


def particles(case: Case) -> list[dict[str, Any]]:
    """Ellipsoidal particles (centre, semi-axes in voxels, rotation, per-particle random numbers)."""
    rng = np.random.default_rng([case.seed, 16])
    n = case.size
    if case.particles == "mixed":
        radii = lambda: rng.uniform(12, 20)  # noqa: E731 - D 3-5 um at 0.125 um
        target, touch = 0.45, 0.3
    elif case.particles == "small_touching":
        # half of the particles below two 7-voxel bins across (D < 14 voxels)
        radii = lambda: rng.choice([rng.uniform(4, 6.5), rng.uniform(10, 16)])  # noqa: E731
        target, touch = 0.40, 0.6
    else:
        raise ValueError(case.particles)
    out: list[dict[str, Any]] = []
    vol = 0.0
    for _ in range(5000):
        if vol > target * n**3:
            break
        r = radii()
        axes = r * rng.uniform(0.75, 1.25, 3)
        if out and rng.random() < touch:  # touching a previous particle (necks of ~1 voxel)
            o = out[rng.integers(len(out))]
            d = rng.normal(size=3)
            c = o["c"] + d / np.linalg.norm(d) * (o["axes"].mean() + axes.mean()) * 0.95
        else:
            c = rng.uniform(-0.1 * n, 1.1 * n, 3)
        if any(np.linalg.norm(c - o["c"]) < 0.9 * (o["axes"].min() + axes.min()) for o in out):
            continue
        out.append({"c": c, "axes": axes, "rot": _rotation(rng), "u": rng.random(4)})
        vol += 4 / 3 * np.pi * np.prod(axes) * _inside_fraction(c, axes.max(), n)
    return out


def _inside_fraction(c: np.ndarray, r: float, n: int) -> float:
    return float(np.prod([np.clip((min(n, ci + r) - max(0, ci - r)) / (2 * r), 0, 1) for ci in c]))


def li_field(kind: str, depth: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x_Li of sub-samples at normalised depth ``depth`` (0 surface, 1 centre) of a particle.

    ``u``: the particle's four uniform random numbers.
    """
    if kind == "pristine":
        return np.full(depth.shape, 1.0)
    if kind == "uniform":  # one value per particle over the whole range
        return np.full(depth.shape, 0.40 + 0.58 * u[0])
    if kind in ("plateau", "plateau_high"):
        # plateaus 0.03-0.04 either side of a class threshold
        levels = (0.57, 0.64, 0.86, 0.94) if kind == "plateau" else (0.86, 0.87, 0.93, 0.94)
        return np.full(depth.shape, levels[int(u[0] * 4) % 4])
    w = 0.15 + 0.5 * u[1]  # front depth (fraction of the radius)
    if kind == "front_charge":  # Li-poor shell, Li-rich core, sharp front
        return np.where(depth < w, 0.42 + 0.1 * u[2], 0.92 + 0.07 * u[3])
    if kind == "front_discharge":  # Li-rich shell, Li-poor core
        return np.where(depth < w, 0.92 + 0.07 * u[2], 0.45 + 0.1 * u[3])
    raise ValueError(kind)


def render(case: Case, field_kind: str, shift_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AM fraction, AM-weighted Li (``sum f x``) and CBD fraction per voxel, sample shifted by ``shift_vox``."""
    n, s = case.size, SUB
    occ = np.zeros((n * s,) * 3, np.float32)
    lix = np.zeros((n * s,) * 3, np.float32)
    for p in particles(case):
        c = p["c"] + shift_vox
        r = p["axes"].max() + 1
        lo = np.maximum(np.floor((c - r) * s).astype(int), 0)
        hi = np.minimum(np.ceil((c + r) * s).astype(int), n * s)
        if np.any(hi <= lo):
            continue
        g = np.meshgrid(*[(np.arange(a, b) + 0.5) / s for a, b in zip(lo, hi, strict=True)], indexing="ij")
        d = np.stack([gi - ci for gi, ci in zip(g, c, strict=True)], -1) @ p["rot"]
        rho = np.sqrt(((d / p["axes"]) ** 2).sum(-1))
        inside = (rho <= 1.0) & (occ[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == 0)
        sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        occ[sl] = np.where(inside, 1.0, occ[sl])
        lix[sl] = np.where(inside, li_field(field_kind, 1.0 - rho, p["u"]), lix[sl])

    def block(a: np.ndarray) -> np.ndarray:
        return a.reshape(n, s, n, s, n, s).mean(axis=(1, 3, 5))

    f_am, f_li = block(occ), block(occ * lix)
    f_cbd = np.zeros_like(f_am)
    if case.cbd:
        rng = np.random.default_rng([case.seed, 17])
        blob = ndimage.gaussian_filter(rng.random((n,) * 3), 2.0)
        near = ndimage.distance_transform_edt(f_am < 0.5) < 4
        cbd = (blob > np.quantile(blob, 0.6)) & near
        cbd = ndimage.shift(cbd.astype(np.float32), shift_vox, order=1, mode="nearest")
        f_cbd = np.clip(cbd, 0, 1) * (1.0 - f_am)
    return f_am, f_li, f_cbd


# --------------------------------------------------------------------------- attenuation and noise

def attenuation(case: Case, energy_ev: float, f_am: np.ndarray, f_li: np.ndarray, f_cbd: np.ndarray,
                spectra: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """mu (1/um) at ``energy_ev`` of the voxels, before noise."""
    n_p = float(np.interp(energy_ev, *spectra["pristine"]))
    n_c = float(np.interp(energy_ev, *spectra["charged"]))
    b = float(background_shape(case.background, np.array([energy_ev]))[0])
    # n(E, x) linear in x: sum over the voxel of f * n = f n_c + (sum f x - f x_c) (n_p - n_c) / (x_p - x_c)
    nx = f_am * n_c + (f_li - f_am * LI_CHARGED) * (n_p - n_c) / (LI_PRISTINE - LI_CHARGED)
    f_pore = 1.0 - f_am - f_cbd
    e = energy_ev / E0_EV
    return (J_PER_UM * nx + B_PER_UM * b * f_am + CBD_PER_UM * e**-3 * f_cbd
            + PORE_PER_UM * e**-3 * f_pore).astype(np.float32)


def add_noise(case: Case, mu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise on mu, or Poisson noise on projected counts + filtered back-projection."""
    if case.noise == "gauss":
        return (mu + rng.normal(0, J_PER_UM / case.snr, mu.shape)).astype(np.float32)
    from skimage.transform import iradon, radon

    n = mu.shape[1]
    theta = np.linspace(0.0, 180.0, int(np.ceil(np.pi / 2 * n)), endpoint=False)
    out = np.empty_like(mu)
    for z in range(mu.shape[0]):
        p = radon(mu[z].astype(float) * case.voxel_size_um, theta, circle=False)  # line integrals
        counts = rng.poisson(case.flat_counts * np.exp(-p))
        p_noisy = -np.log(np.maximum(counts, 1) / case.flat_counts)
        out[z] = iradon(p_noisy, theta, output_size=n, circle=False, filter_name="ramp") / case.voxel_size_um
    return out


# --------------------------------------------------------------------------- writing a case

def _write_spectrum(path: Path, e: np.ndarray, mu: np.ndarray) -> None:
    lines = ["energy_ev,mu"] + [f"{a:.2f},{b:.6f}" for a, b in zip(e, mu, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def write_case(case: Case, out: Path, *, processing: dict[str, Any] | None = None,
               sample: dict[str, Any] | None = None) -> Path:
    """Write the volumes, references, truth and manifest of ``case`` under ``out``; returns the manifest.

    ``processing``/``sample``: extra manifest fields (TOML values given as Python values).
    """
    import tifffile

    out.mkdir(parents=True, exist_ok=True)
    spectra = end_members(case.spectra)
    for key, (e, mu) in spectra.items():
        _write_spectrum(out / f"ref_{key}.csv", e, mu)
    rng = np.random.default_rng([case.seed, 18])
    shifts = {"pre_edge": rng.uniform(-1, 1, 3) * case.shift_vox,
              "edge": rng.uniform(-1, 1, 3) * case.shift_vox, "post_edge": np.zeros(3)}
    states = []
    for k, kind in enumerate(case.fields):
        name = f"S{k + 1}"
        (out / name).mkdir(exist_ok=True)
        for role, energy in zip(("pre_edge", "edge", "post_edge"), ENERGIES_EV, strict=True):
            f_am, f_li, f_cbd = render(case, kind, shifts[role])
            mu = add_noise(case, attenuation(case, energy, f_am, f_li, f_cbd, spectra), rng)
            tifffile.imwrite(out / name / f"{role}.tif", mu)
        np.save(out / name / "truth_am.npy", f_am.astype(np.float32))
        np.save(out / name / "truth_li.npy", f_li.astype(np.float32))
        states.append(name)
    (out / "truth.json").write_text(json.dumps({"case": case.name, "fields": list(case.fields),
                                                "voxel_size_um": case.voxel_size_um}))
    return write_manifest(case, out, states, processing=processing, sample=sample)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def write_manifest(case: Case, out: Path, states: list[str], *, processing: dict[str, Any] | None = None,
                   sample: dict[str, Any] | None = None, name: str = "experiment.toml") -> Path:
    """The experiment manifest of a written case (``processing``: [processing] fields to set)."""
    lines = ["[sample]", f'name = "{case.name}"', f"voxel_size_um = {case.voxel_size_um}"]
    lines += [f"{k} = {_toml(v)}" for k, v in (sample or {}).items()]
    lines += ["", "[xanes]", f"pre_edge_ev = {ENERGIES_EV[0]}", f"edge_ev = {ENERGIES_EV[1]}",
              f"post_edge_ev = {ENERGIES_EV[2]}", 'reference_pristine = "ref_pristine.csv"',
              'reference_charged = "ref_charged.csv"', f"li_pristine = {LI_PRISTINE}",
              f"li_charged = {LI_CHARGED}", "", "[processing]"]
    lines += [f"{k} = {_toml(v)}" for k, v in {**case.manifest_extra, **(processing or {})}.items()]
    for s in states:
        lines += ["", "[[states]]", f'name = "{s}"', f'pre_edge = "{s}/pre_edge.tif"',
                  f'edge = "{s}/edge.tif"', f'post_edge = "{s}/post_edge.tif"']
    path = out / name
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- scoring

def _classes(x: np.ndarray, w: np.ndarray | None = None, poor_max: float = 0.6, rich_min: float = 0.9) -> np.ndarray:
    w = np.ones(x.shape) if w is None else w
    c = np.array([w[x <= poor_max].sum(), w[(x > poor_max) & (x < rich_min)].sum(), w[x >= rich_min].sum()])
    return c / w.sum()


def truth_binned(f_am: np.ndarray, f_li: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """AM-weighted mean true x_Li per bin (NaN where the bin is less than half AM) and bin AM fractions."""
    m = tuple(s // factor * factor for s in f_am.shape)
    nb = tuple(s // factor for s in m)

    def block(a: np.ndarray) -> np.ndarray:
        a = a[: m[0], : m[1], : m[2]]
        return a.reshape(nb[0], factor, nb[1], factor, nb[2], factor).mean(axis=(1, 3, 5))

    fa, fl = block(f_am), block(f_li)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(fa >= 0.5, fl / fa, np.nan), fa


def score_state(li_map: np.ndarray, f_am: np.ndarray, f_li: np.ndarray, factor: int,
                total_li_run_um3: float, voxel_size_um: float,
                run_fractions: np.ndarray | None = None) -> dict[str, float]:
    """x_Li RMSE and bias, class fractions (pp), Wasserstein distance, total Li (%) of one state.

    Compared over the bins mapped by the run that are at least half AM in the truth.
    ``run_fractions``: the (poor, moderate, rich) fractions the run *reports* (its states
    table: fractions of the mapped AM volume); scored as ``class_pp`` against the true classes
    of the run's mapped bins (any AM), weighted by their true AM fraction. Without it,
    ``class_pp`` scores the classes of the map's bins; ``map_class_pp`` always does.
    """
    from scipy.stats import wasserstein_distance

    tb, _ = truth_binned(f_am, f_li, factor)
    sh = tuple(min(a, b) for a, b in zip(tb.shape, li_map.shape, strict=True))
    tb, lm = tb[: sh[0], : sh[1], : sh[2]], li_map[: sh[0], : sh[1], : sh[2]]
    both = np.isfinite(tb) & np.isfinite(lm)
    err = lm[both] - tb[both]
    map_err = 100 * (_classes(lm[both]) - _classes(tb[both]))
    cls_err = map_err
    if run_fractions is not None:
        # truth of every mapped bin with any AM (the run reports fractions of all its mapped bins)
        t_any = _truth_any_am(f_am, f_li, factor)[: sh[0], : sh[1], : sh[2]]
        mapped = np.isfinite(lm) & np.isfinite(t_any)
        fa = truth_binned(f_am, f_li, factor)[1][: sh[0], : sh[1], : sh[2]]
        cls_err = 100 * (np.asarray(run_fractions, float) - _classes(t_any[mapped], fa[mapped]))
    m = tuple(s // factor * factor for s in f_am.shape)
    total = float(f_li[: m[0], : m[1], : m[2]].sum(dtype=np.float64) * voxel_size_um**3)
    names = ("poor", "moderate", "rich")
    return {"rmse": float(np.sqrt(np.mean(err**2))), "bias": float(np.mean(err)),
            "n_bins": int(both.sum()),
            "class_pp": {k: float(v) for k, v in zip(names, cls_err, strict=True)},
            "max_class_pp": float(np.max(np.abs(cls_err))),
            "map_class_pp": {k: float(v) for k, v in zip(names, map_err, strict=True)},
            "max_map_class_pp": float(np.max(np.abs(map_err))),
            "wasserstein": float(wasserstein_distance(lm[both], tb[both])),
            "total_li_pct": 100 * (total_li_run_um3 - total) / total}


def _truth_any_am(f_am: np.ndarray, f_li: np.ndarray, factor: int) -> np.ndarray:
    """AM-weighted mean true x_Li per bin wherever the bin holds any AM."""
    m = tuple(s // factor * factor for s in f_am.shape)
    nb = tuple(s // factor for s in m)
    fa, fl = (a[: m[0], : m[1], : m[2]].reshape(nb[0], factor, nb[1], factor, nb[2], factor).sum(axis=(1, 3, 5))
              for a in (f_am, f_li))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(fa > 0, fl / fa, np.nan)


def score_run(run_dir: Path, case_dir: Path) -> dict[str, Any]:
    """Score every state of a ``litomo run`` output (read from its files) against the case's truth."""
    import pandas as pd
    import zarr

    run = json.loads((run_dir / "run.json").read_text())
    factor = int(np.broadcast_to(run["parameters"]["bin"], 3)[0])
    vs = json.loads((case_dir / "truth.json").read_text())["voxel_size_um"]
    states = pd.read_csv(run_dir / "tables" / "states.csv")
    out: dict[str, Any] = {}
    for row in states.itertuples():
        name = str(row.state)
        grp = zarr.open_group(str(run_dir / "volumes" / name / "li.ome.zarr"), mode="r")
        li_map = np.asarray(grp["0"][...], dtype=np.float64)
        out[name] = score_state(li_map, np.load(case_dir / name / "truth_am.npy"),
                                np.load(case_dir / name / "truth_li.npy"), factor,
                                float(row.total_li_um3), vs,
                                run_fractions=np.array([row.frac_li_poor, row.frac_li_moderate, row.frac_li_rich]))
    worst = {"rmse": max(v["rmse"] for v in out.values()),
             "max_class_pp": max(v["max_class_pp"] for v in out.values()),
             "total_li_pct": max(abs(v["total_li_pct"]) for v in out.values()),
             "wasserstein": max(v["wasserstein"] for v in out.values())}
    return {"states": out, "worst": worst}

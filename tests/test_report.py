"""Tests of litomo.report: figures, report.html (Li-mapping and microstructure runs, also in a
headless Chromium), litomo view.

The run directories are synthetic but laid out exactly like the pipeline's: small Li maps of
spherical particles whose Li content falls from state to state, and tables computed from them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from litomo.report import figures as F

STATES = ["I", "II", "III", "IV"]
LABELS = ["pristine", "3.9 V", "4.1 V", "4.3 V"]
MEAN_LI = [0.97, 0.80, 0.66, 0.55]
VOXEL_UM = (0.2, 0.15, 0.15)
SHAPE = (16, 24, 24)


def _particles(shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for k in range(1, 7):
        c = rng.uniform([3, 4, 4], [shape[0] - 3, shape[1] - 4, shape[2] - 4])
        r = rng.uniform(2.5, 4.5)
        inside = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        labels[inside & (labels == 0)] = k
    return labels


def _classes(x: np.ndarray) -> tuple[float, float, float]:
    x = x[np.isfinite(x)]
    rich, poor = np.mean(x >= 0.9), np.mean(x <= 0.6)
    return float(rich), float(1 - rich - poor), float(poor)


def make_run_dir(out: Path, *, with_volumes: bool = True, bad_pair: bool = True) -> dict:
    """A Li-mapping run directory with realistic synthetic content; returns the truth used."""
    from scipy import ndimage as ndi

    from litomo.io import write_ome_zarr
    from litomo.volume import Volume
    from litomo.workflows.limap.context import state_context

    rng = np.random.default_rng(1)
    labels = _particles(SHAPE)
    # one internal pore (for the "Li next to internal voids" figure): the centre voxel of the
    # first particle that surrounds its centre on all sides
    for c in ndi.center_of_mass(labels > 0, labels, range(1, labels.max() + 1)):
        z, y, x_ = np.rint(c).astype(int)
        if np.all(labels[z - 1:z + 2, y - 1:y + 2, x_ - 1:x_ + 2] == labels[z, y, x_]):
            labels[z, y, x_] = 0
            break
    am = labels > 0
    depth_vox = ndi.distance_transform_edt(am)
    vvol = float(np.prod(VOXEL_UM))
    rows, hist, zp, parts, cs, reg, evo, match, ctx = [], [], [], [], [], [], [], [], []
    bins = np.linspace(0, 1.2, 25)
    for k, (s, lab, m) in enumerate(zip(STATES, LABELS, MEAN_LI, strict=True)):
        # delithiation starts at the particle surface: the shell is poorer than the core
        x = m + 0.06 * (depth_vox - depth_vox[am].mean()) / depth_vox[am].std() + rng.normal(0, 0.03, SHAPE)
        x = np.where(am, x, np.nan).astype(np.float32)
        if with_volumes:
            vdir = out / "volumes" / s
            write_ome_zarr(vdir / "li.ome.zarr", Volume(x, VOXEL_UM, {"name": "li"}))
            write_ome_zarr(vdir / "labels.ome.zarr", Volume(labels, VOXEL_UM, {"name": "particles"}))
        # binder on the particles' faces in the upper half of the volume (the CBD-contact figure)
        phases = np.where(am, 1, 0)
        phases[~am & ndi.binary_dilation(am) & (np.indices(SHAPE)[0] < SHAPE[0] // 2)] = 2
        ctx.append(state_context(s, x, am.astype(float), labels, VOXEL_UM, poor_max=0.6, rich_min=0.9, bins=bins,
                                 phases=phases, cbd_source="sample.labels"))
        if with_volumes:
            write_ome_zarr(vdir / "li_projection.ome.zarr", Volume(ctx[-1].map_2d[None], VOXEL_UM))
        xa = x[am]
        rich, mod, poor = _classes(x)
        rows.append({"state": s, "label": lab, "mean_li": xa.mean(), "std_li": xa.std(),
                     "frac_li_rich": rich, "frac_li_moderate": mod, "frac_li_poor": poor,
                     "total_li_um3": xa.sum() * vvol, "n_particles": int(labels.max()),
                     "expected_li": [1.0, 0.8, None, None][k],
                     "li_error_vs_expected": [xa.mean() - 1.0, xa.mean() - 0.8, None, None][k],
                     "clipped_fraction": 0.0, "jump_threshold": 0.1})
        counts, edges = np.histogram(xa, bins)
        hist.append(pd.DataFrame({"state": s, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts,
                                  "density": counts / counts.sum() / np.diff(edges)}))
        for z in range(SHAPE[0]):
            sl = x[z]
            fin = sl[np.isfinite(sl)]
            r_, m_, p_ = _classes(sl) if fin.size else (np.nan,) * 3
            zp.append({"state": s, "z_index": z, "z_um": (z + 0.5) * VOXEL_UM[0],
                       "mean_li": fin.mean() if fin.size else np.nan, "std_li": fin.std() if fin.size else np.nan,
                       "frac_li_rich": r_, "frac_li_moderate": m_, "frac_li_poor": p_,
                       "am_fraction": am[z].mean()})
        for p in range(1, labels.max() + 1):
            sel = labels == p
            if not sel.any():
                continue
            zc, yc, xc = (np.argwhere(sel).mean(0) + 0.5) * VOXEL_UM
            vol = sel.sum() * vvol
            parts.append({"state": s, "particle": p, "volume_um3": vol,
                          "eq_diameter_um": (6 * vol / np.pi) ** (1 / 3), "centroid_z_um": zc,
                          "centroid_y_um": yc, "centroid_x_um": xc, "depth_um": zc,
                          "mean_li": x[sel].mean(), "std_li": x[sel].std(),
                          "li_rich_fraction": float((x[sel] >= 0.9).mean()), "surface_activity": 0.5,
                          "touches_boundary": p == 1})
            evo.append({"particle": p, "state": s, "mean_li": x[sel].mean(),
                        "delta_li_vs_first": np.nan})
        for d in range(1, 4):
            sel = am & (np.rint(depth_vox) == d)
            cs.append({"state": s, "distance_um": d * VOXEL_UM[1], "mean_li": x[sel].mean(),
                       "n_voxels": int(sel.sum())})
        for moving in ("pre_edge", "edge"):
            before = 0.55 + 0.05 * k
            after = before - 0.02 if (bad_pair and s == "III" and moving == "edge") else 0.93 + 0.01 * k
            reg.append({"state": s, "moving": moving, "fixed": "post_edge", "mode": "rigid+bspline",
                        "ncc_before": before, "ncc_after": after, "translation_z_vox": 0.3,
                        "translation_y_vox": -1.2, "translation_x_vox": 0.8, "rotation_deg": 0.1,
                        "elapsed_s": 2.5})
        if k:
            match.append({"state": s, "matched_fraction": 1.0, "n_matched": 6, "n_appeared": 0,
                          "n_vanished": 0, "n_moved": 0})
    tables = {"states": pd.DataFrame(rows), "histograms": pd.concat(hist), "z_profile": pd.DataFrame(zp),
              "particles": pd.DataFrame(parts), "core_shell": pd.DataFrame(cs),
              "registration": pd.DataFrame(reg), "evolution": pd.DataFrame(evo),
              "matching": pd.DataFrame(match),
              **{n: pd.concat([getattr(c, n) for c in ctx]) for n in ("li_context", "li_projection_hist")}}
    tdir = out / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(tdir / f"{name}.csv", index=False)
    run = {"litomo_version": "0.1.0", "created": "2026-11-22T00:00:00+00:00",
           "command": "litomo run exp.toml --out run", "manifest": "/data/exp.toml",
           "parameters": {"bin": 4, "register": True, "li_poor_max": 0.6, "li_rich_min": 0.9,
                          "energies_ev": [8320.0, 8345.0, 8400.0]},
           "inputs": {"/data/I_pre.tif": "a" * 64, "/data/I_edge.tif": "b" * 64},
           "versions": {"python": "3.12.0", "numpy": "2.1.0"},
           "timings_s": {"state-I": 12.5, "track": 3.0, "total": 60.2},
           "warnings": ["state III: 2.0% of AM voxels had x_Li outside [0, 1.2] and were clipped"],
           "states": STATES, "voxel_size_um": list(VOXEL_UM),
           "energy_advice": {"best_edge_ev": 8345.0, "ratio": 1.1}}
    (out / "run.json").write_text(json.dumps(run))
    return {"tables": tables, "run": run}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    return out, make_run_dir(out)


@pytest.fixture(scope="module")
def limap_report(run_dir) -> Path:
    """``report.html`` of the synthetic run, built once (~9 s of CPU) for the checks of its
    content and for the browser check."""
    from litomo.report.html import build_report

    return build_report(run_dir[0])


def _n_bars(ax) -> int:
    return sum(len(c) for c in ax.containers)


# --------------------------------------------------------------------------- figures


def test_li_orthoslices_axes_nan_grey_and_colourbar_label(run_dir):
    _, truth = run_dir
    rng = np.random.default_rng(0)
    maps = {s: np.where(rng.random((6, 8, 10)) > 0.3, m, np.nan).astype(np.float32)
            for s, m in zip(STATES[:2], MEAN_LI[:2], strict=True)}
    fig = F.li_orthoslices(maps, (0.5, 0.25, 0.25))
    assert len(fig.axes) == 2 * 3 + 1
    cbar_ax = fig.axes[-1]
    assert F.LI_LABEL in (cbar_ax.get_ylabel() + cbar_ax.get_xlabel())
    im = fig.axes[0].images[0]
    assert im.get_array().shape == (8, 10)
    # NaN is drawn grey, not a colour of the map
    bad = im.cmap.get_bad()
    assert bad[0] == pytest.approx(bad[1]) == pytest.approx(bad[2])
    # extents are physical: xz plane is 10 x 0.25 um wide and 6 x 0.5 um deep
    assert fig.axes[1].images[0].get_extent() == pytest.approx([0, 2.5, 3.0, 0])
    # a scale bar is present on every image axis
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
    assert all(any(isinstance(a, AnchoredSizeBar) for a in ax.artists) for ax in fig.axes[:6])


def test_class_fraction_bars_stack_to_100(run_dir):
    _, truth = run_dir
    states = truth["tables"]["states"]
    fig = F.class_fraction_bars(states)
    ax = fig.axes[0]
    assert len(ax.containers) == 3 and _n_bars(ax) == 3 * len(STATES)
    tops = np.zeros(len(STATES))
    for c in ax.containers:
        tops = np.maximum(tops, [p.get_y() + p.get_height() for p in c])
    assert tops == pytest.approx(100.0, abs=1e-6)
    rich = [p.get_height() for p in ax.containers[0]]
    assert rich == pytest.approx(100 * states["frac_li_rich"].to_numpy())


def test_histograms_one_line_per_state_with_shared_bins(run_dir):
    _, truth = run_dir
    fig = F.li_histograms(truth["tables"]["histograms"])
    ax = fig.axes[0]
    assert len(ax.lines) == len(STATES)
    # the first state's mode sits near its mean Li
    x, y = ax.lines[0].get_data()
    assert abs(x[np.argmax(y)] - MEAN_LI[0]) < 0.1
    assert [ln.get_label() for ln in ax.lines] == STATES


def test_z_profiles_three_panels(run_dir):
    _, truth = run_dir
    fig = F.z_profiles(truth["tables"]["z_profile"])
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.lines) == len(STATES)
    x, _ = fig.axes[0].lines[0].get_data()
    assert x.min() == pytest.approx(0.5 * VOXEL_UM[0])
    assert "depth" in fig.axes[0].get_xlabel()


def test_core_shell_and_evolution_lines(run_dir):
    _, truth = run_dir
    fig = F.core_shell_profiles(truth["tables"]["core_shell"])
    assert len(fig.axes[0].lines) == len(STATES)
    evo = truth["tables"]["evolution"]
    fig = F.evolution_lines(evo)
    n_particles = evo["particle"].nunique()
    assert len(fig.axes[0].lines) == n_particles + 1
    median = fig.axes[0].lines[-1].get_ydata()
    assert np.all(np.diff(median) < 0)  # Li falls monotonically in the synthetic run
    # wide layout is accepted too
    wide = evo.pivot(index="particle", columns="state", values="mean_li").add_prefix("mean_li_").reset_index()
    fig = F.evolution_lines(wide, order=STATES)
    assert len(fig.axes[0].lines) == n_particles + 1
    with pytest.raises(ValueError, match="particle id"):
        F.evolution_lines(pd.DataFrame({"x": [1]}))


def test_particle_scatter_excludes_boundary_particles(run_dir):
    _, truth = run_dir
    p = truth["tables"]["particles"]
    fig = F.particle_scatter(p)
    assert len(fig.axes) == 3  # two panels + colour bar
    left = fig.axes[0]
    assert len(left.collections) == len(STATES)
    n_inner = int((~p["touches_boundary"]).sum())
    assert sum(len(c.get_offsets()) for c in left.collections) == n_inner
    fig = F.particle_scatter(p, include_boundary=True)
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == len(p)


def test_registration_qa_bars_and_flags(run_dir):
    _, truth = run_dir
    reg = truth["tables"]["registration"]
    fig = F.registration_qa(reg)
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and _n_bars(ax) == 2 * len(reg)
    assert [p.get_height() for p in ax.containers[1]] == pytest.approx(reg["ncc_after"].to_numpy())
    flagged = [c for c in ax.collections if c.get_label() == "not improved"]
    assert len(flagged) == 1 and len(flagged[0].get_offsets()) == 1


def test_save_figure_png_svg(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    paths = F.save_figure(fig, tmp_path / "figs", "line")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths["svg"].read_bytes()[:500]
    assert not list((tmp_path / "figs").glob(".*partial*"))


def test_save_figure_draws_once_per_file_and_matches_plain_savefig(tmp_path, monkeypatch):
    """The layout solved once (report/savefig.freeze_layout) gives matplotlib's own files, in fewer draws."""
    import matplotlib
    from matplotlib.figure import Figure

    def constrained() -> Figure:  # several panels, titles, a colour bar: what the layout moves
        fig = Figure(figsize=(7, 4), layout="constrained")
        axs = fig.subplots(1, 2)
        im = axs[0].imshow(np.arange(48.0).reshape(6, 8))
        axs[1].plot([0, 1, 2], [2, 0, 1], label="a long legend label")
        axs[1].legend()
        axs[0].set_title("left")
        axs[1].set_ylabel("a y label")
        fig.colorbar(im, ax=axs[0], label="colour bar")
        fig.suptitle("title")
        return fig

    monkeypatch.setitem(matplotlib.rcParams, "svg.hashsalt", "fixed")  # SVG ids are random otherwise
    ref = tmp_path / "ref"
    ref.mkdir()
    fig = constrained()
    fig.savefig(ref / "f.png", dpi=150)
    fig.set_layout_engine("none")  # what save_figure did before: the layout of the first file kept
    fig.savefig(ref / "f.svg", dpi=150, metadata={"Date": None})
    draws = []
    orig_draw = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, r: (draws.append(1), orig_draw(self, r))[1])
    orig_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, f, **kw: orig_savefig(
        self, f, **kw, **({"metadata": {"Date": None}} if kw.get("format") == "svg" else {})))
    paths = F.save_figure(constrained(), tmp_path / "new", "f")
    assert len(draws) == 2  # matplotlib's own path: 4 (a dry run before each file)
    assert paths["png"].read_bytes() == (ref / "f.png").read_bytes()
    assert paths["svg"].read_bytes() == (ref / "f.svg").read_bytes()


# --------------------------------------------------------------------------- report.html


def _data_uris(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_build_report_limap(run_dir, limap_report):
    from litomo.report.html import FIGURES

    out, truth = run_dir
    path = limap_report
    assert path == out / "report.html"
    html = path.read_text()
    pngs = _data_uris(html)
    assert len(pngs) == len(FIGURES)
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.svg").is_file()
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    st = truth["tables"]["states"]
    # the at-a-glance numbers come from the tables
    assert f"{st['mean_li'].iloc[0]:.2f} (I)" in html and f"{st['mean_li'].iloc[-1]:.2f} (IV)" in html
    assert f"{100 * st['frac_li_rich'].iloc[0]:.0f} %" in html
    reg = truth["tables"]["registration"]
    n_bad = int((reg["ncc_after"] <= reg["ncc_before"]).sum())
    assert n_bad == 1
    assert f"{len(reg) - n_bad} of {len(reg)} pairs" in html
    assert html.count('class="bad"') >= 1  # the non-improving pair is flagged in the QA table
    assert "clipped" in html and 'class="warning"' in html  # run warnings are highlighted
    assert "a" * 64 in html  # input checksums
    from litomo.report.blocks import fmt

    assert all(f">{fmt(v)}<" in html for v in st["mean_li"])  # per-state table


def test_build_report_tolerates_missing_tables(tmp_path):
    from litomo.report.html import build_report

    make_run_dir(tmp_path, with_volumes=False, bad_pair=False)
    for name in ("registration", "core_shell", "matching", "li_context", "li_projection_hist"):
        (tmp_path / "tables" / f"{name}.csv").unlink()
    (tmp_path / "tables" / "particles.csv").write_text("")  # empty file = missing
    (tmp_path / "tables" / "evolution.csv").write_text("foo,bar\n1,2\n")  # malformed
    html = build_report(tmp_path, kind="limap").read_text()
    assert "registration.csv" in html and "not found" in html
    assert "Figure not drawn" in html and "particle id" in html
    assert len(_data_uris(html)) == 3  # class bars, histograms, z profiles
    assert "Mean Li fell" in html


def test_build_report_rejects_non_run_dir(tmp_path):
    from litomo.errors import LitomoError
    from litomo.report.html import build_report

    with pytest.raises(LitomoError, match="run directory"):
        build_report(tmp_path)
    with pytest.raises(LitomoError, match="kind"):
        build_report(tmp_path, kind="nonsense")


def make_micro_dir(out: Path) -> dict:
    from matplotlib.figure import Figure

    report = {"shape": [40, 40, 40], "voxel_size_um": [0.1, 0.1, 0.1],
              "volume_fraction": {"pore": 0.31, "am": 0.58, "cbd": 0.11},
              "through_fraction": {"pore": {"z": 0.97}, "am": {"z": 0.99}, "cbd": {"z": 0.0}},
              "dead_end_cluster_fraction": {"pore": {"z": 0.02}, "am": {"z": 0.01}, "cbd": {"z": 0.6}},
              "isolated_fraction": {"pore": {"z": 0.01}, "am": {"z": 0.0}, "cbd": {"z": 0.4}},
              "surface_area_face_um-1": {"pore": 2.1, "am": 1.8, "cbd": 1.2},
              "surface_area_mc_smoothed_um-1": {"pore": 1.6, "am": 1.4, "cbd": 0.9},
              "interfacial_area_face_um-1": {"am/cbd": 0.4, "am/pore": 1.4, "cbd/pore": 0.8},
              "tpb_density_um-2": 0.35, "d50_um": 1.9, "sphericity_mean": 0.81,
              "n_particles": 40, "n_boundary_particles": 12,
              "tau": {"pore": {"z": 2.4}, "cbd": {"z": "inf"}},
              "mcmullin": {"pore": {"z": 7.7}, "cbd": {"z": "inf"}}, "notes": ["cbd does not percolate"]}
    tdir = out / "tables"
    tdir.mkdir(parents=True)
    (tdir / "microstructure.json").write_text(json.dumps(report))
    pd.DataFrame({"metric": ["Volume fraction", "Volume fraction", "Tortuosity factor"],
                  "phase": ["am", "pore", "pore"], "axis": ["", "", "z"], "unit": ["", "", ""],
                  "s Expected": [0.6, 0.3, np.nan], "s Data": [0.58, 0.31, 2.4]}).to_csv(
        tdir / "metrics_table.csv", index=False)
    fdir = out / "figures"
    for name in ("phase_orthoslices", "psd"):
        fig = Figure(figsize=(3, 2))
        fig.subplots().plot([0, 1], [0, 1])
        F.save_figure(fig, fdir, name)
    return report


def test_build_report_micro(tmp_path):
    from litomo.report.html import build_report

    make_micro_dir(tmp_path)
    html = build_report(tmp_path).read_text()  # kind auto-detected
    assert len(_data_uris(html)) == 2
    assert "Tortuosity factor" in html and "s Expected" in html
    assert "58 %" in html and "2.4" in html  # AM fraction and pore tortuosity at a glance
    assert "does not percolate" in html
    assert "Li content" not in html


# --------------------------------------------------------------------------- litomo view


def test_view_without_napari_prints_install_hint(run_dir, monkeypatch):
    from typer.testing import CliRunner

    from litomo.cli import app

    out, _ = run_dir
    monkeypatch.setitem(sys.modules, "napari", None)  # import napari -> ImportError
    res = CliRunner().invoke(app, ["view", str(out)])
    assert res.exit_code == 0, res.output
    assert 'pip install "litomo[viewer]"' in res.output


def test_view_opens_napari_layers_with_voxel_scale(run_dir, monkeypatch):
    import types

    from typer.testing import CliRunner

    from litomo.cli import app

    calls = []

    class FakeViewer:
        def __init__(self, **kw):
            self.scale_bar = types.SimpleNamespace(visible=False, unit=None)

        def add_image(self, data, **kw):
            calls.append(("image", data.shape, kw))

        def add_labels(self, data, **kw):
            calls.append(("labels", data.shape, kw))

    fake = types.ModuleType("napari")
    fake.Viewer = FakeViewer
    fake.run = lambda: calls.append(("run", None, {}))
    monkeypatch.setitem(sys.modules, "napari", fake)
    out, _ = run_dir
    res = CliRunner().invoke(app, ["view", str(out), "--state", "I", "--state", "IV"])
    assert res.exit_code == 0, res.output
    images = [c for c in calls if c[0] == "image"]
    labels = [c for c in calls if c[0] == "labels"]
    assert [c[2]["name"].split()[0] for c in images] == ["I", "IV"] and len(labels) == 2
    assert all(c[1] == SHAPE and tuple(c[2]["scale"]) == pytest.approx(VOXEL_UM) for c in images + labels)
    assert calls[-1][0] == "run"
    res = CliRunner().invoke(app, ["view", str(out), "--state", "V"])
    assert res.exit_code != 0 and "V" in str(res.exception)


def test_view_export_vti(run_dir):
    from typer.testing import CliRunner

    from litomo.cli import app

    out, _ = run_dir
    res = CliRunner().invoke(app, ["view", str(out), "--export-vti"])
    assert res.exit_code == 0, res.output
    for s in STATES:
        for name in ("li", "labels"):
            f = out / "volumes" / s / f"{name}.vti"
            head = f.read_bytes()[:600].decode("latin-1")
            assert "ImageData" in head and 'Spacing="0.15 0.15 0.2"' in head.replace(",", " ")


def test_view_rejects_dir_without_volumes(tmp_path):
    from typer.testing import CliRunner

    from litomo.cli import app

    res = CliRunner().invoke(app, ["view", str(tmp_path), "--export-vti"])
    assert res.exit_code != 0
    assert "volumes" in str(res.exception) + res.output


def test_glance_names_the_background_law_and_its_shift():
    """Issue 16 item 3: the report says which background law the map used and how far it moved
    the mean x_Li (from run.json's ``background``)."""
    from litomo.report.html import glance_limap

    bg = {"law": "tabulated", "composition": "LiNi0.8Mn0.1Co0.1O2", "effective_exponent": 2.7,
          "mean_li_shift": {"I": -0.016, "II": -0.022}}
    out = glance_limap({"background": bg}, {})
    assert out == ["Matrix background: tabulated law for LiNi0.8Mn0.1Co0.1O2; it moved the mean x_Li by "
                   "-0.016 (I), -0.022 (II)."]
    assert glance_limap({"background": {**bg, "law": "none", "mean_li_shift": {}}}, {}) == [
        "Matrix background: none (plain edge ratio)."]


# --------------------------------------------------------------------------- report.html in a real browser
# report.html in a real browser: headless Chromium loads every embedded image, logs no error.
#
# A copy of the page gets two inline scripts: one at the top of <head> that records script
# errors, failed resources and console.error calls, and one that, after the load event, writes
# the image checks into the DOM; ``--dump-dom`` prints that DOM. One screenshot of the report
# is kept as ``test-artifacts/report_screenshot.png`` (gitignored) for a person to look at.
# Skipped when no Chromium is installed (Debian: ``apt-get install chromium``).
# (was tests/test_report_browser.py: merged here so the Li report is built once, ~9 s CPU)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found (install it: apt-get install chromium)")

HOOK = """<script>
window.__litomo = {errors: []};
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__litomo.errors.push(t && t !== window && t.tagName ? 'failed to load ' + t.tagName + ' ' + (t.alt || '')
                                                           : 'error: ' + e.message);
}, true);
(function () {
  var orig = console.error;
  console.error = function () { window.__litomo.errors.push('console.error: ' + Array.from(arguments).join(' '));
                                return orig.apply(console, arguments); };
})();
</script>"""

CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var res = {n_images: imgs.length,
             broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                         .map(function (i) { return i.alt; }),
             widths: imgs.map(function (i) { return i.naturalWidth; }),
             errors: window.__litomo.errors};
  var pre = document.createElement('pre');
  pre.id = 'litomo-check';
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


def _flags(tmp_path: Path) -> list[str]:
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            "--disable-extensions", f"--user-data-dir={tmp_path / 'chrome-profile'}",
            "--virtual-time-budget=10000"]


def _check_in_browser(report: Path, tmp_path: Path) -> tuple[dict, str]:
    page = report.read_text()
    page = page.replace("<head>", "<head>" + HOOK, 1).replace("</body>", CHECK + "</body>", 1)
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    proc = subprocess.run([*_flags(tmp_path), "--enable-logging=stderr", "--v=0", "--dump-dom",
                           probe.as_uri()], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(tmp_path)})
    m = re.search(r'<pre id="litomo-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no check results in the dumped DOM (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")), proc.stderr


def _console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "Error" in ln)]


@needs_chromium
def test_limap_report_renders_in_chromium(limap_report, tmp_path):
    from litomo.report.html import FIGURES

    report = limap_report
    res, stderr = _check_in_browser(report, tmp_path)
    assert res["n_images"] == len(FIGURES)
    assert res["broken"] == [], f"images that did not load: {res['broken']}"
    assert all(w > 300 for w in res["widths"])  # decoded PNGs at 150 dpi, not icons
    assert res["errors"] == []
    assert _console_errors(stderr) == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_screenshot.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*_flags(tmp_path), f"--screenshot={shot}", "--window-size=1280,3000", report.as_uri()],
                   capture_output=True, timeout=180, env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"


@needs_chromium
def test_micro_report_renders_in_chromium_and_probe_sees_breakage(tmp_path):
    from litomo.report.html import build_report

    make_micro_dir(tmp_path / "micro")
    report = build_report(tmp_path / "micro")
    res, stderr = _check_in_browser(report, tmp_path)
    assert res["n_images"] == 2 and res["broken"] == [] and res["errors"] == []
    assert _console_errors(stderr) == []
    # the probe itself must be able to fail: a corrupt image and a script error are reported
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text(report.read_text().replace(
        "</body>", '<img src="data:image/png;base64,AAAA" alt="corrupt"><script>undefinedCall();</script></body>'))
    res, _ = _check_in_browser(bad, tmp_path)
    assert res["broken"] == ["corrupt"]
    assert any("undefinedCall" in e for e in res["errors"])

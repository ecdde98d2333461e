"""Li content of binned particles from interior values plus a per-particle surface layer.

Used by the Li-mapping workflow after binning (:mod:`litomo.workflows.limap`): a binned voxel's
x_Li is rebuilt from the particle-interior estimate and a surface layer that keeps each
particle's Li balance, so a slightly misregistered particle surface does not corrupt the map.
Also importable from :mod:`litomo.xanes.threeenergy`, where it was first defined.
"""

from __future__ import annotations

import numpy as np


def interior_surface_li(x_interior: np.ndarray, x_mass: np.ndarray, interior_count: np.ndarray,
                        am_fraction: np.ndarray, particles: np.ndarray, bin_voxels: int | np.ndarray, *,
                        shrink_offset: bool = True,
                        return_weight: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-bin Li content from particle-interior values plus a per-particle surface layer.

    Two estimates of a binned voxel's x_Li disagree in how they fail:

    - ``x_interior``, from the voxels inside the particle (away from its surface), does not
      depend on where a slightly misregistered surface lies, but misses the surface layer,
      which during (de)lithiation is where x_Li differs most from the core;
    - ``x_mass``, from the plain bin means, covers all of the bin's active material, and its
      AM-weighted sum over a whole particle (``sum am_fraction * x``) is the particle's Li,
      which a small misregistration only moves around inside the particle; bin by bin, it
      is what a misregistered surface corrupts.

    So each bin is split into an interior compartment (its interior value) and a surface
    layer whose value is the bin's interior value plus one offset per particle, the offset
    making the particle's Li equal its mass estimate::

        x = (1 - s) * x_interior + s * (v + offset_particle),
        s = 1 - interior_count / (am_fraction * bin_voxels)

    with ``s`` the share of the bin's active material in the surface layer. ``v`` is the bin's
    interior value shrunk towards the particle's mean interior value by its reliability,
    ``count / (count + n0)`` (empirical Bayes: the interior value's noise variance falls as
    1 / count; ``n0`` = noise variance of a full bin over the spread of interior values within
    particles, both estimated from the map: the noise from differences between neighbouring
    full-interior bins of one particle). Where particles are uniform (a pristine state) the
    surface layer follows the particle mean; where they are not, it follows the local
    interior, so the surface layer keeps the spatial detail the interior shows. Bins without
    interior voxels (``s = 1``) use the particle mean; bins outside any particle keep
    ``x_mass``. Measured on the phantom (``benchmarks/bench_limap.py``, see docs): one flat
    surface value per particle narrowed the distribution (class fractions off by up to 2.1 pp),
    the raw interior value in its place was noisier (RMSE up to 0.030); this gives 0.028-0.029
    and 1.0-1.6 pp.

    The offset is an estimate too: the plain means of surface bins carry noise and registration
    error, which the particle's balance hands to its few surface bins (litomo's deformed phantom:
    pristine particles, truth 1.000 everywhere, offsets of up to +-0.3). With ``shrink_offset``
    (default) each particle's offset is shrunk by its reliability ``o^2 / (o^2 + var_o)``
    (``var_o`` from the scatter of the bins' residuals about the fitted layer), so a particle's Li
    lies between its interior estimate and its mass estimate; real surface layers (reaction
    fronts: offsets 5x their sd) are kept (issue 16, session 10; docs/science.md).

    Parameters
    ----------
    x_interior, x_mass : float arrays (binned grid)
        Calibrated x_Li of the two estimates (NaN where undefined; ``x_mass`` defines the
        mapped voxels). Not clipped: clipping would bias the sums.
    interior_count : array
        Interior voxels per bin.
    am_fraction : array
        AM volume fraction of each bin (e.g. from the edge jump).
    particles : int array
        Particle labels on the binned grid (0 = none).
    bin_voxels : int or array
        Full-resolution voxels per bin; an array (map grid) gives, per bin, the voxels observed
        at every energy (a registered state's bins on the volume faces lack the rows a shifted
        energy did not image; counting all of them takes those bins for particle surface).
    shrink_offset : bool
        Shrink each particle's surface offset by its reliability (above); False keeps every
        particle's Li equal to its mass estimate exactly.
    return_weight : bool
        Also return, per bin, the weight ``a = 1 - s (1 - w)`` of the bin's own interior value in
        the result (0 where it has none), whose noise is then ``a^2`` times the interior value's
        (:func:`litomo.xanes.noise.li_noise_variance`, ``interior_weight``).

    Returns
    -------
    float32 array, NaN where ``x_mass`` is NaN (and the weights, with ``return_weight``).

    Examples
    --------
    One particle of two bins: a full interior bin at 0.9 and a half-interior surface bin
    whose interior reads 0.9 but whose plain mean says 0.7; the particle's Li (0.8 on
    average) is kept and the missing Li goes to the surface layer.

    >>> x = interior_surface_li(np.array([0.9, 0.9]), np.array([0.9, 0.7]), np.array([8, 4]),
    ...                         np.array([1.0, 1.0]), np.array([1, 1]), 8, shrink_offset=False)
    >>> [round(v, 3) for v in x.tolist()], round(float(x.mean()), 3)
    ([0.9, 0.7], 0.8)
    """
    xi = np.asarray(x_interior, np.float64)
    xm = np.asarray(x_mass, np.float64)
    cnt = np.asarray(interior_count, np.float64)
    bv = np.asarray(bin_voxels, np.float64)
    mapped = np.isfinite(xm)
    f = np.where(mapped, np.clip(np.asarray(am_fraction, np.float64), 0.0, None), 0.0)
    have = mapped & np.isfinite(xi) & (cnt > 0)
    # the surface share is 0 in a bin whose voxels are all interior: an AM fraction that noise
    # puts above 1 (the jump's noise, ~1.5 % in a 7^3 bin) would otherwise give such bins a
    # positive share (clipped at 0 below, not above), and with it a part of the particle's
    # surface offset: front particles' cores read low (forward model no_background S1, bins full
    # and Li-rich: -0.0104 -> -0.0084; session 8)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(have, 1.0 - cnt / (np.minimum(f, 1.0) * bv), 1.0)
    s = np.clip(np.nan_to_num(s, nan=1.0), 0.0, 1.0)
    lab3 = np.where(mapped, np.asarray(particles), 0).astype(np.int64)
    lab = lab3.ravel()
    n = int(lab.max()) + 1 if lab.size else 1
    fw = f.ravel()
    # bins without an interior value take the particle's mean interior value
    w_in = np.where(have.ravel(), fw, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = np.bincount(lab, weights=w_in * np.nan_to_num(xi.ravel()), minlength=n) / \
            np.bincount(lab, weights=w_in, minlength=n)
    mean_b = mean_in[lab3]
    base = np.where(have, xi, mean_b)
    # the surface share's own value: the bin's interior value shrunk towards the particle's
    # mean interior value by its reliability (empirical Bayes: noise variance ~ 1/count
    # against the spread of interior values within particles, both estimated here)
    full = have & (cnt >= 0.9 * bv) & (lab3 > 0)
    same = full[..., 1:] & full[..., :-1] & (lab3[..., 1:] == lab3[..., :-1])
    w_rel = np.ones(xm.shape)
    if same.sum() >= 10 and full.sum() >= 10:
        d = (xi[..., 1:] - xi[..., :-1])[same]
        noise_var = float(np.var(d)) / 2.0
        spread = max(float(np.var((xi - mean_b)[full])) - noise_var, 1e-6)
        w_rel = cnt / (cnt + bv * noise_var / spread)
    surf_val = np.where(have, w_rel * np.nan_to_num(xi) + (1 - w_rel) * mean_b, mean_b)
    est = (1 - s) * base + s * surf_val  # before the per-particle offset
    offset = _particle_offset(lab, fw, np.nan_to_num(xm.ravel()), np.nan_to_num(est.ravel()), s.ravel(), n,
                              shrink_offset)
    out = est + s * offset[lab3]
    out = np.where((np.asarray(particles) > 0) & np.isfinite(out), out, xm)
    out = np.where(mapped, out, np.nan).astype(np.float32)
    if not return_weight:
        return out
    own = np.where(have & (np.asarray(particles) > 0), 1.0 - s * (1.0 - w_rel), 0.0)
    return out, own.astype(np.float32)


def _particle_offset(lab: np.ndarray, fw: np.ndarray, xm: np.ndarray, est: np.ndarray, s: np.ndarray,
                     n: int, shrink: bool) -> np.ndarray:
    """Per-particle surface offset that makes the AM-weighted sum of ``est + s * offset`` equal to
    that of ``xm``, shrunk by its reliability when ``shrink``.

    The offset is a weighted least-squares fit of the residuals ``xm - est`` by ``s * offset``
    (weights ``fw``), so its noise follows from their scatter about the fit:
    ``var = n / (n - 1) * sum (fw r)^2 / (sum fw s)^2``. Shrinking by ``o^2 / (o^2 + var)``
    (empirical Bayes with a zero-mean prior of the offset's own size; James & Stein in spirit)
    removes what the particle's own bins cannot tell from noise; an offset several sd from zero
    is kept.
    """
    mass = np.bincount(lab, weights=fw * xm, minlength=n)
    inner = np.bincount(lab, weights=fw * est, minlength=n)
    shell = np.bincount(lab, weights=fw * s, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(shell > 1e-9, (mass - inner) / shell, 0.0)
    if not shrink:
        return offset
    r = fw * (xm - est - s * offset[lab])
    nb = np.bincount(lab, weights=(fw > 0).astype(float), minlength=n)
    scatter = np.bincount(lab, weights=r**2, minlength=n) * nb / np.maximum(nb - 1.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(shell > 1e-9, scatter / shell**2, 0.0)
        k = np.where(offset**2 + var > 0, offset**2 / (offset**2 + var), 1.0)
    return offset * k

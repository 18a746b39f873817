"""Plots (need matplotlib: ``pip install 'jaxmle[plot]'``).

:func:`plot_profile` draws profile-likelihood curves with the χ² threshold and
both intervals (profile and Wald). :func:`plot_fit` draws the four-panel diagnostic of ``fitdistrplus``: the data
(histogram, or bar chart of frequencies for counts) with the fitted densities,
a Q–Q plot, a P–P plot and the empirical against the fitted CDFs, for one or
several candidate distributions fitted to the same sample.

Examples
--------
>>> table = jm.compare_distributions(x, [dist.Gamma, dist.Weibull])  # doctest: +SKIP
>>> jaxmle.plots.plot_fit(table, path="fit.png")                      # doctest: +SKIP
>>> jaxmle.plots.plot_profile(res, ["mu", "sigma"], path="prof.png")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_MAX_POINTS = 1000  # Q–Q/P–P points drawn (quantiles of the data beyond that)
_MARKERS = "os^Dvx+*"


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("jaxmle.plots needs matplotlib: pip install 'jaxmle[plot]' "
                          "(or pip install matplotlib)") from err
    return Figure


def _role(obj: Any) -> str | None:
    """What a jaxmle object is, for drawing: its class's ``plot_role`` ("fit", "profile",
    "distribution_fit", "distribution_comparison"). This module draws and imports no
    other jaxmle module, so the results' ``.plot()`` shortcuts can import it."""
    return getattr(type(obj), "plot_role", None)


def _as_list(objs: Any) -> list:
    try:
        return list(objs)
    except TypeError:
        return []


def _as_fits(fits: Any) -> list:
    if _role(fits) == "distribution_comparison":
        fits = [fits.fits[name] for name in fits.names]
    elif _role(fits) == "distribution_fit":
        fits = [fits]
    fits = _as_list(fits)
    if not fits or not all(_role(f) == "distribution_fit" for f in fits):
        raise TypeError("plot_fit needs a DistributionFit, a list of them, or a "
                        "DistributionComparison")
    data = fits[0].data
    for f in fits:
        if f.data.ndim != 1:
            raise ValueError(f"{f.name}: diagnostic plots are for univariate data")
        if f.data.shape != data.shape or not np.array_equal(f.data, data):
            raise ValueError("all fits in one plot must be fits to the same data")
    return fits


def _positions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plotting positions p = (i − ½)/n and the matching sample quantiles (≤ 1000 points)."""
    xs = np.sort(x.astype(float))
    n = xs.size
    if n <= _MAX_POINTS:
        return (np.arange(1, n + 1) - 0.5) / n, xs
    p = (np.arange(1, _MAX_POINTS + 1) - 0.5) / _MAX_POINTS
    return p, np.quantile(xs, p)


def _grid(x: np.ndarray) -> np.ndarray:
    """x values for the fitted curves; as many as the Q–Q points when there are ≥ 100 of them
    (one array shape for every CDF evaluation: JAX compiles its eager operations per shape)."""
    m = min(x.size, _MAX_POINTS)
    pad = 0.05 * (float(np.ptp(x)) or 1.0)
    return np.linspace(x.min() - pad, x.max() + pad, m if m >= 100 else 200)


def _panel_data(ax, fits: list, discrete: bool, bins: Any) -> None:
    x = fits[0].data.astype(float)
    if discrete:
        values, counts = np.unique(x, return_counts=True)
        ax.bar(values, counts / x.size, width=0.8, color="0.8", edgecolor="0.5", label="data")
        grid = np.arange(int(values.min()), int(values.max()) + 1)
    else:
        ax.hist(x, bins=bins, density=True, color="0.85", edgecolor="0.6", label="data")
        grid = _grid(x)
    for i, f in enumerate(fits):
        if f.is_discrete:
            k = np.arange(max(int(np.floor(grid.min())), int(np.min(x))), int(np.ceil(grid.max())) + 1)
            ax.plot(k, np.exp(f.log_prob(k)), marker=_MARKERS[i % len(_MARKERS)], ls="-", lw=1,
                    ms=4, label=f.name)
        else:
            g = grid[np.isfinite(_safe_logpdf(f, grid))]
            ax.plot(g, np.exp(f.log_prob(g)), lw=1.5, label=f.name)
    ax.set_title("Data and fitted " + ("probabilities" if discrete else "densities"))
    ax.set_xlabel("x")
    ax.set_ylabel("relative frequency" if discrete else "density")
    ax.legend(fontsize="small")


def _safe_logpdf(fit, grid: np.ndarray) -> np.ndarray:
    """Log-density on the grid, −inf outside the support (no NumPyro warnings)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inside = np.asarray(fit.dist.support.check(grid), dtype=bool)
        return np.where(inside, fit.log_prob(np.where(inside, grid, fit.data[0])), -np.inf)


def _panel_qq(ax, fits: list) -> None:
    p, xq = _positions(fits[0].data)
    for i, f in enumerate(fits):
        ax.plot(f.quantile(p), xq, _MARKERS[i % len(_MARKERS)], ms=3, alpha=0.7, label=f.name)
    lo, hi = float(xq.min()), float(xq.max())
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1)
    ax.set_title("Q–Q plot")
    ax.set_xlabel("theoretical quantiles")
    ax.set_ylabel("sample quantiles")


def _panel_pp(ax, fits: list) -> None:
    p, xq = _positions(fits[0].data)
    for i, f in enumerate(fits):
        ax.plot(f.cdf(xq), p, _MARKERS[i % len(_MARKERS)], ms=3, alpha=0.7, label=f.name)
    ax.plot([0, 1], [0, 1], color="0.3", lw=1)
    ax.set_title("P–P plot")
    ax.set_xlabel("theoretical probabilities")
    ax.set_ylabel("empirical probabilities")


def _panel_cdf(ax, fits: list, discrete: bool) -> None:
    x = np.sort(fits[0].data.astype(float))
    n = x.size
    ax.step(x, np.arange(1, n + 1) / n, where="post", color="0.2", lw=1.2, label="empirical")
    grid = np.arange(int(x.min()) - 1, int(x.max()) + 2) if discrete else _grid(x)
    for f in fits:
        if f.is_discrete:
            ax.step(grid, f.cdf(grid), where="post", lw=1.2, label=f.name)
        else:
            ax.plot(grid, f.cdf(grid), lw=1.2, label=f.name)
    ax.set_title("Empirical and fitted CDFs")
    ax.set_xlabel("x")
    ax.set_ylabel("CDF")


def plot_fit(fits: Any, *, path: str | None = None, bins: Any = "auto",
             figsize: Sequence[float] = (10.0, 8.0), title: str | None = None, dpi: int = 100):
    """The four-panel diagnostic of one or several fitted distributions.

    Parameters
    ----------
    fits : DistributionFit, list of DistributionFit, or DistributionComparison
        Fits to the same univariate sample (a comparison is drawn in rank order).
    path : str, optional
        Save the figure there (format from the extension: .png, .pdf, .svg).
    bins : int or str
        Histogram bins for continuous data (numpy's rules, default ``"auto"``).
    figsize, title, dpi
        Figure size in inches, a title (default: the distributions' names), and
        the resolution used when saving.

    Returns
    -------
    matplotlib.figure.Figure
        Panels: data with fitted densities (or a bar chart of frequencies with
        fitted probabilities for discrete data), Q–Q (sample against fitted
        quantiles), P–P (empirical against fitted probabilities), and the
        empirical CDF with the fitted CDFs.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install 'jaxmle[plot]'``).
    ValueError
        For vector-valued data, or fits to different data.
    """
    figure_class = _figure_class()
    fits = _as_fits(fits)
    discrete = fits[0].is_discrete
    fig = figure_class(figsize=tuple(figsize), layout="constrained")
    axes = fig.subplots(2, 2)
    _panel_data(axes[0, 0], fits, discrete, bins)
    _panel_qq(axes[0, 1], fits)
    _panel_pp(axes[1, 0], fits)
    _panel_cdf(axes[1, 1], fits, discrete)
    n = fits[0].data.shape[0]
    fig.suptitle(title or f"{', '.join(f.name for f in fits)} fitted to n = {n} observations")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def plot_profile(profiles: Any, names: Any = None, *, path: str | None = None,
                 level: float = 0.95, figsize: Sequence[float] | None = None,
                 title: str | None = None, dpi: int = 100):
    """Profile-likelihood curves, one panel per parameter.

    Each panel shows the profile deviance 2(ℓ̂ − ℓ_p(t)) (points and line), the
    quadratic (Wald) approximation ((t − θ̂)/SE)², the χ²₁(level) threshold, and
    the two intervals: profile (solid verticals, where the curve crosses the
    threshold) and Wald (dashed). An end that is open (no crossing before the edge
    of the parameter space) is not drawn.

    Parameters
    ----------
    profiles : Profile, list of Profile, or FitResult
        Profiles from ``res.profile(name)``, or a fit, whose parameters ``names``
        (default: all estimated ones) are then profiled at ``level``.
    path : str, optional
        Save the figure there.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    figure_class = _figure_class()
    if _role(profiles) == "fit":
        chosen = profiles.param_names if names is None else (
            [names] if isinstance(names, str) else list(names))
        profiles = [profiles.profile(n, level=level) for n in chosen]
    elif _role(profiles) == "profile":
        profiles = [profiles]
    profiles = _as_list(profiles)
    if not profiles or not all(_role(p) == "profile" for p in profiles):
        raise TypeError("plot_profile needs a Profile, a list of them, or a FitResult")
    k = len(profiles)
    cols = min(k, 3)
    rows = -(-k // cols)
    fig = figure_class(figsize=tuple(figsize or (4.2 * cols, 3.4 * rows)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, prof in zip(axes, profiles):
        _panel_profile(ax, prof)
    for ax in axes[k:]:
        ax.set_visible(False)
    fig.suptitle(title or f"Profile likelihood ({profiles[0].level:.0%} intervals)")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _panel_profile(ax, prof) -> None:
    ok = prof.converged & np.isfinite(prof.deviance)
    t, dev = prof.values[ok], prof.deviance[ok]
    ax.plot(t, dev, "-", color="C0", lw=1.5, label="profile")
    ax.plot(t, dev, "o", color="C0", ms=2.5)
    if np.isfinite(prof.stderr) and prof.stderr > 0 and t.size:
        grid = np.linspace(t.min(), t.max(), 200)
        ax.plot(grid, ((grid - prof.estimate) / prof.stderr) ** 2, "--", color="C1", lw=1,
                label="Wald (quadratic)")
    ax.axhline(prof.threshold, color="0.4", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[1], prof.threshold, f"χ²₁({prof.level:g}) = {prof.threshold:.2f} ",
            ha="right", va="bottom", fontsize="x-small", color="0.3")
    for value, status in ((prof.lower, prof.interval.lower_status),
                          (prof.upper, prof.interval.upper_status)):
        if status in ("crossed", "edge") and np.isfinite(value):
            ax.axvline(value, color="C0", lw=1)
    for value in prof.wald:
        if np.isfinite(value):
            ax.axvline(value, color="C1", lw=1, ls="--")
    ax.axvline(prof.estimate, color="0.2", lw=0.6)
    top = max(2.0 * prof.threshold, float(np.nanmax(dev)) if dev.size else 0.0)
    ax.set_ylim(-0.05 * top, min(top, 3.0 * prof.threshold))
    ax.set_xlabel(prof.name)
    ax.set_ylabel("deviance 2(ℓ̂ − ℓ_p)")
    ax.set_title(f"{prof.name}: [{prof.lower:.4g}, {prof.upper:.4g}]", fontsize="small")
    ax.legend(fontsize="x-small")

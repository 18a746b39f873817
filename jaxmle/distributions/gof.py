"""Fitted CDF, quantiles and goodness-of-fit statistics of a :class:`DistributionFit` (host side).

* Continuous: the Kolmogorov–Smirnov distance D = supₓ |Fₙ(x) − F(x; θ̂)|. No
  p-value: with estimated parameters the usual KS p-value is far too large
  (Lilliefors), so D is for ranking, as in ``fitdistrplus::gofstat``.
* Discrete: Pearson's chi-square over the observed values, adjacent cells
  pooled until every expected count is at least 5, the upper tail in the last
  cell; df = cells − 1 − estimated parameters (asymptotically χ² for MLEs from
  the ungrouped data only approximately: read the p-value as a guide).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import numpy as np

MIN_EXPECTED = 5.0


class GoodnessOfFit(NamedTuple):
    """A goodness-of-fit statistic; ``test`` is ``"KS"``, ``"chi-square"`` or ``"none"``."""

    test: str
    statistic: float
    df: int | None = None
    pvalue: float = math.nan
    note: str = ""


def _abstract(fit) -> tuple[Any, tuple[int, ...]]:
    """The fitted distribution's support and batch shape, found by tracing its construction
    (building it from arrays would run NumPyro's parameter checks op by op, a small
    compiled program each); traced once per class and parameter shapes."""
    shapes = tuple(sorted((k, np.shape(v), np.asarray(v).dtype.str)
                          for k, v in fit.params.items()))
    return _traced_support(fit.distribution, shapes)


@functools.lru_cache(maxsize=128)
def _traced_support(distribution: Any, shapes: tuple) -> tuple[Any, tuple[int, ...]]:
    info = {}

    def build(params):
        d = distribution(**params)
        info["support"], info["batch_shape"] = d.support, tuple(d.batch_shape)
        return 0.0

    jax.eval_shape(build, {k: jax.ShapeDtypeStruct(shape, np.dtype(dtype))
                           for k, shape, dtype in shapes})
    return info["support"], info["batch_shape"]


def _support_bounds(fit) -> tuple[float, float]:
    support, _ = _abstract(fit)
    lo = getattr(support, "lower_bound", -np.inf)
    hi = getattr(support, "upper_bound", np.inf)
    if isinstance(lo, jax.core.Tracer) or isinstance(hi, jax.core.Tracer):
        support = fit.dist.support   # bounds that depend on the parameters' values
        lo = getattr(support, "lower_bound", -np.inf)
        hi = getattr(support, "upper_bound", np.inf)
    return float(np.max(lo)), float(np.min(hi))


def _iid(fit) -> bool:
    """One distribution for every observation (no per-observation parameters)."""
    return _abstract(fit)[1] == ()


def _require_univariate(fit) -> None:
    if fit.data.ndim != 1:
        raise ValueError(f"{fit.name}: CDFs, quantiles and these diagnostics are for univariate "
                         "data")
    if not _iid(fit):
        raise ValueError(f"{fit.name}: the parameters differ between observations (a fixed "
                         "per-observation array), so there is no single fitted CDF")


def discrete_pmf(fit, upper: int) -> tuple[np.ndarray, np.ndarray]:
    """Support points k = lower … upper and their fitted probabilities."""
    lo, _ = _support_bounds(fit)
    lo = int(lo) if math.isfinite(lo) else int(np.min(fit.data))
    k = np.arange(lo, max(upper, lo) + 1)
    return k, np.exp(fit.log_prob(k).astype(float))


def cdf(fit, x: np.ndarray) -> np.ndarray:
    """F(x; θ̂): NumPyro's ``cdf`` for continuous distributions, a pmf sum for discrete ones."""
    _require_univariate(fit)
    if fit.is_discrete:
        xf = np.floor(np.asarray(x, dtype=float))
        k, pmf = discrete_pmf(fit, int(np.max(xf, initial=0)))
        cum = np.concatenate([[0.0], np.cumsum(pmf)])
        idx = np.clip(xf - k[0] + 1, 0, len(k)).astype(int)
        return np.minimum(cum[idx], 1.0)
    from jaxmle.distributions.host_cdf import host_cdf

    on_host = host_cdf(fit.distribution, fit.params, np.asarray(x, dtype=float))
    if on_host is not None:
        return on_host
    try:
        return fit.evaluate("cdf", np.asarray(x, dtype=float)).astype(float)
    except (NotImplementedError, ImportError) as err:
        raise NotImplementedError(f"NumPyro's {fit.distribution.__name__} has no cdf") from err


def quantile(fit, q: np.ndarray) -> np.ndarray:
    """F⁻¹(q; θ̂): NumPyro's ``icdf`` where it exists, else inversion of the CDF."""
    _require_univariate(fit)
    q = np.asarray(q, dtype=float)
    if fit.is_discrete:
        return _discrete_quantile(fit, q)
    try:
        return fit.evaluate("icdf", q).astype(float)
    except (NotImplementedError, ImportError):
        return _bisect_quantile(fit, q)


def _discrete_quantile(fit, q: np.ndarray) -> np.ndarray:
    """The smallest support point k with F(k) ≥ q."""
    upper = int(np.max(fit.data))
    for _ in range(60):
        k, pmf = discrete_pmf(fit, upper)
        cum = np.cumsum(pmf)
        if cum[-1] >= np.max(q, initial=0.0) - 1e-12 or upper >= k[0] + 10 ** 7:
            break
        upper = 2 * upper + 1
    idx = np.searchsorted(cum, q - 1e-12, side="left")
    return k[np.minimum(idx, len(k) - 1)].astype(float)


def _bisect_quantile(fit, q: np.ndarray) -> np.ndarray:
    """Bisection on the CDF within a bracket grown from the data's range."""
    x = fit.data
    lo_b, hi_b = _support_bounds(fit)
    width = float(np.ptp(x)) or 1.0
    lo = np.full(q.shape, max(float(np.min(x)) - width, lo_b))
    hi = np.full(q.shape, min(float(np.max(x)) + width, hi_b))
    for _ in range(200):
        grow_lo = (cdf(fit, lo) > q) & (lo > lo_b)
        grow_hi = (cdf(fit, hi) < q) & (hi < hi_b)
        if not (grow_lo.any() or grow_hi.any()):
            break
        lo = np.where(grow_lo, np.maximum(lo - width, lo_b), lo)
        hi = np.where(grow_hi, np.minimum(hi + width, hi_b), hi)
        width *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        below = cdf(fit, mid) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def ks_statistic(fit) -> float:
    """D = max over the order statistics of |i/n − F(x₍ᵢ₎)| and |F(x₍ᵢ₎) − (i−1)/n|."""
    x = np.sort(fit.data)
    n = x.size
    f = cdf(fit, x)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def pooled_cells(observed: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent cells left to right until each expected count is ≥ 5."""
    obs, exp, o, e = [], [], 0.0, 0.0
    for oi, ei in zip(observed, expected):
        o, e = o + oi, e + ei
        if e >= MIN_EXPECTED:
            obs.append(o), exp.append(e)
            o, e = 0.0, 0.0
    if e > 0 or o > 0:
        if exp:
            obs[-1] += o
            exp[-1] += e
        else:
            obs.append(o), exp.append(e)
    return np.asarray(obs), np.asarray(exp)


def chi_square(fit) -> GoodnessOfFit:
    """Pearson's chi-square on pooled cells of the observed values (upper tail in the last)."""
    from jaxmle.core.stats import chi2_sf  # closed form: no compiled program

    x = fit.data.astype(np.int64)
    k, pmf = discrete_pmf(fit, int(np.max(x)))
    observed = np.bincount(x - k[0], minlength=len(k)).astype(float)
    expected = fit.nobs * pmf
    expected[-1] += fit.nobs * max(0.0, 1.0 - float(np.sum(pmf)))
    obs, exp = pooled_cells(observed, expected)
    stat = float(np.sum((obs - exp) ** 2 / exp))
    df = len(obs) - 1 - fit.n_free
    p = chi2_sf(stat, df) if df > 0 else math.nan
    note = "" if df > 0 else "too few cells (after pooling to expected counts ≥ 5) for a p-value"
    return GoodnessOfFit("chi-square", stat, df, p, note)


def goodness_of_fit(fit) -> GoodnessOfFit:
    """KS distance for a continuous fit, chi-square for a discrete one; ``"none"`` otherwise."""
    if fit.data.ndim != 1:
        return GoodnessOfFit("none", math.nan, note="no statistic for vector-valued data")
    if not _iid(fit):
        return GoodnessOfFit("none", math.nan,
                             note="parameters differ between observations (a fixed array)")
    if fit.is_discrete:
        return chi_square(fit)
    try:
        note = ("no p-value: parameters were estimated from the same data" if fit.n_free else
                "all parameters fixed: scipy.stats.kstest(x, res.cdf) gives the exact p-value")
        return GoodnessOfFit("KS", ks_statistic(fit), note=note)
    except NotImplementedError as err:
        return GoodnessOfFit("none", math.nan, note=str(err))

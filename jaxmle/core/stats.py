"""The normal-theory numbers every table and interval uses: one definition each."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_level(level: float) -> float:
    """A confidence level in (0, 1), or a ``ValueError`` saying what was given."""
    try:
        ok = 0.0 < float(level) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def wald_quantile(level: float) -> float:
    """z_{(1+level)/2}: the half-width of a two-sided Wald interval in SEs (1.96 at 0.95)."""
    return NormalDist().inv_cdf(0.5 + check_level(level) / 2.0)


def chi2_1_quantile(level: float) -> float:
    """χ²₁(level) = z_{(1+level)/2}²: the profile-likelihood threshold on the deviance."""
    return wald_quantile(level) ** 2


def pvalue(z: float) -> float:
    """Two-sided normal p-value P(|Z| > |z|) (NaN for a non-finite z)."""
    return math.erfc(abs(z) / math.sqrt(2.0)) if math.isfinite(z) else math.nan


def chi2_sf(x: float, df: int) -> float:
    """P(χ²_df > x) for an integer df ≥ 0 (df = 0: a point mass at 0), in closed form
    (host arithmetic, no compiled program): Q(df/2, x/2) is a finite sum of Poisson
    terms for even df, plus erfc(√(x/2)) for odd df."""
    df = int(df)
    if df < 0:
        raise ValueError(f"df must be a non-negative integer, got {df}")
    if df == 0:
        return 0.0 if x > 0 else 1.0
    if math.isnan(x):
        return math.nan
    if not math.isfinite(x):
        return 0.0 if x > 0 else 1.0
    h = max(float(x), 0.0) / 2.0
    if h == 0.0:
        return 1.0
    if df % 2 == 0:   # Σ_{k < df/2} e^{-h} h^k / k!
        return min(1.0, sum(math.exp(k * math.log(h) - h - math.lgamma(k + 1))
                            for k in range(df // 2)))
    # erfc(√h) + Σ_{k < (df-1)/2} e^{-h} h^{k+½} / Γ(k + 3/2)
    tail = sum(math.exp((k + 0.5) * math.log(h) - h - math.lgamma(k + 1.5))
               for k in range((df - 1) // 2))
    return min(1.0, math.erfc(math.sqrt(h)) + tail)


def aic(loglik: Any, n_free: Any) -> Any:
    """Akaike information criterion 2m − 2ℓ̂ (m free coordinates; arrays broadcast, traced
    values allowed)."""
    return 2.0 * n_free - 2.0 * loglik


def bic(loglik: Any, n_free: Any, nobs: Any) -> Any:
    """Bayesian information criterion m·log(n) − 2ℓ̂ (arrays broadcast)."""
    log_n = jnp.log(nobs) if isinstance(nobs, jax.core.Tracer) else np.log(nobs)
    return n_free * log_n - 2.0 * loglik


def wald_intervals(names: Sequence[str], estimates: Any, stderr: Any,
                   level: float) -> dict[str, tuple[Any, Any]]:
    """``{name: (θ̂ − z·SE, θ̂ + z·SE)}`` over the last axis of ``estimates``/``stderr``:
    floats for vectors, arrays for a (B, k) batch."""
    q = wald_quantile(level)
    est, se = np.asarray(estimates, dtype=float), np.asarray(stderr, dtype=float)
    if est.ndim == 1:
        return {n: (float(est[j] - q * se[j]), float(est[j] + q * se[j]))
                for j, n in enumerate(names)}
    return {n: (est[..., j] - q * se[..., j], est[..., j] + q * se[..., j])
            for j, n in enumerate(names)}

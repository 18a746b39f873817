"""The normal-theory numbers every table and interval uses: one definition each."""

from __future__ import annotations

import math
from statistics import NormalDist


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

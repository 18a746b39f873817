"""Starting values for distribution fits: moments, closed forms and robust quantiles.

Each function takes the checked data ``x`` (numpy) and the fixed parameter
values ``f`` and returns starting values for the distribution's parameters
(the caller drops the fixed ones). Where the MLE has a closed form the start
*is* the MLE, so Newton only confirms it; elsewhere a moment or quantile
estimate puts the start inside the basin of the maximum. A start function
raises ``ValueError`` for data whose MLE lies on the boundary of the
parameter space (no finite maximum), naming why.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

EULER_GAMMA = 0.5772156649015329
_MAD_TO_SD = 1.482602218505602      # 1/Φ⁻¹(3/4): MAD of a Normal is 0.6745 σ


def robust_scale(x: np.ndarray) -> float:
    """σ estimated by the median absolute deviation (the SD when it is 0)."""
    s = _MAD_TO_SD * float(np.median(np.abs(x - np.median(x))))
    return s if s > 0 else float(np.std(x))


def normal(x, f):
    return {"loc": np.mean(x), "scale": np.std(x)}


def lognormal(x, f):
    return normal(np.log(x), f)


def half_normal(x, f):
    return {"scale": math.sqrt(float(np.mean(x ** 2)))}


def exponential(x, f):
    return {"rate": 1.0 / np.mean(x)}


def gamma(x, f):
    """Minka's approximation to the shape MLE, s = log x̄ − mean(log x); rate = k/x̄."""
    m = float(np.mean(x))
    if "concentration" in f:
        return {"rate": float(np.mean(f["concentration"])) / m}
    if "rate" in f:
        return {"concentration": m * float(np.mean(f["rate"]))}
    s = math.log(m) - float(np.mean(np.log(x)))
    k = (3.0 - s + math.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s) if s > 0 else 1e3
    return {"concentration": k, "rate": k / m}


def inverse_gamma(x, f):
    """If X ~ InverseGamma(a, b) then 1/X ~ Gamma(a, rate=b)."""
    return gamma(1.0 / x, f)


def weibull(x, f):
    """log X is Gumbel-min with SD π/(k√6) and mean log λ − γ/k."""
    lx = np.log(x)
    k = float(np.mean(f["concentration"])) if "concentration" in f else (
        math.pi / (math.sqrt(6.0) * float(np.std(lx))))
    scale = math.exp(float(np.mean(lx)) + EULER_GAMMA / k)
    return {"scale": scale, "concentration": k}


def beta(x, f):
    m, v = float(np.mean(x)), float(np.var(x))
    common = m * (1.0 - m) / v - 1.0 if v > 0 else 1.0
    common = max(common, 1e-3)
    return {"concentration1": m * common, "concentration0": (1.0 - m) * common}


def student_t(x, f):
    """Median and MAD for location and scale; df from the excess kurtosis 6/(ν − 4)."""
    z = (x - np.mean(x)) / np.std(x)
    excess = float(np.mean(z ** 4)) - 3.0
    df = 4.0 + 6.0 / excess if excess > 0.2 else 30.0
    return {"df": df, "loc": np.median(x), "scale": robust_scale(x)}


def cauchy(x, f):
    """Median and half the interquartile range (the exact quartiles of a Cauchy)."""
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return {"loc": q2, "scale": (q3 - q1) / 2.0 if q3 > q1 else robust_scale(x)}


def laplace_loc(x, f):
    """The location MLE is the sample median (the log-likelihood is not smooth there)."""
    return {"loc": np.median(x)}


def laplace(x, f):
    loc = f["loc"] if "loc" in f else np.median(x)
    return {"loc": np.median(x), "scale": np.mean(np.abs(x - loc))}


def gumbel(x, f):
    scale = float(np.std(x)) * math.sqrt(6.0) / math.pi
    return {"loc": np.mean(x) - EULER_GAMMA * scale, "scale": scale}


def logistic(x, f):
    return {"loc": np.median(x), "scale": float(np.std(x)) * math.sqrt(3.0) / math.pi}


def pareto_scale(x, f):
    """The scale MLE is the sample minimum, on the boundary of the support.

    Returned one ulp below the minimum, so that the minimum lies inside NumPyro's
    open support x > scale (the log-likelihood differs by ~n·α·1e-16).
    """
    return {"scale": np.nextafter(np.min(x), 0.0)}


def pareto(x, f):
    scale = f["scale"] if "scale" in f else np.min(x)
    s = float(np.sum(np.log(x / scale)))
    if s <= 0:
        raise ValueError("all observations equal the scale: the Pareto index (alpha) MLE is infinite")
    return {"scale": scale, "alpha": x.size / s}


def poisson(x, f):
    m = float(np.mean(x))
    if m == 0:
        raise ValueError("all counts are 0: the rate MLE is 0, on the boundary (no finite maximum)")
    return {"rate": m}


def geometric(x, f):
    m = float(np.mean(x))
    if m == 0:
        raise ValueError("all counts are 0: the success-probability MLE is 1, on the boundary")
    return {"probs": 1.0 / (1.0 + m)}


def binomial(x, f):
    n = np.broadcast_to(np.asarray(f["total_count"]), x.shape)
    p = float(np.sum(x)) / float(np.sum(n))
    if p <= 0 or p >= 1:
        raise ValueError(f"every trial is a {'failure' if p <= 0 else 'success'}: the probability "
                         f"MLE is {p:g}, on the boundary (no finite maximum)")
    return {"probs": p}


def negative_binomial2(x, f):
    """Mean x̄ (its MLE); concentration from the variance x̄ + x̄²/r.

    A finite MLE of the concentration exists only when the (divide-by-n)
    variance exceeds the mean (over-dispersion); otherwise it is +∞, the Poisson.
    """
    m, v = float(np.mean(x)), float(np.var(x))
    if m == 0:
        raise ValueError("all counts are 0: the mean MLE is 0, on the boundary")
    if "concentration" not in f and v <= m:
        raise ValueError(
            f"the counts are not over-dispersed (variance {v:.4g} ≤ mean {m:.4g}): the "
            "concentration MLE is infinite (the Poisson limit); fit a Poisson instead")
    return {"mean": m, "concentration": m * m / (v - m) if v > m else 1.0}


def bernoulli(x, f):
    p = float(np.mean(x))
    if p <= 0 or p >= 1:
        raise ValueError(f"every outcome is {int(p)}: the probability MLE is {p:g}, on the boundary "
                         "(no finite maximum)")
    return {"probs": p}


def categorical(x, f):
    """Observed frequencies (the MLE); the categories are 0 … max(x)."""
    counts = np.bincount(x.astype(np.int64))
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(
            f"categories {empty[:10].tolist()} are never observed: their probability MLE is 0, on "
            "the boundary of the simplex; drop or merge them (categories are 0 … max(x))")
    return {"probs": counts / counts.sum()}


def dirichlet(x, f):
    """Moment matching: mean m and precision s = median over j of m_j(1 − m_j)/v_j − 1."""
    m, v = np.mean(x, axis=0), np.var(x, axis=0)
    s = float(np.median(m * (1.0 - m) / np.where(v > 0, v, np.inf) - 1.0))
    s = s if np.isfinite(s) and s > 0 else 1.0
    return {"concentration": m * s}


def multivariate_normal(x, f):
    loc = np.mean(x, axis=0)
    d = x - (f["loc"] if "loc" in f else loc)
    cov = d.T @ d / x.shape[0]
    if np.linalg.eigvalsh(cov)[0] <= 1e-12 * max(np.trace(cov), 1e-300):
        raise ValueError(
            f"the sample covariance of the {x.shape[1]}-dimensional data is singular (n = "
            f"{x.shape[0]}, or collinear columns): the covariance MLE is not positive definite")
    return {"loc": loc, "covariance_matrix": cov}


def generic(x: np.ndarray, f: Mapping[str, Any], params: Mapping[str, Any], shapes: Mapping[str, tuple],
            variant: int = 0) -> dict[str, np.ndarray]:
    """Starting values from each parameter's constraint (the fallback for any distribution).

    ``variant=0`` scales them to the data (real → median, a positive scale →
    robust SD, other positive → 1); ``variant=1`` uses unit values (real → 0,
    positive → 1), a second start for when the first fails.
    """
    from numpyro.distributions import constraints as c

    out = {}
    center = float(np.median(x)) if variant == 0 and x.size else 0.0
    spread = robust_scale(x.reshape(-1)) if variant == 0 and x.size > 1 else 1.0
    for name, con in params.items():
        shape = shapes[name]
        base = getattr(con, "base_constraint", con)
        lo, hi = getattr(base, "lower_bound", None), getattr(base, "upper_bound", None)
        if base is c.simplex:
            value = np.full(shape, 1.0 / shape[-1])
        elif isinstance(base, type(c.positive_definite)):
            value = np.eye(shape[-1]) * (spread ** 2 if variant == 0 else 1.0)
        elif lo is not None and hi is not None:
            value = np.full(shape, (float(np.max(lo)) + float(np.min(hi))) / 2.0)
        elif hi is not None and lo is None:
            value = np.full(shape, float(np.min(hi)) - 1.0)
        elif lo is not None:
            scale_like = "scale" in name and variant == 0
            value = np.full(shape, float(np.max(lo)) + (spread if scale_like else 1.0))
        else:
            value = np.full(shape, center if name in ("loc", "mean", "mu") else 0.0)
        out[name] = value
    return out

"""Host-side summary table of a :class:`DistributionFit` (reuses the fit summary's layout)."""

from __future__ import annotations

import math

import numpy as np

from jaxmle.core.params import element_names
from jaxmle.core.stats import check_level, pvalue, wald_quantile
from jaxmle.inference.summary import Summary, _notes


def _rows(fit, level: float) -> list[dict]:
    q = wald_quantile(level)
    se_flat = dict(zip(fit.param_names, np.sqrt(np.diag(fit.cov))))
    rows = []
    for name, value in fit.params.items():
        value = np.asarray(value, dtype=float)
        if name in fit.fixed:
            if value.size == 1:
                rows.append(dict(name=f"{name} (fixed)", estimate=float(value), stderr=math.nan,
                                 z=math.nan, pvalue=math.nan, lower=math.nan, upper=math.nan))
            continue
        for flat, e in zip(element_names(name, value.shape), value.ravel()):
            s = float(se_flat[flat])
            z = e / s if s > 0 else math.nan
            rows.append(dict(name=flat, estimate=float(e), stderr=s, z=float(z), pvalue=pvalue(z),
                             lower=float(e - q * s), upper=float(e + q * s)))
    return rows


def _header(fit) -> tuple:
    res = fit.result
    converged = "yes" if fit.converged else f"NO: {res.status_message}"
    method = (f"maximum likelihood ({res.method})" if fit._optimised
              else "closed form" if fit.n_free else "none: every parameter is fixed")
    return (
        ("Distribution", fit.name),
        ("Estimation", method),
        ("Log-likelihood", f"{fit.loglik:.6g}"),
        ("AIC", f"{fit.aic:.6g}"),
        ("BIC", f"{fit.bic:.6g}"),
        ("No. observations", f"{fit.nobs:g}"),
        ("Estimated params", f"{fit.n_free}"),
        ("Converged", converged),
        ("Iterations", f"{fit.n_iter}"),
        ("|gradient|", f"{float(res.grad_norm):.2e}" if fit._optimised else "-"),
    )


def _fixed_notes(fit) -> list[str]:
    notes = []
    for name, value in fit.fixed.items():
        value = np.asarray(value)
        shown = f"{value.item():g}" if value.size == 1 else f"an array of {value.size} values"
        notes.append(f"{name} is fixed at {shown}: not estimated, not counted in AIC/BIC")
    return notes


def distribution_summary(fit, level: float = 0.95) -> Summary:
    """The :class:`Summary` table of a distribution fit."""
    check_level(level)
    notes = list(fit.notes) + _fixed_notes(fit)
    res, optimised = fit.result, fit._optimised
    if optimised:  # the optimiser's notes (multi-start, singular information, float32)
        notes.extend(_notes(res))
    stats = (("distribution", fit.name), ("method", res.method if optimised else None),
             ("loglik", fit.loglik), ("aic", fit.aic), ("bic", fit.bic), ("nobs", fit.nobs),
             ("n_params", fit.n_free), ("converged", fit.converged), ("n_iter", fit.n_iter),
             ("grad_norm", float(res.grad_norm) if optimised else None))
    return Summary(f"jaxmle fit results: {fit.name}", _header(fit), tuple(_rows(fit, level)),
                   level, tuple(notes), stats)

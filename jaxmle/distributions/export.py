"""The distribution fits' exports: ``DistributionFit.to_dict``/``to_dataframe`` and the
comparison table's (same JSON rule as :mod:`jaxmle.results.export`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxmle.results.export import (
    _by_name,
    _status_label,
    _wald_rows,
    frame,
    jsonable,
    pandas,
    versions,
)

# --------------------------------------------------------------------------- distributions


def _distfit_rows(f: Any, level: float) -> list[dict[str, Any]]:
    from jaxmle.core.params import element_names

    est = {n: v for n, v in zip(f.param_names, f._flat_estimates())}
    se = dict(zip(f.param_names, np.sqrt(np.diag(np.asarray(f.cov, float)))))
    rows = []
    for name, value in f.params.items():
        value = np.asarray(value, dtype=float)
        flat = element_names(name, value.shape)
        if name in f.fixed:
            rows += [dict(name=n, estimate=float(v), stderr=math.nan, z=math.nan,
                          pvalue=math.nan, ci_lower=math.nan, ci_upper=math.nan, fixed=True)
                     for n, v in zip(flat, value.ravel())]
        else:
            rows += _wald_rows(flat, [est[n] for n in flat], [se[n] for n in flat], level)
    return rows


def distfit_to_dict(f: Any, level: float = 0.95) -> dict[str, Any]:
    """See :meth:`DistributionFit.to_dict`."""
    res = f.result
    return jsonable({
        "distribution": f.name, "numpyro_class": f.distribution.__name__, "kind": "mle",
        "method": (res.method if f._optimised else "closed form" if f.n_free else "none"),
        "params": f.params, "stderr": f.stderr, "fixed": f.fixed,
        "estimated": list(f.estimated), "param_names": list(f.param_names), "level": level,
        "estimates": _by_name(_distfit_rows(f, level)), "cov": f.cov,
        "loglik": f.loglik, "aic": f.aic, "bic": f.bic, "nobs": f.nobs,
        "n_params": f.n_free, "n_free": f.n_free, "converged": bool(f.converged), "n_iter": int(f.n_iter),
        "status": int(res.status), "status_label": _status_label(res.status),
        "grad_norm": res.grad_norm if f._optimised else None,
        "notes": list(f.notes), "versions": versions()})


def distfit_to_dataframe(f: Any, level: float = 0.95) -> Any:
    pandas()
    return frame(_distfit_rows(f, level), "name")


def comparison_to_dict(c: Any) -> dict[str, Any]:
    """See :meth:`DistributionComparison.to_dict`."""
    return jsonable({"criterion": c.criterion, "nobs": c.nobs,
                     "ranking": [dict(r) for r in c.rows], "skipped": dict(c.skipped),
                     "fits": {n: distfit_to_dict(c.fits[n]) for n in c.names},
                     "versions": versions()})


def comparison_to_dataframe(c: Any) -> Any:
    pandas()
    return frame([dict(r) for r in c.rows], "distribution")

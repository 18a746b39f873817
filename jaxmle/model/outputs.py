"""What fit_model adds to ``jm.fit``'s result: the deterministic sites at the optimum
with delta-method standard errors, and the constrained random sites' predictions mapped
back from their unconstrained coordinate."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import numpy as np
from numpyro.distributions.transforms import biject_to

from jaxmle.core.params import free_positions
from jaxmle.model.trace import ModelSites
from jaxmle.results.result import FitResult


def _constrained_predictions(res: FitResult, supports: dict) -> FitResult:
    """û = t(ẑ) for the constrained random sites, their SEs by the delta method |t'(ẑ)|·SE
    (elementwise transforms)."""
    random, se, cond = dict(res.random), dict(res.random_stderr), dict(res.random_cond_stderr)
    for name, support in supports.items():
        t = biject_to(support)
        z = np.asarray(random[name])
        u = np.asarray(t(z))
        slope = np.exp(np.asarray(t.log_abs_det_jacobian(z, u)))
        random[name] = u
        se[name] = slope * np.asarray(se[name])
        cond[name] = slope * np.asarray(cond[name])
    return dataclasses.replace(res, random=random, random_stderr=se, random_cond_stderr=cond)


def _with_deterministic(res: FitResult, sites: ModelSites, shapes: tuple, data: dict
                        ) -> FitResult:
    """The deterministic sites g(θ̂) with delta-method SEs, sqrt(diag(G cov Gᵀ)) with
    G = ∂g/∂θ over the estimated parameters: ``res.delta`` of the same function, with the
    value and Jacobian from one compiled program (a refit costs no eager tracing).

    With random effects the sites are evaluated at (θ̂, û); a site that depends on û has
    a NaN standard error (its delta method would need dû/dθ and û's own variance)."""
    params, on_random = dict(res.params), ()
    if res.random:
        on_random = tuple(res.random)
        params.update({n: np.asarray(v) for n, v in res.random.items()})
    value, jac = _compiled_sites(sites)(params, data)
    n_out = value.shape[0]
    uses_random = np.zeros(n_out, bool)
    for n in on_random:
        uses_random |= np.any(np.asarray(jac.pop(n)).reshape(n_out, -1) != 0, axis=1)
    k_all = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(res.params))
    jac = np.concatenate([np.asarray(j).reshape(n_out, -1)
                          for j in jax.tree_util.tree_leaves(jac)], axis=1).reshape(-1, k_all)
    jac = jac[:, free_positions(res.params, res.fixed_names)]
    cov = np.asarray(res.cov, dtype=float)
    bad = np.isnan(cov)
    cov_g = jac @ np.where(bad, 0.0, cov) @ jac.T
    tainted = ((np.abs(jac) > 0) @ bad.any(axis=1)) | uses_random  # a NaN-SE parameter, or û
    var = np.where(tainted, np.nan, np.diag(cov_g))
    est, se = np.asarray(value, dtype=float), np.sqrt(np.maximum(var, 0.0))
    values, errors, start = {}, {}, 0
    for name, (shape, real) in zip(sites.names, shapes):
        size = int(np.prod(shape, dtype=int))
        values[name] = est[start:start + size].reshape(shape)
        # an integer or boolean site has no delta-method standard error
        errors[name] = (se[start:start + size] if real else np.full(size, np.nan)).reshape(shape)
        start += size
    return dataclasses.replace(res, deterministic=values, deterministic_stderr=errors)


@functools.lru_cache(maxsize=64)
def _compiled_sites(sites: ModelSites) -> Callable:
    """g(θ) and ∂g/∂θ in one jitted program per model and set of sites (data traced):
    refits, and the MLE and MAP fits of one model, share it."""
    def value_and_jacobian(params, data):
        return sites(params, data), jax.jacfwd(sites)(params, data)

    return jax.jit(value_and_jacobian)

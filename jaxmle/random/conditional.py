"""The other parameters of a fit whose variance components sit on the boundary.

When :func:`~jaxmle.random.boundary._boundary` finds the marginal likelihood flat up to
the edge of a parameter (σ → 0), that parameter is reported at the edge with a NaN
standard error. The fit's other estimates and standard errors must then be those of the
model with that parameter *at* the edge, not read off the joint information at the
point where the Newton stopped: there the information is singular along the boundary
coordinate, and its pseudo-inverse drops the part of every other parameter's variance
that the null direction touches (the centred eight schools by maximum likelihood,
τ̂ = 0: SE(μ) came out 0.27, where the marginal N(yⱼ | μ, σⱼ²) gives 4.07).

So the fit is run once more with the boundary parameters held (``fixed=``, the same
compiled programs: held values are data) where the marginal likelihood is level with its
value at the edge to every digit it has, as far back from the edge as that allows (the
Newton stops at σ ~ 1e-15, where the Laplace marginal's curvature in the other
parameters is lost to cancellation next to 1/σ² ~ 1e30), and the free
parameters' estimates, covariance, log-likelihood and predictions are taken from that
conditional fit. The result keeps the original fit's context (the boundary parameters
stay free for a profile, a refit or a likelihood-ratio test).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import jax
import numpy as np

from jaxmle.results.batch import with_members
from jaxmle.results.result import FitResult


def wholly(params: dict, names: tuple[str, ...]) -> bool:
    """Every boundary name is a whole scalar leaf (a held value ``fixed=`` can take)."""
    return all(n in params and np.size(params[n]) == 1 for n in names)


def _embed(small: np.ndarray, small_names: tuple, names: tuple) -> np.ndarray:
    """A (k', k') matrix over ``small_names`` as a (k, k) one over ``names`` (NaN rows and
    columns for the names it lacks)."""
    index = np.array([small_names.index(n) if n in small_names else -1 for n in names], int)
    ok = index >= 0
    out = np.full((len(names), len(names)), np.nan)
    out[np.ix_(ok, ok)] = np.asarray(small)[np.ix_(index[ok], index[ok])]
    return out


def conditional(res: FitResult, hold: dict, names: tuple[str, ...],
                refit: Callable[[dict], FitResult]) -> FitResult:
    """``res`` (the boundary parameters ``names`` at their edge) with the other parameters
    from ``refit(fixed)``, the fit with ``names`` held at ``hold`` (the boundary's
    ``_hold_value``: the edge to every digit of L). Unchanged where a boundary parameter
    is not a whole scalar leaf (``fixed=`` holds leaves) or that fit does not converge."""
    if not wholly(res.params, names):
        return res
    fixed = {n: np.asarray(hold[n]) for n in names}
    cond = refit(fixed)
    if not bool(cond.converged):
        return res
    params = dict(res.params)
    stderr = dict(res.stderr)
    for name, value in cond.params.items():
        if name not in names:
            params[name] = value
            stderr[name] = cond.stderr[name]
    cov = _embed(np.asarray(cond.cov), tuple(cond.param_names), tuple(res.param_names))
    info = _embed(np.asarray(cond.fisher_info), tuple(cond.param_names),
                  tuple(res.param_names))
    return dataclasses.replace(
        res, params=params, stderr=stderr, cov=cov, fisher_info=info, loglik=cond.loglik,
        logpost=cond.logpost, n_iter=np.asarray(res.n_iter) + np.asarray(cond.n_iter),
        grad_norm=cond.grad_norm, random=cond.random, random_stderr=cond.random_stderr,
        random_cond_stderr=cond.random_cond_stderr)


def refit_holding(fit: Callable, marginal: Any, data: Any, before: FitResult,
                  constraints: Any, method: Any, kwargs: dict,
                  predict: Callable[[FitResult], FitResult]) -> Callable[[dict], FitResult]:
    """The ``refit`` of :func:`conditional`: the marginal fit from ``before``'s estimates
    with ``fixed`` (and the user's own ``fixed=``) held, and its predictions."""
    def run(fixed: dict) -> FitResult:
        held = dict(kwargs.get("fixed") or {}, **fixed)
        args = dict(kwargs, fixed=held)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cond = fit(marginal, data, dict(before.params), constraints=constraints,
                       method=method, **args)
        return predict(cond) if bool(cond.converged) else cond

    return run


FIELDS = ("params", "stderr", "cov", "fisher_info", "loglik", "logpost", "converged", "status",
          "n_iter", "grad_norm")


def _suspects(bres: Any) -> np.ndarray:
    """The members worth the boundary check (a superset of those ``boundary`` accepts:
    its own first test is a singular information, a non-finite SE, or a constrained
    parameter within 2 SEs of its edge): any singular flag, non-finite SE or estimate
    within 2 SEs of 0, or a fit that did not converge."""
    n = len(bres)
    value = np.abs(bres.flat_params_all().reshape(n, -1))
    se = np.concatenate([np.asarray(x, float).reshape(n, -1)
                         for x in jax.tree_util.tree_leaves(bres.stderr)], axis=1)
    singular = np.asarray(bres.stats.singular).reshape(n, -1)
    near = np.any(~np.isfinite(se) | (value < 2 * np.where(np.isfinite(se), se, 0.0)), axis=1)
    return np.nonzero(near | np.any(singular, axis=1) | ~np.asarray(bres.converged))[0]


def batch_members(bres: Any, boundary: Callable, conditional_of: Callable) -> tuple[Any, list]:
    """``fit_batch`` with ``random=``: each member that ``jm.fit`` would report on the
    boundary (``boundary(member)``: :func:`~jaxmle.random.boundary._boundary` without its
    warning) is reported as ``jm.fit`` reports it, the other parameters from the
    conditional refit (``conditional_of(member, before, names, hold)``). Returns the batch
    and the names on the boundary per member (empty where none)."""
    n = len(bres)
    found: list = [() for _ in range(n)]
    members = {}
    for i in _suspects(bres):
        before = bres[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, names, hold = boundary(before)
        if names:
            found[i] = names
            members[i] = conditional_of(res, before, names, hold)
    if not members:
        return bres, found
    updates = {field: with_members(getattr(bres, field),
                                   {i: getattr(m, field) for i, m in members.items()})
               for field in FIELDS}
    return dataclasses.replace(bres, **updates), found

"""A second path for a Newton fit that stalled: scoring steps where H is indefinite.

Far from the optimum the observed information H = ∇²f can be indefinite over a wide
region (a Gaussian bump whose centre starts outside the data, NIST Eckerle4 from its
first certified start): the damped Newton shifts H by its most negative eigenvalue,
caps the step, and can stall on the plateau there. Where the log-likelihood returns its
per-observation terms ℓᵢ, the outer product of their scores B = Σ wᵢ sᵢsᵢᵀ (the BHHH
matrix; plus the positive part of the priors' curvature for MAP) is positive
semidefinite everywhere and, near a correctly specified optimum, close to H: a Fisher-
scoring-like metric that needs no model knowledge. The rescue runs the very same damped
Newton (the shared ``_advance`` program: nothing new compiles for the solver) from the
fit's start with the metric ``H where H is safely positive definite, else B`` (one more
model program, compiled only when a fit stalls), then the plain Newton from where that
ended, so the reported point, its status, information and end-of-fit verdict are the
plain Newton's own. The rescue's answer replaces the stalled fit only when it converged
(status SUCCESS after the verdict) at a log-likelihood (log posterior) at least as high;
else the stalled fit is reported as it was.

Run by ``jm.fit`` (not traced; with ``n_starts``, for each start that stalled, from that
start) and by ``fit_batch`` for each member that stalled, so a member stays what
``jm.fit`` gives on its data; not inside a user's ``jit``/``vmap`` (the fused program has
no second path), not for profile points or Laplace marginals.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.core.held import Inputs, View
from jaxmle.core.priors import log_prior
from jaxmle.core.solvers.dense import factorize, hold_rows, value_grad_hessian
from jaxmle.core.typing import Status
from jaxmle.fitting import host as _host
from jaxmle.fitting.buckets import bucketed
from jaxmle.fitting.kernel import KernelConfig, kernel_objective, model_meat
from jaxmle.results.batch import with_members
from jaxmle.results.result import FitResult

RESCUED = frozenset({int(Status.STALLED)})
"""The final statuses a rescue is tried for: a fit that stopped short of any verdict.
(FLAT, DIVERGED, SADDLE: the verdict found why no maximum was reached there; the
iteration limit is the user's budget.)"""


def rescuable(config: KernelConfig, res: FitResult) -> bool:
    """A plain-Newton fit that stalled (its callers pass untraced results only), of a
    log-likelihood that is not an inner optimisation (whose per-observation scores would
    each cost a solve)."""
    if config.method != "newton" or getattr(config.loglik, "jaxmle_costly", False):
        return False
    return int(np.asarray(res.status)) in RESCUED


def _per_observation(key: KernelConfig, inputs: Inputs, z: np.ndarray) -> bool:
    """The log-likelihood returns its per-observation terms (a vector), so B exists."""
    view = View(key.space, inputs.held, key.constant)
    try:
        out = jax.eval_shape(lambda z: key.loglik(view.to_natural(z), inputs.data),
                             jax.ShapeDtypeStruct(z.shape, z.dtype))
    except Exception:   # noqa: BLE001  (no rescue rather than a new error after a fit)
        return False
    return len(getattr(out, "shape", ())) == 1


@functools.lru_cache(maxsize=64)
def metric_program(key: KernelConfig) -> Callable:
    """(inputs, weights, z) → f, ∇f and the rescue's metric: H where its unit-diagonal-
    scaled form has a safe Cholesky factor (the plain Newton's own test), else B."""

    def fgb(inputs, weights, z):
        inputs = _host._masked(inputs, weights)
        view = View(key.space, inputs.held, key.constant)
        f, g, h = value_grad_hessian(kernel_objective(key, view, inputs, weights), z)
        # (the scores' outer product without clusters: the model key's n_groups is 0)
        b = model_meat(key, view, inputs._replace(groups=None), weights, z)
        if key.prior is not None:   # −log π's curvature, its positive part
            p = jax.hessian(lambda z: -log_prior(key.prior, inputs.prior, view.to_natural(z),
                                                 inputs.data, smooth_only=True))(z)
            values, vectors = jnp.linalg.eigh(0.5 * (p + p.T))
            b = b + (vectors * jnp.maximum(values, 0.0)) @ vectors.T
        held_z = inputs.held.z
        safe = ~factorize(hold_rows(h, held_z)[None], jnp.zeros(1, h.dtype)).use_eig[0]
        return f, g, jnp.where(safe, h, 0.5 * (b + b.T))

    return jax.jit(fgb)


def rescue(config: KernelConfig, data: Inputs, init_leaves: list | None, weights: Any,
           tol: Any, max_iter: Any, res: FitResult, z0: np.ndarray | None = None) -> FitResult:
    """``res`` (a full-size result, as the drivers return it), or the rescue's converged
    answer where it finds one at least as good (see the module docstring). ``init_leaves``:
    the start as natural leaves, or ``z0`` in z."""
    if not rescuable(config, res):
        return res
    config, inputs, weights = bucketed(config, data, weights, init_leaves)
    programs = _host.model_programs(config)
    dev_inputs, dev_weights = _host.on_device(inputs, weights)
    if z0 is None:
        z0 = _host.start_z(config, programs, init_leaves)
    z0 = np.asarray(z0, np.dtype(config.dtype))
    if not _per_observation(config, inputs, z0):
        return res
    metric = metric_program(_host.model_key(config))
    mid = _host.solve(programs, dev_inputs, dev_weights, z0, tol, max_iter, evaluate=metric)
    end = _host.solve(programs, dev_inputs, dev_weights, np.asarray(mid.z), tol, max_iter)
    if not (bool(end.done) and int(end.status) == Status.SUCCESS):
        return res
    new = _host.conclude(config, programs, dev_inputs, dev_weights, end, inputs.held, tol,
                         max_iter)
    before, after = float(np.asarray(res.logpost)), float(np.asarray(new.logpost))
    noise = 16 * np.finfo(np.dtype(config.dtype)).eps * (1 + abs(before))
    better = after >= before - noise or (np.isnan(before) and np.isfinite(after))
    if int(np.asarray(new.status)) != Status.SUCCESS or not better:
        return res
    n_iter = np.asarray(res.n_iter) + np.asarray(mid.n_iter) + np.asarray(new.n_iter)
    return dataclasses.replace(new, n_iter=n_iter.astype(np.asarray(new.n_iter).dtype))


def rescue_members(fits: FitResult, config: KernelConfig, inputs: Inputs, init_leaves: list,
                   weights: Any, weights_batched: bool, tol: Any, max_iter: Any) -> FitResult:
    """Each member whose plain Newton stalled, as ``jm.fit`` reports it on its own data:
    rescued by the scoring-metric path where that converges
    (:func:`~jaxmle.fitting.rescue.rescue`, one member after another on the host; the
    members that did not stall are left as they are). ``inputs.data``: batched;
    ``inputs.held``: the members' common one."""
    if config.method != "newton":
        return fits
    members = np.flatnonzero(np.isin(np.asarray(fits.status), sorted(RESCUED)))
    if not members.size:
        return fits
    rescued = {}
    for i in members:
        before = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x)[i], fits)
        data = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x)[i], inputs.data)
        w = weights[i] if weights is not None and weights_batched else weights
        after = rescue(config, inputs._replace(data=data), [x[i] for x in init_leaves], w,
                       tol, max_iter, before)
        if after is not before:
            rescued[int(i)] = after
    return with_members(fits, rescued) if rescued else fits

"""The host's side of a full-size kernel result: the free parameters' rows
(:func:`free_rows`) and the fixed ones' scores (:func:`with_fixed_scores`).

The compiled programs work on every parameter, with what is held as data
(:mod:`jaxmle.core.held`); which parameters are free is known on the host, which
takes their rows of the covariance, information and diagnostics here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.core.space as _space
from jaxmle.core.held import Layout
from jaxmle.core.priors import log_prior
from jaxmle.fitting.kernel import KernelConfig
from jaxmle.results.result import FitResult


@functools.lru_cache(maxsize=64)
def score_program(config: KernelConfig, batch_axes: Any = None) -> Callable:
    """∂(ℓ + log π)/∂θ at ``params`` for every natural element (vmapped over a batch with
    ``batch_axes``). Only fits with fixed elements need it (the scores there are the
    ingredient of a score test), so the fit's program does not carry this gradient: it
    is compiled on the first fit with ``fixed=`` of a problem, whatever is fixed."""
    dtype = jnp.dtype(config.dtype)

    def one(inputs, weights, params):
        data = _objective.mask_padding(inputs.data, weights)

        def total(theta):
            tree = config.space.unravel_natural(theta)
            f = _objective.total_loglik(config.loglik, tree, data, weights, dtype)[0]
            if config.prior is None:
                return f
            return f + log_prior(config.prior, inputs.prior, tree, data)

        return jax.grad(total)(config.space.ravel_natural(params))

    return jax.jit(one if batch_axes is None else jax.vmap(one, in_axes=batch_axes))


def with_fixed_scores(res: FitResult, config: KernelConfig, inputs: Any, weights: Any,
                      lay: Layout, batch_axes: Any = None,
                      scores: Callable | None = None) -> FitResult:
    """The full-size result with ∂ℓ/∂θ at the fixed elements in ``score`` (host side).
    ``scores(params)``: the full score vector by another route (the host driver's model
    program), or None to use :func:`score_program`."""
    if not len(lay.fixed_nat):
        return res
    full = None if scores is None else scores(res.params)
    if full is None:
        full = score_program(config, batch_axes)(inputs, weights, res.params)
    lead = full.shape[:-1]
    leaves, treedef = jax.tree_util.tree_flatten(res.score)
    if isinstance(full, jax.core.Tracer):   # jm.fit inside the user's jit/vmap
        flat = jnp.concatenate([jnp.reshape(x, lead + (-1,)) for x in leaves], axis=-1)
        flat = flat.at[..., lay.fixed_nat].set(full[..., lay.fixed_nat])
    else:
        full = np.asarray(full)
        flat = np.concatenate([np.reshape(np.asarray(x), lead + (-1,)) for x in leaves],
                              axis=-1)
        flat[..., lay.fixed_nat] = full[..., lay.fixed_nat]
    bounds = np.cumsum([0] + [l.size for l in config.space.leaves])
    out = [flat[..., a:b].reshape(lead + l.shape)
           for a, b, l in zip(bounds[:-1], bounds[1:], config.space.leaves)]
    if isinstance(leaves[0], jax.Array):
        out = [jnp.asarray(x) for x in out]
    return dataclasses.replace(res, score=jax.tree_util.tree_unflatten(treedef, out))


def free_rows(res: FitResult, lay: Layout, space: _space.ParamSpace) -> FitResult:
    """The kernel's full-size result with the held parameters' rows taken out (host side;
    a batch keeps its leading axis): the covariance, information, eigenvalues and
    singular flags of the free parameters, their names and count."""
    if lay.plain:
        return res
    free = lay.free_nat
    dense = jax.Array if isinstance(res.cov, jax.Array) else np.ndarray

    def rows(x, idx, matrix=False):
        if not isinstance(x, jax.core.Tracer):   # (a tracer: jm.fit inside the user's jit)
            x = np.asarray(x)
        out = x[..., idx[:, None], idx[None, :]] if matrix else x[..., idx]
        return jnp.asarray(out) if dense is jax.Array else out

    stats = res.stats._replace(
        info_eigvals=rows(res.stats.info_eigvals, np.arange(lay.m_free)),
        singular=rows(res.stats.singular, free))
    return dataclasses.replace(
        res, cov=rows(res.cov, free, True), fisher_info=rows(res.fisher_info, free, True),
        stats=stats, param_names=tuple(space.names[i] for i in free), n_free=lay.m_free,
        fixed_names=tuple(space.names[i] for i in lay.fixed_nat),
        method=res.method if lay.m_free else "none")

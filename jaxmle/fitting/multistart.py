"""Multi-start: fit from K starts as one batch and keep the best optimum.

Starts are drawn around ``init`` in the unconstrained coordinates z (so every
start satisfies the constraints):

    z⁽¹⁾ = z₀,   z⁽ʲ⁾ = z₀ + s·(1 + |z₀|)·εⱼ,  εⱼ ~ N(0, I),  j = 2..K,

with spread s = ``start_scale`` (ε drawn on the host by NumPy's generator seeded with the
``key``'s bits: drawing compiles nothing, and both drivers start from the same points). The K fits share the data and run as one
``fit_batch``-style batch; the reported fit is the converged one with the
highest log-likelihood, and ``res.starts`` records what every start reached.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.fitting.sharding as _sharding
from jaxmle.core.held import spread
from jaxmle.core.space import ParamSpace
from jaxmle.core.typing import Status
from jaxmle.fitting.kernel import KernelConfig
from jaxmle.fitting.start import starts_around
from jaxmle.results.result import FitResult, StartsReport


def draw_starts(space: ParamSpace, init_leaves: list[np.ndarray], n_starts: int, key: Any,
                scale: float, held: Any) -> np.ndarray:
    """K starts in the unconstrained coordinates z (K, m); held coordinates stay at init."""
    z0 = np.asarray(space.to_unconstrained([jnp.asarray(x) for x in init_leaves]))
    return starts_around(z0, np.asarray(held.z), n_starts, key, scale)


def same_optimum_tolerance(loglik: float) -> float:
    """Log-likelihoods closer than this count as the same optimum (a likelihood-ratio
    statistic of 2e-6: no statistical difference)."""
    return 1e-6 * max(1.0, abs(loglik))


def fit_multistart(config: KernelConfig, data: Any, init_leaves: list[np.ndarray], weights: Any,
                   tol: np.ndarray, max_iter: np.ndarray, n_starts: int, key: Any,
                   scale: float, distributed: bool = False) -> FitResult:
    """The best of ``n_starts`` fits, with the :class:`StartsReport` of all of them.
    ``distributed``: every process of a ``jax.distributed`` program fits its part of the
    starts (the same K starts on every process), and all get the best of all."""
    import jaxmle.fitting.host as _host

    if distributed:
        return _fit_starts_distributed(config, data, init_leaves, weights, tol, max_iter,
                                       n_starts, key, scale)
    if _host.eligible(config) and not any(isinstance(x, jax.core.Tracer)
                                          for x in jax.tree_util.tree_leaves(data)):
        from jaxmle.fitting.rescue import rescue

        fits, zs = _host.fit_starts(config, data, init_leaves, weights, tol, max_iter,
                                    n_starts, key, scale)
        # a start whose Newton stalled gets the scoring rescue from that start, as jm.fit
        fits = [rescue(config, data, init_leaves, weights, tol, max_iter, f, z0=z)
                for f, z in zip(fits, zs)]
        fits = jax.tree_util.tree_map(lambda *x: np.stack(x), *fits)
        return _best(fits, zs)
    from jaxmle.fitting.batch import run_batch   # the batch driver, loaded for multi-start only
    from jaxmle.fitting.batch_inputs import resolve_chunk_size
    from jaxmle.fitting.batch_kernel import BatchConfig

    zs = draw_starts(config.space, init_leaves, n_starts, key, scale, data.held)
    bc = BatchConfig(config, data_batched=False, weights_batched=False)
    data = data._replace(held=spread(data.held, n_starts))
    fits = run_batch(bc, data, zs, weights, n_starts, tol, max_iter,
                     chunk=resolve_chunk_size(n_starts, None, n_starts, _sharding.device_count()),
                     progress=False)
    return _best(fits, zs)


def _fit_starts_distributed(config: KernelConfig, data: Any, init_leaves: list[np.ndarray],
                            weights: Any, tol: np.ndarray, max_iter: np.ndarray, n_starts: int,
                            key: Any, scale: float) -> FitResult:
    import jaxmle.fitting.distributed as _distributed
    from jaxmle.fitting.batch import run_batch
    from jaxmle.fitting.batch_inputs import resolve_chunk_size
    from jaxmle.fitting.batch_kernel import BatchConfig

    _distributed.check_initialized("fit(n_starts=..., distributed=True)")
    if n_starts < jax.process_count():
        raise ValueError(f"a distributed multi-start gives each of the {jax.process_count()} "
                         f"processes at least one start; n_starts = {n_starts} is fewer")
    zs = draw_starts(config.space, init_leaves, n_starts, key, scale, data.held)
    rows = _distributed.even_rows(n_starts)
    mine = rows.mine
    bc = BatchConfig(config, data_batched=False, weights_batched=False)
    share = data._replace(held=spread(data.held, len(mine)))

    def run():
        return run_batch(bc, share, zs[mine], weights, len(mine), tol, max_iter,
                         chunk=resolve_chunk_size(n_starts, None, n_starts,
                                                  _sharding.device_count()), progress=False)

    fits, _ = _distributed.collective(run)
    return _best(_distributed.allgather_rows(fits, rows), zs)


def _best(fits: FitResult, zs: np.ndarray) -> FitResult:
    """The reported fit of a multi-start (a batch of fits), with its :class:`StartsReport`."""
    loglik = np.asarray(fits.loglik)
    converged = np.asarray(fits.converged, bool)
    usable = converged if converged.any() else (
        np.isfinite(loglik) & (np.asarray(fits.status) != Status.NONFINITE_START))
    if not usable.any():
        usable = np.zeros_like(converged)
        usable[0] = True  # all starts failed: report the user's own init
    top = int(np.argmax(np.where(usable, loglik, -np.inf)))
    at_best = converged & (np.abs(loglik - loglik[top]) <= same_optimum_tolerance(loglik[top]))
    # of the starts at the best optimum, report the first (the user's init when it got there)
    best = int(np.argmax(at_best)) if at_best.any() else top
    res = jax.tree_util.tree_map(lambda x: x[best], fits)
    return dataclasses.replace(res, starts=StartsReport(loglik, converged, at_best, zs))

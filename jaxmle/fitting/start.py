"""Checks before a fit's program is compiled: is the log-likelihood (and log prior)
finite at the start? A small compiled program (no derivatives) answers, with numbers
reduced to a few replicated values (the data may be sharded over devices or hosts), so a
bad start is an error naming parameters and observations, not minutes of compiling
followed by NaN."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.core.params as _params
from jaxmle.core.held import View
from jaxmle.core.priors import log_prior
from jaxmle.fitting.kernel import KernelConfig, initial_z

COMPILED = _params.SeenSet()   # programs × argument shapes already run (so compiled)


def call_key(kernel: Callable, args: Any) -> tuple:
    """What decides whether calling ``kernel`` on ``args`` compiles: the cheap checks
    before the compile run only for a key not in :data:`COMPILED`."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return id(kernel), treedef, _params.shape_signature(leaves)


class StartValues(NamedTuple):
    """ℓ and log π at the start, reduced to a few replicated numbers (the data may be
    sharded over devices or hosts: nothing per observation leaves the program)."""

    total: Any          # ℓ(θ₀)
    n_terms: Any        # per-observation terms (0: loglik returned the total)
    n_bad: Any          # how many of them are not finite
    first_bad: Any      # (10,) their first indices, −1 padded
    prior: Any          # log π(θ₀) (0 without priors)
    params: Any         # θ₀ (with fixed values)


@functools.lru_cache(maxsize=128)
def start_program(config: KernelConfig) -> Callable:
    """:class:`StartValues` at the start: a small compiled program (no derivatives) run
    before the fit's own is compiled."""
    dtype = jnp.dtype(config.dtype)

    def run(inputs, init_leaves, weights):
        view = View(config.space, inputs.held, config.constant)
        params = view.to_natural(initial_z(config, init_leaves))
        terms = jnp.asarray(config.loglik(params, _objective.mask_padding(inputs.data, weights)))
        terms = terms.astype(dtype)
        if weights is not None and terms.shape == weights.shape:
            terms = jnp.where(weights > 0, terms, 0.0)
        bad = ~jnp.isfinite(jnp.atleast_1d(terms))
        first = jnp.nonzero(bad, size=10, fill_value=-1)[0] if terms.ndim == 1 \
            else jnp.full(10, -1)
        prior = jnp.zeros((), dtype)
        if config.prior is not None:
            prior = log_prior(config.prior, inputs.prior, params, inputs.data).astype(dtype)
        return StartValues(jnp.sum(terms), jnp.asarray(terms.size if terms.ndim == 1 else 0),
                           jnp.sum(bad), first, prior, params)

    return jax.jit(run)


def check_start(config: KernelConfig, data: Any, init_leaves: list, weights: Any) -> None:
    """Raise, naming the parameters' start values and the offending observations, if the
    log-likelihood (or log prior) is not finite at the start."""
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(data)):
        return
    message = start_message(jax.device_get(start_program(config)(data, init_leaves, weights)))
    if message:
        raise ValueError(message)


def start_message(start: StartValues) -> str | None:
    """What is not finite at the start (None if all is well)."""
    total, prior = float(start.total), float(start.prior)
    if np.isfinite(total) and np.isfinite(prior):
        return None
    names = _params.leaf_names(start.params)
    values = ", ".join(f"{n}={_short(v)}"
                       for n, v in zip(names, jax.tree_util.tree_leaves(start.params)))
    if not np.isfinite(prior):
        return (f"the log prior is {prior} at the start ({values}): start inside the "
                "support of every prior")
    what = f"the log-likelihood is {total} at init ({values})"
    if int(start.n_terms):
        first = [int(i) for i in np.asarray(start.first_bad) if i >= 0]
        what += (f": {int(start.n_bad)} of {int(start.n_terms)} per-observation terms are not "
                 f"finite (first at observation(s) {first})")
    return what + ("; start where every observation has positive density at these parameter "
                   "values (e.g. data outside the support of the distribution, a scale at 0, a "
                   "probability at 0 or 1), or check the log-likelihood there")


def _short(v: Any) -> str:
    v = np.asarray(v)
    if v.ndim == 0:
        return f"{float(v):.6g}"
    flat = ", ".join(f"{float(x):.4g}" for x in v.ravel()[:4])
    return f"[{flat}{', ...' if v.size > 4 else ''}]"


def starts_around(z0: np.ndarray, held_z: np.ndarray, n_starts: int, key: Any,
                  scale: float) -> np.ndarray:
    """z0 and ``n_starts − 1`` starts z0 + s·(1 + |z0|)·ε (held coordinates stay), ε ~ N(0, I)
    drawn on the host by NumPy's generator seeded with the bits of ``key`` (a JAX PRNG key,
    an integer seed, or None for 0): the same starts in both drivers, nothing compiled."""
    noise = np.random.default_rng(_seed(key)).standard_normal((n_starts - 1, z0.shape[0]))
    noise = np.where(held_z, 0.0, noise).astype(z0.dtype)
    return np.concatenate([z0[None], z0 + scale * (1.0 + np.abs(z0)) * noise])


def _seed(key: Any) -> list[int]:
    """The integers that seed the starts' generator."""
    if key is None:
        return [0]
    if isinstance(key, (int, np.integer)):
        return [int(key)]
    if isinstance(key, jax.core.Tracer):
        raise ValueError("n_starts needs a concrete key (the starts are drawn on the host); "
                         "pass key= as a value, not a traced array")
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key, np.uint64).ravel()]

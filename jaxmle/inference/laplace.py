"""The Laplace approximation of a posterior (``FitResult.laplace()``).

In the unconstrained coordinates z (θ = θ(z)), the posterior density is

    log p(z | x) = ℓ(θ(z)) + log π(θ(z)) + log |det ∂θ/∂z| + const,

whose mode ẑ differs from the MAP of θ by the Jacobian term. The Laplace
approximation is the Gaussian N(ẑ, Σ), Σ = (−∇² log p(ẑ | x))⁻¹ (what NumPyro's
``AutoLaplaceApproximation`` and Stan's ``laplace`` method build); draws are pushed
through θ(z). The same expansion gives the Laplace estimate of the log marginal
likelihood (the evidence, for comparing models):

    log p(x) ≈ ℓ(θ(ẑ)) + log π(θ(ẑ)) + log|det ∂θ/∂z|(ẑ) + (m/2) log 2π − ½ log det(−∇² log p),

exact for a Gaussian likelihood and prior on unconstrained parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.solvers as _solvers
from jaxmle.core.held import Inputs, View, elementwise, layout
from jaxmle.fitting.kernel import context_of
from jaxmle.results.result import provides


def log_abs_det_jacobian(view: View, z: jax.Array) -> jax.Array:
    """log |det ∂θ/∂z| over the free coordinates (NumPyro's convention for a manifold
    leaf: the density of its unconstrained coordinates, as in NumPyro's potential
    energy); held coordinates (fixed elements, wholly fixed leaves) contribute nothing."""
    import jaxmle.core.params as _params

    shapes = [l.unc_shape for l in view.space.leaves]
    parts = _params.unravel(z, shapes)
    held = _params.unravel(view.held.z, shapes)
    total = jnp.zeros((), z.dtype)
    for leaf, u, h in zip(view.space.leaves, parts, held):
        t = leaf.transform
        ladj = t.log_abs_det_jacobian(u, t(u))
        if elementwise(leaf):
            total = total + jnp.sum(jnp.where(h, 0.0, jnp.broadcast_to(ladj, u.shape)))
        else:
            total = total + jnp.where(jnp.any(h), 0.0, jnp.sum(ladj))
    return total


def _posterior_objective(config: Any, inputs: Inputs, weights: Any):
    """−log p(z | x): the fit's objective minus the log-Jacobian."""
    from jaxmle.fitting.kernel import kernel_objective

    view = View(config.space, inputs.held, config.constant)
    neg_logpost = kernel_objective(config, view, inputs, weights)
    return view, lambda z: neg_logpost(z) - log_abs_det_jacobian(view, z)


def _mode_and_curvature(config: Any, inputs: Any, weights: Any, z0: jax.Array, tol: jax.Array,
                        max_iter: jax.Array):
    view, objective = _posterior_objective(config, inputs, weights)
    held = inputs.held.z
    sol = _solvers.minimise("newton", objective, z0, tol, max_iter, held)  # f, H at its last z
    # the held coordinates' block is the identity: the factor is the free block's
    hess = jnp.where(held[:, None] | held[None, :], jnp.eye(held.shape[0], dtype=sol.z.dtype),
                     0.5 * (sol.hess + sol.hess.T))
    chol = jnp.linalg.cholesky(hess)
    m = jnp.sum(~held)
    log_evidence = -sol.f + 0.5 * m * math.log(2 * math.pi) - jnp.sum(jnp.log(jnp.diag(chol)))
    return sol, chol, log_evidence, view.to_natural(sol.z)


@functools.lru_cache(maxsize=64)
def _compiled(config: Any):
    return jax.jit(functools.partial(_mode_and_curvature, config))


@functools.lru_cache(maxsize=64)
def _compiled_draws(config: Any):
    def draws(inputs, z):
        view = View(config.space, inputs.held, config.constant)
        return jax.vmap(view.to_natural)(z)

    return jax.jit(draws)


@dataclasses.dataclass(frozen=True, eq=False)
class LaplaceApproximation:
    """A Gaussian approximation N(ẑ, Σ) of the posterior in the unconstrained space.

    Attributes
    ----------
    params : pytree
        θ(ẑ): the natural parameters at the mode of the unconstrained posterior
        (not the MAP of θ, which has no Jacobian term).
    z, cov_unconstrained : arrays
        ẑ (m,) and Σ (m, m), in the order of ``unconstrained_names``.
    unconstrained_names : tuple of str
        The parameter each unconstrained coordinate belongs to.
    """

    params: Any
    z: np.ndarray
    cov_unconstrained: np.ndarray
    unconstrained_names: tuple[str, ...]
    converged: bool
    _log_evidence: float
    _missing_priors: tuple[str, ...]
    _config: Any = dataclasses.field(repr=False)
    _data: Any = dataclasses.field(repr=False)
    _z_full: Any = dataclasses.field(repr=False, default=None)   # ẑ with the held coordinates
    _free: Any = dataclasses.field(repr=False, default=None)     # the free coordinates in it

    @property
    def log_evidence(self) -> float:
        """The Laplace estimate of log p(x) = log ∫ p(x | θ) π(θ) dθ (needs a proper prior on
        every parameter)."""
        if self._missing_priors:
            raise ValueError(
                f"log_evidence needs a proper prior on every parameter; "
                f"{list(self._missing_priors)} have none (a flat, improper prior: the marginal "
                "likelihood is not defined)")
        return self._log_evidence

    @property
    def stderr_unconstrained(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov_unconstrained))

    def sample(self, key: Any, n: int) -> Any:
        """``n`` draws θ(z), z ~ N(ẑ, Σ): a pytree shaped like ``params`` with a leading
        axis of length n."""
        eps = jax.random.normal(key, (int(n), self.z.shape[0]), dtype=self.z.dtype)
        z = self.z[None, :] + eps @ np.linalg.cholesky(self.cov_unconstrained).T
        full = np.repeat(self._z_full[None, :], z.shape[0], axis=0)
        full[:, self._free] = z
        return _compiled_draws(self._config)(self._data, jnp.asarray(full))

    def __repr__(self) -> str:
        ev = "n/a" if self._missing_priors else f"{self._log_evidence:.6g}"
        return (f"LaplaceApproximation({len(self.z)} unconstrained coordinates, "
                f"log_evidence={ev}, converged={self.converged})")


@provides("laplace")
def laplace(res: Any) -> LaplaceApproximation:
    """The Laplace approximation of the posterior of a MAP fit (see module docstring)."""
    ctx = context_of(res, "laplace()")
    config = ctx.config
    if config.prior is None:
        raise ValueError("laplace() approximates a posterior: fit with priors= (or "
                         "jm.fit_model(..., method='map'))")
    if config.method == "prox-newton":
        raise ValueError("laplace() is not available with Laplace (L1) priors: the posterior "
                         "has a kink at the mode, where no Gaussian approximation holds")
    if not bool(res.converged):
        raise ValueError(f"laplace() needs a converged fit (this one: {res.status_message})")
    data = Inputs(ctx.data, ctx.held, None, ctx.prior)
    sol, chol, log_ev, params = _compiled(config)(data, ctx.weights, jnp.asarray(res.stats.z),
                                                  ctx.tol, ctx.max_iter)
    chol = np.asarray(chol)
    if not np.all(np.isfinite(chol)):
        raise ValueError("the Hessian of the log posterior in the unconstrained coordinates is "
                         "not negative definite at its mode: no Laplace approximation (the "
                         "posterior is flat or improper in some direction)")
    lay = layout(config.space, ctx.held)
    free = lay.act_unc
    inv = np.linalg.inv(chol)
    cov = (inv.T @ inv)[np.ix_(free, free)]
    fixed = set(lay.fixed_nat.tolist())
    starts = np.cumsum([0] + [l.size for l in config.space.leaves])
    free_leaves = [l for l, n0 in zip(config.space.leaves, starts)
                   if not fixed.issuperset(range(n0, n0 + l.size))]
    missing = tuple(l.name for l in free_leaves
                    if config.prior.function is None and l.name not in config.prior.names)
    z_full = np.asarray(sol.z)
    return LaplaceApproximation(
        params=jax.device_get(params), z=z_full[free], cov_unconstrained=cov,
        unconstrained_names=tuple(config.space.unc_names[i] for i in free),
        converged=int(sol.status) == 0, _log_evidence=float(log_ev), _missing_priors=missing,
        _config=config, _data=data, _z_full=z_full, _free=free)

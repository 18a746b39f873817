"""Proximal Newton for a smooth objective plus an L1 penalty (Laplace priors).

Minimises F(z) = f(z) + Σ_j λ_j |z_j − m_j| (λ_j = 0 for unpenalised coordinates),
the negative log posterior with Laplace(m_j, 1/λ_j) priors. Plain Newton cannot
land on the kink z_j = m_j; a proximal Newton step can. It is the one damped Newton
(:class:`jaxmle.core.solvers.newton.DampedNewton`: acceptance, damping, noise floor, status) with
this module's step model (:class:`ProxModel`):

1. the quadratic model  q(w) = gᵀ(w − z) + ½(w − z)ᵀA(w − z) + Σ λ_j|w_j − m_j|,
   A = H + (μ + shift)·D (D = diag of H's scale; the shift makes A positive
   definite where H is not), is minimised by coordinate descent: each
   coordinate's update is a soft-threshold, so w_j = m_j *exactly* where the
   penalty wins (glmnet / newGLMNET's scheme);
2. on the active set that coordinate descent found (w_j ≠ m_j, signs fixed) the
   model is minimised exactly by one linear solve; the polished point is kept
   when it keeps those signs and the zeros still satisfy |∂q/∂w_j| ≤ λ_j, so the
   outer iteration converges quadratically once the zero pattern has settled;
3. the trial w is evaluated (f, ∇f, ∇²f in one pass) and accepted on sufficient
   decrease of F; a rejected trial raises the damping μ (shorter steps, still with
   exact zeros; no line search), an accepted one lowers it.

The model step is computed once per iteration, at the accepted point (the
refresh), and is the next trial. Convergence: the model step from the current
point is within ``tol`` standard errors (dᵀAd ≤ τ² with μ = 0), or an accepted
step changed F by ~ε while within √τ. One evaluation per iteration and no
data-dependent inner loop (a fixed number of sweeps), which keeps ``vmap`` cheap.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmle.core.held import natural_index
from jaxmle.core.priors import l1_penalty
from jaxmle.core.solvers import Solver, newton_solver
from jaxmle.core.solvers.dense import eigen, hold_rows, value_grad_hessian
from jaxmle.core.solvers.newton import DampedNewton, Measure, NewtonState, Proposal, Rules

SWEEPS = 25


def penalty(z: jax.Array, lam: jax.Array, loc: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(lam > 0, lam * jnp.abs(z - loc), 0.0))


def model_matrix(hess: jax.Array, damping: jax.Array) -> jax.Array:
    """A = H + (μ + shift)·D, positive definite (D = the squared scale of H's diagonal)."""
    e = eigen(hess)
    lam_min = jnp.where(jnp.all(jnp.isfinite(e.values)), e.values[0], -1.0)
    shift = jnp.maximum(0.0, 1e-8 - lam_min)
    return hess + jnp.diag((damping + shift) * e.scale**2)


def _coordinate_descent(g, a, z, lam, loc, sweeps: int):
    """Minimise q(w) by cyclic coordinate descent from w = z (soft-thresholded updates)."""
    m = z.shape[0]
    diag = jnp.diag(a)

    def coordinate(j, carry):
        w, v = carry                       # v = A(w − z)
        r = g[j] + v[j] - diag[j] * (w[j] - z[j])
        u = z[j] - r / diag[j]             # the coordinate's unpenalised minimiser
        t = lam[j] / diag[j]
        shrunk = loc[j] + jnp.sign(u - loc[j]) * jnp.maximum(jnp.abs(u - loc[j]) - t, 0.0)
        new = jnp.where(lam[j] > 0, shrunk, u)
        return w.at[j].set(new), v + a[:, j] * (new - w[j])

    def sweep(_, carry):
        return lax.fori_loop(0, m, coordinate, carry)

    return lax.fori_loop(0, sweeps, sweep, (z, jnp.zeros_like(z)))[0]


def _polish(g, a, z, lam, loc, w):
    """The exact minimiser of q with w's zero pattern and signs, when consistent."""
    at_kink = (lam > 0) & (w == loc)
    free = ~at_kink
    sign = jnp.where(lam > 0, jnp.sign(w - loc), 0.0)
    d_fixed = jnp.where(at_kink, loc - z, 0.0)
    mask = free[:, None] & free[None, :]
    mat = jnp.where(mask, a, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
    rhs = jnp.where(free, -(g + lam * sign) - a @ d_fixed, d_fixed)
    d = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(mat, lower=True), rhs)
    w_new = jnp.where(at_kink, loc, z + d)
    grad_q = g + a @ (w_new - z)
    keeps_signs = jnp.all(jnp.where(free & (lam > 0), jnp.sign(w_new - loc) == sign, True))
    kkt = jnp.all(jnp.where(at_kink, jnp.abs(grad_q) <= lam * (1 + 1e-9), True))
    ok = keeps_signs & kkt & jnp.all(jnp.isfinite(w_new))
    return jnp.where(ok, w_new, w)


def model_step(g, hess, damping, z, lam, loc, sweeps: int = SWEEPS):
    """The minimiser w of the quadratic model and A."""
    a = model_matrix(hess, damping)
    w = _coordinate_descent(g, a, z, lam, loc, sweeps)
    return _polish(g, a, z, lam, loc, w), a


class Step(NamedTuple):
    w: jax.Array            # the model's minimiser from the current z (the next trial)
    decrement: jax.Array    # (w − z)ᵀA(w − z)


class ProxModel(NamedTuple):
    """The proximal step model: λ and m of the penalty, per coordinate of z (``held``: a
    mask over z of coordinates that do not move, with λ = 0 there)."""

    lam: jax.Array
    loc: jax.Array
    held: jax.Array | None = None

    def initial(self, z0):
        return jnp.eye(z0.shape[0], dtype=z0.dtype), Step(z0, jnp.zeros((), z0.dtype))

    def evaluate(self, fun, z):
        f, g, h = value_grad_hessian(fun, z)
        return f + penalty(z, self.lam, self.loc), g, hold_rows(h, self.held)

    def propose(self, s: NewtonState) -> Proposal:
        d = s.model.w - s.z
        predicted = -(s.g @ d + penalty(s.model.w, self.lam, self.loc)
                      - penalty(s.z, self.lam, self.loc))
        return Proposal(d, predicted, jnp.zeros_like(predicted), s.damping, jnp.asarray(False))

    def refresh(self, s: NewtonState) -> Step:
        w, a = model_step(s.g, s.hess, s.damping, s.z, self.lam, self.loc)
        d = w - s.z
        return Step(w, d @ a @ d)

    def measure(self, s: NewtonState, step: Step) -> Measure:
        return Measure(step.decrement, s.damping == 0)

    def valid(self, s: NewtonState) -> jax.Array:
        return jnp.asarray(True)


RULES = Rules(floor=2.5e-4, grow=4.0, accelerate=1.0, line_search=False)
"""μ/4 after an accepted trial (0 below 10⁻⁶), max(4μ, 10⁻³) after a rejected one."""


def composite_gradient(g: jax.Array, z: jax.Array, lam: jax.Array, loc: jax.Array) -> jax.Array:
    """The minimum-norm subgradient of F: zero at an optimum (also at its kinks)."""
    at_kink = (lam > 0) & (z == loc)
    smooth = g + jnp.where(lam > 0, lam * jnp.sign(z - loc), 0.0)
    kink = jnp.sign(g) * jnp.maximum(jnp.abs(g) - lam, 0.0)
    return jnp.where(at_kink, kink, smooth)


def make_prox_solver(fun: Callable, lam: jax.Array, loc: jax.Array, tol: jax.Array,
                     held: jax.Array | None = None) -> Solver:
    """The ``Solver`` (init/step) of proximal Newton; ``lam``/``loc`` per coordinate of z.
    It starts a hair off the kinks too (``kink_jitter``), but exactly on none of them."""
    return newton_solver(DampedNewton(ProxModel(lam, loc, held), RULES), fun, tol, held)


# --------------------------------------------------------------------------- kernel glue


def l1_weights(config: Any, view: Any, inputs: Any) -> tuple[jax.Array, jax.Array]:
    """λ and m of the L1 penalties Σ λ_j |z_j − m_j|, per coordinate of z (the penalised
    leaves are unconstrained, so z_j = θ_j there; none on held coordinates)."""
    dtype = jnp.dtype(config.dtype)
    space = config.space
    lam, loc = l1_penalty(config.prior, inputs.prior, [l.shape for l in space.leaves], dtype)
    nat = natural_index(space)   # the natural element of each z (elementwise leaves)
    has = (nat >= 0) & ~inputs.held.z
    idx = np.where(nat >= 0, nat, 0)
    return jnp.where(has, lam[idx], 0.0), jnp.where(has, loc[idx], 0.0)


def at_kinks(config: Any, view: Any, inputs: Any, sol: Any, hess: jax.Array):
    """At an L1 solution: the coordinates sitting on their kink (θ_j = m_j exactly) have
    no curvature to speak of; they are taken out of the Hessian (unit rows), and the
    gradient becomes the composite one (zero at the optimum, kinks included)."""
    lam, loc = l1_weights(config, view, inputs)
    kink = (lam > 0) & (sol.z == loc)
    out = kink[:, None] | kink[None, :]
    hess = jnp.where(out, jnp.eye(hess.shape[0], dtype=hess.dtype), hess)
    g = composite_gradient(sol.g, sol.z, lam, loc)
    return sol._replace(g=g), hess, kink


def without_kinks(view: Any, z: jax.Array, inf: Any, kink: jax.Array) -> Any:
    """No Gaussian approximation at a kink: NaN covariance rows and standard errors there
    (the other parameters' covariance is that of the fit with these held at the kink)."""
    on = jax.jvp(view.to_natural_flat, (z,), (kink.astype(z.dtype),))[1] != 0
    mask = on[:, None] | on[None, :]
    return inf._replace(cov=jnp.where(mask, jnp.nan, inf.cov),
                        stderr=jnp.where(on, jnp.nan, inf.stderr))

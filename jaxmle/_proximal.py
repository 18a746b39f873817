"""Proximal Newton for a smooth objective plus an L1 penalty (Laplace priors).

Minimises F(z) = f(z) + Σ_j λ_j |z_j − m_j| (λ_j = 0 for unpenalised coordinates),
the negative log posterior with Laplace(m_j, 1/λ_j) priors. Plain Newton cannot
land on the kink z_j = m_j; a proximal Newton step can. Each iteration:

1. the quadratic model  q(w) = gᵀ(w − z) + ½(w − z)ᵀA(w − z) + Σ λ_j|w_j − m_j|,
   A = H + (μ + shift)·D (D = diag of H's scale; the shift makes A positive
   definite where H is not), is minimised by coordinate descent: each
   coordinate's update is a soft-threshold, so w_j = m_j *exactly* where the
   penalty wins (glmnet / newGLMNET's scheme);
2. on the active set that coordinate descent found (w_j ≠ m_j, signs fixed) the
   model is minimised exactly by one linear solve; the polished point is kept
   when it keeps those signs and the zeros still satisfy |∂q/∂w_j| ≤ λ_j, so the
   outer iteration converges quadratically once the zero pattern has settled;
3. the trial is evaluated (f, ∇f, ∇²f in one pass) and accepted on sufficient
   decrease of F; a rejected trial raises the damping μ (shorter steps, still with
   exact zeros), an accepted one lowers it.

Convergence: the model step from the current point is within ``tol`` standard
errors (dᵀAd ≤ τ² with μ = 0), or an accepted step changed F by ~ε while within
√τ. One evaluation per iteration and no data-dependent inner loop (a fixed number
of sweeps), which keeps ``vmap`` cheap.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._priors import l1_penalty
from ._solvers import _eps, _small_change, eigen, kink_jitter, value_grad_hessian
from ._typing import Status

SWEEPS = 25


class ProxState(NamedTuple):
    z: jax.Array
    f: jax.Array            # F = f + penalty
    g: jax.Array            # ∇f (smooth part)
    hess: jax.Array         # ∇²f (smooth part)
    damping: jax.Array
    n_iter: jax.Array
    n_rejected: jax.Array
    done: jax.Array
    status: jax.Array


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


def _init(fun, z0, tol) -> ProxState:
    dtype = z0.dtype
    zero = jnp.zeros((), jnp.int32)
    return ProxState(z0, jnp.asarray(jnp.inf, dtype), jnp.zeros_like(z0),
                     jnp.eye(z0.shape[0], dtype=dtype), jnp.zeros((), dtype), zero - 1, zero,
                     jnp.asarray(False), jnp.asarray(Status.SUCCESS, jnp.int32))


def _step(fun: Callable, lam, loc, s: ProxState, tol) -> ProxState:
    first = s.n_iter < 0
    w, a = model_step(s.g, s.hess, s.damping, s.z, lam, loc)
    w = jnp.where(first, s.z, w)
    d = w - s.z
    decrement = d @ a @ d
    at_model_optimum = ~first & (s.damping == 0) & (decrement <= tol**2)

    f_t, g_t, h_t = value_grad_hessian(fun, w)
    big_f = f_t + penalty(w, lam, loc)
    finite = jnp.isfinite(big_f) & jnp.all(jnp.isfinite(g_t)) & jnp.all(jnp.isfinite(h_t))
    predicted = -(s.g @ d + penalty(w, lam, loc) - penalty(s.z, lam, loc))
    actual = s.f - big_f
    noise = 16 * _eps(s.f.dtype) * (1 + jnp.abs(s.f))
    at_noise = (jnp.abs(actual) <= noise) & (jnp.abs(predicted) <= noise)
    accept = finite & ((actual >= 1e-4 * predicted) & (actual >= 0) | at_noise | first)

    damping = jnp.where(accept, jnp.where(s.damping / 4 < 1e-6, 0.0, s.damping / 4),
                        jnp.maximum(4.0 * s.damping, 1e-3))
    small = accept & ~first & _small_change(s.f, big_f, tol) & (decrement <= tol)
    converged = at_model_optimum | small
    collapsed = damping > 1e12
    bad_start = first & ~finite
    done = converged | collapsed | bad_start
    status = jnp.where(converged, Status.SUCCESS, Status.STALLED)
    status = jnp.where(bad_start, Status.NONFINITE_START, status)
    keep = accept | bad_start
    return ProxState(
        z=jnp.where(accept, w, s.z), f=jnp.where(keep, big_f, s.f),
        g=jnp.where(keep, g_t, s.g), hess=jnp.where(accept, h_t, s.hess),
        damping=damping, n_iter=s.n_iter + 1,
        n_rejected=s.n_rejected + (~accept & ~first).astype(jnp.int32), done=done,
        status=jnp.where(done, status, s.status).astype(jnp.int32))


def composite_gradient(g: jax.Array, z: jax.Array, lam: jax.Array, loc: jax.Array) -> jax.Array:
    """The minimum-norm subgradient of F: zero at an optimum (also at its kinks)."""
    at_kink = (lam > 0) & (z == loc)
    smooth = g + jnp.where(lam > 0, lam * jnp.sign(z - loc), 0.0)
    kink = jnp.sign(g) * jnp.maximum(jnp.abs(g) - lam, 0.0)
    return jnp.where(at_kink, kink, smooth)


def make_prox_solver(fun: Callable, lam: jax.Array, loc: jax.Array, tol: jax.Array) -> Any:
    """The ``Solver`` (init/step) of proximal Newton; ``lam``/``loc`` per coordinate of z."""
    from ._solvers import Solver

    def init(z0):
        # start a hair off the kinks too (kink_jitter), but exactly on none of them
        return _init(fun, z0 + kink_jitter(z0), tol)

    return Solver(init, lambda s: _step(fun, lam, loc, s, tol))


# --------------------------------------------------------------------------- kernel glue


def l1_weights(config: Any, view: Any, inputs: Any) -> tuple[jax.Array, jax.Array]:
    """λ and m of the L1 penalties Σ λ_j |z_j − m_j|, per free coordinate of z (the
    penalised leaves are unconstrained, so z_j = θ_j there)."""
    dtype = jnp.dtype(config.dtype)
    lam, loc = l1_penalty(config.prior, inputs.prior, [l.shape for l in config.space.leaves],
                          dtype)
    nat = np.asarray(view.lay.act_nat)
    has = nat >= 0
    idx = np.where(has, nat, 0)
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

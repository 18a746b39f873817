"""Optimisers: each is an ``init`` / ``step`` pair over a NamedTuple state, run by
one ``lax.while_loop`` driver (:func:`minimise`).

Every state carries ``z, f, g, n_iter, done, status``; the driver stops when
``done`` is set or ``max_iter`` is reached. Convergence tests, with
``tol`` = τ and ε the machine epsilon:

Newton (H = ∇²f, the observed information in z):
* decrement:  λ² = gᵀH⁻¹g ≤ τ², H not indefinite (numerically null eigenvalues
              floored, so a gradient along a flat direction keeps λ large): the
              remaining error is ≤ τ standard errors;
* precision limit: an accepted step changed f by ≤ (τ² + 16ε)(1 + |f|) while
              λ² ≤ τ (within √τ standard errors);
* never on a plateau (f flat to rounding in every coordinate, e.g. an underflowed
  model): that is reported as a failure, not an optimum.

optax solvers:
* gradient:   ‖g‖∞ ≤ τ·(1 + |f|);
* objective (L-BFGS only, which has a line search): an accepted step changed f by
              ≤ (τ² + 16ε)(1 + |f|) while ‖g‖∞ ≤ √τ·(1 + |f|).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ._typing import Status

Objective = Callable[[jax.Array], jax.Array]


class NewtonState(NamedTuple):
    z: jax.Array
    f: jax.Array
    g: jax.Array
    hess: jax.Array
    fac: Factor             # of the scaled H: the step, the decrement, the PD test
    alpha: jax.Array        # step length along the damped Newton direction (line search)
    damping: jax.Array      # Levenberg–Marquardt μ, relative to the unit-diagonal-scaled H
    growth: jax.Array       # factor by which μ grows when the line search gives up
    reach: jax.Array        # step cap in indefinite regions, relative to the coordinates' size
    n_iter: jax.Array
    n_rejected: jax.Array
    done: jax.Array
    status: jax.Array


class OptaxState(NamedTuple):
    z: jax.Array
    f: jax.Array
    g: jax.Array
    opt_state: Any
    n_iter: jax.Array
    n_rejected: jax.Array
    done: jax.Array
    status: jax.Array


def _eps(dtype: Any) -> jax.Array:
    return jnp.asarray(jnp.finfo(dtype).eps, dtype)


def _grad_test(f: jax.Array, g: jax.Array, tol: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(g), initial=0.0) <= tol * (1.0 + jnp.abs(f))


def _small_change(f_old, f_new, tol) -> jax.Array:
    """f changed by at most (τ² + 16ε)(1 + |f|): the precision limit of f."""
    return jnp.abs(f_old - f_new) <= (tol**2 + 16 * _eps(f_new.dtype)) * (1.0 + jnp.abs(f_new))


def _objective_test(f_old, f_new, g, tol) -> jax.Array:
    loose_grad = jnp.max(jnp.abs(g), initial=0.0) <= jnp.sqrt(tol) * (1.0 + jnp.abs(f_new))
    return _small_change(f_old, f_new, tol) & loose_grad


def value_grad_hessian(fun: Objective, z: jax.Array):
    """f, ∇f and ∇²f in one forward-over-reverse pass."""

    def grad_with_aux(z):
        f, g = jax.value_and_grad(fun)(z)
        return g, (f, g)

    hess, (f, g) = jax.jacfwd(grad_with_aux, has_aux=True)(z)
    return f, g, 0.5 * (hess + hess.T)


# --------------------------------------------------------------------------- Newton


def _scaling(hess: jax.Array) -> jax.Array:
    """Diagonal scaling D½ with D = |diag H| (floored), so damping is scale-free."""
    diag = jnp.abs(jnp.diag(hess))
    floor = jnp.maximum(jnp.max(diag, initial=0.0) * 1e-12, jnp.finfo(hess.dtype).tiny)
    return jnp.sqrt(jnp.where(jnp.isfinite(diag), jnp.maximum(diag, floor), 1.0))


class Eigen(NamedTuple):
    """Eigen-decomposition of the unit-diagonal-scaled Hessian D^-½ H D^-½ = V Λ Vᵀ."""

    values: jax.Array
    vectors: jax.Array
    scale: jax.Array        # D½


def _scaled(hess: jax.Array) -> tuple[jax.Array, jax.Array]:
    """D^-½ H D^-½ (the identity if H is not finite) and D½."""
    scale = _scaling(hess)
    hs = hess / jnp.outer(scale, scale)
    return jnp.where(jnp.all(jnp.isfinite(hs)), hs, jnp.eye(hs.shape[0], dtype=hs.dtype)), scale


def eigen(hess: jax.Array) -> Eigen:
    hs, scale = _scaled(hess)
    values, vectors = jnp.linalg.eigh(hs)
    return Eigen(values, vectors, scale)


class Factor(NamedTuple):
    """The scaled Hessian Hs = D^-½ H D^-½ factorised for the Newton step.

    Where Hs is safely positive definite (Cholesky pivots ≥ √ε) and no damping is
    in use, the step and the decrement come from the Cholesky factor; elsewhere
    (indefinite, nearly singular, or damped) from the eigen-decomposition, which is
    computed only when some member of the batch needs it.
    """

    eig: Eigen              # valid where use_eig (``eig.scale`` always)
    chol: jax.Array         # lower Cholesky factor of Hs, valid where not use_eig
    use_eig: jax.Array


def factorize(hess: jax.Array, damping: jax.Array) -> Factor:
    """Factor a batch of Hessians (leading axis) for :func:`newton_direction`.

    The choice between Cholesky and ``eigh`` is made per member, from its own
    Hessian and damping only, so a fit's path never depends on the rest of the
    batch; the batched ``eigh`` runs only when at least one member needs it.
    """
    hs, scale = jax.vmap(_scaled)(hess)
    chol = jnp.linalg.cholesky(hs)
    pivots = jnp.diagonal(chol, axis1=-2, axis2=-1) ** 2
    finite = jnp.all(jnp.isfinite(chol), axis=(-2, -1))
    safe = finite & (jnp.min(pivots, axis=-1, initial=1.0) >= jnp.sqrt(_eps(hess.dtype)))
    use_eig = ~(safe & (damping == 0))
    eye = jnp.broadcast_to(jnp.eye(hess.shape[-1], dtype=hess.dtype), hess.shape)
    values, vectors = lax.cond(jnp.any(use_eig), lambda h: tuple(jnp.linalg.eigh(h)),
                               lambda h: (jnp.ones(h.shape[:-1], h.dtype), eye), hs)
    chol = jnp.where(use_eig[:, None, None], eye, chol)
    return Factor(Eigen(values, vectors, scale), chol, use_eig)


def _factorize_one(hess: jax.Array, damping: jax.Array) -> Factor:
    return jax.tree_util.tree_map(lambda x: x[0], factorize(hess[None], damping[None]))


def null_threshold(e: Eigen) -> jax.Array:
    """Scaled eigenvalues below this are numerically zero (64·ε·λ_max, floored at the
    smallest normal number): their inverse would carry no correct digit."""
    finfo = jnp.finfo(e.values.dtype)
    return jnp.maximum(64 * finfo.eps * jnp.max(jnp.abs(e.values), initial=0.0), finfo.tiny)


def _indefinite(fac: Factor) -> jax.Array:
    return fac.use_eig & (fac.eig.values[0] < -null_threshold(fac.eig))


def _chol_solve(fac: Factor, gs: jax.Array) -> jax.Array:
    return jax.scipy.linalg.cho_solve((fac.chol, True), gs)


def newton_decrement_sq(g: jax.Array, fac: Factor) -> jax.Array:
    """λ² = gᵀH⁻¹g (numerically zero eigenvalues floored), +inf if H is indefinite.

    λ is the distance to the optimum of the quadratic model in standard-error units,
    since H is the observed information in z. A gradient along a numerically null
    direction keeps λ large, so a merely flat direction never passes for convergence.
    """
    e, gs = fac.eig, g / fac.eig.scale
    gv = e.vectors.T @ gs
    lam2_eig = jnp.sum(gv**2 / jnp.maximum(e.values, null_threshold(e)))
    lam2_chol = gs @ _chol_solve(fac, gs)
    lam2 = jnp.where(fac.use_eig, lam2_eig, lam2_chol)
    return jnp.where(_indefinite(fac), jnp.inf, lam2)


def newton_direction(g: jax.Array, fac: Factor, damping: jax.Array):
    """Damped Newton step d = −(H + μD)⁻¹g, D = |diag H|, from the eigen-decomposition.

    Where H is indefinite, μ is raised to twice the most negative scaled
    eigenvalue, so H + μD is positive definite and d descends; at a saddle point,
    where the gradient vanishes, the step goes one (scaled) unit along the most
    negative-curvature direction, so it does not stall there. Returns d and the
    damping used.
    """
    e = fac.eig
    thr = null_threshold(e)
    indefinite = _indefinite(fac)
    used = jnp.where(indefinite, jnp.maximum(damping, -2.0 * e.values[0]), damping)
    gv = e.vectors.T @ (g / e.scale)
    coef = -gv / jnp.maximum(e.values + used, thr)
    # at a saddle (stationary to ~1e-6 in scaled units) step off along the negative curvature
    at_saddle = indefinite & (jnp.max(jnp.abs(gv), initial=0.0) <= 1e-6)
    away = jnp.where(gv[0] > 0, -1.0, 1.0) * jnp.maximum(jnp.abs(coef[0]), 1.0)
    coef = coef.at[0].set(jnp.where(at_saddle, away, coef[0]))
    step = jnp.where(fac.use_eig, e.vectors @ coef, -_chol_solve(fac, g / e.scale)) / e.scale
    return step, used


def cap_indefinite_step(step: jax.Array, z: jax.Array, fac: Factor, reach: jax.Array):
    """Where H is indefinite the quadratic model is unbounded and the length of the
    shifted step means little: shorten it so that no coordinate moves by more than
    ``reach`` times its magnitude (or its local standard error, 1/√H_ii, for
    coordinates near 0). ``reach`` starts at ½ and grows fourfold after every
    accepted capped step, so a far start is left in a few steps, not a crawl.
    Returns the step and whether it was capped."""
    size = jnp.maximum(jnp.abs(z), 1.0 / fac.eig.scale)
    ratio = jnp.max(jnp.abs(step) / size, initial=0.0)
    capped = _indefinite(fac) & (ratio > reach)
    return step * jnp.where(capped, reach / ratio, 1.0), capped


def _plateau(f: jax.Array, z: jax.Array, hess: jax.Array) -> jax.Array:
    """f is flat to rounding in every coordinate (e.g. an underflowed model): no optimum."""
    eps = _eps(f.dtype)
    return jnp.all(jnp.abs(jnp.diag(hess)) * (1.0 + jnp.abs(z)) ** 2 <= 1e3 * eps * (1 + jnp.abs(f)))


def _newton_init(fun: Objective, z0: jax.Array, tol: jax.Array) -> NewtonState:
    """A state whose first iteration evaluates f, g, H at z0 (a zero step that is
    always accepted when finite), so f, g and H are traced only once, in the loop body."""
    dtype = z0.dtype
    zero = jnp.zeros((), jnp.int32)
    one = jnp.ones((), dtype)
    eye = jnp.eye(z0.shape[0], dtype=dtype)
    return NewtonState(
        z=z0, f=jnp.asarray(jnp.inf, dtype), g=jnp.zeros_like(z0),
        hess=eye, alpha=one,
        fac=Factor(Eigen(jnp.ones_like(z0), eye, jnp.ones_like(z0)), eye,
                   jnp.asarray(False)),  # factors of I, without a decomposition
        damping=jnp.zeros((), dtype), growth=2.0 * one, reach=0.5 * one,
        n_iter=zero - 1, n_rejected=zero,
        done=jnp.asarray(False),
        status=jnp.asarray(Status.SUCCESS, jnp.int32),
    )


def _backtrack_factor(f, f_t, slope, alpha, finite):
    """Shrink factor for α from the quadratic through f, the slope gᵀd and f(z + αd),
    safeguarded to [0.1, 0.5] (0.1 when the trial was not finite)."""
    curvature = (f_t - f - alpha * slope) / alpha**2
    t_star = -slope / (2.0 * jnp.where(curvature > 0, curvature, jnp.inf))
    factor = jnp.clip(t_star / alpha, 0.1, 0.5)
    return jnp.where(finite & jnp.isfinite(factor), factor, 0.1)


class Trial(NamedTuple):
    """What :func:`newton_finish` needs to know about the iteration's trial point."""

    first: jax.Array
    finite: jax.Array
    accept: jax.Array
    f_trial: jax.Array
    g_trial: jax.Array
    h_diag_trial: jax.Array
    f_before: jax.Array


def _newton_step(fun: Objective, s: NewtonState, tol: jax.Array) -> NewtonState:
    """One iteration of damped Newton with a line search unrolled into the outer loop.

    The trial z + αd, d = −(H + μD)⁻¹g, is evaluated with its gradient and Hessian
    in one pass, so an accepted full step costs exactly what plain Newton costs.
    A trial that fails the sufficient-decrease test shrinks α (quadratic
    interpolation) and is retried from the same point at the next iteration; if
    α falls below 10⁻³ the direction itself is distrusted: α resets to 1 and the
    Levenberg–Marquardt damping μ grows, turning d towards steepest descent. An
    indefinite H always gets μ > −λ_min, so d descends and uses the negative
    curvature, and the step there is limited to half of each coordinate's size
    (the quadratic model is unbounded), a limit that grows with every accepted step.
    The accepted Hessian is factorised once per iteration (:func:`factorize`:
    Cholesky where it is safely positive definite, else one k×k ``eigh``, which
    gives the step for any μ, the definiteness test and the Newton decrement). No
    nested loop: each iteration is one evaluation, which keeps ``vmap`` cheap.

    The iteration is split in three so that a batch can factorise all members
    together: :func:`_newton_trial` (per member), :func:`factorize` (batch) and
    :func:`newton_finish` (per member).
    """
    s, trial = _newton_trial(fun, s)
    return newton_finish(s, trial, _factorize_one(s.hess, s.damping), tol)


def _newton_trial(fun: Objective, s: NewtonState) -> tuple[NewtonState, Trial]:
    """Evaluate the trial point, accept or reject it, and adapt α, μ and the reach.
    The returned state's ``fac`` is stale until :func:`newton_finish`."""
    first = s.n_iter < 0
    direction, used = newton_direction(s.g, s.fac, s.damping)
    direction, capped = cap_indefinite_step(direction, s.z, s.fac, s.reach)
    step = jnp.where(first, 0.0, s.alpha * direction)
    f_t, g_t, h_t = value_grad_hessian(fun, s.z + step)
    finite = jnp.isfinite(f_t) & jnp.all(jnp.isfinite(g_t)) & jnp.all(jnp.isfinite(h_t))
    slope = s.g @ direction
    predicted = -(s.alpha * slope + 0.5 * step @ s.hess @ step)
    actual = s.f - f_t
    noise = 16 * _eps(s.f.dtype) * (1 + jnp.abs(s.f))
    at_noise_level = (jnp.abs(actual) <= noise) & (jnp.abs(predicted) <= noise)
    sufficient = actual >= 1e-4 * predicted
    accept = finite & (((actual > 0) & sufficient) | at_noise_level | first)

    alpha_shrunk = s.alpha * _backtrack_factor(s.f, f_t, slope, s.alpha, finite)
    give_up = ~accept & (alpha_shrunk < 1e-3)
    alpha = jnp.where(accept, jnp.minimum(1.0, 3.0 * s.alpha),
                      jnp.where(give_up, 1.0, alpha_shrunk))
    damping_bad = jnp.maximum(used, 1e-3) * s.growth
    damping_ok = jnp.where(used / 4.0 < 1e-6, 0.0, used / 4.0)
    damping = jnp.where(accept, damping_ok, jnp.where(give_up, damping_bad, s.damping))
    growth = jnp.where(accept, 2.0, jnp.where(give_up, 2.0 * s.growth, s.growth))
    reach = jnp.where(accept & capped & ~first, jnp.minimum(4.0 * s.reach, 1e6), s.reach)

    z = jnp.where(accept, s.z + step, s.z)
    f = jnp.where(accept, f_t, s.f)
    g = jnp.where(accept, g_t, s.g)
    hess = jnp.where(accept, h_t, s.hess)
    state = s._replace(z=z, f=f, g=g, hess=hess, alpha=alpha, damping=damping, growth=growth,
                       reach=reach)
    return state, Trial(first, finite, accept, f_t, g_t, jnp.diag(h_t), s.f)


def newton_finish(s: NewtonState, t: Trial, fac: Factor, tol: jax.Array) -> NewtonState:
    """Convergence tests with the new factorisation; the iteration's status."""
    first, finite, accept = t.first, t.finite, t.accept
    z, f, g, hess, damping = s.z, s.f, s.g, s.hess, s.damping
    lam2 = newton_decrement_sq(g, fac)

    # Converged: within tol SEs of the model's optimum, or, at the precision limit of
    # f, a step that changed f by ~ε while within √tol SEs. Never on a plateau.
    near = lam2 <= tol
    valid = ~_plateau(f, z, hess)
    converged = valid & ((lam2 <= tol**2)
                         | (accept & ~first & _small_change(t.f_before, f, tol) & near))
    collapsed = damping > 1e12
    bad_start = first & ~finite
    done = converged | collapsed | bad_start
    status = jnp.where(converged | (collapsed & near & valid), Status.SUCCESS, Status.STALLED)
    status = jnp.where(bad_start, Status.NONFINITE_START, status)
    # at a bad start, report which coordinates have a non-finite gradient or Hessian row
    g_start = jnp.where(jnp.isfinite(t.h_diag_trial), t.g_trial, jnp.nan)
    return s._replace(
        f=jnp.where(bad_start, t.f_trial, f), g=jnp.where(bad_start, g_start, g), fac=fac,
        n_iter=s.n_iter + 1, n_rejected=s.n_rejected + (~accept & ~first).astype(jnp.int32),
        done=done, status=jnp.where(done, status, s.status).astype(jnp.int32),
    )


# --------------------------------------------------------------------------- optax


def _with_extra_args(opt: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(opt)


def _optax_init(opt, fun: Objective, z0: jax.Array, tol: jax.Array) -> OptaxState:
    f, g = jax.value_and_grad(fun)(z0)
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
    zero = jnp.zeros((), jnp.int32)
    return OptaxState(
        z=z0, f=f, g=g, opt_state=opt.init(z0),
        n_iter=zero, n_rejected=zero,
        done=~finite | (finite & _grad_test(f, g, tol)),
        status=jnp.where(finite, Status.SUCCESS, Status.NONFINITE_START).astype(jnp.int32),
    )


def _optax_step(opt, fun: Objective, s: OptaxState, tol: jax.Array,
                objective_test: bool) -> OptaxState:
    """One optax update. f and g at the new point come from the optimiser's state
    when it keeps them (L-BFGS's line search), else from one value-and-grad call.
    The objective-change test is used only with a line search: a first-order
    method with a fixed learning rate can change f very little far from the optimum."""
    updates, opt_state = opt.update(s.g, s.opt_state, s.z, value=s.f, grad=s.g, value_fn=fun)
    z = s.z + updates
    f, g = _value_and_grad_at(fun, z, opt_state)
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
    converged = _grad_test(f, g, tol)
    if objective_test:
        converged = converged | _objective_test(s.f, f, g, tol)
    converged = finite & converged
    done = converged | ~finite
    status = jnp.where(converged, Status.SUCCESS, Status.STALLED)
    # A non-finite point is never returned: keep the last finite iterate.
    return OptaxState(
        z=jnp.where(finite, z, s.z), f=jnp.where(finite, f, s.f), g=jnp.where(finite, g, s.g),
        opt_state=opt_state, n_iter=s.n_iter + 1,
        n_rejected=s.n_rejected + (~finite).astype(jnp.int32),
        done=done, status=jnp.where(done, status, s.status).astype(jnp.int32),
    )


def _value_and_grad_at(fun: Objective, z: jax.Array, opt_state: Any):
    """f, ∇f at z, reused from a line search's state when the optimiser keeps them."""
    if optax.tree_utils.tree_get(opt_state, "value") is not None:
        return optax.value_and_grad_from_state(fun)(z, state=opt_state)
    return jax.value_and_grad(fun)(z)


# --------------------------------------------------------------------------- driver


def kink_jitter(z: jax.Array) -> jax.Array:
    """A deterministic offset of 1000·ε·(1 + |z|) (2e-13 relative in float64).

    Library log-densities are often written with max/abs/clip whose derivative at
    an exact tie is a convention, not the true derivative: NumPyro's
    ``Bernoulli(logits=0)`` gives ∂/∂logit = −y instead of ½ − y. Inits of exactly
    0 sit on such ties, so the solver starts a hair away from them; the offset is
    far below any statistical precision.
    """
    eps = jnp.finfo(z.dtype).eps
    direction = jnp.sin(1.0 + 2.399963 * jnp.arange(z.shape[0], dtype=z.dtype))
    return 1000 * eps * (1.0 + jnp.abs(z)) * direction


class Solution(NamedTuple):
    z: jax.Array
    f: jax.Array            # at a non-finite start: f and g at init, for the error message
    g: jax.Array
    hess: jax.Array | None
    n_iter: jax.Array
    n_rejected: jax.Array
    status: jax.Array


State = Any  # NewtonState | OptaxState


class Solver(NamedTuple):
    """A minimiser as a pure ``init`` / ``step`` pair over its state.

    ``init(z0)`` builds the state at ``z0`` (offset by :func:`kink_jitter`);
    ``step(state)`` is one iteration. :func:`iterate` runs them for one fit; the
    batch driver vmaps ``step`` over members and decides when to stop.
    """

    init: Callable[[jax.Array], State]
    step: Callable[[State], State]
    # Newton only: ``step`` = trial, factorize (over a batch), finish
    trial: Callable[[State], tuple[State, Trial]] | None = None
    finish: Callable[[State, Trial, Factor], State] | None = None


def make_solver(method: Any, fun: Objective, tol: jax.Array) -> Solver:
    """The init/step pair minimising ``fun`` with ``method``."""
    if method == "newton":
        return Solver(lambda z0: _newton_init(fun, z0 + kink_jitter(z0), tol),
                      lambda s: _newton_step(fun, s, tol),
                      lambda s: _newton_trial(fun, s),
                      lambda s, t, fac: newton_finish(s, t, fac, tol))
    opt = _with_extra_args(optax_transformation(method))
    return Solver(lambda z0: _optax_init(opt, fun, z0 + kink_jitter(z0), tol),
                  lambda s: _optax_step(opt, fun, s, tol, objective_test=method == "lbfgs"))


UNLIMITED = np.int32(np.iinfo(np.int32).max)
"""An iteration limit that never binds."""


def is_active(state: State, max_iter: jax.Array) -> jax.Array:
    """The member still iterates: not done and under the iteration limit."""
    return ~state.done & (state.n_iter < max_iter)


def iterate(step: Callable[[State], State], state: State, max_iter: jax.Array) -> State:
    """Run ``step`` until done or ``max_iter``, in one ``lax.while_loop``."""
    return lax.while_loop(lambda s: is_active(s, max_iter), step, state)


def solution(final: State) -> Solution:
    """The outcome of a final state (``MAX_ITER`` when it stopped without ``done``)."""
    status = jnp.where(final.done, final.status, Status.MAX_ITER).astype(jnp.int32)
    return Solution(final.z, final.f, final.g, getattr(final, "hess", None),
                    final.n_iter, final.n_rejected, status)


def minimise(method: Any, fun: Objective, z0: jax.Array, tol: jax.Array,
             max_iter: jax.Array) -> Solution:
    """Minimise ``fun`` from ``z0`` in one ``lax.while_loop``."""
    solver = make_solver(method, fun, tol)
    return solution(iterate(solver.step, solver.init(z0), max_iter))


def optax_transformation(method: Any) -> optax.GradientTransformation:
    """The optax optimiser for a method name or a user-supplied transformation."""
    if method == "lbfgs":
        return optax.lbfgs()
    if method == "adam":
        return optax.adam(learning_rate=1e-2)
    if isinstance(method, optax.GradientTransformation):
        return method
    raise ValueError(
        f"unknown method {method!r}: use 'newton', 'lbfgs', 'adam' or an "
        "optax.GradientTransformation"
    )

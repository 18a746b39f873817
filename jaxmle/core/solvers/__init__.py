"""Optimisers: each is an ``init`` / ``step`` pair over a NamedTuple state, run by
one ``lax.while_loop`` driver (:func:`minimise`) or by any other loop (the state is a
pytree and ``step`` is pure, so a Python loop of jitted steps runs it just as well).

Every state carries ``z, f, g, n_iter, done, status``; the driver stops when
``done`` is set or ``max_iter`` is reached. Convergence tests, with
``tol`` = τ and ε the machine epsilon:

Newton (the one damped Newton of :mod:`jaxmle.core.solvers.newton` with the dense step model of
:mod:`jaxmle.core.solvers.dense`; H = ∇²f, the observed information in z):
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
from jax import lax

from jaxmle.core.solvers.dense import (
    NEWTON,
    DenseModel,
    Eigen,
    Factor,
    eigen,
    factorize,
    newton_decrement_sq,
    newton_direction,
    null_threshold,
    thresholds,
    value_grad_hessian,
)
from jaxmle.core.solvers.newton import DampedNewton, NewtonState, Rules, small_change
from jaxmle.core.typing import Status
from jaxmle.core.xp import namespace

# the dense Newton's linear algebra is re-exported: the inference uses the same factors
__all__ = ["UNLIMITED", "Eigen", "Factor", "NewtonState", "OptaxState", "Solution", "Solver",
           "eigen", "factorize", "is_active", "iterate", "kink_jitter", "make_solver",
           "terminate",
           "minimise", "newton_decrement_sq", "newton_direction", "newton_solver",
           "null_threshold", "optax_transformation", "solution", "thresholds",
           "value_grad_hessian"]

Objective = Callable[[jax.Array], jax.Array]


class OptaxState(NamedTuple):
    z: jax.Array
    f: jax.Array
    g: jax.Array
    opt_state: Any
    n_iter: jax.Array
    n_rejected: jax.Array
    done: jax.Array
    status: jax.Array


def _grad_test(f: jax.Array, g: jax.Array, tol: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(g), initial=0.0) <= tol * (1.0 + jnp.abs(f))


def _objective_test(f_old, f_new, g, tol) -> jax.Array:
    loose_grad = jnp.max(jnp.abs(g), initial=0.0) <= jnp.sqrt(tol) * (1.0 + jnp.abs(f_new))
    return small_change(f_old, f_new, tol) & loose_grad


# --------------------------------------------------------------------------- optax


def _with_extra_args(opt: Any) -> Any:
    import optax

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
                objective_test: bool, held: jax.Array | None = None) -> OptaxState:
    """One optax update. f and g at the new point come from the optimiser's state
    when it keeps them (L-BFGS's line search), else from one value-and-grad call.
    The objective-change test is used only with a line search: a first-order
    method with a fixed learning rate can change f very little far from the optimum."""
    updates, opt_state = opt.update(s.g, s.opt_state, s.z, value=s.f, grad=s.g, value_fn=fun)
    if held is not None:   # their gradient is 0, so this only guards against rounding
        updates = jnp.where(held, 0.0, updates)
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
    import optax

    if optax.tree_utils.tree_get(opt_state, "value") is not None:
        return optax.value_and_grad_from_state(fun)(z, state=opt_state)
    return jax.value_and_grad(fun)(z)


# --------------------------------------------------------------------------- driver


def kink_jitter(z: jax.Array, held: jax.Array | None = None) -> jax.Array:
    """A deterministic offset of 1000·ε·(1 + |z|) (2e-13 relative in float64).

    Library log-densities are often written with max/abs/clip whose derivative at
    an exact tie is a convention, not the true derivative: NumPyro's
    ``Bernoulli(logits=0)`` gives ∂/∂logit = −y instead of ½ − y. Inits of exactly
    0 sit on such ties, so the solver starts a hair away from them; the offset is
    far below any statistical precision.
    """
    xp = namespace(z, held)
    eps = np.finfo(z.dtype).eps
    direction = xp.sin(1.0 + 2.399963 * xp.arange(z.shape[0], dtype=z.dtype))
    jitter = 1000 * eps * (1.0 + xp.abs(z)) * direction
    return jitter if held is None else xp.where(held, 0.0, jitter)   # held ones stay exact


class Solution(NamedTuple):
    z: jax.Array
    f: jax.Array            # at a non-finite start: f and g at init, for the error message
    g: jax.Array
    hess: jax.Array | None
    n_iter: jax.Array
    n_rejected: jax.Array
    status: jax.Array


State = Any  # NewtonState | OptaxState (pytrees)


def terminate(state: State, max_iter: jax.Array) -> jax.Array:
    """Every solver's stopping rule: its own test set ``done``, or ``max_iter`` is reached
    (a bool array: per member under ``vmap``)."""
    return state.done | (state.n_iter >= max_iter)


class Solver(NamedTuple):
    """A minimiser as a pure state machine over its pytree state, closed over the
    objective and ``tol``: ``init`` / ``step`` / ``terminate``, as optimistix's iterative
    solvers. The Newton methods and the optax ones share the protocol.

    ``init(z0)`` builds the state at ``z0`` (offset by :func:`kink_jitter`);
    ``step(state)`` is one iteration; ``terminate(state, max_iter)`` says whether to stop.
    :func:`iterate` runs them in a ``lax.while_loop`` for one fit; a Python loop of jitted
    ``step`` calls runs them just as well; the batch driver vmaps ``step`` over members
    and stops on ``terminate`` (a Newton step factorises the whole batch's Hessians in
    one call under ``vmap``).
    """

    init: Callable[[jax.Array], State]
    step: Callable[[State], State]
    terminate: Callable[[State, jax.Array], jax.Array] = terminate


def newton_solver(newton: Any, fun: Objective, tol: jax.Array,
                  held: jax.Array | None = None) -> Solver:
    """The init/step pair of a :class:`jaxmle.core.solvers.newton.DampedNewton` minimising ``fun``."""
    return Solver(lambda z0: newton.init(fun, z0 + kink_jitter(z0, held), tol),
                  lambda s: newton.step(fun, s, tol))


def make_solver(method: Any, fun: Objective, tol: jax.Array,
                held: jax.Array | None = None) -> Solver:
    """The init/step pair minimising ``fun`` with ``method``; ``held`` (a mask over z):
    coordinates that stay at their start (``fun`` has zero gradient there)."""
    if method == "newton":
        return newton_solver(NEWTON if held is None else DampedNewton(DenseModel(held), Rules()),
                             fun, tol, held)
    opt = _with_extra_args(optax_transformation(method))
    return Solver(lambda z0: _optax_init(opt, fun, z0 + kink_jitter(z0, held), tol),
                  lambda s: _optax_step(opt, fun, s, tol, method == "lbfgs", held))


UNLIMITED = np.int32(np.iinfo(np.int32).max)
"""An iteration limit that never binds."""


def is_active(state: State, max_iter: jax.Array) -> jax.Array:
    """The member still iterates: the negation of :func:`terminate`."""
    return ~terminate(state, max_iter)


def iterate(step: Callable[[State], State], state: State, max_iter: jax.Array) -> State:
    """Run ``step`` until done or ``max_iter``, in one ``lax.while_loop``."""
    return lax.while_loop(lambda s: is_active(s, max_iter), step, state)


def solution(final: State) -> Solution:
    """The outcome of a final state (``MAX_ITER`` when it stopped without ``done``)."""
    xp = namespace(final.z, final.done)
    status = xp.where(final.done, final.status, Status.MAX_ITER).astype(np.int32)
    return Solution(final.z, final.f, final.g, getattr(final, "hess", None),
                    final.n_iter, final.n_rejected, status)


def minimise(method: Any, fun: Objective, z0: jax.Array, tol: jax.Array,
             max_iter: jax.Array, held: jax.Array | None = None) -> Solution:
    """Minimise ``fun`` from ``z0`` in one ``lax.while_loop`` (``held``: see :func:`make_solver`)."""
    solver = make_solver(method, fun, tol, held)
    return solution(iterate(solver.step, solver.init(z0), max_iter))


def optax_transformation(method: Any) -> Any:
    """The optax optimiser for a method name or a user-supplied transformation."""
    import optax   # only here: a Newton fit never imports it

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

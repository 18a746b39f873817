"""The one damped Newton (``jaxmle.core.solvers.newton``): a pure init/step/terminate state machine
that any loop can drive, shared by the plain, proximal (L1) and random-effects solves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle.core.solvers as _solvers
import jaxmle.core.solvers.proximal as _proximal
import jaxmle.random.inner as _inner
from jaxmle.core.solvers.dense import NEWTON
from jaxmle.core.solvers.newton import DampedNewton, run
from jaxmle.core.typing import Status

RNG = np.random.default_rng(7)
X = jnp.asarray(RNG.normal(size=(40, 3)))
Y = jnp.asarray((RNG.random(40) < 0.5).astype(float))


def logistic_nll(z, X=X, y=Y):
    eta = X @ z
    return jnp.sum(jnp.logaddexp(0.0, eta) - y * eta)


def rosenbrock(z):
    return 100.0 * (z[1] - z[0] ** 2) ** 2 + (1.0 - z[0]) ** 2


TOL = 1e-8


_STEPS = {}     # one compiled init, step and terminate per objective, shared by the tests


def python_loop(solver, fun, z0, max_iter):
    """Drive the solver from Python: one compiled ``step`` per iteration (init and
    terminate compiled too: op by op they would compile each primitive on its own)."""
    if (solver, fun) not in _STEPS:
        _STEPS[solver, fun] = (jax.jit(lambda z: solver.init(fun, z, TOL)),
                               jax.jit(lambda s: solver.step(fun, s, TOL)),
                               jax.jit(solver.terminate))
    init, step, terminate = _STEPS[solver, fun]
    state = init(z0)
    while not bool(terminate(state, max_iter)):
        state = step(state)
    return state


@pytest.mark.parametrize("fun, z0", [(logistic_nll, jnp.zeros(3)),
                                     (rosenbrock, jnp.array([-1.2, 1.0]))])
def test_python_loop_of_compiled_steps_matches_while_loop(fun, z0):
    looped = jax.jit(lambda z: run(NEWTON, fun, z, TOL, 200))(z0)
    stepped = python_loop(NEWTON, fun, z0, 200)
    assert int(looped.status) == int(stepped.status) == Status.SUCCESS
    assert bool(looped.done) and bool(stepped.done)
    assert int(looped.n_iter) == int(stepped.n_iter)
    np.testing.assert_allclose(np.asarray(stepped.z), np.asarray(looped.z), rtol=1e-12, atol=1e-14)
    if fun is rosenbrock:
        np.testing.assert_allclose(np.asarray(stepped.z), [1.0, 1.0], rtol=1e-8)
        assert int(stepped.n_rejected) > 0      # the damping / line search were exercised


def test_terminate_at_max_iter():
    state = python_loop(NEWTON, rosenbrock, jnp.array([-1.2, 1.0]), 3)
    assert int(state.n_iter) == 3 and not bool(state.done)
    assert _solvers.solution(state).status == Status.MAX_ITER


def test_vmapped_step_is_the_single_step():
    """Under vmap the Hessians are factorised for the whole batch at once; each member's
    path is its own (the same iterates as a single solve)."""
    ys = jnp.stack([Y, 1.0 - Y, jnp.roll(Y, 3)])

    def batched(y):
        return run(NEWTON, lambda z: logistic_nll(z, y=y), jnp.zeros(3), TOL, 200)

    many = jax.jit(jax.vmap(batched))(ys)
    for i in range(3):
        one = jax.jit(batched)(ys[i])
        assert int(many.n_iter[i]) == int(one.n_iter)
        np.testing.assert_allclose(np.asarray(many.z[i]), np.asarray(one.z), rtol=1e-13,
                                   atol=1e-15)


def test_the_three_solves_are_one_newton():
    """Plain, proximal and random-effects inner solves are the same DampedNewton class
    with different step models and rules; the proximal one lands exactly on kinks."""
    assert isinstance(_inner.INNER, DampedNewton) and isinstance(NEWTON, DampedNewton)
    lam = jnp.array([0.0, 8.0, 8.0])
    solver = _proximal.make_prox_solver(logistic_nll, lam, jnp.zeros(3), jnp.asarray(TOL))
    state = jax.jit(lambda z: _solvers.iterate(solver.step, solver.init(z), 200))(jnp.zeros(3))
    assert bool(state.done) and int(state.status) == Status.SUCCESS
    g, z = np.asarray(jax.grad(logistic_nll)(state.z)), np.asarray(state.z)
    kink = z == 0.0
    assert kink.any()
    assert np.all(np.abs(g[kink]) <= 8.0)                             # subgradient optimality
    np.testing.assert_allclose(g[~kink] + 8.0 * np.sign(z[~kink]) * (np.arange(3) > 0)[~kink],
                               0.0, atol=1e-8)


def test_inner_mode_solve_matches_the_optimum():
    """The block-diagonal inner Newton finds argmax of ℓ(U) = Σ_g log N(u_g | m_g, 1) +
    Poisson terms, block by block (G = 4 groups, K = 2 effects)."""
    m = jnp.asarray(RNG.normal(size=(4, 2)))
    counts = jnp.asarray(RNG.poisson(2.0, size=(4, 2)).astype(float))

    def ell(U):
        return jnp.sum(-0.5 * (U - m) ** 2 + counts * U - jnp.exp(U))

    U = jax.jit(lambda u0: _inner.solve_mode(ell, u0))(jnp.zeros((4, 2)))
    np.testing.assert_allclose(np.asarray(jax.grad(ell)(U)), 0.0, atol=1e-10)
    bad = jax.jit(lambda u0: _inner.solve_mode(lambda U: ell(U) + jnp.log(-1.0),
                                                      u0))(jnp.zeros((4, 2)))
    assert np.all(np.isnan(np.asarray(bad)))


def test_every_solver_shares_the_state_machine_protocol():
    """init / step / terminate for Newton and optax alike, driven here by a Python loop."""
    import jaxmle.core.solvers as solvers

    def fun(z):
        return jnp.sum((z - jnp.arange(3.0)) ** 2) + 0.5 * jnp.sum(z ** 4) * 1e-3

    for method in ("newton", "lbfgs"):
        solver = solvers.make_solver(method, fun, jnp.asarray(1e-10))
        init, step, terminate = (jax.jit(f) for f in (solver.init, solver.step, solver.terminate))
        state = init(jnp.zeros(3))
        while not bool(terminate(state, jnp.asarray(500))):
            state = step(state)
        loop = solvers.solution(state)
        ref = jax.jit(lambda z: solvers.minimise(method, fun, z, jnp.asarray(1e-10),
                                                 jnp.asarray(500)))(jnp.zeros(3))
        assert int(loop.status) == int(ref.status) == 0, method
        np.testing.assert_allclose(loop.z, ref.z, rtol=0, atol=1e-12)

"""Fixed parameters: ``fit(..., fixed=)`` and ``fit_batch(..., fixed=)``.

Fixed values are traced inputs: a new value reuses the compiled program.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose
from numpyro.distributions import constraints

import jaxmle as jm
from shared import POS, ZIP_CONS, logit, normal, zip_poisson
from shared import NORMAL_INIT as INIT

X = np.random.default_rng(11).normal(2.0, 1.5, 60)

TRACED = {"n": 0}


def counted_normal(p, x):
    TRACED["n"] += 1        # a Python side effect: runs only when JAX traces the function
    return normal(p, x)


def test_fixed_scalar_matches_the_closed_form():
    res = jm.fit(normal, X, INIT, constraints=POS, fixed={"sigma": 2.0})
    n = X.size
    assert res.param_names == ("mu",) and res.fixed_names == ("sigma",)
    assert set(res.params) == {"mu", "sigma"} and float(res.params["sigma"]) == 2.0
    assert_allclose(float(res.params["mu"]), X.mean(), rtol=1e-12)
    assert_allclose(float(res.stderr["mu"]), 2.0 / np.sqrt(n), rtol=1e-10)
    assert np.isnan(float(res.stderr["sigma"]))
    assert np.shape(res.cov) == (1, 1) and np.shape(res.fisher_info) == (1, 1)
    assert res.n_free == 1
    ll = float(np.sum(dist.Normal(X.mean(), 2.0).log_prob(X)))
    assert_allclose(float(res.loglik), ll, rtol=1e-12)
    assert_allclose(float(res.aic), 2 * 1 - 2 * ll, rtol=1e-12)
    # the score at the fixed parameter: ∂ℓ/∂σ = −n/σ + Σ(x − x̄)²/σ³
    assert_allclose(float(res.score["sigma"]), -n / 2.0 + np.sum((X - X.mean()) ** 2) / 8.0,
                    rtol=1e-10)
    assert list(res.confint()) == ["mu"] and list(res.flat_params()) == [float(res.params["mu"])]
    text = str(res.summary())
    assert "sigma (fixed)" in text and "held fixed" in text


def test_a_new_fixed_value_does_not_recompile():
    first = jm.fit(counted_normal, X, INIT, constraints=POS, fixed={"sigma": 1.0})
    traces = TRACED["n"]
    second = jm.fit(counted_normal, X, INIT, constraints=POS, fixed={"sigma": 3.0})
    assert TRACED["n"] == traces      # same program: the value is a traced input
    assert float(second.params["sigma"]) == 3.0 and float(first.params["sigma"]) == 1.0
    assert_allclose(float(second.stderr["mu"]), 3.0 / np.sqrt(X.size), rtol=1e-10)


@pytest.fixture(scope="module")
def logit_data():
    rng = np.random.default_rng(3)
    Xd = np.column_stack([np.ones(300), rng.normal(size=(300, 3))])
    y = rng.binomial(1, 1 / (1 + np.exp(-Xd @ np.array([0.2, 1.0, -0.7, 0.0])))).astype(float)
    return {"X": Xd, "y": y}


def test_fixing_an_element_equals_dropping_the_covariate(logit_data):
    res = jm.fit(logit, logit_data, {"beta": np.zeros(4)}, fixed={"beta[3]": 0.0})
    ref = sm.Logit(logit_data["y"], logit_data["X"][:, :3]).fit(disp=0, tol=1e-12)
    assert res.param_names == ("beta[0]", "beta[1]", "beta[2]")
    assert res.fixed_names == ("beta[3]",)
    assert np.asarray(res.params["beta"]).shape == (4,) and float(res.params["beta"][3]) == 0.0
    # rtol 1e-7: both at the same optimum, to the optimisers' precision
    assert_allclose(res.flat_params(), ref.params, rtol=1e-7)
    assert_allclose(np.asarray(res.cov), ref.cov_params(), rtol=1e-6)
    assert np.isnan(float(res.stderr["beta"][3]))
    assert_allclose(float(res.loglik), ref.llf, rtol=1e-10)


def test_a_whole_array_leaf_takes_a_broadcast_scalar(logit_data):
    res = jm.fit(logit, logit_data, {"beta": np.zeros(4)}, fixed={"beta": 0.0})
    assert res.n_free == 0 and res.method == "none" and np.shape(res.cov) == (0, 0)
    assert_allclose(float(res.loglik), 300 * np.log(0.5), rtol=1e-12)
    assert bool(res.converged)
    assert "none: all fixed" in str(res.summary())


def test_every_parameter_fixed_evaluates_the_likelihood():
    res = jm.fit(normal, X, INIT, constraints=POS, fixed={"mu": 1.0, "sigma": 2.0})
    assert_allclose(float(res.loglik), float(np.sum(dist.Normal(1.0, 2.0).log_prob(X))),
                    rtol=1e-12)
    assert res.param_names == () and res.n_free == 0 and int(res.n_iter) == 0


def test_a_boundary_value_the_constraint_admits():
    """pi = 0 (unit_interval is closed) reduces the ZIP to a Poisson: rate = mean."""
    # n = 150 as in test_lrt_delta_bootstrap's ZIP (the same program, pi = 0 fixed)
    y = np.random.default_rng(4).poisson(2.5, 150).astype(float)
    res = jm.fit(zip_poisson, y, {"rate": 1.0, "pi": 0.2}, constraints=ZIP_CONS,
                 fixed={"pi": 0.0})
    assert_allclose(float(res.params["rate"]), y.mean(), rtol=1e-9)
    assert_allclose(float(res.stderr["rate"]), np.sqrt(y.mean() / y.size), rtol=1e-8)


def test_fit_batch_with_fixed_equals_single_fits():
    xs = np.random.default_rng(5).normal(1.0, 2.0, size=(4, 60))
    bres = jm.fit_batch(normal, xs, INIT, constraints=POS, fixed={"sigma": 2.0})
    assert bres.param_names == ("mu",) and bres.fixed_names == ("sigma",)
    assert np.asarray(bres.params["sigma"]).tolist() == [2.0] * 4
    assert bres.flat_params().shape == (4, 1)
    assert_allclose(bres.flat_params()[:, 0], xs.mean(axis=1), rtol=1e-12)
    assert_allclose(bres.flat_stderr()[:, 0], 2.0 / np.sqrt(60), rtol=1e-10)
    assert "mu" in str(bres.summary())
    single = jm.fit(normal, xs[2], INIT, constraints=POS, fixed={"sigma": 2.0})
    assert_allclose(np.asarray(bres[2].cov), np.asarray(single.cov), rtol=1e-12)


def test_multistart_keeps_the_fixed_values():
    res = jm.fit(normal, X, INIT, constraints=POS, fixed={"sigma": 2.0}, n_starts=3)
    assert float(res.params["sigma"]) == 2.0 and res.n_at_best == 3
    assert_allclose(float(res.params["mu"]), X.mean(), rtol=1e-12)


def test_fixed_errors():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['tau'\].*\['mu', 'sigma'\]"):
        jm.fit(normal, X, INIT, constraints=POS, fixed={"tau": 1.0})
    with pytest.raises(ValueError, match="violates the constraint"):
        jm.fit(normal, X, INIT, constraints=POS, fixed={"sigma": -1.0})
    with pytest.raises(ValueError, match="not finite"):
        jm.fit(normal, X, INIT, constraints=POS, fixed={"mu": np.nan})
    with pytest.raises(ValueError, match="has shape"):
        jm.fit(logit, {"X": np.ones((5, 2)), "y": np.ones(5)}, {"beta": np.zeros(2)},
               fixed={"beta": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="twice"):
        jm.fit(logit, {"X": np.ones((5, 2)), "y": np.ones(5)}, {"beta": np.zeros(2)},
               fixed={"beta": 0.0, "beta[1]": 1.0})
    with pytest.raises(TypeError, match="dict"):
        jm.fit(normal, X, INIT, constraints=POS, fixed=[("mu", 1.0)])


def multinomial(p, counts):
    return jnp.sum(counts * jnp.log(p["p"]))


def test_an_element_of_a_simplex_cannot_be_fixed_alone():
    counts = np.array([4.0, 3.0, 3.0])
    init = {"p": np.full(3, 1 / 3)}
    with pytest.raises(ValueError, match="ties its elements together"):
        jm.fit(multinomial, counts, init, constraints={"p": constraints.simplex},
               fixed={"p[0]": 0.5})
    whole = jm.fit(multinomial, counts, init, constraints={"p": constraints.simplex},
                   fixed={"p": [0.4, 0.3, 0.3]})
    assert_allclose(float(whole.loglik), np.sum(counts * np.log([0.4, 0.3, 0.3])), rtol=1e-12)


def test_jit_traced_kernel_with_fixed_values_vmaps():
    """The kernel takes the fixed values as data: vmap over them gives one fit each."""
    import jaxmle.core.held as _held
    import jaxmle.core.space as _space
    import jaxmle.fitting.kernel as _kernel

    leaves, treedef, names = _kernel.prepare_init(INIT, np.dtype("float64"))
    space = _space.build_space(leaves, names, treedef, POS)
    held = _held.prepare_fixed({"sigma": 1.0}, space, leaves, np.float64)
    config = _kernel.KernelConfig(normal, space, "newton", False, "float64")
    at = space.names.index("sigma")

    def one(sigma):
        data = _held.Inputs(jnp.asarray(X), held._replace(values=jnp.asarray(held.values)
                                                          .at[at].set(sigma)))
        return _kernel.fit_kernel(config, data, leaves, None, jnp.asarray(1e-8),
                                  jnp.asarray(100, jnp.int32))

    out = jax.jit(jax.vmap(one))(jnp.asarray([1.0, 2.0, 4.0]))
    assert_allclose(np.asarray(out.stderr["mu"]), np.array([1.0, 2.0, 4.0]) / np.sqrt(X.size),
                    rtol=1e-10)


def test_what_is_held_is_data_so_fixed_profiles_and_multistart_share_programs():
    """Which parameters are fixed (and the profiled one) is traced data: a fit with any
    ``fixed=`` reuses the plain fit's program (plus, once per problem, the small program
    of the fixed elements' scores), and the profiles of every parameter, of
    fits with different fixed sets, and multi-start (2 starts, the profile's batch size)
    share one batch program."""
    import jaxmle.fitting.batch_kernel as _batch_kernel
    import jaxmle.fitting.kernel as _kernel

    plain = jm.fit(counted_normal, X, INIT, constraints=POS)
    misses = _kernel.compiled_kernel.cache_info().misses
    # the fit's program; only the fixed elements' score (a small gradient program) compiles
    fix_sigma = jm.fit(counted_normal, X, INIT, constraints=POS, fixed={"sigma": 2.0})
    traces = TRACED["n"]
    fix_mu = jm.fit(counted_normal, X, INIT, constraints=POS, fixed={"mu": 0.5})
    assert TRACED["n"] == traces and _kernel.compiled_kernel.cache_info().misses == misses
    n, mu = X.size, X.mean()
    assert_allclose(float(fix_sigma.score["sigma"]), -n / 2.0 + np.sum((X - mu) ** 2) / 8.0,
                    rtol=1e-9)
    assert fix_sigma.param_names == ("mu",) and fix_mu.param_names == ("sigma",)
    assert fix_sigma.fixed_names == ("sigma",) and fix_sigma.cov.shape == (1, 1)
    assert_allclose(float(fix_sigma.params["mu"]), X.mean(), rtol=1e-10)
    assert_allclose(float(fix_mu.params["sigma"]), np.sqrt(np.mean((X - 0.5) ** 2)), rtol=1e-8)
    assert_allclose(float(fix_sigma.stderr["mu"]), 2.0 / np.sqrt(X.size), rtol=1e-8)

    plain.profile("mu")
    traces, misses = TRACED["n"], _batch_kernel.compiled_passes.cache_info().misses
    plain.profile("sigma")
    fix_sigma.profile("mu")
    fix_mu.profile("sigma")
    jm.fit(counted_normal, X, INIT, constraints=POS, n_starts=2)
    jm.fit(counted_normal, X, INIT, constraints=POS, fixed={"sigma": 2.0}, n_starts=2)
    assert TRACED["n"] == traces
    assert _batch_kernel.compiled_passes.cache_info().misses == misses

"""Every supported constraint: the transform round trip, the fit, and delta-method SEs."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from shared import normal

import jaxmle as jm
import jaxmle.core.space as _space
import jaxmle.fitting.kernel as _kernel
from jaxmle.core.host_space import check_init

RNG = np.random.default_rng(11)
X = RNG.normal(3.0, 2.0, size=60)
N, MEAN, VAR = 60, X.mean(), X.var()


@pytest.mark.parametrize("constraint, value", [
    (constraints.real, 1.5),
    (constraints.positive, 2.0),
    (constraints.unit_interval, 0.3),
    (constraints.interval(-2.0, 5.0), 4.9),
    (constraints.greater_than(1.0), 1.5),
    (constraints.simplex, [0.2, 0.3, 0.5]),
    (constraints.ordered_vector, [-1.0, 0.5, 3.0]),
    (constraints.positive_definite, [[2.0, 0.3], [0.3, 1.0]]),
    (constraints.corr_cholesky, [[1.0, 0.0], [0.6, 0.8]]),
])
def test_round_trip_through_the_unconstrained_space(constraint, value):
    leaves, treedef, names = _kernel.prepare_init({"t": value}, np.dtype("float64"))
    space = _space.build_space(leaves, names, treedef, {"t": constraint})
    check_init(space, leaves)
    z = jax.jit(space.to_unconstrained)(leaves)   # (op by op: a program per primitive)
    assert z.shape == (space.m,)
    np.testing.assert_allclose(jax.jit(space.to_natural)(z)["t"], value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mu_constraint", [constraints.interval(-10.0, 10.0),
                                           constraints.greater_than(-5.0),
                                           constraints.positive])
def test_interior_optimum_is_unaffected_by_the_constraint(mu_constraint):
    res = jm.fit(normal, X, init={"mu": 1.0, "sigma": 1.0},
                 constraints={"mu": mu_constraint, "sigma": constraints.positive})
    # exact at a stationary point: the delta method through the transform is exact
    np.testing.assert_allclose(res.params["mu"], MEAN, rtol=1e-10)
    np.testing.assert_allclose(res.stderr["mu"], np.sqrt(VAR / N), rtol=1e-8)
    # off-diagonal ∝ the residual gradient: ~1e-10 relative to the diagonal
    np.testing.assert_allclose(res.fisher_info, [[N / VAR, 0], [0, 2 * N / VAR]], rtol=1e-7,
                               atol=1e-7)


def test_ordered_vector_group_means():
    groups = np.repeat([0, 1, 2], 20)
    y = np.array([-1.0, 0.0, 2.0])[groups] + RNG.normal(size=60)

    def loglik(p, d):
        return dist.Normal(p["mu"][d[1]], 1.0).log_prob(d[0])

    res = jm.fit(loglik, (y, groups), init={"mu": jnp.array([-1.0, 0.0, 1.0])},
                 constraints={"mu": constraints.ordered_vector})
    means = np.array([y[groups == g].mean() for g in range(3)])
    assert np.all(np.diff(means) > 0)
    np.testing.assert_allclose(res.params["mu"], means, rtol=1e-9)
    # exact at the optimum; the solver stops within 1e-8 SEs of it (2e-9 of the variances)
    np.testing.assert_allclose(res.cov, np.eye(3) / 20, rtol=1e-7, atol=1e-10)


def _mvn_data():
    cov = np.array([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 0.5]])
    return RNG.multivariate_normal([1.0, -1.0, 0.5], cov, size=200)


def test_positive_definite_covariance_is_the_biased_sample_covariance():
    y = _mvn_data()

    def loglik(p, y):
        return dist.MultivariateNormal(p["mean"], covariance_matrix=p["cov"]).log_prob(y)

    res = jm.fit(loglik, y, init={"mean": jnp.zeros(3), "cov": jnp.eye(3)},
                 constraints={"cov": constraints.positive_definite})
    s = np.cov(y.T, bias=True)
    np.testing.assert_allclose(res.params["mean"], y.mean(0), rtol=1e-9)
    np.testing.assert_allclose(res.params["cov"], s, rtol=1e-8)
    # Var(S_ij) = (S_ij² + S_ii S_jj)/n for Gaussian data (inverse information at the MLE)
    se = np.sqrt((s**2 + np.outer(np.diag(s), np.diag(s))) / 200)
    np.testing.assert_allclose(res.stderr["cov"], se, rtol=1e-6)
    assert res.n_free == 3 + 6 and res.cov.shape == (12, 12)


def test_corr_cholesky_gives_the_sample_correlation():
    y = _mvn_data()

    def loglik(p, y):
        scale_tril = p["scale"][:, None] * p["L"]
        return dist.MultivariateNormal(p["mean"], scale_tril=scale_tril).log_prob(y)

    res = jm.fit(loglik, y, init={"mean": jnp.zeros(3), "scale": jnp.ones(3), "L": jnp.eye(3)},
                 constraints={"scale": constraints.positive, "L": constraints.corr_cholesky})
    L = np.asarray(res.params["L"])
    np.testing.assert_allclose(L @ L.T, np.corrcoef(y.T), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.params["scale"], y.std(0), rtol=1e-8)
    assert np.all(np.isfinite(np.asarray(res.stderr["scale"])))

"""res.laplace(): the Gaussian approximation of the posterior in the unconstrained space.

References: the exact evidence of a conjugate Normal model (where Laplace is exact);
the Gamma–Poisson model, where the Laplace error on the log scale is known in closed
form (Stirling's series of Γ(α)); NumPyro's potential energy and AutoLaplaceApproximation.
"""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpy.testing import assert_allclose
from numpyro.infer.autoguide import AutoLaplaceApproximation
from numpyro.infer.util import potential_energy
from scipy.special import gammaln
from scipy.stats import multivariate_normal

import jaxmle as jm
from shared import normal_known_sigma


def poisson(p, y):
    return dist.Poisson(p["lam"]).log_prob(y)


def regression(p, data):
    X, y = data
    return dist.Normal(X @ p["beta"], p["s"]).log_prob(y)


def test_log_evidence_exact_for_conjugate_normal():
    """y_i ~ N(μ, σ²), μ ~ N(m0, s0²): p(y) = N(y; m0·1, σ²I + s0²11ᵀ); Laplace is exact."""
    x = np.random.default_rng(0).normal(3.0, 2.0, 20)
    res = jm.fit(normal_known_sigma, x, init={"mu": 0.0}, priors={"mu": dist.Normal(1.0, 1.5)})
    lap = res.laplace()
    exact = multivariate_normal(np.full(20, 1.0), 4.0 * np.eye(20) + 1.5**2).logpdf(x)
    assert_allclose(lap.log_evidence, exact, rtol=1e-12)
    assert_allclose(lap.z, [float(res.params["mu"])], rtol=1e-12)   # identity transform
    prec = 1 / 1.5**2 + 20 / 4.0
    assert_allclose(lap.cov_unconstrained, [[1 / prec]], rtol=1e-10)
    draws = lap.sample(jax.random.PRNGKey(0), 20_000)["mu"]
    assert draws.shape == (20_000,)
    assert abs(float(draws.mean()) - float(res.params["mu"])) < 4 * prec**-0.5 / np.sqrt(20_000)


def test_gamma_poisson_laplace_on_the_log_scale():
    """λ ~ Gamma(a, b), y_i ~ Poisson(λ): the posterior of log λ has density ∝ λ^α e^{−βλ}
    (α = a + Σy, β = b + n); its Laplace approximation replaces Γ(α) by Stirling's
    α^α e^{−α} √(2π/α), so the error of log p(y) is known exactly. The mode of the
    unconstrained posterior is λ = α/β, not the MAP (α − 1)/β of λ itself."""
    y = np.random.default_rng(1).poisson(4.0, 30).astype(float)
    a, b = 2.0, 0.5
    res = jm.fit(poisson, y, init={"lam": 1.0}, priors={"lam": dist.Gamma(a, b)})
    alpha, beta = a + y.sum(), b + len(y)
    assert_allclose(float(res.params["lam"]), (alpha - 1) / beta, rtol=1e-9)
    lap = res.laplace()
    assert_allclose(float(lap.params["lam"]), alpha / beta, rtol=1e-9)
    assert_allclose(lap.cov_unconstrained, [[1 / alpha]], rtol=1e-9)
    exact = (a * np.log(b) - gammaln(a) - gammaln(y + 1).sum() + gammaln(alpha)
             - alpha * np.log(beta))
    stirling_error = alpha * np.log(alpha) - alpha + 0.5 * np.log(2 * np.pi / alpha) - gammaln(alpha)
    assert_allclose(lap.log_evidence, exact + stirling_error, rtol=1e-10)
    draws = lap.sample(jax.random.PRNGKey(1), 4000)["lam"]
    assert np.all(np.asarray(draws) > 0)               # pushed through exp


@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 3))
    y = X @ np.array([1.0, -1.0, 0.5]) + rng.normal(0, 0.7, 30)
    return X, y


def test_matches_numpyro_auto_laplace(regression_data):
    """ẑ is the mode of NumPyro's own unconstrained posterior (its potential energy, which
    includes the Jacobian, has zero gradient there), and NumPyro's
    AutoLaplaceApproximation centred at ẑ has our covariance."""
    X, y = regression_data

    def model(X, y):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([3]).to_event(1))
        s = numpyro.sample("s", dist.HalfNormal(2.0))
        numpyro.sample("y", dist.Normal(X @ beta, s), obs=y)

    res = jm.fit(regression, (X, y), init={"beta": np.zeros(3), "s": 1.0},
                 priors={"beta": dist.Normal(0, 1).expand([3]).to_event(1),
                         "s": dist.HalfNormal(2.0)})
    lap = res.laplace()
    assert lap.converged
    z = {"beta": lap.z[:3], "s": lap.z[3]}
    # (jitted: op by op, NumPyro's density and its derivatives compile ~300 small programs)
    grad = jax.jit(jax.grad(lambda u: potential_energy(model, (X, y), {}, u)))(z)
    assert max(np.max(np.abs(np.asarray(g))) for g in grad.values()) < 1e-8

    @jax.jit     # (the guide's set-up, run op by op, would compile ~140 small programs)
    def numpyro_cov(loc):
        guide = AutoLaplaceApproximation(model)
        with numpyro.handlers.seed(rng_seed=0):
            guide(X, y)                                # sets up NumPyro's potential
        return guide.get_posterior({"auto_loc": loc}).covariance_matrix

    assert_allclose(lap.cov_unconstrained, np.asarray(numpyro_cov(jax.numpy.asarray(lap.z))),
                    rtol=1e-9)
    assert lap.unconstrained_names == ("beta", "beta", "beta", "s")
    draws = lap.sample(jax.random.PRNGKey(3), 1000)
    assert draws["beta"].shape == (1000, 3) and draws["s"].shape == (1000,)


def test_errors(regression_data):
    X, y = regression_data
    mle = jm.fit(regression, (X, y), init={"beta": np.zeros(3), "s": 1.0},
                 constraints={"s": dist.constraints.positive})
    with pytest.raises(ValueError, match="priors="):
        mle.laplace()
    partial = jm.fit(regression, (X, y), init={"beta": np.zeros(3), "s": 1.0},
                     priors={"s": dist.HalfNormal(2.0)})
    lap = partial.laplace()                            # fine as an approximation ...
    with pytest.raises(ValueError, match=r"\['beta'\] have none"):
        lap.log_evidence                               # ... but the evidence is undefined


def test_not_negative_definite_is_an_error():
    """A likelihood that does not involve a parameter with a flat (improper) prior on
    it: the unconstrained posterior has no curvature in that direction."""
    x = np.random.default_rng(3).normal(size=10)

    def ignores_b(p, x):
        return dist.Normal(p["a"], 1.0).log_prob(x) + 0.0 * p["b"]

    with pytest.warns(jm.SingularInformationWarning, match="'b'"):
        res = jm.fit(ignores_b, x, init={"a": 0.0, "b": 0.0}, priors={"a": dist.Normal(0, 1)})
    with pytest.raises(ValueError, match="not negative definite"):
        res.laplace()

"""The textbook MLEs, exactly: closed-form estimates and standard errors."""

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

import jaxmle as jm
from shared import logistic, normal

# Closed forms are exact; the solver stops within ~1e-8 SEs, so 1e-9 relative is safe.
RTOL = 1e-9


def bernoulli(p, x):
    return dist.Bernoulli(probs=p["p"]).log_prob(x)


def categorical(p, x):
    return dist.Categorical(probs=p["p"]).log_prob(x)


def test_bernoulli_sample_fraction_and_se():
    x = jnp.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1])
    res = jm.fit(bernoulli, x, init={"p": 0.5}, constraints={"p": constraints.unit_interval})
    assert res.converged
    np.testing.assert_allclose(res.params["p"], 0.7, rtol=RTOL)
    np.testing.assert_allclose(res.stderr["p"], np.sqrt(0.21 / 10), rtol=RTOL)
    # observed information of Bernoulli at p̂: n / (p(1-p))
    np.testing.assert_allclose(res.fisher_info, [[10 / 0.21]], rtol=1e-8)
    np.testing.assert_allclose(res.loglik, 7 * np.log(0.7) + 3 * np.log(0.3), rtol=1e-12)
    assert res.nobs == 10 and res.param_names == ("p",)


HEIGHTS = jnp.array([160., 162., 165., 167., 170., 172., 175., 177., 180., 182.])


@pytest.mark.parametrize("init", [{"mu": 0.0, "sigma": 1.0}, {"mu": 171.0, "sigma": 7.0},
                                  {"mu": 500.0, "sigma": 0.01}])
def test_normal_mean_and_biased_variance(init):
    res = jm.fit(normal, HEIGHTS, init=init, constraints={"sigma": constraints.positive})
    assert res.converged
    n, s2 = 10, 51.0
    np.testing.assert_allclose(res.params["mu"], 171.0, rtol=RTOL)
    np.testing.assert_allclose(res.params["sigma"] ** 2, s2, rtol=RTOL)
    # Var(mu) = s²/n, Var(sigma) = s²/(2n), Cov = 0 (inverse observed information)
    np.testing.assert_allclose(res.cov, [[s2 / n, 0], [0, s2 / (2 * n)]], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.fisher_info, [[n / s2, 0], [0, 2 * n / s2]], rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(res.stderr["sigma"], np.sqrt(s2 / 20), rtol=1e-8)
    loglik = -n / 2 * (np.log(2 * np.pi * s2) + 1)
    np.testing.assert_allclose(res.loglik, loglik, rtol=1e-12)
    np.testing.assert_allclose(res.aic, 4 - 2 * loglik, rtol=1e-12)
    np.testing.assert_allclose(res.bic, 2 * np.log(10) - 2 * loglik, rtol=1e-12)
    for g in (res.score["mu"], res.score["sigma"]):
        assert abs(g) < 1e-6


def test_categorical_on_simplex_with_multinomial_covariance():
    x = jnp.array([1, 2, 1, 3, 4, 2, 1, 1, 3, 2, 1, 4, 3, 2, 1, 4, 1, 3, 2, 1]) - 1
    res = jm.fit(categorical, x, init={"p": jnp.full(4, 0.25)},
                 constraints={"p": constraints.simplex})
    p = np.array([0.40, 0.25, 0.20, 0.15])
    assert res.converged
    np.testing.assert_allclose(res.params["p"], p, rtol=RTOL)
    np.testing.assert_allclose(res.cov, (np.diag(p) - np.outer(p, p)) / 20, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(res.stderr["p"], np.sqrt(p * (1 - p) / 20), rtol=1e-8)
    assert res.param_names == ("p[0]", "p[1]", "p[2]", "p[3]")
    assert res.n_free == 3  # AIC counts the 3 free coordinates of the simplex
    np.testing.assert_allclose(res.aic, 6 - 2 * np.sum(20 * p * np.log(p)), rtol=1e-12)
    # fisher_info is the pseudo-inverse of cov on the simplex
    np.testing.assert_allclose(res.fisher_info @ res.cov @ res.fisher_info, res.fisher_info,
                               rtol=1e-7, atol=1e-6)


def test_linear_regression_is_least_squares():
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(80), rng.normal(size=(80, 3))])
    y = X @ np.array([0.5, -1.0, 2.0, 0.0]) + rng.normal(scale=2.0, size=80)

    def loglik(p, d):
        return dist.Normal(d[0] @ p["beta"], p["sigma"]).log_prob(d[1])

    res = jm.fit(loglik, (X, y), init={"beta": jnp.zeros(4), "sigma": 1.0},
                 constraints={"sigma": constraints.positive})
    beta, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    # atol: the solver stops within ~1e-8 SEs (SE ≈ 0.2 here); rtol for the large ones
    np.testing.assert_allclose(res.params["beta"], beta, rtol=1e-9, atol=1e-9)
    s2 = rss[0] / 80  # MLE variance = MSE
    np.testing.assert_allclose(res.params["sigma"] ** 2, s2, rtol=1e-9)
    np.testing.assert_allclose(res.cov[:4, :4], s2 * np.linalg.inv(X.T @ X), rtol=1e-7)
    assert res.param_names[:2] == ("beta[0]", "beta[1]") and res.param_names[-1] == "sigma"


def test_logistic_regression_minimises_cross_entropy():
    rng = np.random.default_rng(4)
    X = np.column_stack([np.ones(300), rng.normal(size=(300, 2))])
    y = (rng.random(300) < 1 / (1 + np.exp(-X @ np.array([0.3, 1.0, -2.0])))).astype(float)
    res = jm.fit(logistic, (X, y), init={"beta": jnp.zeros(3)})
    b = np.asarray(res.params["beta"])
    prob = 1 / (1 + np.exp(-X @ b))
    # the cross-entropy gradient X^T (prob - y) vanishes at the MLE: the remaining
    # Newton step is below 1e-7 standard errors (the solver's tol is 1e-8 SEs)
    grad = X.T @ (prob - y)
    step = np.linalg.solve(np.asarray(res.fisher_info), grad)
    assert np.all(np.abs(step) <= 1e-7 * np.asarray(res.stderr["beta"]))
    # and the information is X^T W X
    w = prob * (1 - prob)
    np.testing.assert_allclose(res.fisher_info, X.T @ (w[:, None] * X), rtol=1e-8)


def test_demo_reproduces_every_closed_form():
    from jaxmle import demo

    lines = []
    assert demo.run(lines.append)
    text = "\n".join(lines)
    assert "MISMATCH" not in text and text.count("OK") >= 9

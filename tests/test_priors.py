"""MAP fits: priors= (closed forms, peers), Laplace (L1) priors against scikit-learn, errors.

MAP maximises ℓ(θ) + log π(θ) over the natural parameters (no Jacobian): the
conjugate cases have closed-form modes; logistic regression with Normal priors is
L2-penalised logistic regression (checked with scipy on the penalised objective);
Laplace priors are L1 penalties (checked with scikit-learn's saga solver and with
the optimality (KKT) conditions).
"""

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpy.testing import assert_allclose
from numpyro.distributions import constraints
from scipy.optimize import minimize

import jaxmle as jm
from shared import normal, normal_known_sigma

TRACES = {"n": 0}


def counted_known_sigma(p, x):
    TRACES["n"] += 1          # runs only when JAX traces the function
    return normal_known_sigma(p, x)


def bernoulli(p, y):
    return dist.Bernoulli(probs=p["p"]).log_prob(y)


def logistic(p, data):
    X, y = data
    return dist.Bernoulli(logits=X @ p["beta"] + p["a"]).log_prob(y)


@pytest.fixture(scope="module")
def logit_data():
    rng = np.random.default_rng(7)
    n, k = 200, 6
    X = rng.normal(size=(n, k))
    beta = np.array([1.5, -1.0, 0.0, 0.0, 0.5, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta - 0.3)))).astype(float)
    return X, y


def test_conjugate_normal_mean_closed_form():
    """x ~ N(μ, 2²), μ ~ N(m0, s0²): posterior N(m_n, s_n²) with 1/s_n² = 1/s0² + n/σ²."""
    x = np.random.default_rng(0).normal(3.0, 2.0, 20)
    m0, s0 = 1.0, 1.5
    res = jm.fit(normal_known_sigma, x, init={"mu": 0.0}, priors={"mu": dist.Normal(m0, s0)})
    prec = 1 / s0**2 + len(x) / 4.0
    assert res.kind == "map"
    assert_allclose(float(res.params["mu"]), (m0 / s0**2 + x.sum() / 4.0) / prec, rtol=1e-10)
    assert_allclose(float(res.stderr["mu"]), prec**-0.5, rtol=1e-10)
    loglik = dist.Normal(res.params["mu"], 2.0).log_prob(x).sum()
    assert_allclose(float(res.loglik), float(loglik), rtol=1e-12)
    log_prior = dist.Normal(m0, s0).log_prob(res.params["mu"])
    assert_allclose(float(res.logpost), float(loglik + log_prior), rtol=1e-12)
    text = str(res.summary())
    assert "MAP" in text and "mu ~ Normal(loc=1, scale=1.5)" in text and "Log-posterior" in text


def test_new_prior_values_do_not_recompile():
    x = np.random.default_rng(1).normal(0.0, 2.0, 20)
    jm.fit(counted_known_sigma, x, init={"mu": 0.0}, priors={"mu": dist.Normal(0.0, 3.0)})
    traces = TRACES["n"]
    res = jm.fit(counted_known_sigma, x, init={"mu": 0.0}, priors={"mu": dist.Normal(5.0, 0.5)})
    assert TRACES["n"] == traces      # the prior's parameters are traced inputs
    prec = 1 / 0.25 + len(x) / 4.0
    assert_allclose(float(res.params["mu"]), (5.0 / 0.25 + x.sum() / 4.0) / prec, rtol=1e-10)


def test_beta_bernoulli_mode_and_support_constraint():
    """Beta(a, b) prior: the mode (k + a − 1)/(n + a + b − 2); the prior's support
    (unit interval) is the parameter's constraint without being given."""
    y = (np.random.default_rng(2).random(30) < 0.3).astype(float)
    a, b = 2.0, 3.0
    res = jm.fit(bernoulli, y, init={"p": 0.5}, priors={"p": dist.Beta(a, b)})
    k, n = y.sum(), len(y)
    assert_allclose(float(res.params["p"]), (k + a - 1) / (n + a + b - 2), rtol=1e-8)
    # curvature of the log posterior: (k + a − 1)/p² + (n − k + b − 1)/(1 − p)²
    p = (k + a - 1) / (n + a + b - 2)
    info = (k + a - 1) / p**2 + (n - k + b - 1) / (1 - p) ** 2
    assert_allclose(float(res.stderr["p"]), info**-0.5, rtol=1e-6)


def test_logistic_normal_priors_equal_l2_penalised_optimum(logit_data):
    """N(0, s²) priors on the weights = L2 penalty ‖β‖²/(2s²) (scipy on the same objective)."""
    X, y = logit_data
    s = 0.7
    res = jm.fit(logistic, (X, y), init={"a": 0.0, "beta": np.zeros(6)},
                 priors={"beta": dist.Normal(0.0, s)})

    def penalised(theta):
        eta = X @ theta[1:] + theta[0]
        return np.sum(np.logaddexp(0, eta) - y * eta) + theta[1:] @ theta[1:] / (2 * s**2)

    def grad(theta):
        r = 1 / (1 + np.exp(-(X @ theta[1:] + theta[0]))) - y
        return np.concatenate([[r.sum()], X.T @ r + theta[1:] / s**2])

    ref = minimize(penalised, np.zeros(7), jac=grad, method="BFGS", options={"gtol": 1e-11}).x
    assert_allclose(res.flat_params(), ref, atol=1e-6)
    # the covariance is the inverse Hessian of the log posterior
    eta = X @ ref[1:] + ref[0]
    w = np.exp(-np.logaddexp(0, -eta) - np.logaddexp(0, eta))
    Xa = np.column_stack([np.ones(len(y)), X])
    hess = Xa.T @ (w[:, None] * Xa) + np.diag([0.0] + [1 / s**2] * 6)
    assert_allclose(np.asarray(res.cov), np.linalg.inv(hess), rtol=1e-6)


def test_priors_in_fit_batch_match_single_fits(logit_data):
    X, y = logit_data
    rng = np.random.default_rng(3)
    ys = np.stack([y, (rng.random(len(y)) < 0.5).astype(float)])
    priors = {"beta": dist.Normal(0.0, 0.7)}
    bres = jm.fit_batch(logistic, (np.stack([X, X]), ys), init={"a": 0.0, "beta": np.zeros(6)},
                        priors=priors)
    for i in range(2):
        one = jm.fit(logistic, (X, ys[i]), init={"a": 0.0, "beta": np.zeros(6)}, priors=priors)
        assert_allclose(np.asarray(bres.params["beta"][i]), np.asarray(one.params["beta"]),
                        rtol=1e-10, atol=1e-12)
        assert_allclose(float(bres.logpost[i]), float(one.logpost), rtol=1e-12)


# --------------------------------------------------------------------------- L1


def _kkt_violation(X, y, a, beta, lam):
    """max over coefficients of the distance of −∇ℓ from the subdifferential of λ‖β‖₁."""
    r = 1 / (1 + np.exp(-(X @ beta + a))) - y
    g = X.T @ r
    zero = beta == 0
    at_zero = np.maximum(np.abs(g[zero]) - lam, 0.0)
    away = np.abs(g[~zero] + lam * np.sign(beta[~zero]))
    return max(np.max(at_zero, initial=0.0), np.max(away, initial=0.0), abs(r.sum()))


@pytest.mark.parametrize("scale", [0.1, 0.03])
def test_laplace_prior_is_l1_against_scikit_learn(logit_data, scale):
    """Laplace(0, b) priors = L1 penalty ‖β‖₁/b = scikit-learn's C = b; exact zeros."""
    from sklearn.linear_model import LogisticRegression

    X, y = logit_data
    res = jm.fit(logistic, (X, y), init={"a": 0.0, "beta": np.zeros(6)},
                 priors={"beta": dist.Laplace(0.0, scale)})
    beta, a = np.asarray(res.params["beta"]), float(res.params["a"])
    assert res.converged and res.method == "prox-newton"
    assert _kkt_violation(X, y, a, beta, 1 / scale) < 1e-8
    ref = LogisticRegression(l1_ratio=1.0, C=scale, solver="saga", tol=1e-12,
                             max_iter=100_000).fit(X, y)
    assert_allclose(beta, ref.coef_[0], atol=1e-6)
    assert_allclose(a, ref.intercept_[0], atol=1e-6)
    zeros = np.abs(ref.coef_[0]) < 1e-6
    assert zeros.any()
    assert np.all(np.abs(beta[zeros]) < 1e-8)          # exactly zero, not merely small
    assert np.all(np.isnan(np.asarray(res.stderr["beta"])[zeros]))
    assert np.all(np.isfinite(np.asarray(res.stderr["beta"])[~zeros]))
    assert "exactly 0 under their Laplace (L1) prior" in str(res.summary())


def test_l1_in_fit_batch_matches_single_fit(logit_data):
    X, y = logit_data
    prior = {"beta": dist.Laplace(0.0, 0.1)}
    one = jm.fit(logistic, (X, y), init={"a": 0.0, "beta": np.zeros(6)}, priors=prior)
    bres = jm.fit_batch(logistic, (np.stack([X] * 2), np.stack([y] * 2)),
                        init={"a": 0.0, "beta": np.zeros(6)}, priors=prior)
    assert_allclose(np.asarray(bres.params["beta"][1]), np.asarray(one.params["beta"]),
                    atol=1e-12)
    assert np.array_equal(np.asarray(bres.params["beta"][1]) == 0, np.asarray(one.params["beta"]) == 0)


def test_l1_errors(logit_data):
    X, y = logit_data
    kw = dict(init={"a": 0.0, "beta": np.zeros(6)}, priors={"beta": dist.Laplace(0.0, 0.1)})
    with pytest.raises(ValueError, match="L1.*method='newton'"):
        jm.fit(logistic, (X, y), method="lbfgs", **kw)
    res = jm.fit(logistic, (X, y), **kw)
    with pytest.raises(ValueError, match="profiles are not available"):
        res.confint(method="profile")
    with pytest.raises(ValueError, match="kink"):
        res.laplace()


# --------------------------------------------------------------------------- errors


def test_prior_errors():
    x = np.array([1.0, 2.0, 3.5])
    init = {"mu": 0.0, "sigma": 1.0}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['tau'\]"):
        jm.fit(normal, x, init, priors={"tau": dist.Normal(0, 1)})
    with pytest.raises(TypeError, match="numpyro distribution"):
        jm.fit(normal, x, init, priors={"mu": 3.0})
    with pytest.raises(ValueError, match="discrete"):
        jm.fit(normal, x, init, priors={"mu": dist.Poisson(3.0)})
    with pytest.raises(ValueError, match="does not fit the parameter's shape"):
        jm.fit(normal, x, init, priors={"mu": dist.Normal(jnp.zeros(3), 1.0)})
    with pytest.raises(ValueError, match="conflict|constrained to"):
        jm.fit(normal, x, init, constraints={"sigma": constraints.unit_interval},
               priors={"sigma": dist.HalfNormal(1.0)})
    with pytest.raises(ValueError, match="cov_type"):
        jm.fit(normal, x, init, priors={"mu": dist.Normal(0, 1)}, cov_type="sandwich")
    # the support sets the constraint: an init outside it is named
    with pytest.raises(ValueError, match="sigma"):
        jm.fit(normal, x, {"mu": 0.0, "sigma": -1.0}, priors={"sigma": dist.HalfNormal(1.0)})


def test_real_prior_with_a_narrower_constraint_truncates_it():
    """A prior on the whole line with constraints={"sigma": positive} is the half-prior."""
    x = np.random.default_rng(4).normal(0.0, 1.5, 40)
    a = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": constraints.positive},
               priors={"sigma": dist.Normal(0.0, 2.0)})
    b = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, priors={"sigma": dist.HalfNormal(2.0)})
    assert_allclose(a.flat_params(), b.flat_params(), rtol=1e-9)


def test_prior_function_for_a_joint_prior():
    """priors=callable: a joint log prior (here the same as two independent ones)."""
    x = np.random.default_rng(5).normal(1.0, 1.5, 40)

    def log_prior(p, data):
        return dist.Normal(0, 10).log_prob(p["mu"]) + dist.HalfNormal(5).log_prob(p["sigma"])

    a = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": constraints.positive},
               priors=log_prior)
    b = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0},
               priors={"mu": dist.Normal(0, 10), "sigma": dist.HalfNormal(5)})
    assert_allclose(a.flat_params(), b.flat_params(), rtol=1e-9)
    assert_allclose(float(a.logpost), float(b.logpost), rtol=1e-12)
    assert "log prior: log_prior" in str(a.summary())


def test_lrt_refuses_map_fits():
    x = np.random.default_rng(6).normal(1.0, 1.5, 40)
    full = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, priors={"sigma": dist.HalfNormal(5)})
    restricted = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, priors={"sigma": dist.HalfNormal(5)},
                        fixed={"mu": 0.0})
    with pytest.raises(ValueError, match="maximum-likelihood"):
        jm.lrt(restricted, full)

"""Likelihood-ratio tests (vs statsmodels), the delta method (vs closed forms) and the
parametric bootstrap (vs observed-information SEs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose
from numpyro.distributions import constraints

import jaxmle as jm
from shared import ZIP_CONS, logit, normal, zip_poisson

POS = constraints.positive


def logit_reduced(p, d):
    return logit({"beta": jnp.concatenate([p["b0"][None], jnp.zeros(3)])}, d)


@pytest.fixture(scope="module")
def logit_data():
    rng = np.random.default_rng(7)
    X = np.column_stack([np.ones(400), rng.normal(size=(400, 3))])
    y = rng.binomial(1, 1 / (1 + np.exp(-X @ np.array([-0.2, 0.35, 0.0, -0.25])))).astype(float)
    return {"X": X, "y": y}


def test_lrt_of_nested_logistic_regressions_matches_statsmodels(logit_data):
    full = jm.fit(logit, logit_data, {"beta": np.zeros(4)})
    null = jm.fit(logit, logit_data, {"beta": np.zeros(4)},
                  fixed={"beta[1]": 0.0, "beta[2]": 0.0, "beta[3]": 0.0})
    ref = sm.Logit(logit_data["y"], logit_data["X"]).fit(disp=0, tol=1e-12)
    test = jm.lrt(null, full)
    assert test.df == 3 == int(ref.df_model) and test.nested == "checked"
    # rtol 1e-8: differences of two log-likelihoods, each at its optimum to ~1e-12
    assert_allclose(test.statistic, ref.llr, rtol=1e-8)
    assert_allclose(test.pvalue, ref.llr_pvalue, rtol=1e-7)
    assert test.boundary == () and test.pvalue_boundary is None
    assert "3 df" in str(test)
    # a restriction written as another function: same numbers, nesting assumed
    other = jm.fit(logit_reduced, logit_data, {"b0": 0.0})
    test2 = jm.lrt(other, full)
    assert test2.nested == "assumed"
    assert_allclose(test2.statistic, ref.llr, rtol=1e-8)


def test_lrt_refuses_what_is_not_a_nested_pair(logit_data):
    full = jm.fit(logit, logit_data, {"beta": np.zeros(4)})
    a = jm.fit(logit, logit_data, {"beta": np.zeros(4)}, fixed={"beta[1]": 0.0})
    b = jm.fit(logit, logit_data, {"beta": np.zeros(4)}, fixed={"beta[1]": 0.1, "beta[2]": 0.0})
    c = jm.fit(logit, logit_data, {"beta": np.zeros(4)}, fixed={"beta[2]": 0.0, "beta[3]": 0.0})
    with pytest.raises(ValueError, match="smaller model first"):
        jm.lrt(full, a)
    with pytest.raises(ValueError, match="different values"):
        jm.lrt(b, a)
    with pytest.raises(ValueError, match=r"\['beta\[1\]'\] are fixed in the full fit"):
        jm.lrt(c, a)
    half = {k: v[:200] for k, v in logit_data.items()}
    with pytest.raises(ValueError, match="different numbers of observations"):
        jm.lrt(jm.fit(logit, half, {"beta": np.zeros(4)}, fixed={"beta": 0.0}), full)
    with pytest.raises(TypeError, match="FitResult"):
        jm.lrt(1.0, full)


def test_a_restriction_on_the_boundary_gets_the_mixture_pvalue():
    """H₀: no zero inflation (pi = 0, the edge of [0, 1]): ½χ²₀ + ½χ²₁ applies."""
    rng = np.random.default_rng(9)
    y = np.where(rng.random(150) < 0.15, 0, rng.poisson(2.0, 150)).astype(float)
    full = jm.fit(zip_poisson, y, {"rate": 1.0, "pi": 0.3}, constraints=ZIP_CONS)
    null = jm.fit(zip_poisson, y, {"rate": 1.0, "pi": 0.3}, constraints=ZIP_CONS,
                  fixed={"pi": 0.0})
    test = jm.lrt(null, full)
    assert test.boundary == ("pi",) and test.df == 1
    assert_allclose(test.pvalue_boundary, test.pvalue / 2, rtol=1e-12)
    assert "mixture" in str(test)


@pytest.fixture(scope="module")
def normal_fit():
    x = np.random.default_rng(10).normal(2.0, 1.5, 200)
    return x, jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": POS})


def test_delta_method_against_closed_forms(normal_fit):
    x, res = normal_fit
    n, mu, sigma = x.size, float(res.params["mu"]), float(res.params["sigma"])
    cv = res.delta(lambda p: p["mu"] / p["sigma"])
    # Var(μ̂) = σ²/n, Var(σ̂) = σ²/(2n), independent: Var(μ/σ) = 1/n + μ²/(2nσ²)
    assert cv.estimate.shape == ()
    assert_allclose(float(cv.estimate), mu / sigma, rtol=1e-12)
    assert_allclose(float(cv.stderr), np.sqrt(1 / n + mu**2 / (2 * n * sigma**2)), rtol=1e-8)
    assert_allclose(cv.jacobian, [[1 / sigma, -mu / sigma**2]], rtol=1e-12)
    lo, hi = cv.confint()["fn"]
    assert_allclose(hi - lo, 2 * 1.959963984540054 * float(cv.stderr), rtol=1e-12)
    both = res.delta(lambda p: jnp.stack([p["mu"], p["sigma"] ** 2]))
    assert both.estimate.shape == (2,) and both.cov.shape == (2, 2)
    assert_allclose(both.stderr, [sigma / np.sqrt(n), 2 * sigma**2 / np.sqrt(2 * n)], rtol=1e-8)
    assert_allclose(both.cov[0, 1], 0.0, atol=1e-10)   # cov(μ̂, σ̂) = 0 up to the optimum's precision
    assert "fn[1]" in str(both)


def test_delta_with_fixed_parameters_uses_the_estimated_ones_only(normal_fit):
    x, _ = normal_fit
    res = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": POS},
                 fixed={"sigma": 2.0})
    d = res.delta(lambda p: 3.0 * p["mu"] + p["sigma"])
    assert_allclose(float(d.stderr), 3.0 * 2.0 / np.sqrt(x.size), rtol=1e-10)
    assert d.jacobian.shape == (1, 1)


def simulate_normal(p, key):
    return p["mu"] + p["sigma"] * jax.random.normal(key, (200,))


def test_bootstrap_ses_agree_with_observed_information(normal_fit):
    _, res = normal_fit
    boot = res.bootstrap(simulate_normal, n=2000, key=jax.random.PRNGKey(0))
    assert boot.n == 2000 and boot.n_failed == 0 and boot.draws.shape == (2000, 2)
    se = np.array([float(res.stderr["mu"]), float(res.stderr["sigma"])])
    # Monte-Carlo error of an SD from 2000 draws: 1/√(2·1999) ≈ 1.6%; allow 3 of them + O(1/n)
    assert_allclose(boot.stderr, se, rtol=0.06)
    assert np.all(boot.lower < boot.estimate) and np.all(boot.estimate < boot.upper)
    # the MLE of sigma is biased down by about σ·3/(4n)
    assert abs(boot.bias[0]) < 3 * se[0] / np.sqrt(2000)
    assert -0.03 < boot.bias[1] < 0.0
    ratio = boot.derived(lambda p: p["mu"] / p["sigma"])
    assert_allclose(ratio.stderr, res.delta(lambda p: p["mu"] / p["sigma"]).stderr, rtol=0.08)
    assert "2000 refits, 2000 converged" in str(boot)


def test_bootstrap_holds_fixed_parameters_and_checks_shapes(normal_fit):
    x, _ = normal_fit
    res = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": POS},
                 fixed={"sigma": 1.5})
    # n = 2000 as above: the same compiled refit program (what is fixed is data)
    boot = res.bootstrap(simulate_normal, n=2000, key=jax.random.PRNGKey(1))
    assert boot.names == ("mu",) and boot.draws.shape == (2000, 1)
    assert np.all(np.asarray(boot.params["sigma"]) == 1.5)
    assert_allclose(boot.stderr[0], 1.5 / np.sqrt(200), rtol=0.15)
    with pytest.raises(ValueError, match="shaped like the fitted data"):
        res.bootstrap(lambda p, k: jax.random.normal(k, (10,)), n=10)

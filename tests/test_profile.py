"""Profile-likelihood intervals and curves against analytic profiles (scipy ``brentq``)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpy.testing import assert_allclose
from numpyro.distributions import constraints
from scipy import optimize, stats

import jaxmle as jm
import jaxmle.fitting.batch_kernel as _batch_kernel
from shared import logit, normal

C95 = stats.chi2.ppf(0.95, 1)
POS = constraints.positive
TRACES = {"n": 0}


def poisson(p, y):
    TRACES["n"] += 1      # counts traces: a Python side effect runs only when JAX traces
    return y * jnp.log(p["rate"]) - p["rate"]       # + const


def bernoulli(p, y):
    return y * jnp.log(p["p"]) + (1.0 - y) * jnp.log1p(-p["p"])


def brentq_interval(dev, est, lo, hi, c=C95):
    """The two roots of dev(t) = c around est, bracketed in (lo, est) and (est, hi)."""
    f = lambda t: dev(t) - c          # noqa: E731
    return (optimize.brentq(f, lo, est, xtol=1e-14, rtol=1e-14),
            optimize.brentq(f, est, hi, xtol=1e-14, rtol=1e-14))


@pytest.fixture(scope="module")
def poisson_fit():
    y = np.random.default_rng(1).poisson(3.0, 30).astype(float)
    return y, jm.fit(poisson, y, {"rate": 1.0}, constraints={"rate": POS})


def test_poisson_rate_interval_matches_the_analytic_profile(poisson_fit):
    y, res = poisson_fit
    s, n, lam = y.sum(), y.size, y.mean()
    dev = lambda t: 2 * (s * np.log(lam / t) - n * (lam - t))   # noqa: E731
    lo, hi = brentq_interval(dev, lam, 1e-8, 100.0)
    got = res.confint(method="profile")["rate"]
    # rtol 1e-6: the crossing is searched to |√D − √c| ≤ 1e-7 (1e-7 SEs)
    assert_allclose(got, (lo, hi), rtol=1e-6)
    wald = res.confint()["rate"]
    assert got[0] > wald[0] and got[1] > wald[1]      # skewed right, as the Poisson is


def test_interval_at_another_level_reuses_the_compiled_program(poisson_fit):
    _, res = poisson_fit
    res.confint(method="profile")
    traces, misses = TRACES["n"], _batch_kernel.compiled_passes.cache_info().misses
    lo90, hi90 = res.confint(0.90, method="profile")["rate"]
    assert TRACES["n"] == traces and _batch_kernel.compiled_passes.cache_info().misses == misses
    lo95, hi95 = res.confint(0.95, method="profile")["rate"]
    assert lo95 < lo90 < hi90 < hi95


def test_binomial_proportion_near_one(tmp_path):
    y = np.r_[np.ones(19), np.zeros(1)]          # 19 of 20: p̂ = 0.95, the interval nears 1
    res = jm.fit(bernoulli, y, {"p": 0.5}, constraints={"p": constraints.unit_interval})
    k, n, ph = 19.0, 20.0, 0.95
    ll = lambda p: k * np.log(p) + (n - k) * np.log1p(-p)      # noqa: E731
    lo, hi = brentq_interval(lambda p: 2 * (ll(ph) - ll(p)), ph, 1e-6, 1 - 1e-15)
    prof = res.profile("p")
    assert_allclose((prof.lower, prof.upper), (lo, hi), rtol=1e-6)
    assert prof.interval.lower_status == prof.interval.upper_status == "crossed"
    assert hi < 1.0 < prof.wald[1]                # Wald runs past 1; the profile cannot
    assert np.all(prof.values < 1.0) and np.all(np.diff(prof.values) > 0)


@pytest.fixture(scope="module")
def normal_fit():
    x = np.random.default_rng(2).normal(3.0, 2.0, 25)
    return x, jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": POS})


def test_normal_sigma_and_mu_against_their_exact_profiles(normal_fit):
    x, res = normal_fit
    n, xbar = x.size, x.mean()
    s2 = np.mean((x - xbar) ** 2)
    # profiling out μ (σ) leaves functions of the χ²-distributed ratio σ̂²/σ² (the t-like ratio)
    dev_sigma = lambda s: n * (s2 / s**2 - 1 - np.log(s2 / s**2))    # noqa: E731
    dev_mu = lambda m: n * np.log1p((xbar - m) ** 2 / s2)            # noqa: E731
    ci = res.confint(method="profile")
    assert_allclose(ci["sigma"], brentq_interval(dev_sigma, np.sqrt(s2), 0.1, 50.0), rtol=1e-6)
    assert_allclose(ci["mu"], brentq_interval(dev_mu, xbar, xbar - 10, xbar + 10), rtol=1e-6)
    # every point of the curve is the exact profile (rtol 1e-9: each point is a full re-fit)
    prof = res.profile("sigma", n_points=15)
    assert_allclose(prof.deviance, dev_sigma(prof.values), rtol=1e-8, atol=1e-9)
    assert prof.converged.all() and len(prof.values) >= 15
    assert_allclose(prof.deviance[np.argmin(np.abs(prof.values - np.sqrt(s2)))], 0.0, atol=1e-12)
    assert "crossed" in str(prof) and "Wald" in str(prof)
    # one batched search for both parameters gives what one-at-a-time profiles give
    assert_allclose((prof.lower, prof.upper), ci["sigma"], rtol=1e-9)


def test_summary_with_profile_intervals(normal_fit):
    _, res = normal_fit
    text = str(res.summary(method="profile"))
    lo, hi = res.confint(method="profile")["sigma"]
    assert "profile likelihood" in text and f"{lo:.6f}" in text and f"{hi:.6f}" in text


def test_an_element_of_an_array_parameter_with_other_parameters_fixed():
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(200), rng.normal(size=(200, 2))])
    y = rng.binomial(1, 1 / (1 + np.exp(-X @ np.array([0.3, 1.2, -0.4])))).astype(float)
    data = {"X": X, "y": y}
    res = jm.fit(logit, data, {"beta": np.zeros(3)}, fixed={"beta[2]": -0.4})
    ci = res.confint(method="profile")
    assert list(ci) == ["beta[0]", "beta[1]"]
    # independently: refits with beta[1] fixed at each end lose exactly c/2 of log-likelihood
    for end in ci["beta[1]"]:
        held = jm.fit(logit, data, {"beta": np.zeros(3)}, fixed={"beta[1]": end, "beta[2]": -0.4})
        assert_allclose(2 * (float(res.loglik) - float(held.loglik)), C95, rtol=1e-6)
    with pytest.raises(ValueError, match="is fixed"):
        res.profile("beta[2]")
    with pytest.raises(ValueError, match="unknown parameter 'beta'"):
        res.profile("beta")


def decay(p, d):
    return dist.Normal(p["a"] * jnp.exp(-p["b"] * d["t"]), 0.25).log_prob(d["y"])


def test_an_open_side_is_reported_not_invented():
    """As the decay rate b → ∞ the curve becomes a step and the likelihood levels off
    below the threshold: the upper end is the edge of the parameter space."""
    data = {"t": np.array([0.0, 1.0, 2.0, 3.0]), "y": np.array([1.0, 0.3, 0.12, 0.05])}
    res = jm.fit(decay, data, {"a": 1.0, "b": 1.0}, constraints={"b": POS})
    prof = res.profile("b")
    assert prof.interval.upper_status == "open" and prof.upper == np.inf
    assert prof.interval.lower_status == "crossed" and 0 < prof.lower < float(res.params["b"])
    assert "edge of the parameter space" in prof.interval.note
    assert np.all(prof.deviance[prof.values > float(res.params["b"])] < C95)
    text = str(res.summary(ci="profile"))
    assert "inf" in text and "Note: b: the profile stays below the threshold" in text


def test_profile_errors(normal_fit):
    _, res = normal_fit
    with pytest.raises(ValueError, match="level"):
        res.confint(1.5, method="profile")
    with pytest.raises(ValueError, match="n_points"):
        res.profile("mu", n_points=2)
    with pytest.raises(ValueError, match="carries no data to refit"):
        dataclasses.replace(res, context=None).profile("mu")   # (batch members carry theirs)
    counts = np.array([4.0, 3.0, 3.0])
    simplex = jm.fit(lambda p, c: jnp.sum(c * jnp.log(p["p"])), counts, {"p": np.full(3, 1 / 3)},
                     constraints={"p": constraints.simplex})
    with pytest.raises(ValueError, match="elementwise constraints"):
        simplex.profile("p[0]")
    assert np.isnan(simplex.confint(method="profile")["p[0]"]).all()   # not invented
    with pytest.warns(jm.ConvergenceWarning):
        stopped = jm.fit(normal, np.random.default_rng(4).normal(size=25), {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": POS},
                         max_iter=1)
    with pytest.raises(ValueError, match="converged fit"):
        stopped.profile("mu")

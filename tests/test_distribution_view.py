"""A DistributionFit is a view over the FitResult of the parameters the optimiser estimated:
ℓ̂, nobs, convergence, the optimised parameters' estimates, SEs, covariance and Wald
intervals are the FitResult's; only closed-form estimates (Pareto scale, Laplace location)
and fixed values are added, and AIC/BIC count the closed-form elements too.
n = 200 as in test_distributions.py (its compiled programs are reused)."""

import math
import re

import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st

import jaxmle as jm
from jaxmle.core.params import element_names
from jaxmle.core.stats import aic, bic, wald_intervals

N = 200


def rng(seed):
    return np.random.default_rng(seed)


CASES = {  # name: (distribution, data, fixed)
    "plain": (dist.Gamma, lambda: rng(1).gamma(2.0, 3.0, N), None),
    "fixed": (dist.Binomial, lambda: rng(22).binomial(20, 0.3, N), {"total_count": 20}),
    "closed form on the boundary": (dist.Pareto, lambda: 2.0 * (rng(14).pareto(3.0, N) + 1.0), None),
    "closed form with a SE": (dist.Laplace, lambda: rng(13).laplace(1.0, 2.0, N + 1), None),
    "vector on a simplex": (dist.Categorical, lambda: rng(5).integers(0, 3, N), None),
    # nothing left to the optimiser: the FitResult of the empty fit
    "every parameter fixed": (dist.Normal, lambda: rng(1).normal(size=N),
                              {"loc": 1.0, "scale": 2.0}),
    "closed form and fixed only": (dist.Pareto, lambda: 2.0 * (rng(14).pareto(3.0, N) + 1.0),
                                   {"alpha": 2.5}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    distribution, data, fixed = CASES[request.param]
    return request.param, jm.fit_distribution(distribution, data(), fixed=fixed)


def test_read_from_the_fit_result(case):
    _, f = case
    res = f.result
    assert isinstance(res, jm.FitResult)
    assert f.loglik == float(res.loglik) and f.nobs == float(res.nobs) == f.data.shape[0]
    assert f.converged == bool(res.converged) and f.n_iter == int(res.n_iter)
    optimised = [p for p in f.estimated if p not in f.closed_form]
    assert sorted(res.params) == sorted(optimised)
    for p in optimised:
        np.testing.assert_array_equal(f.params[p], np.asarray(res.params[p]))
        np.testing.assert_array_equal(f.stderr[p], np.asarray(res.stderr[p]))
    for p, v in f.fixed.items():
        assert np.all(f.params[p] == v) and np.all(np.isnan(f.stderr[p])) and p not in res.params


def test_aic_bic_count_the_closed_form_elements(case):
    _, f = case
    m = f.result.n_free + sum(int(np.size(v)) for v in f.closed_form.values())
    assert f.n_free == f.n_params == m
    assert f.aic == float(aic(f.loglik, m)) and f.bic == float(bic(f.loglik, m, f.nobs))
    if not f.closed_form:
        assert f.aic == float(f.result.aic) and f.bic == float(f.result.bic)


def test_covariance_and_wald_intervals_extend_the_fit_results(case):
    _, f = case
    res = f.result
    closed = [n for p in f.closed_form for n in element_names(p, np.shape(f.params[p]))]
    assert sorted(f.param_names) == sorted(res.param_names + tuple(closed))
    at = [f.param_names.index(n) for n in res.param_names]
    np.testing.assert_array_equal(f.cov[np.ix_(at, at)], np.asarray(res.cov))
    flat = {n: (e, s) for p in f.closed_form for n, e, s in zip(
        element_names(p, np.shape(f.params[p])), np.ravel(f.params[p]),
        np.ravel(f.closed_form_stderr[p]))}
    for level in (0.95, 0.8):
        ci = f.confint(level)
        assert list(ci) == list(f.param_names)
        assert {n: ci[n] for n in res.param_names} == res.confint(level)
        expected = wald_intervals(closed, [flat[n][0] for n in closed],
                                  [flat[n][1] for n in closed], level)
        np.testing.assert_equal({n: ci[n] for n in closed}, expected)
    for n in closed:
        i = f.param_names.index(n)
        np.testing.assert_equal(f.cov[i, i], flat[n][1] ** 2)  # NaN on the boundary
        assert all(f.cov[i, j] == 0 for j in range(len(f.param_names)) if j != i)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        f.confint(1.5)


def test_closed_form_estimates_have_their_own_stderr():
    pareto = jm.fit_distribution(dist.Pareto, CASES["closed form on the boundary"][1]())
    assert list(pareto.closed_form) == ["scale"] and math.isnan(pareto.stderr["scale"])
    assert pareto.result.param_names == ("alpha",) and math.isnan(pareto.confint()["scale"][0])
    x = CASES["closed form with a SE"][1]()
    laplace = jm.fit_distribution(dist.Laplace, x)
    b = laplace.params["scale"]
    assert laplace.closed_form == {"loc": np.median(x)} and laplace.result.param_names == ("scale",)
    assert laplace.stderr["loc"] == laplace.closed_form_stderr["loc"] == pytest.approx(b / np.sqrt(x.size))


@pytest.mark.parametrize("name", ["every parameter fixed", "closed form and fixed only"])
def test_nothing_left_to_the_optimiser_is_the_empty_fit(name):
    distribution, data, fixed = CASES[name]
    x = data()
    f = jm.fit_distribution(distribution, x, fixed=fixed)
    res = f.result
    assert res.params == {} and res.param_names == () and res.n_free == 0
    assert res.method == "none" and bool(res.converged) and int(res.n_iter) == 0
    assert np.asarray(res.cov).shape == (0, 0) and res.confint() == {}
    np.testing.assert_allclose(f.loglik, f.dist.log_prob(x).sum(), rtol=1e-12)
    if name == "every parameter fixed":
        np.testing.assert_allclose(f.loglik, st.norm.logpdf(x, 1.0, 2.0).sum(), rtol=1e-12)
        assert f.n_free == 0 and f.to_dict()["method"] == "none"
    else:
        assert f.n_free == 1 and f.to_dict()["method"] == "closed form"
    assert re.search(r"\|gradient\|:\s+-$", str(f.summary()), re.M)  # no optimiser report

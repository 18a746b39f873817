"""``jm.fit`` against trusted peers, in float64.

Peers: statsmodels (``Logit``, ``Poisson``, ``GLM`` with ``freq_weights``, ``OLS``,
``GenericLikelihoodModel``) and ``scipy.stats`` distribution fits, plus closed-form
information matrices. Every tolerance carries a one-line reason.

Compilation dominates the run time, so the log-likelihoods are module-level functions
(same function object and same shapes => the compiled fit is reused) and each fit is
made once, in a module-scoped fixture.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)  # until tests/conftest.py does it for everyone

import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
import statsmodels.api as sm  # noqa: E402
from numpy.testing import assert_allclose  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from scipy import special, stats  # noqa: E402
from statsmodels.base.model import GenericLikelihoodModel  # noqa: E402

import jaxmle as jm  # noqa: E402
from shared import design  # noqa: E402
from shared import logit as logit_loglik  # noqa: E402
from shared import poisson_reg as poisson_loglik  # noqa: E402

POS = constraints.positive
N = 500          # rows of the regression data sets
N_PAD = 100      # extra rows appended for the weighted fits
METHODS = ["newton", "lbfgs"]


# ---------------------------------------------------------------------------
# Log-likelihoods (module level: one compiled kernel each, reused across tests; the
# logistic and Poisson regressions are tests/shared.py's, also used by test_robust_cov)
# ---------------------------------------------------------------------------

def student_t_loglik(p, d):
    return dist.StudentT(p["nu"], d["X"] @ p["beta"], p["sigma"]).log_prob(d["y"])


def gamma_loglik(p, x):
    return dist.Gamma(p["concentration"], p["rate"]).log_prob(x)


def weibull_loglik(p, x):
    # numpyro's order is Weibull(scale, concentration), unlike scipy's weibull_min(c, scale=).
    return dist.Weibull(p["scale"], p["concentration"]).log_prob(x)


def normal_loglik(p, d):
    return dist.Normal(d["X"] @ p["beta"], p["sigma"]).log_prob(d["y"])


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def flat(res, names):
    """Estimates and standard errors as flat vectors in the order ``names``."""
    idx = [res.param_names.index(n) for n in names]
    est = res.flat_params()[idx]
    se = np.sqrt(np.diag(np.asarray(res.cov)))[idx]
    return est, se, np.asarray(res.fisher_info)[np.ix_(idx, idx)]


# ---------------------------------------------------------------------------
# Data (fixed seeds) and the fits, each made once
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logit_data():
    rng = np.random.default_rng(20240601)
    X = design(rng, N, 4)
    beta = np.array([-0.3, 0.8, -0.5, 0.25, 0.4])
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-X @ beta))).astype(float)
    return {"X": X, "y": y}


@pytest.fixture(scope="module")
def poisson_data():
    rng = np.random.default_rng(20240602)
    X = design(rng, N, 4)
    beta = np.array([0.5, 0.3, -0.2, 0.15, 0.25])
    y = rng.poisson(np.exp(X @ beta)).astype(float)
    return {"X": X, "y": y}


@pytest.fixture(scope="module")
def padded_poisson_data(poisson_data):
    """``poisson_data`` plus N_PAD rows far from the model (they would move the fit a lot)."""
    rng = np.random.default_rng(20240603)
    X_pad = np.column_stack([np.ones(N_PAD), 3.0 + rng.normal(size=(N_PAD, 4))])
    y_pad = rng.poisson(40.0, size=N_PAD).astype(float)
    return {"X": np.vstack([poisson_data["X"], X_pad]), "y": np.r_[poisson_data["y"], y_pad]}


@pytest.fixture(scope="module")
def logit_fits(logit_data):
    return {m: jm.fit(logit_loglik, logit_data, {"beta": np.zeros(5)}, method=m) for m in METHODS}


@pytest.fixture(scope="module")
def poisson_fits(poisson_data):
    return {m: jm.fit(poisson_loglik, poisson_data, {"beta": np.zeros(5)}, method=m)
            for m in METHODS}


@pytest.fixture(scope="module")
def gamma_sample():
    return np.random.default_rng(20240604).gamma(2.5, 1.0 / 1.7, size=200)


@pytest.fixture(scope="module")
def gamma_fit(gamma_sample):
    return jm.fit(gamma_loglik, gamma_sample, {"concentration": 1.0, "rate": 1.0},
                  constraints={"concentration": POS, "rate": POS}, method="newton")


# ---------------------------------------------------------------------------
# 1. Logistic and Poisson regression vs statsmodels
# ---------------------------------------------------------------------------

def check_against_statsmodels(res, ref):
    assert bool(res.converged), res.status_message
    names = [f"beta[{i}]" for i in range(5)]
    est, se, _ = flat(res, names)
    # rtol 1e-6: both are converged MLEs with exact (analytic / autodiff) Hessians; observed
    # ~3e-10 (Newton) and ~5e-9 (L-BFGS, which stops at |g| <= 1e-8 (1 + |f|)).
    assert_allclose(est, ref.params, rtol=1e-6)
    # rtol 1e-6: the SEs move only with the (tiny) difference in the estimates (observed
    # ~1e-10 Newton, ~3e-10 L-BFGS: no looser tolerance is needed for L-BFGS).
    assert_allclose(se, ref.bse, rtol=1e-6)
    # rtol 1e-10: the log-likelihood is stationary at the optimum, so an estimate error d
    # changes it by O(d^2) (~1e-13 here); AIC/BIC are affine in it.
    assert_allclose(float(res.loglik), ref.llf, rtol=1e-10)
    assert_allclose(float(res.aic), ref.aic, rtol=1e-10)
    assert_allclose(float(res.bic), ref.bic, rtol=1e-10)
    assert float(res.nobs) == ref.nobs == N  # an exact count


@pytest.mark.parametrize("method", METHODS)
def test_logit_matches_statsmodels(logit_fits, logit_data, method):
    ref = sm.Logit(logit_data["y"], logit_data["X"]).fit(disp=0, tol=1e-12, maxiter=100)
    assert ref.mle_retvals["converged"]
    check_against_statsmodels(logit_fits[method], ref)


@pytest.mark.parametrize("method", METHODS)
def test_poisson_matches_statsmodels(poisson_fits, poisson_data, method):
    ref = sm.Poisson(poisson_data["y"], poisson_data["X"]).fit(disp=0, tol=1e-12, maxiter=100)
    assert ref.mle_retvals["converged"]
    check_against_statsmodels(poisson_fits[method], ref)


# ---------------------------------------------------------------------------
# 2. Student-t regression vs statsmodels GenericLikelihoodModel (its "MyT" example)
# ---------------------------------------------------------------------------

class MyT(GenericLikelihoodModel):
    """y = X b + scale * t_df; params (b..., df, scale), as in statsmodels' generic-MLE docs."""

    def loglikeobs(self, params):
        beta, df, scale = params[:-2], params[-2], params[-1]
        return stats.t.logpdf(self.endog, df, loc=self.exog @ beta, scale=scale)


def test_student_t_regression_matches_generic_likelihood_model():
    rng = np.random.default_rng(20240605)
    n = 300
    X = design(rng, n, 2)
    y = X @ np.array([1.0, 2.0, -1.0]) + 0.7 * rng.standard_t(4.0, size=n)

    res = jm.fit(student_t_loglik, {"X": X, "y": y},
                 {"beta": np.zeros(3), "nu": 5.0, "sigma": 1.0},
                 constraints={"nu": POS, "sigma": POS}, method="newton")
    assert bool(res.converged), res.status_message

    ols = sm.OLS(y, X).fit()
    model = MyT(y, X, extra_params_names=["df", "scale"])
    ref = model.fit(start_params=np.r_[ols.params, 5.0, np.sqrt(ols.scale)], method="bfgs",
                    gtol=1e-8, maxiter=5000, disp=0)
    assert ref.mle_retvals["converged"]

    est, se, _ = flat(res, ["beta[0]", "beta[1]", "beta[2]", "nu", "sigma"])
    # rtol 1e-6: statsmodels' BFGS (numerical gradient, gtol 1e-8) agrees to ~1e-9.
    assert_allclose(est, ref.params, rtol=1e-6)
    # rtol 1e-5: statsmodels' bse come from a finite-difference Hessian (observed agreement
    # ~2.5e-7, worst for nu); jaxmle's Hessian is exact.
    assert_allclose(se, ref.bse, rtol=1e-5)
    # rtol 1e-10: log-likelihood stationary at the optimum (observed ~1e-15).
    assert_allclose(float(res.loglik), ref.llf, rtol=1e-10)
    assert_allclose(float(res.aic), ref.aic, rtol=1e-10)
    assert_allclose(float(res.bic), ref.bic, rtol=1e-10)
    assert float(res.nobs) == ref.nobs == n


# ---------------------------------------------------------------------------
# 3. Gamma and Weibull distribution fits vs scipy.stats and closed-form information
# ---------------------------------------------------------------------------

def test_gamma_matches_scipy_and_closed_form_information(gamma_fit, gamma_sample):
    x, res = gamma_sample, gamma_fit
    assert bool(res.converged), res.status_message
    (k, rate), se, info = flat(res, ["concentration", "rate"])

    a, _, scale = stats.gamma.fit(x, floc=0)
    ll_scipy = stats.gamma.logpdf(x, a, scale=scale).sum()
    # jaxmle's maximum must be at least as high as scipy's (1e-9: float64 summation noise).
    assert float(res.loglik) >= ll_scipy - 1e-9
    # rtol 1e-12: the same model (numpyro Gamma(k, rate) == scipy gamma(k, scale=1/rate))
    # evaluated at the same point; only rounding differs.
    assert_allclose(float(res.loglik), stats.gamma.logpdf(x, k, scale=1 / rate).sum(),
                    rtol=1e-12)
    # rtol 1e-4: scipy's optimiser is the looser of the two (agreement here ~5e-12).
    assert_allclose([k, rate], [a, 1.0 / scale], rtol=1e-4)

    # Closed form: -d2l/dk2 = n psi'(k), -d2l/dk drate = -n/rate, -d2l/drate2 = n k/rate^2;
    # it does not depend on the data, so observed == expected information.
    n = x.size
    info_exact = n * np.array([[special.polygamma(1, k), -1.0 / rate],
                               [-1.0 / rate, k / rate**2]])
    # rtol 1e-9: autodiff Hessian vs exact formula at the same point (observed ~2.5e-12).
    assert_allclose(info, info_exact, rtol=1e-9)
    assert_allclose(se, np.sqrt(np.diag(np.linalg.inv(info_exact))), rtol=1e-9)


def weibull_information(x, scale, c):
    """Observed information of the Weibull(scale, c) log-likelihood, closed form, (scale, c)."""
    n, z = x.size, x / scale
    zc, logz = z**c, np.log(z)
    d2_ss = n * c / scale**2 - c * (c + 1) / scale**2 * zc.sum()
    d2_cc = -n / c**2 - (zc * logz**2).sum()
    d2_sc = -n / scale + zc.sum() / scale + c / scale * (zc * logz).sum()
    return -np.array([[d2_ss, d2_sc], [d2_sc, d2_cc]])


def central_difference_hessian(f, theta, rel_step=1e-4):
    """Hessian of f at theta by central differences (numpy only)."""
    k = theta.size
    h = rel_step * np.abs(theta)
    H = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h[i], np.eye(k)[j] * h[j]
            H[i, j] = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej)
                       + f(theta - ei - ej)) / (4 * h[i] * h[j])
    return H


def test_weibull_matches_scipy_and_independent_information():
    x = stats.weibull_min.rvs(1.6, scale=2.2, size=200, random_state=np.random.default_rng(6))
    res = jm.fit(weibull_loglik, x, {"scale": 1.0, "concentration": 1.0},
                 constraints={"scale": POS, "concentration": POS}, method="newton")
    assert bool(res.converged), res.status_message
    (scale, c), se, info = flat(res, ["scale", "concentration"])

    c_sp, _, scale_sp = stats.weibull_min.fit(x, floc=0)

    def loglik_np(theta):
        return stats.weibull_min.logpdf(x, theta[1], scale=theta[0]).sum()

    # jaxmle's maximum must be at least as high as scipy's (1e-9: float64 summation noise);
    # here scipy's is ~4e-8 lower.
    assert float(res.loglik) >= loglik_np([scale_sp, c_sp]) - 1e-9
    # rtol 1e-12: same model at the same point (checks numpyro's (scale, concentration) order).
    assert_allclose(float(res.loglik), loglik_np([scale, c]), rtol=1e-12)
    # rtol 1e-4: scipy's Weibull fit is loose (observed ~1.6e-5 relative).
    assert_allclose([scale, c], [scale_sp, c_sp], rtol=1e-4)

    exact = weibull_information(x, scale, c)
    # rtol 1e-9: autodiff Hessian vs exact formula at the same point.
    assert_allclose(info, exact, rtol=1e-9)
    assert_allclose(se, np.sqrt(np.diag(np.linalg.inv(exact))), rtol=1e-9)
    # rtol 1e-6: central differences with step 1e-4 have O(h^2) ~1e-8 truncation error plus
    # rounding ~eps |l| / h^2 (observed ~3e-8 on the SEs); an independent, formula-free check.
    numeric = -central_difference_hessian(loglik_np, np.array([scale, c]))
    assert_allclose(se, np.sqrt(np.diag(np.linalg.inv(numeric))), rtol=1e-6)


# ---------------------------------------------------------------------------
# 4. Weights: frequency weights == GLM(freq_weights); zero weights == rows dropped
# ---------------------------------------------------------------------------

def test_poisson_frequency_weights_match_glm(padded_poisson_data):
    d = padded_poisson_data
    fw = np.random.default_rng(20240607).integers(0, 4, size=N + N_PAD).astype(float)
    res = jm.fit(poisson_loglik, d, {"beta": np.zeros(5)}, method="newton", weights=fw)
    assert bool(res.converged), res.status_message
    ref = sm.GLM(d["y"], d["X"], family=sm.families.Poisson(), freq_weights=fw).fit(
        tol=1e-12, maxiter=100)

    est, se, _ = flat(res, [f"beta[{i}]" for i in range(5)])
    # rtol 1e-6: converged MLEs of the same weighted likelihood (observed ~2e-15); GLM's
    # expected information equals the observed one for the canonical log link.
    assert_allclose(est, ref.params, rtol=1e-6)
    assert_allclose(se, ref.bse, rtol=1e-6)  # observed ~7e-14
    # rtol 1e-10: log-likelihood stationary at the optimum.
    assert_allclose(float(res.loglik), ref.llf, rtol=1e-10)
    # nobs is the sum of the frequency weights, as GLM's weighted count.
    assert float(res.nobs) == ref.model.wnobs == fw.sum()
    assert_allclose(float(res.aic), ref.aic, rtol=1e-10)
    assert_allclose(float(res.bic), ref.bic_llf, rtol=1e-10)

    # The same as physically replicating each row fw times (statsmodels Poisson, no weights).
    idx = np.repeat(np.arange(N + N_PAD), fw.astype(int))
    rep = sm.Poisson(d["y"][idx], d["X"][idx]).fit(disp=0, tol=1e-12, maxiter=100)
    assert_allclose(se, rep.bse, rtol=1e-6)
    assert_allclose(float(res.loglik), rep.llf, rtol=1e-10)
    assert float(res.nobs) == rep.nobs
    assert_allclose(float(res.bic), rep.bic, rtol=1e-10)


def test_zero_weight_rows_give_the_fit_without_them(poisson_fits, padded_poisson_data):
    w = np.r_[np.ones(N), np.zeros(N_PAD)]
    res = jm.fit(poisson_loglik, padded_poisson_data, {"beta": np.zeros(5)}, method="newton",
                 weights=w)
    ref = poisson_fits["newton"]  # the same first N rows, no weights
    assert bool(res.converged), res.status_message
    # rtol 1e-10: identical problems; only the summation order of the masked sum differs
    # (observed: ~4e-16 relative on estimates, SEs and log-likelihood).
    assert_allclose(res.params["beta"], ref.params["beta"], rtol=1e-10)
    assert_allclose(res.stderr["beta"], ref.stderr["beta"], rtol=1e-10)
    assert_allclose(res.cov, ref.cov, rtol=1e-10, atol=1e-14 * np.abs(ref.cov).max())
    assert_allclose(float(res.loglik), float(ref.loglik), rtol=1e-12)
    assert float(res.nobs) == float(ref.nobs) == N  # zero-weight rows are not observations
    assert_allclose(float(res.aic), float(ref.aic), rtol=1e-12)
    assert_allclose(float(res.bic), float(ref.bic), rtol=1e-12)


def test_zero_weight_padding_with_nonfinite_terms_is_masked(gamma_fit, gamma_sample):
    """Padding a positive sample with zeros (ragged data): those rows' terms are -inf.

    ``_objective.total_loglik`` says "a 0 weight masks padding even when that row's term is
    not finite"; the value is masked, but the gradient must be too.
    """
    x = np.r_[gamma_sample, np.zeros(56)]
    w = np.r_[np.ones(gamma_sample.size), np.zeros(56)]
    try:
        res = jm.fit(gamma_loglik, x, {"concentration": 1.0, "rate": 1.0},
                     constraints={"concentration": POS, "rate": POS}, method="newton", weights=w)
    except ValueError as err:
        pytest.fail("zero-weight padding rows with a non-finite log-likelihood term are not "
                    f"masked in the gradient: jm.fit raised ValueError: {err}")
    # rtol 1e-10: identical problems up to summation order.
    assert_allclose(res.flat_params(), gamma_fit.flat_params(), rtol=1e-10)
    assert_allclose(np.asarray(res.cov), np.asarray(gamma_fit.cov), rtol=1e-10)
    assert_allclose(float(res.loglik), float(gamma_fit.loglik), rtol=1e-12)
    assert float(res.nobs) == gamma_sample.size


# ---------------------------------------------------------------------------
# 5. Gaussian linear regression == OLS
# ---------------------------------------------------------------------------

def test_gaussian_linear_regression_equals_ols():
    rng = np.random.default_rng(20240608)
    X = design(rng, N, 4)
    y = X @ np.array([1.0, -2.0, 0.5, 0.3, 0.7]) + 1.3 * rng.normal(size=N)
    res = jm.fit(normal_loglik, {"X": X, "y": y}, {"beta": np.zeros(5), "sigma": 1.0},
                 constraints={"sigma": POS}, method="newton")
    assert bool(res.converged), res.status_message
    ols = sm.OLS(y, X).fit()
    n, k = N, X.shape[1]

    # rtol 1e-6: closed-form OLS vs converged Newton (observed ~1e-11: Newton stops when the
    # remaining error is <= 1e-8 standard errors).
    assert_allclose(res.params["beta"], ols.params, rtol=1e-6)
    # MLE of the variance is RSS / n (not RSS / (n - k)).
    assert_allclose(float(res.params["sigma"]) ** 2, ols.ssr / n, rtol=1e-6)
    # Observed-information SEs of beta use sigma_hat^2 = RSS/n: OLS bse * sqrt((n - k) / n).
    assert_allclose(res.stderr["beta"], ols.bse * np.sqrt((n - k) / n), rtol=1e-6)
    # SE of sigma_hat: the information for sigma is 2n / sigma^2, orthogonal to beta.
    sigma_hat = np.sqrt(ols.ssr / n)
    assert_allclose(float(res.stderr["sigma"]), sigma_hat / np.sqrt(2 * n), rtol=1e-6)
    # rtol 1e-10: statsmodels' OLS llf is the Gaussian log-likelihood at the MLE.
    assert_allclose(float(res.loglik), ols.llf, rtol=1e-10)
    # statsmodels' OLS AIC/BIC do not count sigma; jaxmle counts every free parameter.
    assert_allclose(float(res.aic), ols.aic + 2.0, rtol=1e-10)
    assert_allclose(float(res.bic), ols.bic + np.log(n), rtol=1e-10)
    assert float(res.nobs) == ols.nobs == n

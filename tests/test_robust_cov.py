"""OPG, sandwich (HC0) and cluster-robust covariances against statsmodels.

The regression likelihoods and data shapes are those of ``test_peers.py`` (N = 500,
five coefficients), so the observed-information programs are shared; each
``cov_type`` adds one compiled program per likelihood.
"""

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose
from numpyro.distributions import constraints

import jaxmle as jm
from shared import design
from shared import logit as logit_loglik
from shared import poisson_reg as poisson_loglik

N = 500


@pytest.fixture(scope="module")
def logit_data():
    rng = np.random.default_rng(20240601)
    X = design(rng, N, 4)
    beta = np.array([-0.3, 0.8, -0.5, 0.25, 0.4])
    # misspecified on purpose (a quadratic term left out), so HC0 differs from observed
    eta = X @ beta + 0.6 * X[:, 1] ** 2 - 0.6
    y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return {"X": X, "y": y}


@pytest.fixture(scope="module")
def poisson_data():
    rng = np.random.default_rng(20240602)
    X = design(rng, N, 4)
    beta = np.array([0.5, 0.3, -0.2, 0.15, 0.25])
    # overdispersed counts (negative binomial): the sandwich SEs exceed the model's
    mu = np.exp(X @ beta)
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    return {"X": X, "y": y}


INIT = {"beta": np.zeros(5)}


@pytest.mark.parametrize("model", ["logit", "poisson"])
def test_hc0_sandwich_matches_statsmodels(model, logit_data, poisson_data):
    data, loglik, sm_model = ((logit_data, logit_loglik, sm.Logit) if model == "logit"
                              else (poisson_data, poisson_loglik, sm.Poisson))
    res = jm.fit(loglik, data, INIT, cov_type="sandwich")
    ref = sm_model(data["y"], data["X"]).fit(disp=0, cov_type="HC0", tol=1e-12, maxiter=200)
    assert res.cov_type == "sandwich"
    assert_allclose(res.flat_params(), ref.params, rtol=1e-6)
    # rtol 1e-6: both are H⁻¹BH⁻¹ at the same optimum, to the optimiser's precision
    assert_allclose(np.asarray(res.cov), ref.cov_params(), rtol=1e-6, atol=1e-12)
    assert_allclose(np.asarray(res.stderr["beta"]), ref.bse, rtol=1e-6)
    # fisher_info stays the observed information, which the sandwich does not replace
    observed = jm.fit(loglik, data, INIT)
    assert_allclose(np.asarray(res.fisher_info), np.asarray(observed.fisher_info), rtol=1e-10)
    assert not np.allclose(np.asarray(res.stderr["beta"]), np.asarray(observed.stderr["beta"]),
                           rtol=1e-2)
    text = str(res.summary())
    assert "sandwich" in text and "Huber–White" in text


def test_opg_is_the_inverse_outer_product_of_statsmodels_scores(logit_data):
    res = jm.fit(logit_loglik, logit_data, INIT, cov_type="opg")
    model = sm.Logit(logit_data["y"], logit_data["X"])
    s = model.score_obs(np.asarray(res.flat_params()))
    # rtol 1e-6: statsmodels' analytic scores at our optimum, inverted by numpy
    assert_allclose(np.asarray(res.cov), np.linalg.inv(s.T @ s), rtol=1e-6)
    assert res.cov_type == "opg" and "OPG" in str(res.summary())


def test_cluster_robust_matches_statsmodels_without_correction(poisson_data):
    groups = np.repeat(np.arange(50), N // 50)
    res = jm.fit(poisson_loglik, poisson_data, INIT, cov_type="sandwich", groups=groups)
    ref = sm.Poisson(poisson_data["y"], poisson_data["X"]).fit(
        disp=0, cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False},
        tol=1e-12, maxiter=200)
    assert_allclose(np.asarray(res.cov), ref.cov_params(), rtol=1e-6, atol=1e-12)
    assert res.n_groups == 50 and "50 clusters" in str(res.summary())
    # string labels give the same clusters
    labels = np.asarray([f"g{g}" for g in groups])
    res2 = jm.fit(poisson_loglik, poisson_data, INIT, cov_type="sandwich", groups=labels)
    assert_allclose(np.asarray(res2.cov), np.asarray(res.cov), rtol=1e-12)


def test_frequency_weights_equal_repeated_rows(poisson_data):
    """A row of weight w counts as w identical observations in the scores' outer product."""
    w = np.random.default_rng(5).integers(1, 4, N).astype(float)
    weighted = jm.fit(poisson_loglik, poisson_data, INIT, weights=w, cov_type="sandwich")
    rows = np.repeat(np.arange(N), w.astype(int))
    expanded = {k: v[rows] for k, v in poisson_data.items()}
    ref = sm.Poisson(expanded["y"], expanded["X"]).fit(disp=0, cov_type="HC0", tol=1e-12)
    assert_allclose(np.asarray(weighted.cov), ref.cov_params(), rtol=1e-6, atol=1e-12)


def test_batch_sandwich_equals_single_fits(poisson_data):
    rng = np.random.default_rng(8)
    X = poisson_data["X"]
    ys = rng.poisson(np.exp(X @ np.array([0.5, 0.3, -0.2, 0.15, 0.25])), size=(3, N)).astype(float)
    bres = jm.fit_batch(poisson_loglik, {"X": np.broadcast_to(X, (3,) + X.shape), "y": ys}, INIT,
                        cov_type="sandwich")
    assert bres.cov_type == "sandwich"
    for i in range(3):
        single = jm.fit(poisson_loglik, {"X": X, "y": ys[i]}, INIT, cov_type="sandwich")
        assert_allclose(np.asarray(bres.cov[i]), np.asarray(single.cov), rtol=1e-8)


def normal_total(p, x):
    return jnp.sum(dist.Normal(p["mu"], p["sigma"]).log_prob(x))


def test_scalar_loglik_cannot_give_scores():
    x = np.random.default_rng(1).normal(size=30)
    init, pos = {"mu": 0.0, "sigma": 1.0}, {"sigma": constraints.positive}
    for cov_type in ("opg", "sandwich"):
        with pytest.raises(ValueError, match="per-observation scores.*scalar"):
            jm.fit(normal_total, x, init, constraints=pos, cov_type=cov_type)


def test_groups_errors(poisson_data):
    with pytest.raises(ValueError, match="cov_type='sandwich'"):
        jm.fit(poisson_loglik, poisson_data, INIT, groups=np.zeros(N))
    with pytest.raises(ValueError, match="500 per-observation terms"):
        jm.fit(poisson_loglik, poisson_data, INIT, cov_type="sandwich", groups=np.arange(10))
    with pytest.raises(ValueError, match="at least 2"):
        jm.fit(poisson_loglik, poisson_data, INIT, cov_type="sandwich", groups=np.zeros(N))

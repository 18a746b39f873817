"""Random effects by the Laplace approximation (``jm.fit(..., random=[...])``).

Peers: statsmodels MixedLM (ML and REML) for linear mixed models on the dietox
data; for GLMMs an adaptive Gauss–Hermite quadrature written here in numpy
(one node is exactly the Laplace approximation; many nodes the exact marginal).
"""

import math
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from scipy import optimize, special

import jaxmle as jm
from jaxmle.random.inner import Layout
from jaxmle.random.marginal import BoundaryWarning, MarginalLogLik, augment
from jaxmle.random.structure import choose_layout

DATA = pathlib.Path(__file__).parent / "data" / "dietox.csv"
POS = {"sigma": constraints.positive, "tau": constraints.positive}


# --------------------------------------------------------------------------- models


TRACES = []     # lmm's traces: a fit of same-shaped data must not add one


def lmm(p, data):
    TRACES.append(1)
    y, X, g = data
    mu = X @ p["beta"] + p["b"][g]
    return (dist.Normal(mu, p["sigma"]).log_prob(y).sum()
            + dist.Normal(0.0, p["tau"]).log_prob(p["b"]).sum())


def lmm_slope(p, data):
    """Random intercept and slope, b_g ~ N(0, LLᵀ) with L = [[l₁, 0], [l₂₁, l₂]]."""
    y, X, g = data
    b = p["b"]                                              # (G, 2)
    mu = X @ p["beta"] + b[g, 0] + b[g, 1] * X[:, 1]
    L = jnp.array([[p["ldiag"][0], 0.0], [p["loff"], p["ldiag"][1]]])
    return (dist.Normal(mu, p["sigma"]).log_prob(y).sum()
            + dist.MultivariateNormal(jnp.zeros(2), scale_tril=L).log_prob(b).sum())


def glmm(family):
    def loglik(p, data):
        y, X, g = data
        eta = X @ p["beta"] + p["b"][g]
        obs = (dist.Poisson(jnp.exp(eta)) if family == "poisson"
               else dist.Bernoulli(logits=eta))
        return obs.log_prob(y).sum() + dist.Normal(0.0, p["sigma"]).log_prob(p["b"]).sum()
    loglik.__name__ = f"glmm_{family}"
    return loglik


POISSON, BERNOULLI = glmm("poisson"), glmm("bernoulli")


def dietox(n_pigs=24):
    df = pd.read_csv(DATA)
    df = df[df.Pig.isin(np.unique(df.Pig)[:n_pigs])].reset_index(drop=True)
    g = np.unique(df.Pig, return_inverse=True)[1]
    X = np.c_[np.ones(len(df)), df.Time.to_numpy(float)]
    return df, (df.Weight.to_numpy(float), X, g), int(g.max()) + 1


def simulate(family, G, n_per, seed, sigma=0.7):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), n_per)
    X = np.c_[np.ones(G * n_per), rng.normal(size=G * n_per)]
    eta = X @ np.array([0.3, 0.5]) + sigma * rng.normal(size=G)[g]
    y = (rng.poisson(np.exp(eta)) if family == "poisson"
         else rng.random(G * n_per) < 1 / (1 + np.exp(-eta))).astype(float)
    return y, X, g


def aghq(family, beta, sigma, data, nodes):
    """log ∫ p(y | b) N(b; 0, σ²) db summed over groups, by adaptive Gauss–Hermite."""
    y, X, g = data
    G = g.max() + 1
    eta0 = X @ beta

    def terms(b):                       # per-observation log p(y | η) and its derivatives
        eta = eta0 + b[g]
        if family == "poisson":
            mu = np.exp(eta)
            return y * eta - mu - special.gammaln(y + 1), y - mu, -mu
        pr = special.expit(eta)
        return y * eta - np.logaddexp(0, eta), y - pr, -pr * (1 - pr)

    b = np.zeros(G)
    for _ in range(100):                # Newton for each group's mode
        _, d1, d2 = terms(b)
        step = (np.bincount(g, d1, G) - b / sigma**2) / (np.bincount(g, d2, G) - 1 / sigma**2)
        b = b - step
        if np.max(np.abs(step)) < 1e-14:
            break
    s = 1 / np.sqrt(-(np.bincount(g, terms(b)[2], G) - 1 / sigma**2))
    x, w = np.polynomial.hermite.hermgauss(nodes)
    out = []
    for xk in x:
        bk = b + np.sqrt(2) * s * xk
        out.append(np.bincount(g, terms(bk)[0], G) - bk**2 / (2 * sigma**2)
                   - 0.5 * np.log(2 * np.pi * sigma**2))
    h = np.stack(out, 1) + np.log(w) + x**2
    return float(np.sum(special.logsumexp(h, axis=1) + np.log(np.sqrt(2) * s)))


def fit_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return jm.fit(*args, **kwargs)


# --------------------------------------------------------------------------- LMM vs statsmodels


@pytest.fixture(scope="module")
def diet():
    return dietox()


@pytest.fixture(scope="module")
def lmm_ml(diet):
    df, data, G = diet
    init = {"beta": np.zeros(2), "sigma": 1.0, "tau": 1.0, "b": np.zeros(G)}
    return fit_quiet(lmm, data, init, constraints=POS, random=["b"])


def _close(a, b, se, share=1e-3):
    """Agreement to a small share of the standard error (the peers' optimisers stop
    at slightly different points)."""
    np.testing.assert_array_less(np.abs(np.asarray(a) - np.asarray(b)), share * np.asarray(se))


def test_lmm_ml_matches_statsmodels(diet, lmm_ml):
    import statsmodels.formula.api as smf

    df, _, _ = diet
    m = smf.mixedlm("Weight ~ Time", df, groups=df.Pig).fit(reml=False)
    res = lmm_ml
    assert bool(res.converged)
    _close(res.params["beta"], m.fe_params.to_numpy(), m.bse_fe.to_numpy())
    _close(res.params["sigma"] ** 2, m.scale, res.stderr["sigma"] * 2 * res.params["sigma"])
    _close(res.params["tau"] ** 2, m.cov_re.to_numpy()[0, 0],
           res.stderr["tau"] * 2 * res.params["tau"])
    assert abs(float(res.loglik) - m.llf) < 1e-7 * abs(m.llf)        # Laplace is exact here
    np.testing.assert_allclose(res.stderr["beta"], m.bse_fe.to_numpy(), rtol=1e-4)
    blups = np.array([v.iloc[0] for v in m.random_effects.values()])
    _close(res.random["b"], blups, res.random_cond_stderr["b"])
    cond_se = np.sqrt([v.to_numpy()[0, 0] for v in m.random_effects_cov.values()])
    np.testing.assert_allclose(res.random_cond_stderr["b"], cond_se, rtol=1e-4)
    # sdreport: adding θ̂'s uncertainty (mostly the intercept's) can only increase the SEs
    assert np.all(res.random_stderr["b"] > res.random_cond_stderr["b"])
    assert "random effects b (24) integrated out by Laplace" in str(res.summary())


@pytest.fixture(scope="module")
def lmm_reml(diet):
    df, data, G = diet
    init = {"beta": np.zeros(2), "sigma": 1.0, "tau": 1.0, "b": np.zeros(G)}
    return fit_quiet(lmm, data, init, constraints=POS, random={"b": "random", "beta": "flat"})


def test_lmm_reml_by_integrating_the_fixed_effects(diet, lmm_reml):
    import statsmodels.formula.api as smf

    df, data, G = diet
    m = smf.mixedlm("Weight ~ Time", df, groups=df.Pig).fit(reml=True)
    res = lmm_reml
    # issue 17: REML's fixed effects border the groups' blocks (no dense fallback)
    assert set(res.params) == {"sigma", "tau"} and res.random_info.n_groups == G
    assert res.random_info.border == ("beta",)
    assert res.random_info.reml and res.random_info.flat == ("beta",)
    _close(res.params["sigma"] ** 2, m.scale, res.stderr["sigma"] * 2 * res.params["sigma"])
    _close(res.params["tau"] ** 2, m.cov_re.to_numpy()[0, 0],
           res.stderr["tau"] * 2 * res.params["tau"])
    assert abs(float(res.loglik) - m.llf) < 1e-7 * abs(m.llf)
    _close(res.random["beta"], m.fe_params.to_numpy(), m.bse_fe.to_numpy())
    # β's conditional SE given the variance components is the GLS one statsmodels reports
    np.testing.assert_allclose(res.random_cond_stderr["beta"], m.bse_fe.to_numpy(), rtol=1e-4)


def test_reml_summary_shows_the_fixed_effects_and_counts_them_in_aic(diet, lmm_reml, lmm_ml):
    import statsmodels.formula.api as smf

    df, _, _ = diet
    m = smf.mixedlm("Weight ~ Time", df, groups=df.Pig).fit(reml=True)
    res = lmm_reml
    summary = res.summary()
    text = str(summary)
    assert "REML (newton)" in text and "fixed effects beta (2, flat prior)" in text
    rows = summary.as_dict()["params"]
    for i, name in enumerate(["beta[0] (GLS)", "beta[1] (GLS)"]):      # statsmodels' GLS β̂, SE
        _close(rows[name]["estimate"], m.fe_params.iloc[i], m.bse_fe.iloc[i])
        np.testing.assert_allclose(rows[name]["stderr"], m.bse_fe.iloc[i], rtol=1e-4)
    assert list(rows)[:2] == ["beta[0] (GLS)", "beta[1] (GLS)"]
    # AIC counts the fixed effects, as lme4 does for REML: 2 variances + 2 fixed effects
    assert res.n_free == 4 and len(res.param_names) == 2
    np.testing.assert_allclose(float(res.aic), 2 * 4 - 2 * m.llf, rtol=1e-9)
    np.testing.assert_allclose(float(res.bic), 4 * np.log(len(df)) - 2 * m.llf, rtol=1e-9)
    assert "AIC/BIC count the 2 fixed effects as parameters, as lme4" in text
    assert "exact observed information of the Laplace marginal" in text
    assert "REML" not in str(lmm_ml.summary())
    # a REML and an ML log-likelihood are not comparable
    with pytest.raises(ValueError, match="REML log-likelihoods are comparable only"):
        jm.lrt(res, lmm_ml)


def test_lmm_random_slope_cholesky_covariance(diet):
    import statsmodels.formula.api as smf

    df, data, G = diet
    m = smf.mixedlm("Weight ~ Time", df, groups=df.Pig, re_formula="~Time").fit(reml=False)
    init = {"beta": np.zeros(2), "sigma": 1.0, "ldiag": np.ones(2), "loff": 0.0,
            "b": np.zeros((G, 2))}
    res = fit_quiet(lmm_slope, data, init, random=["b"],
                    constraints={"sigma": constraints.positive, "ldiag": constraints.positive})
    assert res.random_info.n_groups == G and res.random_info.block == 2
    L = np.array([[res.params["ldiag"][0], 0], [res.params["loff"], res.params["ldiag"][1]]])
    np.testing.assert_allclose(L @ L.T, m.cov_re.to_numpy(), rtol=1e-4)
    _close(res.params["beta"], m.fe_params.to_numpy(), m.bse_fe.to_numpy())
    np.testing.assert_allclose(res.params["sigma"] ** 2, m.scale, rtol=1e-5)
    assert abs(float(res.loglik) - m.llf) < 1e-7 * abs(m.llf)
    blups = np.array([v.to_numpy() for v in m.random_effects.values()])
    np.testing.assert_allclose(res.random["b"], blups, atol=1e-3 * float(np.std(blups)))


def test_zero_variance_is_reported_on_the_boundary(diet):
    """No group effect at all (every group's mean residual equal): τ̂ = 0, NaN SE, a warning."""
    _, (_, X, g), G = diet
    rng = np.random.default_rng(1)
    e = rng.normal(size=len(g))
    e -= np.bincount(g, e)[g] / np.bincount(g)[g]
    y = X @ np.array([20.0, 6.0]) + 3.0 * e
    init = {"beta": np.zeros(2), "sigma": 1.0, "tau": 1.0, "b": np.zeros(G)}
    with pytest.warns(BoundaryWarning, match="½χ²₀ \\+ ½χ²₁"):
        res = jm.fit(lmm, (y, X, g), init, constraints=POS, random=["b"])
    assert float(res.params["tau"]) == 0.0 and np.isnan(res.stderr["tau"])
    assert np.all(np.isfinite(res.stderr["beta"])) and res.random_info.boundary == ("tau",)
    assert "boundary" in str(res.summary())
    # β̂ is then ordinary least squares, with its standard errors (ML: σ̂² = RSS/n) and σ̂
    beta, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    np.testing.assert_allclose(res.params["beta"], beta, rtol=1e-6)
    sigma2 = float(rss[0]) / len(y)
    np.testing.assert_allclose(res.params["sigma"] ** 2, sigma2, rtol=1e-6)
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(X.T @ X)))
    np.testing.assert_allclose(res.stderr["beta"], se, rtol=1e-5)



def test_a_batch_member_on_the_boundary_is_what_fit_reports(diet):
    """fit_batch with random=: a member whose variance is on the boundary is reported as
    jm.fit reports it (τ = 0, NaN SE, the others from the model at τ = 0), the other
    member as it was."""
    _, (_, X, g), G = diet
    rng = np.random.default_rng(1)
    e = rng.normal(size=len(g))
    e -= np.bincount(g, e)[g] / np.bincount(g)[g]
    flat = X @ np.array([20.0, 6.0]) + 3.0 * e
    grouped = flat + 4.0 * rng.normal(size=G)[g]
    init = {"beta": np.zeros(2), "sigma": 1.0, "tau": 1.0, "b": np.zeros(G)}
    with pytest.warns(BoundaryWarning, match="1 of 2 fits have tau on the boundary"):
        bres = jm.fit_batch(lmm, (np.stack([flat, grouped]), np.stack([X, X]),
                                  np.stack([g, g])), init, constraints=POS, random=["b"])
    for i, y in enumerate([flat, grouped]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundaryWarning)
            alone = jm.fit(lmm, (y, X, g), init, constraints=POS, random=["b"])
        assert bool(bres.converged[i]) and bool(alone.converged)
        np.testing.assert_allclose(bres.params["tau"][i], alone.params["tau"], atol=1e-6)
        np.testing.assert_allclose(bres.params["beta"][i], alone.params["beta"], rtol=1e-6)
        np.testing.assert_allclose(bres.stderr["beta"][i], alone.stderr["beta"], rtol=1e-5)
    assert float(bres.params["tau"][0]) == 0.0 and np.isnan(bres.stderr["tau"][0])
    assert float(bres.params["tau"][1]) > 1.0 and np.isfinite(bres.stderr["tau"][1])

# --------------------------------------------------------------------------- GLMMs vs AGHQ


@pytest.fixture(scope="module", params=["poisson", "bernoulli"])
def glmm_fit(request):
    family = request.param
    data = simulate(family, G=30, n_per=10, seed=2)
    init = {"beta": np.zeros(2), "sigma": 1.0, "b": np.zeros(30)}
    res = fit_quiet(glmm(family), data, init, constraints={"sigma": constraints.positive},
                    random=["b"])
    return family, data, res


def test_laplace_is_one_node_aghq(glmm_fit):
    family, data, res = glmm_fit
    beta, sigma = np.asarray(res.params["beta"]), float(res.params["sigma"])
    assert abs(float(res.loglik) - aghq(family, beta, sigma, data, 1)) < 1e-9 * abs(res.loglik)


def test_glmm_close_to_the_exact_marginal(glmm_fit):
    """Against the maximum of the 30-node AGHQ marginal: Laplace's known small bias only."""
    family, data, res = glmm_fit

    def nll(x):
        return -aghq(family, x[:2], math.exp(x[2]), data, 30)

    x0 = np.r_[res.params["beta"], math.log(res.params["sigma"])]
    ref = optimize.minimize(nll, x0, method="Nelder-Mead",
                            options=dict(xatol=1e-8, fatol=1e-10, maxiter=4000))
    assert ref.success
    se = np.asarray(res.stderr["beta"])
    np.testing.assert_array_less(np.abs(res.params["beta"] - ref.x[:2]), 0.05 * se)
    # Laplace's known downward bias (measured: σ −0.3% Poisson, −2.7% Bernoulli)
    assert -0.05 < float(res.params["sigma"]) / math.exp(ref.x[2]) - 1 < 0.005
    assert -0.5 < float(res.loglik) + ref.fun < 0.0


# --------------------------------------------------------------------------- derivatives, structure


@pytest.fixture(scope="module")
def poisson_problem():
    data = tuple(jnp.asarray(a) for a in simulate("poisson", G=20, n_per=8, seed=5))
    u0 = {"b": jnp.zeros(20)}
    theta = {"beta": jnp.array([0.2, 0.4]), "sigma": jnp.asarray(0.8)}
    return data, u0, theta


def test_implicit_gradient_and_hessian_match_finite_differences(poisson_problem):
    data, u0, theta = poisson_problem
    marginal = MarginalLogLik(POISSON, Layout(("b",), ((20,),), 20))
    x0, unravel = ravel_pytree(theta)

    def L(x):
        return marginal(unravel(x), augment(data, u0))

    # one compiled program for ℓ, ∇ℓ and ∇²ℓ (the Hessian's program holds the gradient's)
    derivatives = jax.jit(lambda x: (*jax.value_and_grad(L)(x), jax.hessian(L)(x)))
    value_and_grad = lambda x: derivatives(x)[:2]      # noqa: E731
    hess = np.asarray(derivatives(x0)[2])
    h, eye = 1e-5, np.eye(x0.size)
    fd_grad = np.array([(value_and_grad(x0 + h * e)[0] - value_and_grad(x0 - h * e)[0]) / (2 * h)
                        for e in eye])
    fd_hess = np.array([(value_and_grad(x0 + h * e)[1] - value_and_grad(x0 - h * e)[1]) / (2 * h)
                        for e in eye])
    grad = np.asarray(value_and_grad(x0)[1])
    np.testing.assert_allclose(grad, fd_grad, rtol=1e-7, atol=1e-7 * np.abs(grad).max())
    np.testing.assert_allclose(hess, fd_hess, rtol=1e-6, atol=1e-6 * np.abs(hess).max())
    np.testing.assert_allclose(hess, hess.T, rtol=1e-10)


def test_block_and_dense_agree(poisson_problem):
    data, u0, theta = poisson_problem
    block = MarginalLogLik(POISSON, Layout(("b",), ((20,),), 20))
    dense = MarginalLogLik(POISSON, Layout(("b",), ((20,),), 1))
    vb, vd = (float(jax.jit(m)(theta, augment(data, u0))) for m in (block, dense))
    assert abs(vb - vd) < 1e-11 * abs(vd)
    assert choose_layout(POISSON, ("b",), ((20,),), theta, data, u0).n_groups == 20


def random_walk(p, data):
    """Counts over time with a random-walk level: b_t − b_{t−1} ~ N(0, σ): coupled."""
    y, X, g = data
    b = p["b"]
    steps = jnp.concatenate([b[:1], jnp.diff(b)])
    return (dist.Poisson(jnp.exp(X @ p["beta"] + b[g])).log_prob(y).sum()
            + dist.Normal(0.0, p["sigma"]).log_prob(steps).sum())


def test_probe_finds_a_random_walk_banded_and_the_band_equals_dense(poisson_problem):
    """A random walk couples each time point to its neighbours: the probe rejects the
    block-diagonal layout and confirms the block-tridiagonal one, whose Laplace marginal
    (scans over the groups) is the dense one's (O(G³))."""
    data, u0, theta = poisson_problem
    chosen = choose_layout(random_walk, ("b",), ((20,),), theta, data, u0)
    assert (chosen.n_groups, chosen.band) == (20, 1)
    # with the (wrong) block layout the marginal would be wrong (or the inner solve fail)
    wrong = MarginalLogLik(random_walk, Layout(("b",), ((20,),), 20))
    band = MarginalLogLik(random_walk, chosen)
    dense = MarginalLogLik(random_walk, Layout(("b",), ((20,),), 1))
    value = float(jax.jit(dense)(theta, augment(data, u0)))
    assert np.isfinite(value)
    assert abs(float(jax.jit(band)(theta, augment(data, u0))) - value) < 1e-11 * abs(value)
    assert not abs(float(jax.jit(wrong)(theta, augment(data, u0))) - value) < 1e-3


def random_walk_2(p, data):
    """A second-order random walk: b_t couples to b_{t−2} too (beyond the band): dense."""
    y, X, g = data
    b = p["b"]
    curv = jnp.concatenate([b[:2], b[2:] - 2 * b[1:-1] + b[:-2]])
    return (dist.Poisson(jnp.exp(X @ p["beta"] + b[g])).log_prob(y).sum()
            + dist.Normal(0.0, p["sigma"]).log_prob(curv).sum())


def test_probe_falls_back_to_dense_beyond_the_band(poisson_problem):
    data, u0, theta = poisson_problem
    assert choose_layout(random_walk_2, ("b",), ((20,),), theta, data, u0).n_groups == 1


@pytest.mark.parametrize("K", [2, 7])   # unrolled small blocks, and LAPACK's
def test_block_tridiagonal_linear_algebra_against_dense(K):
    """The band's factor, solve, log-determinant and diagonal of the inverse against
    NumPy on the assembled matrix (G = 5 groups of K)."""
    from jaxmle.random import band as _band
    from jaxmle.random.inner import _chol, _tri_solve

    G = 5
    rng = np.random.default_rng(K)
    diag = rng.normal(size=(G, K, K))
    diag = np.einsum("gij,gkj->gik", diag, diag) + 3 * K * np.eye(K)
    sub = rng.normal(size=(G, K, K))
    sub[0] = 0.0
    A = np.zeros((G * K, G * K))
    for g in range(G):
        A[g * K:(g + 1) * K, g * K:(g + 1) * K] = diag[g]
        if g:
            A[g * K:(g + 1) * K, (g - 1) * K:g * K] = sub[g]
            A[(g - 1) * K:g * K, g * K:(g + 1) * K] = sub[g].T
    blocks = jnp.asarray(np.stack([diag, sub], axis=1))
    rhs = rng.normal(size=(G, K))
    factor = jax.jit(lambda b: _band.cholesky(b, _chol, _tri_solve))(blocks)
    np.testing.assert_allclose(float(_band.logdet(factor)), np.linalg.slogdet(A)[1], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(_band.solve(factor, jnp.asarray(rhs), _tri_solve)),
                               np.linalg.solve(A, rhs.ravel()).reshape(G, K), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(np.asarray(_band.inverse_diag(factor, _tri_solve)),
                               np.diag(np.linalg.inv(A)).reshape(G, K), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(_band.matvec(blocks, jnp.asarray(rhs))),
                               (A @ rhs.ravel()).reshape(G, K), rtol=1e-12, atol=1e-12)
    # the blocks from 3K coloured products of the matrix
    cols = jnp.einsum("ij,cj->ci", jnp.asarray(A),
                      _band.colours(jnp.zeros((G, K))).reshape(3 * K, G * K))
    np.testing.assert_allclose(np.asarray(_band.from_columns(cols.reshape(3 * K, G, K))),
                               np.asarray(blocks), atol=1e-12)


def ar1(p, data):
    """AR(1) effects over time, b_t = ρ b_{t−1} + e_t: independent only at ρ = 0."""
    y, X, g = data
    b = p["b"]
    e = jnp.concatenate([b[:1] * jnp.sqrt(1 - p["rho"] ** 2), b[1:] - p["rho"] * b[:-1]])
    return (dist.Poisson(jnp.exp(X @ p["beta"] + b[g])).log_prob(y).sum()
            + dist.Normal(0.0, p["sigma"]).log_prob(e).sum())


def _ar1_data():
    rng = np.random.default_rng(0)
    T, n = 30, 5
    b = np.zeros(T)
    b[0] = 0.5 * rng.normal()
    for t in range(1, T):
        b[t] = 0.8 * b[t - 1] + 0.5 * rng.normal()
    g = np.repeat(np.arange(T), n)
    X = np.ones((T * n, 1))
    y = rng.poisson(np.exp(1.0 + b[g])).astype(float)
    return (y, X, g), {"beta": np.zeros(1), "sigma": 1.0, "rho": 0.0, "b": np.zeros(T)}


AR1_CONS = {"sigma": constraints.positive, "rho": constraints.interval(-1.0, 1.0)}


def test_a_coupling_that_vanishes_at_the_start_is_probed_next_to_it():
    """An AR(1) process started at ρ = 0 has independent time points there and only
    there: the start is also probed next to θ₀, which finds the band."""
    data, init = _ar1_data()
    theta = {k: jnp.asarray(v) for k, v in init.items() if k != "b"}
    chosen = choose_layout(ar1, ("b",), ((30,),), theta, tuple(map(jnp.asarray, data)),
                           {"b": jnp.zeros(30)})
    assert (chosen.n_groups, chosen.band) == (30, 1)


def test_coupling_that_appears_at_the_estimate_is_caught(monkeypatch):
    """A coupling the start's probe misses (here: made to miss it) but the estimate's
    finds: refitted with the structure the probe confirms there (block-tridiagonal)."""
    from jaxmle.random import structure

    data, init = _ar1_data()
    # the start's probe made to say "independent groups" (no probe program is traced with
    # this stand-in, so no cached program keeps it)
    monkeypatch.setattr(structure, "choose_layout", lambda loglik, names, shapes, *rest:
                        structure.candidate_layout(names, shapes))
    with pytest.warns(UserWarning, match="coupled at the estimate"):
        res = jm.fit(ar1, data, init, constraints=AR1_CONS, random=["b"])
    # an AR(1) process couples neighbours only: refitted block-tridiagonal, not dense
    assert (res.random_info.n_groups, res.random_info.band) == (30, 1) and bool(res.converged)
    assert 0.5 < float(res.params["rho"]) < 0.95
    assert "block-tridiagonal inner Hessian" in str(res.summary())


# --------------------------------------------------------------------------- machinery


def test_second_fit_reuses_the_compiled_program(diet, lmm_ml):
    _, (y, X, g), G = diet
    init = {"beta": np.zeros(2), "sigma": 1.0, "tau": 1.0, "b": np.zeros(G)}
    n = len(TRACES)
    res = fit_quiet(lmm, (y + 1.0, X, g), init, constraints=POS, random=["b"])
    assert len(TRACES) == n
    np.testing.assert_allclose(res.params["beta"][0], lmm_ml.params["beta"][0] + 1.0, rtol=1e-6)


def test_fit_batch_matches_single_fits(glmm_fit):
    family, data, single = glmm_fit
    if family != "poisson":
        pytest.skip("one family is enough")
    other = simulate("poisson", G=30, n_per=10, seed=3)
    batch = tuple(np.stack([a, b]) for a, b in zip(data, other))
    init = {"beta": np.zeros(2), "sigma": 1.0, "b": np.zeros(30)}
    bres = jm.fit_batch(POISSON, batch, init, constraints={"sigma": constraints.positive},
                        random=["b"])
    assert bool(np.all(bres.converged))
    np.testing.assert_allclose(bres.params["beta"][0], single.params["beta"], rtol=1e-6)
    np.testing.assert_allclose(bres.params["sigma"][0], single.params["sigma"], rtol=1e-6)
    np.testing.assert_allclose(bres.loglik[0], single.loglik, rtol=1e-12)
    assert abs(bres.params["sigma"][1] - single.params["sigma"]) > 1e-3   # its own fit


def test_random_fit_rejects_what_it_cannot_do(diet):
    _, data, G = diet
    init = {"beta": np.zeros(2), "sigma": 1.0, "tau": 1.0, "b": np.zeros(G)}
    with pytest.raises(ValueError, match="not keys of init"):
        jm.fit(lmm, data, init, constraints=POS, random=["c"])
    with pytest.raises(ValueError, match="roles must be 'random'.*'flat'.*'beta': 'reml'"):
        jm.fit(lmm, data, init, constraints=POS, random={"b": "random", "beta": "reml"})
    with pytest.raises(ValueError, match="unconstrained"):
        jm.fit(lmm, data, init, constraints={**POS, "b": constraints.positive}, random=["b"])
    with pytest.raises(NotImplementedError, match="weights"):
        jm.fit(lmm, data, init, constraints=POS, random=["b"], weights=np.ones(len(data[0])))


def test_fixed_and_lrt_work_on_the_marginal(diet, lmm_ml):
    """H₀: slope = 6.5, by ``fixed=``; the LR statistic against MixedLM's own ML fits."""
    import statsmodels.formula.api as smf

    df, data, G = diet
    init = {"beta": np.array([0.0, 6.5]), "sigma": 1.0, "tau": 1.0, "b": np.zeros(G)}
    restricted = fit_quiet(lmm, data, init, constraints=POS, random=["b"],
                           fixed={"beta[1]": 6.5})
    test = jm.lrt(restricted, lmm_ml)
    full = smf.mixedlm("Weight ~ Time", df, groups=df.Pig).fit(reml=False)
    off = smf.mixedlm("Weight ~ 1", df.assign(Weight=df.Weight - 6.5 * df.Time),
                      groups=df.Pig).fit(reml=False)
    assert test.df == 1 and test.nested == "checked"
    np.testing.assert_allclose(test.statistic, 2 * (full.llf - off.llf), rtol=1e-6)

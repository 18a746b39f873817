"""``jm.fit_model``: NumPyro model functions fitted by MLE and MAP.

Every fit is checked against an independent answer: ``jm.fit`` of the hand-written
likelihood, least squares, scipy on the penalised objective, NumPyro's own
``log_density``.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.optimize
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer.util import log_density

import jaxmle as jm
import jaxmle.fitting.kernel as _kernel

RNG = np.random.default_rng(20261122)

# ------------------------------------------------------------------ linear regression

N, P = 60, 3
X = np.column_stack([np.ones(N), RNG.normal(size=(N, P - 1))])
Y = X @ np.array([1.0, -2.0, 0.5]) + RNG.normal(scale=0.7, size=N)
X0 = np.array([1.0, 0.3, -0.2])
TRACES = {"n": 0}


class Captured(Exception):
    """Raised by :func:`capture_fit`'s stand-in for ``jm.fit``."""


def capture_fit(monkeypatch) -> dict:
    """Replace the ``fit`` that ``fit_model`` calls with one that records its arguments
    (in the returned dict) and raises :class:`Captured`: what ``fit_model`` builds, without
    compiling a fit."""
    import jaxmle.model.numpyro_model as model_module

    seen = {}

    def capture(loglik, data, init, **kwargs):
        seen.update(loglik=loglik, data=data, init=init, **kwargs)
        raise Captured

    monkeypatch.setattr(model_module, "fit", capture)
    return seen


def linreg(x, y=None):
    if isinstance(x, jax.core.Tracer):
        TRACES["n"] += 1      # only while jm.fit's kernel is traced (compiled)
    beta = numpyro.sample("beta", dist.Normal(0, 10).expand([x.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.deterministic("mean_x0", X0 @ beta)
    numpyro.deterministic("sigma2", sigma ** 2)
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(x @ beta, sigma), obs=y)


def linreg_loglik(p, d):
    return dist.Normal(d["x"] @ p["beta"], p["sigma"]).log_prob(d["y"])


@pytest.fixture(scope="module")
def ols():
    return jm.fit_model(linreg, X, y=Y, method="mle")


def test_mle_of_a_linear_regression_equals_fit_and_least_squares(ols):
    ref = jm.fit(linreg_loglik, {"x": X, "y": Y}, init={"beta": np.zeros(P), "sigma": 1.0},
                 constraints={"sigma": constraints.positive})
    assert ols.kind == "mle" and bool(ols.converged) and ols.priors == ()
    assert ols.param_names == ref.param_names == ("beta[0]", "beta[1]", "beta[2]", "sigma")
    for name in ("beta", "sigma"):
        np.testing.assert_allclose(ols.params[name], ref.params[name], rtol=1e-9)
        np.testing.assert_allclose(ols.stderr[name], ref.stderr[name], rtol=1e-7)
    np.testing.assert_allclose(ols.loglik, ref.loglik, rtol=1e-12)
    np.testing.assert_allclose(ols.logpost, ols.loglik)
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    rss = np.sum((Y - X @ beta) ** 2)
    np.testing.assert_allclose(ols.params["beta"], beta, rtol=1e-9)
    np.testing.assert_allclose(ols.params["sigma"], np.sqrt(rss / N), rtol=1e-9)
    # MLE covariance of beta: sigma_hat^2 (X'X)^-1
    np.testing.assert_allclose(ols.cov[:P, :P], rss / N * np.linalg.inv(X.T @ X), rtol=1e-7)
    assert float(ols.nobs) == N and float(ols.bic) == pytest.approx(4 * np.log(N) - 2 * ols.loglik)


def test_deterministic_sites_have_delta_method_standard_errors(ols):
    assert set(ols.deterministic) == {"mean_x0", "sigma2"}
    d = ols.delta(lambda p: jnp.stack([X0 @ p["beta"], p["sigma"] ** 2]))
    np.testing.assert_allclose(ols.deterministic["mean_x0"], d.estimate[0], rtol=1e-12)
    np.testing.assert_allclose(ols.deterministic["sigma2"], d.estimate[1], rtol=1e-12)
    np.testing.assert_allclose(ols.deterministic_stderr["mean_x0"], d.stderr[0], rtol=1e-10)
    np.testing.assert_allclose(ols.deterministic_stderr["sigma2"], d.stderr[1], rtol=1e-10)
    # closed forms: Var(x0'b) = x0' cov x0; Var(s^2) = (2 s)^2 Var(s)
    cov = np.asarray(ols.cov)
    np.testing.assert_allclose(ols.deterministic_stderr["mean_x0"] ** 2,
                               X0 @ cov[:P, :P] @ X0, rtol=1e-9)
    np.testing.assert_allclose(ols.deterministic_stderr["sigma2"],
                               2 * ols.params["sigma"] * ols.stderr["sigma"], rtol=1e-9)
    assert "mean_x0" in str(ols.summary())


def test_new_data_of_the_same_shape_does_not_recompile(ols):
    before, misses = TRACES["n"], _kernel.compiled_kernel.cache_info().misses
    y2 = X @ np.array([0.0, 1.0, 1.0]) + RNG.normal(size=N)
    res = jm.fit_model(linreg, X, y=y2, method="mle", init={"beta": 0.0, "sigma": 2.0})  # a scalar init broadcasts
    assert TRACES["n"] == before and _kernel.compiled_kernel.cache_info().misses == misses
    np.testing.assert_allclose(res.params["beta"], np.linalg.lstsq(X, y2, rcond=None)[0],
                               rtol=1e-9)
    assert before > 0


# ------------------------------------------------------------------ logistic regression, MAP

NL = 120
XL = RNG.normal(size=(NL, 3))
YL = (RNG.uniform(size=NL) < 1 / (1 + np.exp(-XL @ np.array([1.5, -1.0, 0.5])))).astype(float)


def logistic(x, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([x.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)


def test_map_of_a_logistic_model_equals_fit_with_priors_and_scipy():
    res = jm.fit_model(logistic, XL, y=YL, method="map")
    ref = jm.fit(lambda p, d: dist.Bernoulli(logits=d[0] @ p["beta"]).log_prob(d[1]), (XL, YL),
                 init={"beta": np.zeros(3)}, priors={"beta": dist.Normal(0.0, 1.0)})
    assert res.kind == "map" and bool(res.converged)
    assert res.priors == ("beta ~ Normal(loc=0, scale=1).expand([3]).to_event(1)",)
    np.testing.assert_allclose(res.params["beta"], ref.params["beta"], rtol=1e-9)
    np.testing.assert_allclose(res.cov, ref.cov, rtol=1e-7)
    np.testing.assert_allclose([res.loglik, res.logpost], [ref.loglik, ref.logpost], rtol=1e-10)

    def neg_logpost(b):
        eta = XL @ b
        return -(np.sum(YL * eta - np.logaddexp(0, eta)) - 0.5 * b @ b - 1.5 * np.log(2 * np.pi))

    opt = scipy.optimize.minimize(neg_logpost, np.zeros(3), method="BFGS",
                                  options={"gtol": 1e-10})
    np.testing.assert_allclose(res.params["beta"], opt.x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.logpost, -opt.fun, rtol=1e-10)


# ------------------------------------------------------------------ plates, masks, factor, scale

NM = 40
XM = RNG.normal(size=NM)
YM = 0.5 + 1.5 * XM + RNG.normal(scale=0.8, size=NM)
MASK = RNG.uniform(size=NM) < 0.8
Z = RNG.normal(loc=2.0, size=(NM, 2))
ZMISS = RNG.uniform(size=NM) < 0.75          # observed entries of the obs_mask response
W = RNG.normal(size=NM)
SCALE = 2.5


def messy(x, y, z, w, m, zmask):
    a = numpyro.sample("a", dist.Normal(0, 5))
    b = numpyro.sample("b", dist.Normal(0, 5))
    s = numpyro.param("s", 1.0, constraint=constraints.positive)   # a parameter, no prior
    mu = numpyro.sample("mu", dist.Normal(0, 3).expand([2]).to_event(1))
    with numpyro.plate("rows", x.shape[0]):
        with handlers.mask(mask=m):
            numpyro.sample("y", dist.Normal(a + b * x, s), obs=y)
        numpyro.sample("z", dist.Normal(mu, 1.0).to_event(1), obs=z, obs_mask=zmask)
    with handlers.scale(scale=SCALE):
        numpyro.sample("w", dist.Normal(a, 1.0), obs=w)
    numpyro.factor("shrink", -0.5 * b ** 2)


def messy_loglik(p, d):
    x, y, z, w, m, zmask = d
    ly = jnp.where(m, dist.Normal(p["a"] + p["b"] * x, p["s"]).log_prob(y), 0.0)
    lz = jnp.where(zmask, dist.Normal(p["mu"], 1.0).log_prob(z).sum(-1), 0.0)
    lw = SCALE * dist.Normal(p["a"], 1.0).log_prob(w)
    return ly.sum() + lz.sum() + lw.sum() - 0.5 * p["b"] ** 2


def test_plates_masks_obs_mask_factor_scale_and_param_sites_are_honoured():
    data = (XM, YM, Z, W, MASK, ZMISS)
    res = jm.fit_model(messy, *data, method="map")
    assert bool(res.converged) and set(res.params) == {"a", "b", "s", "mu"}  # no z_unobserved
    assert res.kind == "map" and len(res.priors) == 3                      # 's' has none
    assert res.priors[2] == "mu ~ Normal(loc=0, scale=3).expand([2]).to_event(1)"
    names = ("a", "b", "mu", "s")

    @jax.jit
    def hand_written(theta):   # the hand-written log posterior, its gradient and Hessian
        def logpost(t):
            p = {"a": t[0], "b": t[1], "mu": t[2:4], "s": t[4]}
            prior = (dist.Normal(0, 5).log_prob(t[0]) + dist.Normal(0, 5).log_prob(t[1])
                     + dist.Normal(0, 3).log_prob(t[2:4]).sum())
            return messy_loglik(p, data), prior

        total = lambda t: sum(logpost(t))
        return logpost(theta)[0], jax.grad(total)(theta), jax.hessian(total)(theta)

    theta = np.concatenate([np.ravel(res.params[n]) for n in names])
    loglik, grad, hess = hand_written(theta)
    np.testing.assert_allclose(res.loglik, loglik, rtol=1e-12)
    np.testing.assert_allclose(grad, 0.0, atol=1e-7)                # the mode
    order = [res.param_names.index(n) for n in ("a", "b", "mu[0]", "mu[1]", "s")]
    np.testing.assert_allclose(np.asarray(res.cov)[np.ix_(order, order)],
                               np.linalg.inv(-np.asarray(hess)), rtol=1e-8, atol=1e-14)
    # the likelihood counts sites as NumPyro's log_density: the joint minus the latent priors
    held = {"z_unobserved": np.zeros((NM, 2))}

    @jax.jit
    def likelihood_part(p):
        joint, _ = log_density(messy, data, {}, {**p, **held})
        priors = (dist.Normal(0, 5).log_prob(p["a"]) + dist.Normal(0, 5).log_prob(p["b"])
                  + dist.Normal(0, 3).log_prob(p["mu"]).sum()
                  + jnp.where(ZMISS, 0.0, dist.Normal(p["mu"], 1.0)
                              .log_prob(held["z_unobserved"]).sum(-1)).sum())
        return joint - priors

    np.testing.assert_allclose(res.loglik, likelihood_part(res.params), rtol=1e-12)
    # nobs: unmasked y rows + observed z rows + w rows (the factor counts none)
    assert float(res.nobs) == MASK.sum() + ZMISS.sum() + NM
    assert res.deterministic is None    # obs_mask's combined response is no derived quantity


# ------------------------------------------------------------------ hierarchical MAP

J, NJ = 6, 8
GROUP = np.repeat(np.arange(J), NJ)
YH = (RNG.normal(3.0, 1.0, size=J)[GROUP] + RNG.normal(scale=1.5, size=J * NJ))


def hierarchical(g, y, n_groups):
    mu = numpyro.sample("mu", dist.Normal(0, 10))
    tau = numpyro.sample("tau", dist.LogNormal(0, 0.5))
    with numpyro.plate("groups", n_groups):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
    numpyro.deterministic("spread", tau * jnp.sqrt(2.0))
    with numpyro.plate("obs", g.shape[0]):
        numpyro.sample("y", dist.Normal(theta[g], 1.5), obs=y)


def test_hierarchical_map_is_the_mode_of_numpyros_log_density():
    res = jm.fit_model(hierarchical, GROUP, YH, J, method="map")
    assert bool(res.converged) and res.params["theta"].shape == (J,)
    assert res.priors == ("mu ~ Normal(loc=0, scale=10)", "tau ~ LogNormal(loc=0, scale=0.5)",
                          "theta ~ Normal(depends on parameters)")

    def neg(v):   # NumPyro's joint density in the natural parameters (no Jacobian)
        p = {"mu": v[0], "tau": jnp.exp(v[1]), "theta": v[2:]}
        return -log_density(hierarchical, (GROUP, YH, J), {}, p)[0]

    f = jax.jit(jax.value_and_grad(neg))
    v0 = np.concatenate([[0.0, 0.0], np.zeros(J)])
    opt = scipy.optimize.minimize(lambda v: tuple(np.asarray(a) for a in f(v)), v0, jac=True,
                                  method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(res.params["mu"], opt.x[0], rtol=1e-6)
    np.testing.assert_allclose(res.params["tau"], np.exp(opt.x[1]), rtol=1e-6)
    np.testing.assert_allclose(res.params["theta"], opt.x[2:], rtol=1e-6)
    np.testing.assert_allclose(res.logpost, -opt.fun, rtol=1e-10)
    # partial pooling: the group modes lie between the group means and mu
    means = np.array([YH[GROUP == j].mean() for j in range(J)])
    assert np.all(np.abs(res.params["theta"] - res.params["mu"]) < np.abs(means - res.params["mu"]))
    np.testing.assert_allclose(res.deterministic_stderr["spread"],
                               np.sqrt(2.0) * res.stderr["tau"], rtol=1e-9)


# ------------------------------------------------------------------ clear errors


def test_clear_errors():
    def mixture(y):
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(3.0 * z, 1.0), obs=y)

    with pytest.raises(ValueError, match="latent site 'z' has a discrete distribution"):
        jm.fit_model(mixture, YM)
    with pytest.raises(ValueError, match="latent site 'y' has a discrete .* y=None"):
        jm.fit_model(logistic, XL)               # the response was not passed
    with pytest.raises(ValueError, match="no observed site"):
        jm.fit_model(linreg, X)                  # y=None: a continuous 'y' is no data
    with pytest.raises(ValueError, match=r"unknown site\(s\) \['gamma'\]"):
        jm.fit_model(linreg, X, y=Y, init={"gamma": 1.0})
    with pytest.raises(ValueError, match="init for site 'beta' has shape"):
        jm.fit_model(linreg, X, y=Y, init={"beta": np.zeros(5)})
    with pytest.raises(ValueError, match=r"model argument\(s\) y contain NaN.* reach the "
                       r"log-density of site\(s\) 'y' \(Normal: 1 term\).*obs_mask"):
        jm.fit_model(linreg, X, y=np.where(np.arange(N) == 3, np.nan, Y), method="mle")
    with pytest.raises(ValueError, match="method must be 'mle' or 'map'"):
        jm.fit_model(linreg, X, y=Y, method="newton")
    with pytest.raises(ValueError, match="random= names"):
        jm.fit_model(linreg, X, y=Y, random=["gamma"])

    def subsampled(y):
        mu = numpyro.sample("mu", dist.Normal(0, 10))
        with numpyro.plate("n", len(y), subsample_size=10) as idx:
            numpyro.sample("y", dist.Normal(mu, 2.0), obs=y[idx])

    with pytest.warns(jm.JaxmleWarning, match="plate 'n' subsamples 10 of 40"):
        with pytest.raises(ValueError, match="unknown site"):   # (stops before compiling)
            jm.fit_model(subsampled, YM, init={"sigma": 1.0})

    def bounded(y):
        top = numpyro.sample("top", dist.LogNormal(0, 1))
        u = numpyro.sample("u", dist.Uniform(0, top))
        numpyro.sample("y", dist.Normal(u, 1.0), obs=y)

    with pytest.raises(ValueError, match="support of latent site 'u' .* depends on other"):
        jm.fit_model(bounded, YM)

    def with_options(y, opts):
        numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal(0, 1)), 1.0), obs=y)

    with pytest.raises(TypeError, match=r"model argument opts\[0\] .* neither an array nor hashable"):
        jm.fit_model(with_options, YM, opts=[{1, 2}])


def test_observations_are_counted_per_row():
    from jaxmle.model.numpyro_model import _count

    def model(y, ymat):
        numpyro.sample("whole", dist.Normal(0.0, 1.0).expand([N]).to_event(1), obs=y)
        numpyro.sample("bcast", dist.Normal(0.0, 1.0), obs=y)
        numpyro.sample("rows", dist.Normal(jnp.zeros(2), 1.0).to_event(1), obs=ymat)
        with handlers.mask(mask=np.arange(N) % 3 == 0):
            numpyro.sample("masked", dist.Normal(0.0, 1.0).expand([N]), obs=y)
        numpyro.factor("f", 1.0)

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(Y, np.zeros((7, 2)))
    assert {n: _count(s) for n, s in tr.items()} == {"whole": N, "bcast": N, "rows": 7,
                                                   "masked": N // 3, "f": 0}


# ------------------------------------------------------------------ simplex parameter, mixture

YMIX = np.concatenate([RNG.normal(-2.0, 1.0, 70), RNG.normal(1.5, 1.0, 30)])


def mixture(y):
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    mu = numpyro.sample("mu", dist.Normal(jnp.array([-1.0, 1.0]), 5.0).to_event(1))
    with numpyro.plate("n", len(y)):
        numpyro.sample("y", dist.MixtureSameFamily(dist.Categorical(w), dist.Normal(mu, 1.0)),
                       obs=y)


def test_mixture_mle_with_a_simplex_parameter_equals_scipy():
    res = jm.fit_model(mixture, list(YMIX), method="mle")   # a list of numbers is data
    assert bool(res.converged) and res.params["w"].shape == (2,)
    np.testing.assert_allclose(np.sum(res.params["w"]), 1.0, rtol=1e-14)

    def neg(v):
        w = 1 / (1 + np.exp(-v[0]))
        dens = (w * np.exp(-0.5 * (YMIX - v[1]) ** 2) + (1 - w) * np.exp(-0.5 * (YMIX - v[2]) ** 2))
        return -np.sum(np.log(dens / np.sqrt(2 * np.pi)))

    opt = scipy.optimize.minimize(neg, [0.0, -1.0, 1.0], method="BFGS", options={"gtol": 1e-9})
    np.testing.assert_allclose(res.params["w"][0], 1 / (1 + np.exp(-opt.x[0])), rtol=1e-6)
    np.testing.assert_allclose(res.params["mu"], opt.x[1:], rtol=1e-6)
    np.testing.assert_allclose(res.loglik, -opt.fun, rtol=1e-10)
    # the simplex has one free coordinate: the weights' covariance is rank-deficient
    assert res.n_free == 3 and np.isclose(res.stderr["w"][0], res.stderr["w"][1])


def test_init_overrides_and_broadcasts_for_sample_and_param_sites():
    from jaxmle.model.args import split_args
    from jaxmle.model.numpyro_model import discover

    def model(x, y):
        b = numpyro.param("b", jnp.zeros(x.shape[1]))
        s = numpyro.sample("s", dist.HalfCauchy(1.0))          # no finite mean: starts at 1
        m = numpyro.sample("m", dist.Normal(3.0, 1.0).expand([2]).to_event(1))  # at its mean
        numpyro.sample("y", dist.Normal(x @ b + m.sum(), s), obs=y)

    arguments = split_args(model, (X, Y), {})
    call, arrays = arguments.call(model), arguments.arrays
    found, _ = discover(call, arrays, {"b": 0.5})
    np.testing.assert_array_equal(found.params["b"], [0.5, 0.5, 0.5])
    assert float(found.params["s"]) == 1.0 and found.params["m"].tolist() == [3.0, 3.0]
    assert discover(call, arrays, {"b": [1.0, 2.0, 3.0], "s": 2.0})[0].params["s"] == 2.0
    with pytest.raises(ValueError, match=r"init for site 'b' has shape \(2,\)"):
        discover(call, arrays, {"b": [1.0, 2.0]})


def test_random_sites_are_integrated_out_like_a_hand_written_joint_loglik():
    """fit_model(random=["u"]) keeps u's distribution in the likelihood: the same Laplace
    marginal fit as jm.fit(random=["u"]) of the hand-written joint log-density."""
    rng = np.random.default_rng(0)
    G, m = 12, 6
    g = np.repeat(np.arange(G), m)
    x = rng.normal(size=G * m)
    y = rng.poisson(np.exp(0.3 + 0.5 * x + rng.normal(0, 0.5, G)[g])).astype(float)

    def glmm(x, g, G, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 5).expand([2]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("groups", G):
            u = numpyro.sample("u", dist.Normal(0, sigma))
        numpyro.sample("y", dist.Poisson(jnp.exp(beta[0] + beta[1] * x + u[g])), obs=y)

    def joint(p, d):
        x, g, y = d
        eta = p["beta"][0] + p["beta"][1] * x + p["u"][g]
        return (dist.Poisson(jnp.exp(eta)).log_prob(y).sum()
                + dist.Normal(0, p["sigma"]).log_prob(p["u"]).sum())

    res = jm.fit_model(glmm, x, g, G, y=y, method="mle", random=["u"])
    ref = jm.fit(joint, (x, g, y), {"beta": np.zeros(2), "sigma": 1.0, "u": np.zeros(G)},
                 constraints={"sigma": constraints.positive}, random=["u"])
    np.testing.assert_allclose(float(res.loglik), float(ref.loglik), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(res.params["beta"]), np.asarray(ref.params["beta"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.random["u"]), np.asarray(ref.random["u"]), rtol=1e-6, atol=1e-8)


def test_random_roles_reach_fit_and_a_flat_site_leaves_its_density_out(monkeypatch):
    """fit_model(random={"u": "random", "beta": "flat"}) is REML as in jm.fit: the roles are
    passed on, and beta's own prior is not part of the likelihood (nothing is compiled)."""

    def lmm(x, g, G, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 5).expand([2]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        with numpyro.plate("groups", G):
            u = numpyro.sample("u", dist.Normal(0, tau))
        numpyro.sample("y", dist.Normal(beta[0] + beta[1] * x + u[g], sigma), obs=y)

    seen = capture_fit(monkeypatch)
    g = np.repeat(np.arange(3), 2)
    x, y = np.linspace(0, 1, 6), np.linspace(1, 2, 6)
    with pytest.raises(Captured):
        jm.fit_model(lmm, x, g, 3, y=y, method="mle", random={"u": "random", "beta": "flat"})
    assert seen["random"] == {"u": "random", "beta": "flat"} and seen["priors"] is None
    p = {"beta": np.array([0.5, 1.0]), "sigma": 0.7, "tau": 0.4, "u": np.array([0.1, -0.2, 0.3])}
    expected = (dist.Normal(p["beta"][0] + p["beta"][1] * x + p["u"][g], p["sigma"]).log_prob(y).sum()
                + dist.Normal(0, p["tau"]).log_prob(p["u"]).sum())
    np.testing.assert_allclose(float(seen["loglik"](p, seen["data"])), float(expected), rtol=1e-12)


# ------------------------------------------------------------------ issue 16: models as written


def test_map_with_random_sites_evaluates_the_prior_on_the_users_data(monkeypatch):
    """Item 1: MAP + random= with a prior site left (the issue's reproducer). The prior
    is a joint log π(θ, data) of the other latent sites; in the Laplace fit it is called
    with θ alone and the marginal's data (the user's data and u's start): it gets the
    user's data, the random site set aside. (The end-to-end fit: eight schools in
    test_model_corpus.py.)"""
    from jaxmle.random.marginal import _user_data_priors, augment

    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        s = numpyro.sample("s", dist.Exponential(1.0))
        u = numpyro.sample("u", dist.Normal(b * x, s))
        numpyro.sample("y", dist.Normal(u, 0.5), obs=y)

    seen = capture_fit(monkeypatch)
    x, y = np.linspace(-1, 1, 5), np.linspace(0, 2, 5)
    with pytest.raises(Captured):
        jm.fit_model(model, x, y=y, method="map", random=["u"])
    assert seen["random"] == ("u",) and set(seen["init"]) == {"b", "s", "u"}
    prior = _user_data_priors({"priors": seen["priors"]})["priors"]
    theta = {"b": jnp.asarray(0.3), "s": jnp.asarray(0.8)}
    value = prior(theta, augment(seen["data"], {"u": np.zeros(5)}))     # was KeyError: 'args'
    expected = dist.Normal(0.0, 1.0).log_prob(0.3) + dist.Exponential(1.0).log_prob(0.8)
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-12)
    assert prior.labels == ("b ~ Normal(loc=0, scale=1)", "s ~ Exponential(rate=1)")

    def downstream(x, y=None):       # a prior site below the random one is no prior
        u = numpyro.sample("u", dist.Normal(0.0, 1.0).expand([5]))
        s = numpyro.sample("s", dist.LogNormal(jnp.mean(u), 1.0))
        numpyro.sample("y", dist.Normal(u * x, s), obs=y)

    with pytest.raises(ValueError, match="latent site 's' depends on the random site"):
        jm.fit_model(downstream, x, y=y, method="map", random=["u"])


def test_starts_are_floating_point_and_every_deterministic_site_is_kept():
    """Item 2: dist.Normal(0, 1) has an integer mean; the start is float64 (not int64,
    which made the deterministic sites integer and dropped them)."""
    from jaxmle.model.args import split_args
    from jaxmle.model.numpyro_model import discover

    def model(x, y):
        a = numpyro.sample("a", dist.Normal(0, 1))
        s = numpyro.sample("s", dist.Exponential(1))
        numpyro.deterministic("twice_a", 2 * a)
        numpyro.deterministic("n", x.shape[0])
        numpyro.sample("y", dist.Normal(a * x, s), obs=y)

    arguments = split_args(model, (XM, YM), {})
    sites, _ = discover(arguments.call(model), arguments.arrays, {})
    assert all(np.asarray(v).dtype == np.float64 for v in sites.params.values())
    assert sites.deterministic == {"twice_a": ((), True), "n": ((), False)}


def test_arguments_are_named_and_booleans_are_data():
    """Item 4: an argument is named by the model's parameter name; boolean arrays (numpy
    or JAX) are data."""
    from jaxmle.fitting.data import prepare_data
    from jaxmle.model.args import split_args

    def model(dept, male, applications, admit=None, *, opts=None):
        pass

    arguments = split_args(model, (np.arange(3), jnp.asarray([True, False, True]), [5, 6, 7]),
                           {"admit": np.array([1, 2, 3])})
    assert arguments.names == ["dept", "male", "applications", "admit"]
    prepare_data({"args": arguments.arrays})           # a JAX bool array is data
    with pytest.raises(TypeError, match=r"model argument male is an array of dtype object"):
        split_args(model, (np.arange(3), np.array([True, None, 1], dtype=object), [5]), {})
    with pytest.raises(TypeError, match=r"model argument opts\['a'\] of type set"):
        split_args(model, (np.arange(3),), {"opts": {"a": {1}}})


def test_arrays_the_model_needs_as_values_are_constants():
    """Item 3: host-side NumPy on an argument (np.unique, np.isnan, np.nonzero) makes that
    argument a constant of the compiled program; the others stay traced; Python control
    flow on a parameter is an error that says so (nothing is compiled here)."""
    from jaxmle.model.args import constant_arrays, split_args

    def model(dept, male, x, y=None):
        n_dept = len(np.unique(dept))
        a = numpyro.sample("a", dist.Normal(0, 1).expand([n_dept]))
        b = numpyro.sample("b", dist.Normal(0, 1))
        x = jnp.where(np.isnan(x), 0.0, x)
        numpyro.sample("y", dist.Normal(a[dept] + b * male + x, 1.0), obs=y)

    dept, male = np.repeat(np.arange(3), 4), np.tile([True, False], 6)
    x, y = np.where(np.arange(12) == 2, np.nan, np.ones(12)), np.zeros(12)
    arguments = split_args(model, (dept, male, x), {"y": y})
    params = {"a": np.zeros(3), "b": np.zeros(())}
    assert constant_arrays(model, arguments, params, {}, ("a", "b", "y")) == (
        True, False, True, False)             # dept (np.unique), x (NaN); male, y traced

    def branchy(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        if mu > 0:
            mu = 2 * mu
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(TypeError, match="cannot be differentiated in its parameters.*jnp.where"):
        jm.fit_model(branchy, YM, method="map")


def test_a_start_is_found_where_every_term_is_finite_or_the_error_names_the_site():
    """Item 6: the prior mean of a Normal(0, 1) scale (0) is no valid start: it is moved
    (here to 1, the first of the unconstrained points 0, ±1, ±2 that makes every term finite); a model with no valid start at all names the site; init_strategy picks
    NumPyro's strategies (seeded)."""
    from jaxmle.model.args import split_args
    from jaxmle.model.numpyro_model import _prepare

    def scale_with_normal_prior(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        sigma = numpyro.sample("sigma", dist.Normal(0, 1).expand([2]))
        numpyro.sample("y", dist.Normal(mu, sigma[0] + sigma[1] ** 2), obs=y)

    def prepare(model, strategy="mean"):
        from numpyro.distributions.distribution import validation_enabled

        arguments = split_args(model, (YM,), {})
        with validation_enabled(False):
            return _prepare(model, arguments, "map", True, {}, strategy, None)[0].params

    params = prepare(scale_with_normal_prior)
    assert params["sigma"].tolist() == [1.0, 1.0] and params["mu"] == 0.0   # a site moves whole
    uniform = prepare(scale_with_normal_prior, "uniform")
    assert uniform["sigma"][0] + uniform["sigma"][1] ** 2 > 0 and uniform["mu"] != 0.0

    def hopeless(y):
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(0.0, -s), obs=y)

    with pytest.raises(ValueError, match=r"site\(s\) 'y' \(Normal: 40 terms\) are not finite"):
        jm.fit_model(hopeless, YM, method="map")
    with pytest.raises(ValueError, match="init_strategy must be one of"):
        jm.fit_model(hopeless, YM, method="map", init_strategy="centre")


def test_the_default_mle_says_once_that_it_drops_the_priors(ols):
    """Item 9: method= left unset on a model with priors: a warning, once per model."""
    with pytest.warns(jm.JaxmleWarning, match=r"drops the priors .*\['beta', 'sigma'\]"):
        res = jm.fit_model(linreg, X, y=Y)
    np.testing.assert_allclose(res.params["beta"], ols.params["beta"], rtol=1e-12)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jm.fit_model(linreg, X, y=Y)                    # the second time: silent


def test_a_constrained_random_site_is_integrated_out_in_its_unconstrained_coordinate(
        monkeypatch):
    """Item 7: random= on a positive site (a gamma frailty): the joint density handed to
    the Laplace fit is that of z = log u, the log-Jacobian log u included (as NumPyro's
    AutoLaplaceApproximation); û and its SEs come back through u = exp(z)."""
    import dataclasses

    from jaxmle.model.outputs import _constrained_predictions

    def frailty(g, G, y=None):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        k = numpyro.sample("k", dist.LogNormal(0, 1))
        with numpyro.plate("groups", G):
            u = numpyro.sample("u", dist.Gamma(k, k))
        numpyro.sample("y", dist.Poisson(jnp.exp(mu) * u[g]), obs=y)

    seen = capture_fit(monkeypatch)
    g, y = np.repeat(np.arange(3), 2), np.array([0.0, 2.0, 5.0, 3.0, 1.0, 1.0])
    with pytest.raises(Captured):
        jm.fit_model(frailty, g, 3, y=y, method="mle", random=["u"])
    from jaxmle.core.space import is_real_line

    assert is_real_line(seen["constraints"]["u"]) and seen["random"] == ("u",)
    np.testing.assert_allclose(seen["init"]["u"], 0.0)          # log of the Gamma mean 1
    p = {"mu": 0.4, "k": 2.0, "u": np.array([-0.3, 0.1, 0.5])}   # u holds z = log u
    u = np.exp(p["u"])
    expected = (dist.Poisson(np.exp(p["mu"]) * u[g]).log_prob(y).sum()
                + dist.Gamma(p["k"], p["k"]).log_prob(u).sum() + p["u"].sum())
    np.testing.assert_allclose(float(seen["loglik"](p, seen["data"])), float(expected),
                               rtol=1e-12)
    # the predictions: u = exp(z), SE(u) = u·SE(z) (delta method)
    @dataclasses.dataclass
    class Predictions:            # the three fields of a FitResult that it replaces
        random: dict
        random_stderr: dict
        random_cond_stderr: dict

    res = Predictions({"u": p["u"]}, {"u": np.full(3, 0.2)}, {"u": np.full(3, 0.1)})
    out = _constrained_predictions(res, {"u": dist.Gamma(1.0, 1.0).support})
    np.testing.assert_allclose(out.random["u"], u, rtol=1e-14)
    np.testing.assert_allclose(out.random_stderr["u"], 0.2 * u, rtol=1e-14)
    np.testing.assert_allclose(out.random_cond_stderr["u"], 0.1 * u, rtol=1e-14)


def test_a_model_whose_arguments_are_all_constants_fits():
    """Every array argument a constant (np.unique on it) and the response closed over: the
    fit's data has no traced argument at all (was: 'data leaf args is an empty list')."""
    def grouped(g):
        n = len(np.unique(g))
        mu = numpyro.sample("mu", dist.Normal(0, 10).expand([n]))
        numpyro.sample("y", dist.Normal(mu[g], 1.0), obs=YH)

    res = jm.fit_model(grouped, GROUP, method="mle")
    np.testing.assert_allclose(res.params["mu"], [YH[GROUP == j].mean() for j in range(J)],
                               rtol=1e-9)


def test_many_sites_of_one_distribution_are_one_batched_log_density(monkeypatch):
    """Item 10: a Python-loop AR(2) (one observed site per time step) is evaluated as one
    vmapped log-density of the stacked sites, equal to NumPyro's own count: the program
    holds one log-density instead of 38 (a 140-step one compiled 174 s -> 42 s)."""
    import jaxmle.model.trace as trace_module
    from numpyro.infer.util import log_likelihood

    from jaxmle.model.args import split_args
    from jaxmle.model.trace import ModelLogLik

    def ar2_loop(y):
        a1 = numpyro.sample("alpha_1", dist.Normal(0, 1))
        a2 = numpyro.sample("alpha_2", dist.Normal(0, 1))
        s = numpyro.sample("sigma", dist.HalfNormal(1))
        for t in range(2, len(y)):
            numpyro.sample(f"y_{t}", dist.Normal(a1 * y[t - 1] + a2 * y[t - 2], s), obs=y[t])

    y = RNG.normal(size=40)
    arguments = split_args(ar2_loop, (y,), {})
    loglik = ModelLogLik(arguments.call(ar2_loop), tuple(f"y_{t}" for t in range(2, 40)))
    p = {"alpha_1": jnp.asarray(0.4), "alpha_2": jnp.asarray(-0.2), "sigma": jnp.asarray(0.9)}
    data = {"args": arguments.arrays, "held": {}}
    expected = sum(float(v) for v in log_likelihood(ar2_loop, p, y, batch_ndims=0).values())
    np.testing.assert_allclose(float(loglik(p, data)), expected, rtol=1e-13)
    def logs():       # log-density evaluations in the program: Normal's log(scale)
        # (a new trace of the model: ``evaluate``, which calls run under jit once)
        eqns = jax.make_jaxpr(lambda q, d: loglik.evaluate(q, d))(p, data).eqns
        return sum(e.primitive.name == "log" for e in eqns)

    assert logs() == 1
    monkeypatch.setattr(trace_module, "GROUP_MIN", 10 ** 9)
    np.testing.assert_allclose(float(loglik(p, data)), expected, rtol=1e-13)
    assert logs() == 38


def test_the_model_runs_once_per_signature_not_once_per_program():
    """Item 10: the model's Python body (NumPyro's handlers, a Python loop's steps) runs
    once per parameter and data signature for the log-likelihood and the prior: every
    program, derivative and ``vmap`` of a fit reuses that trace (a first MAP fit ran the
    model 13 times, an MLE fit of the same model after it 5 times). The count: site
    discovery on the host, the log-likelihood, the prior, the start; discovery is cached
    by the arguments' values and the options (a refit runs the model not at all, a new
    method once; new data of the same shapes once)."""
    calls = [0]

    def model(x, y=None):
        calls[0] += 1
        b = numpyro.sample("b", dist.Normal(0, 1))
        s = numpyro.sample("s", dist.HalfNormal(1))
        numpyro.sample("y", dist.Normal(b * x, s), obs=y)

    x = np.linspace(0, 1, 30)
    y = 2 * x + RNG.normal(size=30) * 0.3
    counts = []
    fits = []
    for method, yy in (("map", y), ("map", y), ("mle", y), ("map", y + 0.1)):
        calls[0] = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(jm.fit_model(model, x, y=yy, method=method))
        counts.append(calls[0])
    assert counts[0] <= 5 and counts[1:] == [0, 1, 1], counts
    np.testing.assert_array_equal(fits[0].params["b"], fits[1].params["b"])
    assert float(fits[3].params["b"]) != float(fits[0].params["b"])   # new data: refitted

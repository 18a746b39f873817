"""The corpus, continued: models after NumPyro's ``examples/`` scripts (baseball, AR(2),
stochastic volatility, proportion test) and tutorials (measurement error, ordinal
regression, SVI-style ``numpyro.param`` models), fitted unedited by ``jm.fit_model``.

References, each independent of jaxmle:

* closed forms where the model has one (pooled and unpooled batting averages, the
  conditional AR(2) MLE = least squares, a coin's MLE = its sample fraction, the Gaussian
  measurement-error marginal N(μ, σ² + sdᵢ²));
* scipy on NumPyro's own density (``scipy_mode`` of ``test_model_corpus``);
* statsmodels (ordered logit, logistic regression);
* for ``random=``: a dense Laplace approximation written here from NumPyro's
  ``log_density`` — the latent site in its unconstrained coordinate u with the log-Jacobian
  of its bijection (the convention of NumPyro's ``AutoLaplaceApproximation``), û(θ) by
  Newton with the exact dense Hessian, L(θ) = log p(y, û) + q/2·log 2π − ½ log det(−∇²ᵤ),
  maximised by scipy over the unconstrained θ.

A joint MAP over a scale and the effects it scales has no maximum (the density of
uᵢ ~ Normal(μ, σ) at uᵢ = μ grows without bound as σ → 0): those fits must say so and name
the scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree
from numpyro.contrib.control_flow import scan
from numpyro.distributions import constraints
from numpyro.distributions.transforms import SimplexToOrderedTransform, biject_to
from numpyro.infer.util import log_density

import jaxmle as jm
from test_model_corpus import CURRENT, _support, assert_agrees, scipy_mode, timed

RNG = np.random.default_rng(20261206)


# --------------------------------------------------------------------------- the reference


def laplace_reference(model, args, kwargs, res, site):
    """The MAP of the Laplace marginal over ``site`` (see the module docstring), in the
    parameterisation jaxmle reports: (estimates, maximised objective, the predictions û).

    The marginal is evaluated (value only: nothing is differentiated through the inner
    solve) at jaxmle's estimate and around it; its gradient and Hessian in the
    unconstrained coordinates come from central differences, and one Newton step gives the
    reference's own maximiser (to second order in jaxmle's error, which the comparison
    bounds by 1e-5 SE) and its maximum."""
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    bij = biject_to(tr[site]["fn"].support)
    transforms = {n: biject_to(_support(model, args, kwargs, res.params, n)) for n in res.params}
    z_hat = {n: transforms[n].inv(jnp.asarray(v)) for n, v in res.params.items()}
    flat0, unravel = ravel_pytree(z_hat)
    u0 = bij.inv(jnp.asarray(res.random[site]))

    def joint(u, theta):
        x = bij(u)
        value = log_density(model, args, kwargs, {**theta, site: x})[0]
        return value + jnp.sum(bij.log_abs_det_jacobian(u, x))

    @jax.jit
    def marginal(flat):
        z = unravel(flat)
        theta = {n: transforms[n](v) for n, v in z.items()}

        def newton(_, u):
            g = jax.grad(joint)(u, theta)
            h = jax.hessian(joint)(u, theta).reshape(u.size, u.size)
            return u - jnp.linalg.solve(h, g.reshape(-1)).reshape(u.shape)

        u = jax.lax.fori_loop(0, 40, newton, u0)
        h = jax.hessian(joint)(u, theta).reshape(u.size, u.size)
        value = joint(u, theta) + 0.5 * u.size * jnp.log(2 * jnp.pi) \
            - 0.5 * jnp.linalg.slogdet(-h)[1]
        return value, u

    x0, k, step = np.asarray(flat0, float), np.size(flat0), 1e-4
    E = step * np.eye(k)
    points = [x0] + [x0 + s * E[i] for i in range(k) for s in (1, -1)] + \
        [x0 + si * E[i] + sj * E[j] for i in range(k) for j in range(i + 1, k)
         for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    values = np.array(jax.vmap(lambda p: marginal(p)[0])(jnp.asarray(np.array(points))))
    f0, pm = values[0], values[1:1 + 2 * k].reshape(k, 2)
    grad = (pm[:, 0] - pm[:, 1]) / (2 * step)
    hess = np.diag((pm[:, 0] - 2 * f0 + pm[:, 1]) / step ** 2)
    cross = iter(values[1 + 2 * k:].reshape(-1, 4))
    for i in range(k):
        for j in range(i + 1, k):
            pp, pn, np_, nn = next(cross)
            hess[i, j] = hess[j, i] = (pp - pn - np_ + nn) / (4 * step ** 2)
    x = x0 - np.linalg.solve(hess, grad)
    value, u = marginal(jnp.asarray(x))
    z = unravel(jnp.asarray(x))
    return ({n: np.asarray(transforms[n](v)) for n, v in z.items()}, float(value),
            np.asarray(bij(u)))


def assert_laplace_agrees(res, model, args, kwargs, site):
    ref, value, predicted = laplace_reference(model, args, kwargs, res, site)
    assert_agrees(res, ref, value, float(res.logpost))
    np.testing.assert_allclose(res.random[site], predicted, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- baseball

# Efron & Morris (1975): 18 players' hits in their first 45 at-bats of 1970
HITS = np.array([18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7])
AT_BATS = np.full(18, 45)


def fully_pooled(at_bats, hits=None):
    phi_prior = dist.Uniform(0, 1)
    phi = numpyro.sample("phi", phi_prior)
    num_players = at_bats.shape[0]
    with numpyro.plate("num_players", num_players):
        return numpyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)


def not_pooled(at_bats, hits=None):
    num_players = at_bats.shape[0]
    with numpyro.plate("num_players", num_players):
        phi_prior = dist.Uniform(0, 1)
        phi = numpyro.sample("phi", phi_prior)
        return numpyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)


def partially_pooled(at_bats, hits=None):
    m = numpyro.sample("m", dist.Uniform(0, 1))
    kappa = numpyro.sample("kappa", dist.Pareto(1, 1.5))
    num_players = at_bats.shape[0]
    with numpyro.plate("num_players", num_players):
        phi_prior = dist.Beta(m * kappa, (1 - m) * kappa)
        phi = numpyro.sample("phi", phi_prior)
        return numpyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)


def partially_pooled_with_logit(at_bats, hits=None):
    loc = numpyro.sample("loc", dist.Normal(-1, 1))
    scale = numpyro.sample("scale", dist.HalfCauchy(1))
    num_players = at_bats.shape[0]
    with numpyro.plate("num_players", num_players):
        alpha = numpyro.sample("alpha", dist.Normal(loc, scale))
        return numpyro.sample("obs", dist.Binomial(at_bats, logits=alpha), obs=hits)


def test_baseball_pooled_and_unpooled_are_the_batting_averages():
    """A Uniform(0, 1) prior: the MAP is the MLE, the (pooled or own) batting average, with
    the binomial SE √(p(1 − p)/n)."""
    res = timed("baseball, fully pooled (MAP)",
                lambda: jm.fit_model(fully_pooled, AT_BATS, hits=HITS, method="map"))
    p = HITS.sum() / AT_BATS.sum()
    assert bool(res.converged)
    np.testing.assert_allclose(res.params["phi"], p, rtol=1e-10)
    np.testing.assert_allclose(res.stderr["phi"], np.sqrt(p * (1 - p) / AT_BATS.sum()), rtol=1e-7)
    ref, value = scipy_mode(fully_pooled, (AT_BATS,), {"hits": HITS}, res, "map")
    assert_agrees(res, ref, -value, float(res.logpost))

    res = timed("baseball, not pooled (MAP)",
                lambda: jm.fit_model(not_pooled, AT_BATS, hits=HITS, method="map"))
    p = HITS / AT_BATS
    assert bool(res.converged) and res.params["phi"].shape == (18,)
    np.testing.assert_allclose(res.params["phi"], p, rtol=1e-9)
    np.testing.assert_allclose(res.stderr["phi"], np.sqrt(p * (1 - p) / AT_BATS), rtol=1e-6)


def check_baseball_partial_pooling_jointly_has_no_maximum_and_is_named():   # (bench_models)
    """Joint MAP over the players' abilities and their spread: κ → ∞ (every φᵢ = m) makes
    the density unbounded; the fit says so and names κ at its upper edge."""
    with pytest.warns(jm.ConvergenceWarning, match=r"\['kappa'\] (ran|run) to the edge"):
        res = jm.fit_model(partially_pooled, AT_BATS, hits=HITS, method="map", max_iter=300)
    assert not bool(res.converged)
    # (the logit model's scale → 0 is flagged the same way: benchmarks/bench_models.py; the
    # measurement-error test below checks a scale at its lower edge)


def test_baseball_partial_pooling_with_the_abilities_integrated_out():
    """Issue 16 item 7: φ ∈ (0, 1) integrated out through its logit, with the log-Jacobian
    (the marginal's mode has κ̂ ≈ 39, inside its support: no boundary)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", jm.BoundaryWarning)   # κ's likelihood-only maximum is
        res = timed("baseball, partial pooling, random=phi (MAP)",   # at ∞; the prior's is not
                    lambda: jm.fit_model(partially_pooled, AT_BATS, hits=HITS, method="map",
                                         random=["phi"]))
    assert bool(res.converged) and set(res.params) == {"m", "kappa"}
    assert np.all(np.isfinite(np.asarray(res.stderr["kappa"])))
    assert_laplace_agrees(res, partially_pooled, (AT_BATS,), {"hits": HITS}, "phi")
    # shrinkage: every predicted ability lies between the player's average and the mean
    own, m = HITS / AT_BATS, float(res.params["m"])
    assert np.all((res.random["phi"] - own) * (res.random["phi"] - m) <= 1e-12)



# --------------------------------------------------------------------------- measurement error

N_ME = 50
MARRIAGE = RNG.normal(size=N_ME)
AGE = -0.7 * MARRIAGE + RNG.normal(scale=0.7, size=N_ME)
DIVORCE_SD = RNG.uniform(0.3, 1.2, size=N_ME)
DIVORCE = (0.1 - 0.2 * MARRIAGE - 0.6 * AGE + RNG.normal(scale=0.5, size=N_ME)
           + DIVORCE_SD * RNG.normal(size=N_ME))


def model_se(marriage, age, divorce_sd, divorce=None):
    a = numpyro.sample("a", dist.Normal(0.0, 0.2))
    bM = numpyro.sample("bM", dist.Normal(0.0, 0.5))
    M = bM * marriage
    bA = numpyro.sample("bA", dist.Normal(0.0, 0.5))
    A = bA * age
    sigma = numpyro.sample("sigma", dist.Exponential(1.0))
    mu = a + M + A
    divorce_rate = numpyro.sample("divorce_rate", dist.Normal(mu, sigma))
    numpyro.sample("obs", dist.Normal(divorce_rate, divorce_sd), obs=divorce)


def _measurement_error_marginal(flat):
    """−(log posterior) of the exact marginal: divorceᵢ ~ N(μᵢ, σ² + sdᵢ²)."""
    a, bM, bA, log_sigma = flat
    sigma = jnp.exp(log_sigma)
    mu = a + bM * MARRIAGE + bA * AGE
    value = (jnp.sum(dist.Normal(mu, jnp.sqrt(sigma ** 2 + DIVORCE_SD ** 2)).log_prob(DIVORCE))
             + dist.Normal(0.0, 0.2).log_prob(a) + dist.Normal(0.0, 0.5).log_prob(bM)
             + dist.Normal(0.0, 0.5).log_prob(bA) + dist.Exponential(1.0).log_prob(sigma))
    return -value


def test_measurement_error_with_the_true_rates_integrated_out_is_exact():
    """The Laplace approximation is exact for this Gaussian model: the MAP of the closed-form
    marginal, and the predictions are the posterior means of the true rates."""
    args = (MARRIAGE, AGE, DIVORCE_SD)
    res = timed("measurement error, random=divorce_rate (MAP)",
                lambda: jm.fit_model(model_se, *args, divorce=DIVORCE, method="map",
                                     random=["divorce_rate"]))
    assert bool(res.converged) and set(res.params) == {"a", "bM", "bA", "sigma"}
    fg = jax.jit(jax.value_and_grad(_measurement_error_marginal))
    opt = scipy.optimize.minimize(lambda x: [np.asarray(v, float) for v in fg(jnp.asarray(x))],
                                  np.zeros(4), jac=True, method="BFGS", options={"gtol": 1e-11})
    a, bM, bA, log_sigma = opt.x
    ref = {"a": a, "bM": bM, "bA": bA, "sigma": np.exp(log_sigma)}
    assert_agrees(res, ref, -opt.fun, float(res.logpost))
    s2 = np.exp(2 * log_sigma)
    mu = a + bM * MARRIAGE + bA * AGE
    blup = (mu / s2 + DIVORCE / DIVORCE_SD ** 2) / (1 / s2 + 1 / DIVORCE_SD ** 2)
    np.testing.assert_allclose(res.random["divorce_rate"], blup, rtol=1e-6, atol=1e-8)
    # jointly over the rates (the tutorial's model run through an optimiser) there is no
    # maximum: σ → 0 with every rate at its mean; said, with σ named
    with pytest.warns(jm.ConvergenceWarning, match=r"\['sigma'\] (ran|run) to the edge"):
        joint = jm.fit_model(model_se, *args, divorce=DIVORCE, method="map", max_iter=300)
    assert not bool(joint.converged)


# --------------------------------------------------------------------------- AR(2)

T_AR = 120
Y_AR = np.zeros(T_AR)
for _t in range(2, T_AR):
    Y_AR[_t] = 0.3 + 0.6 * Y_AR[_t - 1] - 0.25 * Y_AR[_t - 2] + 0.5 * RNG.normal()


def ar2_scan(y):
    alpha_1 = numpyro.sample("alpha_1", dist.Normal(0, 1))
    alpha_2 = numpyro.sample("alpha_2", dist.Normal(0, 1))
    const = numpyro.sample("const", dist.Normal(0, 1))
    sigma = numpyro.sample("sigma", dist.Normal(0, 1))

    def transition(carry, _):
        y_prev, y_prev_prev = carry
        m_t = const + alpha_1 * y_prev + alpha_2 * y_prev_prev
        y_t = numpyro.sample("y", dist.Normal(m_t, sigma))
        carry = (y_t, y_prev)
        return carry, None

    timesteps = jnp.arange(y.shape[0] - 2)
    init = (y[1], y[0])
    with numpyro.handlers.condition(data={"y": y[2:]}):
        scan(transition, init, timesteps)


def ar2_for_loop(y):
    alpha_1 = numpyro.sample("alpha_1", dist.Normal(0, 1))
    alpha_2 = numpyro.sample("alpha_2", dist.Normal(0, 1))
    const = numpyro.sample("const", dist.Normal(0, 1))
    sigma = numpyro.sample("sigma", dist.Normal(0, 1))
    y_prev = y[1]
    y_prev_prev = y[0]
    for i in range(2, len(y)):
        y_t = numpyro.sample(
            "y_{}".format(i),
            dist.Normal(const + alpha_1 * y_prev + alpha_2 * y_prev_prev, sigma),
            obs=y[i])
        y_prev_prev = y_prev
        y_prev = y_t


def _ar2_least_squares(y):
    X = np.column_stack([np.ones(len(y) - 2), y[1:-1], y[:-2]])
    beta, rss = np.linalg.lstsq(X, y[2:], rcond=None)[:2]
    return beta, np.sqrt(rss[0] / (len(y) - 2))


@pytest.mark.parametrize("model", [ar2_scan], ids=["scan"])   # (the loop: bench_models)
def test_ar2_mle_is_least_squares_and_its_map_numpyros_mode(model):
    """The conditional AR(2) MLE is least squares (σ̂² = RSS/n), whether the model is a
    ``scan`` with ``condition`` (NumPyro indexes the observed series with the scan's traced
    step: the NumPy argument reaches the model's host-side run as a JAX array) or a Python
    loop of 118 observed sites; σ ~ Normal(0, 1) is a scale (item 6: its prior mean 0 is no
    start)."""
    kind = "scan" if model is ar2_scan else "loop"
    y = Y_AR if model is ar2_scan else Y_AR[:62]      # (a loop's compile grows with its steps)
    res = timed(f"AR(2), {kind} (MLE)", lambda: jm.fit_model(model, y, method="mle"))
    (const, a1, a2), sigma = _ar2_least_squares(y)
    assert bool(res.converged) and float(res.nobs) == len(y) - 2
    for name, v in {"const": const, "alpha_1": a1, "alpha_2": a2, "sigma": sigma}.items():
        np.testing.assert_allclose(res.params[name], v, rtol=1e-8, atol=1e-10)
    if model is ar2_for_loop:     # (its MAP is the scan's: NumPyro's mode is checked once)
        return
    res = jm.fit_model(model, Y_AR, method="map")
    ref, value = scipy_mode(model, (jnp.asarray(Y_AR),), {}, res, "map")   # NumPyro: no NumPy
    CURRENT[0] = f"AR(2), {kind} (MAP)"
    assert_agrees(res, ref, -value, float(res.logpost))


def test_a_scan_model_refit_on_new_data_reuses_its_programs():
    """Item 10: site discovery of a ``scan`` model is cached per model and arguments, and new
    data of the same length compiles nothing."""
    from test_latency import Compiles

    jm.fit_model(ar2_scan, Y_AR, method="mle")
    with Compiles() as c:
        res = jm.fit_model(ar2_scan, Y_AR[::-1].copy(), method="mle")
    assert c.model() == [] and bool(res.converged)
    (const, a1, a2), sigma = _ar2_least_squares(Y_AR[::-1])
    np.testing.assert_allclose(res.params["alpha_1"], a1, rtol=1e-8)


# --------------------------------------------------------------------------- stochastic volatility

T_SV = 60
_S = np.cumsum(0.15 * RNG.normal(size=T_SV)) - 4.0
RETURNS = np.exp(_S) * RNG.standard_t(6, size=T_SV)


def stochastic_volatility(returns):
    step_size = numpyro.sample("sigma", dist.Exponential(50.0))
    s = numpyro.sample(
        "s", dist.GaussianRandomWalk(scale=step_size, num_steps=jnp.shape(returns)[0]))
    nu = numpyro.sample("nu", dist.Exponential(0.1))
    return numpyro.sample("r", dist.StudentT(df=nu, loc=0.0, scale=jnp.exp(s)),
                          obs=returns)


def check_stochastic_volatility():     # (benchmarks/bench_models.py: the suite's time)
    """The random walk of log-volatilities integrated out (a banded inner Hessian: the
    structure is found and used, no dense fallback), against the dense reference."""
    res = timed("stochastic volatility, random=s (MAP)",
                lambda: jm.fit_model(stochastic_volatility, RETURNS, method="map",
                                     random=["s"]))
    assert bool(res.converged) and set(res.params) == {"sigma", "nu"}
    assert res.random_info.band == 1    # block-tridiagonal
    assert_laplace_agrees(res, stochastic_volatility, (RETURNS,), {}, "s")


# --------------------------------------------------------------------------- ordinal regression

N_ORD = 300
X_ORD = RNG.normal(size=N_ORD)
Y_ORD = np.digitize(1.2 * X_ORD + RNG.logistic(size=N_ORD), [-1.0, 0.8])


def ordinal_flat(X, Y, nclasses=3):
    b_X_eta = numpyro.sample("b_X_eta", dist.Normal(0, 5))
    c_y = numpyro.sample("c_y", dist.ImproperUniform(support=constraints.ordered_vector,
                                                     batch_shape=(), event_shape=(nclasses - 1,)))
    with numpyro.plate("obs", X.shape[0]):
        eta = X * b_X_eta
        numpyro.sample("Y", dist.OrderedLogistic(eta, c_y), obs=Y)


def ordinal_dirichlet(X, Y, nclasses=3):
    b_X_eta = numpyro.sample("b_X_eta", dist.Normal(0, 5))
    c_y = numpyro.sample("c_y", dist.TransformedDistribution(
        dist.Dirichlet(jnp.ones(nclasses)), SimplexToOrderedTransform(0.0)))
    with numpyro.plate("obs", X.shape[0]):
        eta = X * b_X_eta
        numpyro.sample("Y", dist.OrderedLogistic(eta, c_y), obs=Y)


def test_ordinal_regression_equals_statsmodels_and_its_induced_dirichlet_prior():
    """Ordered cut-points (an ``ImproperUniform`` on the ordered vectors): the MLE is
    statsmodels' ordered logit; the tutorial's induced-Dirichlet prior is NumPyro's mode."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    res = timed("ordinal regression, ImproperUniform cut-points (MLE)",
                lambda: jm.fit_model(ordinal_flat, X_ORD, Y_ORD, method="mle"))
    sm = OrderedModel(Y_ORD, X_ORD[:, None], distr="logit").fit(
        method="newton", disp=False, maxiter=200, tol=1e-12)
    # statsmodels: cut-points as c₁, log(c₂ − c₁); the sign of η is the same (P(Y ≤ k) =
    # F(c_k − η))
    cuts = np.cumsum(np.r_[sm.params[1], np.exp(sm.params[2:])])
    assert bool(res.converged)
    np.testing.assert_allclose(res.params["b_X_eta"], sm.params[0], rtol=1e-6)
    np.testing.assert_allclose(res.params["c_y"], cuts, rtol=1e-6)
    np.testing.assert_allclose(float(res.loglik), sm.llf, rtol=0, atol=1e-7)
    np.testing.assert_allclose(res.stderr["b_X_eta"], sm.bse[0], rtol=1e-4)

    res = timed("ordinal regression, induced Dirichlet prior (MAP)",
                lambda: jm.fit_model(ordinal_dirichlet, X_ORD, Y_ORD, method="map"))
    ref, value = scipy_mode(ordinal_dirichlet, (X_ORD, Y_ORD), {}, res, "map")
    assert bool(res.converged) and np.all(np.diff(res.params["c_y"]) > 0)
    assert_agrees(res, ref, -value, float(res.logpost))


# --------------------------------------------------------------------------- numpyro.param

FLIPS = (RNG.uniform(size=40) < 0.3).astype(int)
X_P = RNG.normal(size=60)
Y_P = 1 + 0.5 * X_P + 0.2 * X_P ** 2 + 0.3 * RNG.normal(size=60)


def coin(data):
    f = numpyro.param("fairness", 0.5, constraint=constraints.unit_interval)
    with numpyro.plate("N", data.shape[0]):
        numpyro.sample("obs", dist.Bernoulli(f), obs=data)


def regression_with_params(x, y=None):
    intercept = numpyro.param("intercept", 0.0)
    slope = numpyro.param("slope", jnp.zeros(1))
    scale = numpyro.param("scale", lambda key: jnp.ones(()), constraint=constraints.positive)
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("y", dist.Normal(intercept + slope[0] * x + w * x ** 2, scale), obs=y)


def test_param_sites_are_point_parameters_with_their_constraints():
    """SVI-style models: ``numpyro.param`` sites (initial value or init function,
    constraints) are estimated as plain parameters, without a prior under MAP."""
    res = timed("coin, numpyro.param fairness (MLE)", lambda: jm.fit_model(coin, FLIPS))
    p = FLIPS.mean()
    assert bool(res.converged)
    np.testing.assert_allclose(res.params["fairness"], p, rtol=1e-10)
    np.testing.assert_allclose(res.stderr["fairness"], np.sqrt(p * (1 - p) / FLIPS.size),
                               rtol=1e-7)

    res = timed("regression with param sites and a prior site (MAP)",
                lambda: jm.fit_model(regression_with_params, X_P, y=Y_P, method="map"))
    assert bool(res.converged) and res.params["slope"].shape == (1,)
    assert set(res.params) == {"intercept", "slope", "scale", "w"}
    ref, value = scipy_mode(regression_with_params, (X_P,), {"y": Y_P}, res, "map")
    assert_agrees(res, ref, -value, float(res.logpost))


# --------------------------------------------------------------------------- proportion test

N_PT = 2000
CALLED = RNG.integers(0, 2, N_PT)
MALE = RNG.integers(0, 2, N_PT)
DESIGN = np.column_stack([np.ones(N_PT), CALLED, MALE]).astype(float)
PURCHASED = (RNG.uniform(size=N_PT)
             < 1 / (1 + np.exp(-(-1.0 + 0.3 * CALLED + 0.1 * MALE)))).astype(int)


def proportion_model(design_matrix, outcome=None):
    beta = numpyro.sample("coefficients", dist.MultivariateNormal(
        loc=0.0, covariance_matrix=jnp.eye(design_matrix.shape[1])))
    logits = design_matrix.dot(beta)
    with numpyro.plate("data", design_matrix.shape[0]):
        return numpyro.sample("obs", dist.Bernoulli(logits=logits), obs=outcome)


def test_proportion_test_map_and_mle():
    """A multivariate Normal prior on the coefficients (MAP: NumPyro's mode); the MLE is
    statsmodels' logistic regression."""
    import statsmodels.api as sm

    res = timed("proportion test (MAP)",
                lambda: jm.fit_model(proportion_model, DESIGN, PURCHASED, method="map"))
    # (NumPyro's own density needs the design as a JAX array: NumPy's .dot takes no tracer)
    ref, value = scipy_mode(proportion_model, (jnp.asarray(DESIGN), PURCHASED), {}, res, "map")
    assert bool(res.converged) and res.params["coefficients"].shape == (3,)
    assert_agrees(res, ref, -value, float(res.logpost))
    mle = jm.fit_model(proportion_model, DESIGN, PURCHASED, method="mle")
    peer = sm.Logit(PURCHASED, DESIGN).fit(disp=False, tol=1e-12)
    np.testing.assert_allclose(mle.params["coefficients"], peer.params, rtol=1e-7)
    np.testing.assert_allclose(mle.stderr["coefficients"], peer.bse, rtol=1e-6)
    np.testing.assert_allclose(float(mle.loglik), peer.llf, rtol=0, atol=1e-8)
    # the test itself: the log-odds ratio of calling, its Wald z
    z = float(res.params["coefficients"][1] / res.stderr["coefficients"][1])
    assert z == pytest.approx(float(ref["coefficients"][1]) / float(res.stderr["coefficients"][1]),
                              rel=1e-6)


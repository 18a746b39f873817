"""A corpus of NumPyro models written as their authors write them (after NumPyro's public
examples and tutorials), fitted unedited by ``jm.fit_model``.

Each fit is checked against an independent optimiser on the same objective: scipy's
BFGS, polished by Newton steps (exact gradient, Hessian by its differences), on
NumPyro's own densities from
``numpyro.infer.util`` in float64 — ``log_density`` for MAP (the density of the natural
parameters with no Jacobian term: the point NumPyro's ``AutoDelta`` finds), the observed
sites of ``log_likelihood`` for MLE, ``potential_energy`` (the unconstrained density, with
the Jacobian) for ``laplace()``'s mode. scipy works in the unconstrained coordinates
z = biject_to(support)⁻¹(θ), which moves no mode of a density of θ. Both optimisers stop
at a gradient of ~1e-8·|f| or below, so the estimates agree to a small fraction of a
standard error (``AGREE`` SEs; the error of a mode is ≈ H⁻¹g) and the maximised objective
to ~1e-9 absolute (it is flat to second order at the mode).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density, log_likelihood, potential_energy

import jaxmle as jm
from jaxmle.random.boundary import BoundaryWarning
from shared import SIGMA8, Y8, eight_schools

AGREE = 1e-5            # |θ̂ − θ̂_scipy| / SE
VALUE_ATOL = 1e-8       # |objective − objective_scipy|
TIMES = {}              # model -> (first fit s, warm fit s): the corpus table
AGREEMENT = {}          # model -> (max |θ̂ − θ̂_scipy| / SE, |objective − scipy's|): its columns
CURRENT = [None]        # the model ``timed`` fitted last (whose agreement is recorded)


def timed(name, fit):
    """The fit twice (first: compiles; then warm), both times recorded."""
    CURRENT[0] = name
    t0 = time.perf_counter()
    res = fit()
    t1 = time.perf_counter()
    fit()
    TIMES[name] = (t1 - t0, time.perf_counter() - t1)
    return res


# --------------------------------------------------------------------------- the reference


def scipy_mode(model, args, kwargs, res, kind):
    """The optimum of NumPyro's own density by scipy (BFGS then Newton, float64), in the
    same parameterisation jaxmle reports. ``kind``: "map" (log_density), "mle" (observed sites
    of log_likelihood) or "laplace" (−potential_energy, unconstrained)."""
    supports = {n: _support(model, args, kwargs, res.params, n) for n in res.params}
    transforms = {n: biject_to(s) for n, s in supports.items()}
    z_hat = {n: transforms[n].inv(jnp.asarray(v)) for n, v in res.params.items()}
    flat0, unravel = ravel_pytree(z_hat)

    def objective(flat):
        z = unravel(flat)
        if kind == "laplace":
            return potential_energy(model, args, kwargs, z)
        theta = {n: transforms[n](v) for n, v in z.items()}
        if kind == "map":
            return -log_density(model, args, kwargs, theta)[0]
        obs = log_likelihood(model, theta, *args, batch_ndims=0, **kwargs)
        return -sum(jnp.sum(v) for v in obs.values())

    fg = jax.jit(jax.value_and_grad(objective))

    def get(x):
        f, g = fg(jnp.asarray(x))
        return float(f), np.asarray(g)

    def hessian(x, h=1e-5):   # central differences of the exact gradient
        cols = [(get(x + h * e)[1] - get(x - h * e)[1]) / (2 * h) for e in np.eye(len(x))]
        return 0.5 * (np.array(cols) + np.array(cols).T)

    # started 0.2 away from jaxmle's estimate in every unconstrained coordinate (signs
    # alternating): far from NumPyro's own optimum to the gradient's precision, inside the
    # region where a Normal-prior scale (Titanic's age_sigma) stays positive
    start = np.asarray(flat0) + 0.2 * (-1.0) ** np.arange(np.size(flat0))
    opt = scipy.optimize.minimize(get, start, jac=True, method="BFGS",
                                  options={"gtol": 1e-9, "maxiter": 5000})
    x = opt.x
    for _ in range(3):      # BFGS stops where f's rounding hides progress: Newton steps
        x = x - np.linalg.solve(hessian(x), get(x)[1])     # polish to the gradient's rounding
    f, g = get(x)
    assert np.max(np.abs(g)) < 1e-8 * max(1.0, abs(f)), (opt, g)
    z = unravel(jnp.asarray(x))
    return {n: np.asarray(transforms[n](v)) for n, v in z.items()}, float(f)


def _support(model, args, kwargs, params, name):
    from numpyro import handlers

    tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=params)).get_trace(
        *args, **kwargs)
    site = tr[name]
    if site["type"] == "sample":
        return site["fn"].support
    return site["kwargs"].get("constraint", dist.constraints.real)     # a param site


def agreement(res, ref, scipy_value, value):
    """(max over the estimates of |θ̂ − θ̂_scipy| / SE, |objective − scipy's objective|); an
    estimate without a positive SE (a fixed entry of a Cholesky factor) counts 0 if it is
    within 1e-12, inf if not."""
    worst = 0.0
    for name, v in ref.items():
        diff = np.abs(np.asarray(res.params[name]) - v)
        se = np.asarray(res.stderr[name])
        ok = se > 0
        ratio = np.where(ok, diff / np.where(ok, se, 1.0), np.where(diff <= 1e-12, 0.0, np.inf))
        worst = max(worst, float(np.max(ratio, initial=0.0)))
    return worst, abs(float(value) - float(scipy_value))


def assert_agrees(res, ref, scipy_value, value):
    AGREEMENT[CURRENT[0]] = agreement(res, ref, scipy_value, value)
    for name, v in ref.items():
        se = np.asarray(res.stderr[name])
        diff = np.abs(np.asarray(res.params[name]) - v)
        assert np.all(diff <= AGREE * se + 1e-12), (name, diff / se)
    np.testing.assert_allclose(value, scipy_value, rtol=0, atol=VALUE_ATOL)


# --------------------------------------------------------------------------- divorce


def divorce_model(marriage=None, age=None, divorce=None):
    a = numpyro.sample("a", dist.Normal(0.0, 0.2))
    M, A = 0.0, 0.0
    if marriage is not None:
        bM = numpyro.sample("bM", dist.Normal(0.0, 0.5))
        M = bM * marriage
    if age is not None:
        bA = numpyro.sample("bA", dist.Normal(0.0, 0.5))
        A = bA * age
    sigma = numpyro.sample("sigma", dist.Exponential(1.0))
    mu = a + M + A
    numpyro.sample("obs", dist.Normal(mu, sigma), obs=divorce)


RNG = np.random.default_rng(20261205)
MARRIAGE = RNG.normal(size=50)
AGE = -0.7 * MARRIAGE + RNG.normal(scale=0.7, size=50)
DIVORCE = -0.6 * AGE + RNG.normal(scale=0.8, size=50)


def test_divorce_regression_map_and_laplace():
    kw = dict(marriage=MARRIAGE, age=AGE, divorce=DIVORCE)
    res = timed("divorce (MAP)", lambda: jm.fit_model(divorce_model, method="map", **kw))
    ref, value = scipy_mode(divorce_model, (), kw, res, "map")
    assert bool(res.converged) and set(res.params) == {"a", "bM", "bA", "sigma"}
    assert_agrees(res, ref, -value, float(res.logpost))
    # laplace(): the mode of NumPyro's potential energy (the Jacobian included)
    lap = res.laplace()
    ref, _ = scipy_mode(divorce_model, (), kw, res, "laplace")
    for name, v in ref.items():
        np.testing.assert_allclose(lap.params[name], v, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- eight schools

J = 8


def eight_schools_noncentered(J, sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0, 1))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def test_eight_schools_noncentred_map():
    res = timed("eight schools, non-centred (MAP)",
                lambda: jm.fit_model(eight_schools_noncentered, J, SIGMA8, y=Y8, method="map"))
    ref, value = scipy_mode(eight_schools_noncentered, (J, SIGMA8), {"y": Y8}, res, "map")
    assert bool(res.converged)
    assert_agrees(res, ref, -value, float(res.logpost))
    theta = ref["mu"] + ref["tau"] * ref["theta_tilde"]
    np.testing.assert_allclose(res.deterministic["theta"], theta, rtol=1e-6, atol=1e-6)


def test_eight_schools_centred_with_random_theta_reports_tau_on_its_boundary():
    """Issue 16 items 1 and 8: MAP with random=, and τ̂ = 0 is a boundary, not a stall."""
    with pytest.warns(BoundaryWarning, match="tau estimated on the boundary"):
        res = timed("eight schools, centred, random=theta (MAP)",
                    lambda: jm.fit_model(eight_schools, J, SIGMA8, y=Y8, method="map",
                                         random=["theta"]))
    assert bool(res.converged) and float(res.params["tau"]) == 0.0
    assert np.isnan(res.stderr["tau"])
    # at τ = 0 every θⱼ = μ: the marginal is Π N(yⱼ | μ, σⱼ²) times the priors of μ and τ,
    # whose mode in μ is the precision-weighted mean shrunk by the N(0, 5²) prior, and the
    # SE of μ that of the model at τ = 0 (before the conditional refit, the pseudo-inverse
    # of the joint information, singular along τ, gave 0.27 for the MLE's 4.07)
    w = 1 / SIGMA8 ** 2
    mu = np.sum(w * Y8) / (np.sum(w) + 1 / 25)
    np.testing.assert_allclose(res.params["mu"], mu, rtol=1e-8)
    np.testing.assert_allclose(res.stderr["mu"], 1 / np.sqrt(np.sum(w) + 1 / 25), rtol=1e-6)
    # by MLE from τ = 0.1, Newton runs τ toward 0 until it stalls there with a vanishing
    # gradient: that is the boundary too (it was reported as "gradient is not small")
    with pytest.warns(BoundaryWarning, match="tau estimated on the boundary"):
        mle = jm.fit_model(eight_schools, J, SIGMA8, y=Y8, method="mle", random=["theta"],
                           init={"tau": 0.1})
    assert bool(mle.converged) and float(mle.params["tau"]) == 0.0
    np.testing.assert_allclose(mle.params["mu"], np.sum(w * Y8) / np.sum(w), rtol=1e-8)
    np.testing.assert_allclose(mle.stderr["mu"], 1 / np.sqrt(np.sum(w)), rtol=1e-6)
    # the predictions at τ = 0: every θⱼ is μ, with μ's uncertainty (sdreport)
    np.testing.assert_allclose(mle.random["theta"], mle.params["mu"], rtol=1e-6)
    np.testing.assert_allclose(mle.random_stderr["theta"], mle.stderr["mu"], rtol=1e-5)


# --------------------------------------------------------------------------- UCBadmit

DEPT = np.repeat(np.arange(6), 2)
MALE = np.tile([True, False], 6)                  # boolean, as df["gender"] == "male"
APPLICATIONS = np.array([825, 108, 560, 25, 325, 593, 417, 375, 191, 393, 373, 341])
ADMIT = np.array([512, 89, 353, 17, 120, 202, 138, 131, 53, 94, 22, 24])


def ucbadmit_glmm(dept, male, applications, admit=None):
    v_mu = numpyro.sample("v_mu", dist.Normal(0, jnp.array([4.0, 1.0])))
    sigma = numpyro.sample("sigma", dist.HalfNormal(jnp.ones(2)))
    L_Rho = numpyro.sample("L_Rho", dist.LKJCholesky(2, concentration=2))
    scale_tril = sigma[..., jnp.newaxis] * L_Rho
    # non-centered parameterization
    num_dept = len(np.unique(dept))
    z = numpyro.sample("z", dist.Normal(jnp.zeros((num_dept, 2)), 1))
    v = jnp.dot(scale_tril, z.T).T
    logits = v_mu[0] + v[dept, 0] + (v_mu[1] + v[dept, 1]) * male
    numpyro.sample("admit", dist.Binomial(applications, logits=logits), obs=admit)


def ucbadmit_glm(dept, male, applications, admit=None):
    n_dept = len(np.unique(dept))
    a = numpyro.sample("a", dist.Normal(0, 1.5).expand([n_dept]))
    b_male = numpyro.sample("b_male", dist.Normal(0, 1))
    numpyro.deterministic("male_odds_ratio", jnp.exp(b_male))
    numpyro.sample("admit", dist.Binomial(applications, logits=a[dept] + b_male * male),
                   obs=admit)


def test_ucbadmit_with_boolean_male_and_np_unique():
    args = (DEPT, MALE, APPLICATIONS)
    res = timed("UCBadmit GLM, bool male (MAP)",
                lambda: jm.fit_model(ucbadmit_glm, *args, admit=ADMIT, method="map"))
    ref, value = scipy_mode(ucbadmit_glm, args, {"admit": ADMIT}, res, "map")
    assert bool(res.converged) and res.params["a"].shape == (6,)
    assert_agrees(res, ref, -value, float(res.logpost))
    np.testing.assert_allclose(res.deterministic["male_odds_ratio"], np.exp(ref["b_male"]),
                               rtol=1e-6)
    # the admissions are traced data: new counts reuse the program (dept is a constant)
    admit2 = np.minimum(ADMIT + 5, APPLICATIONS)
    t0 = time.perf_counter()
    res2 = jm.fit_model(ucbadmit_glm, *args, admit=admit2, method="map")
    assert time.perf_counter() - t0 < 2.0 and bool(res2.converged)
    assert not np.allclose(res2.params["a"], res.params["a"])


# --------------------------------------------------------------------------- Titanic

N_T = 150
TITLE = RNG.integers(0, 5, N_T)
PCLASS = RNG.integers(0, 3, N_T)
SEX = RNG.integers(0, 2, N_T)
AGE_T = np.array([-1.2, -0.3, 0.2, 0.5, 1.0])[TITLE] + RNG.normal(scale=0.6, size=N_T)
SURVIVED = (RNG.uniform(size=N_T) < 1 / (1 + np.exp(-(0.5 - 1.0 * SEX + 0.4 * AGE_T
                                                        - 0.5 * PCLASS)))).astype(int)
AGE_T[RNG.uniform(size=N_T) < 0.2] = np.nan                     # missing ages


def titanic(age, pclass, title, sex, survived=None, bayesian_impute=True):
    b_pclass = numpyro.sample("b_Pclass", dist.Normal(0, 1).expand([3]))
    b_title = numpyro.sample("b_Title", dist.Normal(0, 1).expand([5]))
    b_sex = numpyro.sample("b_Sex", dist.Normal(0, 1).expand([2]))
    # impute age by Title
    isnan = np.isnan(age)
    age_nanidx = np.nonzero(isnan)[0]
    if bayesian_impute:
        age_mu = numpyro.sample("age_mu", dist.Normal(0, 1).expand([5]))
        age_mu = age_mu[title]
        age_sigma = numpyro.sample("age_sigma", dist.Normal(0, 1).expand([5]))
        age_sigma = age_sigma[title]
        age_impute = numpyro.sample(
            "age_impute", dist.Normal(age_mu[age_nanidx], age_sigma[age_nanidx]).mask(False))
        age = jnp.asarray(age).at[age_nanidx].set(age_impute)
        numpyro.sample("age", dist.Normal(age_mu, age_sigma), obs=age)
    else:
        age = jnp.where(isnan, 0.0, age)
    a = numpyro.sample("a", dist.Normal(0, 1))
    b_age = numpyro.sample("b_Age", dist.Normal(0, 1))
    logits = a + b_age * age
    logits = logits + b_title[title] + b_pclass[pclass] + b_sex[sex]
    numpyro.sample("survived", dist.Bernoulli(logits=logits), obs=survived)


def test_titanic_imputation_with_nan_ages_and_a_normal_prior_on_a_scale():
    """Issue 16 items 3, 5, 6: np.isnan/np.nonzero on an argument, NaN the model imputes,
    and age_sigma ~ Normal(0, 1) used as a scale (its prior mean 0 is no valid start)."""
    args = (AGE_T, PCLASS, TITLE, SEX)
    res = timed("Titanic imputation, NaN ages (MAP)",
                lambda: jm.fit_model(titanic, *args, survived=SURVIVED, method="map"))
    ref, value = scipy_mode(titanic, args, {"survived": SURVIVED}, res, "map")
    AGREEMENT[CURRENT[0]] = agreement(res, ref, -value, float(res.logpost))
    assert bool(res.converged) and res.params["age_impute"].shape == (np.isnan(AGE_T).sum(),)
    assert np.all(res.params["age_sigma"] > 0)
    np.testing.assert_allclose(float(res.logpost), -value, rtol=0, atol=VALUE_ATOL)
    for name, v in ref.items():
        diff = np.abs(res.params[name] - v) / np.asarray(res.stderr[name])
        assert np.all(diff < AGREE), (name, diff)
    # the imputed ages sit at their title's mean (no other term pulls them but the logit)
    assert float(res.nobs) == 2 * N_T


def titanic_leaky(age, survived=None):
    a = numpyro.sample("a", dist.Normal(0, 1))
    b_age = numpyro.sample("b_Age", dist.Normal(0, 1))
    numpyro.sample("survived", dist.Bernoulli(logits=a + b_age * age), obs=survived)


def titanic_masked(age, survived=None):
    a = numpyro.sample("a", dist.Normal(0, 1))
    b_age = numpyro.sample("b_Age", dist.Normal(0, 1))
    ok = ~np.isnan(age)
    with numpyro.handlers.mask(mask=ok):
        numpyro.sample("survived", dist.Bernoulli(logits=a + b_age * age), obs=survived)


def test_nan_that_reaches_the_likelihood_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model argument\(s\) age contain NaN.* reach the "
                                         r"log-density of site\(s\) 'survived' \(BernoulliLogits: "
                                         r"\d+ terms?\)"):
        jm.fit_model(titanic_leaky, AGE_T, survived=SURVIVED, method="map")
    # masked by handlers.mask, the NaN still poisons the gradient: said so, before compiling
    # the fit
    with pytest.raises(ValueError, match="gradient is not finite at the start"):
        jm.fit_model(titanic_masked, AGE_T, survived=SURVIVED, method="map")


# --------------------------------------------------------------------------- ZIP

N_Z = 200
X_Z = np.column_stack([np.ones(N_Z), RNG.normal(size=N_Z)])
GATE = 1 / (1 + np.exp(-(X_Z @ np.array([-0.5, 0.8]))))
Y_Z = np.where(RNG.uniform(size=N_Z) < GATE, 0, RNG.poisson(np.exp(X_Z @ np.array([1.0, 0.3]))))


def zip_model(X, Y):
    D_X = X.shape[1]
    b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0).expand([D_X]).to_event(1))
    b2 = numpyro.sample("b2", dist.Normal(0.0, 1.0).expand([D_X]).to_event(1))
    q = jax.nn.sigmoid(jnp.matmul(X, b1))
    lam = jnp.exp(jnp.matmul(X, b2))
    with numpyro.plate("obs", X.shape[0], dim=-1):
        numpyro.sample("Y", dist.ZeroInflatedPoisson(gate=q, rate=lam), obs=Y)


def test_zero_inflated_poisson_mle():
    res = timed("zero-inflated Poisson (MLE)", lambda: jm.fit_model(zip_model, X_Z, Y_Z,
                                                                     method="mle"))
    ref, value = scipy_mode(zip_model, (X_Z, Y_Z), {}, res, "mle")
    assert bool(res.converged) and float(res.nobs) == N_Z
    assert_agrees(res, ref, -value, float(res.loglik))


# --------------------------------------------------------------------------- deterministic


def regression_with_deterministic(x, y=None):
    a = numpyro.sample("a", dist.Normal(0, 1))        # integer parameters: an int64 mean
    b = numpyro.sample("b", dist.Normal(0, 1))
    sigma = numpyro.sample("sigma", dist.Exponential(1))
    mu = numpyro.deterministic("mu", a + b * x)
    numpyro.deterministic("n_obs", x.shape[0])       # an integer site
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


XD = RNG.normal(size=30)
YD = 0.5 + 1.2 * XD + RNG.normal(scale=0.5, size=30)


def test_deterministic_sites_with_integer_priors_are_reported():
    """Issue 16 item 2: Normal(0, 1) priors (an integer mean) still give float starts, and
    no deterministic site is dropped."""
    res = timed("regression with deterministic sites, Normal(0, 1) (MAP)",
                lambda: jm.fit_model(regression_with_deterministic, XD, y=YD, method="map"))
    ref, value = scipy_mode(regression_with_deterministic, (XD,), {"y": YD}, res, "map")
    assert_agrees(res, ref, -value, float(res.logpost))
    assert set(res.deterministic) == {"mu", "n_obs"}
    np.testing.assert_allclose(res.deterministic["mu"], ref["a"] + ref["b"] * XD, rtol=1e-6)
    # delta method: Var(a + b·x) = [1, x] Cov(a, b) [1, x]ᵀ
    order = [res.param_names.index(n) for n in ("a", "b")]
    cov = np.asarray(res.cov)[np.ix_(order, order)]
    grad = np.column_stack([np.ones_like(XD), XD])
    np.testing.assert_allclose(res.deterministic_stderr["mu"],
                               np.sqrt(np.einsum("ni,ij,nj->n", grad, cov, grad)), rtol=1e-10)
    assert res.deterministic["n_obs"] == 30 and np.isnan(res.deterministic_stderr["n_obs"])

"""Bad input raises a clear error before compiling; failed fits say so."""

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

import jaxmle as jm
from shared import POS, logistic, normal
from shared import NORMAL_INIT as INIT

X = jnp.array([1.2, 0.3, -0.8, 2.1, 0.7, 1.5, -0.2, 0.9])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_data_is_rejected_with_its_index(bad):
    x = np.asarray(X).copy()
    x[3] = bad
    with pytest.raises(ValueError, match=r"NaN/inf.*index 3"):
        jm.fit(normal, x, init=INIT, constraints=POS)


def test_nonfinite_data_in_a_pytree_names_the_leaf():
    with pytest.raises(ValueError, match="data leaf 'y'"):
        jm.fit(normal, {"y": np.array([1.0, np.nan])}, init=INIT, constraints=POS)


def test_non_numeric_data():
    with pytest.raises(TypeError, match="numeric"):
        jm.fit(normal, np.array(["a", "b"]), init=INIT, constraints=POS)


def test_init_violating_its_constraint():
    with pytest.raises(ValueError, match=r"'sigma'.*violates.*Positive"):
        jm.fit(normal, X, init={"mu": 0.0, "sigma": -1.0}, constraints=POS)


def test_init_on_the_boundary():
    with pytest.raises(ValueError, match=r"'p'.*boundary"):
        jm.fit(lambda p, x: dist.Bernoulli(probs=p["p"]).log_prob(x), jnp.array([0, 1, 1]),
               init={"p": 0.0}, constraints={"p": constraints.unit_interval})


def test_simplex_init_off_the_simplex():
    with pytest.raises(ValueError, match=r"'p'.*violates"):
        jm.fit(lambda p, x: dist.Categorical(probs=p["p"]).log_prob(x), jnp.array([0, 1, 2]),
               init={"p": jnp.array([0.5, 0.5, 0.5])}, constraints={"p": constraints.simplex})


def test_unknown_constraint_name_lists_the_parameters():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sigmaa'\].*\['mu', 'sigma'\]"):
        jm.fit(normal, X, init=INIT, constraints={"sigmaa": constraints.positive})


def test_constraint_that_is_not_a_numpyro_constraint():
    with pytest.raises(TypeError, match="numpyro"):
        jm.fit(normal, X, init=INIT, constraints={"sigma": "positive"})


def test_nonfinite_init_value():
    with pytest.raises(ValueError, match=r"'mu' is not finite"):
        jm.fit(normal, X, init={"mu": np.nan, "sigma": 1.0}, constraints=POS)


def test_loglik_not_finite_at_start():
    def loglik(p, x):
        return jnp.sum(jnp.log(p["a"] - 5.0) - (x - p["a"]) ** 2)

    with pytest.raises(ValueError, match=r"log-likelihood is nan at init"):
        jm.fit(loglik, X, init={"a": 1.0})


def test_loglik_not_differentiable_at_start_names_the_parameter():
    # at x = 0, ∂²/∂scale² (x/scale)**k involves 0**(k-2) = inf: the value and the
    # gradient are finite, the curvature in 'scale' is not (JAX defines ∂/∂k 0**k = 0)
    def loglik(p, x):
        return -jnp.sum((x / p["scale"]) ** p["k"])

    x = jnp.array([0.0, 0.5, 1.2, 2.0])
    with pytest.raises(ValueError, match=r"second derivative.* not finite at init .*\['scale'\]"):
        jm.fit(loglik, x, init={"k": 1.5, "scale": 1.0},
               constraints={"k": constraints.positive, "scale": constraints.positive})


def test_loglik_returning_the_wrong_shape():
    with pytest.raises(ValueError, match=r"scalar .* or a 1-D vector.*\(8, 2\)"):
        jm.fit(lambda p, x: jnp.stack([normal(p, x)] * 2, axis=1), X, init=INIT, constraints=POS)


def test_weights_of_the_wrong_length():
    with pytest.raises(ValueError, match="weights have shape"):
        jm.fit(normal, X, init=INIT, constraints=POS, weights=jnp.ones(5))


def test_weights_need_a_per_observation_loglik():
    with pytest.raises(ValueError, match="per-observation"):
        jm.fit(lambda p, x: jnp.sum(normal(p, x)), X, init=INIT, constraints=POS,
               weights=jnp.ones(8))


def test_negative_weights():
    with pytest.raises(ValueError, match="non-negative"):
        jm.fit(normal, X, init=INIT, constraints=POS, weights=-jnp.ones(8))


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'bfgs'"):
        jm.fit(normal, X, init=INIT, constraints=POS, method="bfgs")


def test_unknown_cov_type():
    with pytest.raises(ValueError, match="unknown cov_type 'hc3'"):
        jm.fit(normal, X, init=INIT, constraints=POS, cov_type="hc3")


def test_non_convergence_is_flagged_and_warned():
    with pytest.warns(jm.ConvergenceWarning, match="did not converge after 2 iterations"):
        res = jm.fit(normal, X, init={"mu": 50.0, "sigma": 0.1}, constraints=POS, max_iter=2)
    assert not res.converged and int(res.n_iter) == 2
    assert "NO:" in str(res.summary())


def test_unbounded_likelihood_does_not_claim_convergence():
    # all observations equal: sigma -> 0 sends the likelihood to +inf
    with pytest.warns(jm.JaxmleWarning):
        res = jm.fit(normal, jnp.ones(5), init=INIT, constraints=POS, max_iter=200)
    assert not res.converged


def test_complete_separation_is_not_reported_as_a_maximum():
    """Separated classes: the likelihood rises towards 0 as the slope goes to infinity.
    Newton's decrement still vanishes (gradient and curvature decay together), so the
    flat-direction check at 3 SEs must catch it (statsmodels raises/warns here too)."""
    x = np.random.default_rng(3).normal(size=30)
    X2 = np.column_stack([np.ones(30), x])
    y = (x > 0).astype(float)
    with pytest.warns(jm.ConvergenceWarning, match="separation"):
        res = jm.fit(logistic, (X2, y), init={"beta": np.zeros(2)})
    assert not res.converged and res.status_message.startswith("the log-likelihood barely")
    # the same model on overlapping classes is a regular maximum
    y[:5] = 1 - y[:5]
    assert jm.fit(logistic, (X2, y), init={"beta": np.zeros(2)}).converged


def test_collinear_covariates_give_nan_se_and_a_warning_naming_them():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=50)
    X2 = np.column_stack([np.ones(50), x1, 2.0 * x1, rng.normal(size=50)])
    y = X2[:, [0, 1, 3]] @ np.array([1.0, 0.5, -0.3]) + rng.normal(size=50)

    def loglik(p, d):
        return dist.Normal(d[0] @ p["beta"], 1.0).log_prob(d[1])

    with pytest.warns(jm.SingularInformationWarning, match=r"singular.*'beta\[1\]', 'beta\[2\]'"):
        res = jm.fit(loglik, (X2, y), init={"beta": jnp.zeros(4)})
    se = np.asarray(res.stderr["beta"])
    assert np.isnan(se[1]) and np.isnan(se[2])
    assert np.all(np.isfinite(se[[0, 3]]))
    assert res.converged  # the likelihood is maximised; only the SEs are undefined
    # the identified combination beta1 + 2 beta2 equals the slope of the reduced model
    b = np.asarray(res.params["beta"])
    reduced = np.linalg.lstsq(X2[:, [0, 1, 3]], y, rcond=None)[0]
    np.testing.assert_allclose([b[0], b[1] + 2 * b[2], b[3]], reduced, rtol=1e-8)
    # and the identified SEs equal the reduced model's
    Xr = X2[:, [0, 1, 3]]
    se_reduced = np.sqrt(np.diag(np.linalg.inv(Xr.T @ Xr)))
    np.testing.assert_allclose(se[[0, 3]], se_reduced[[0, 2]], rtol=1e-6)
    assert "NaN" in str(res.summary()) or "nan" in str(res.summary())

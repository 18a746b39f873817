"""Solvers agree; pytrees, weights and nobs; no recompilation; float32 is reported."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints

import jaxmle as jm
from shared import POS, logistic, normal

RNG = np.random.default_rng(7)
X = RNG.normal(0.5, 1.2, size=50)


@pytest.mark.parametrize("method, rtol", [
    ("newton", 1e-10),                       # quadratic convergence to ~1e-8 SEs
    ("lbfgs", 1e-7),                         # gradient test at 1e-8·(1+|f|)
    (optax.lbfgs(memory_size=5), 1e-7),      # any optax transformation
])
def test_methods_agree_with_the_closed_form(method, rtol):
    res = jm.fit(normal, X, init={"mu": 0.0, "sigma": 1.0}, constraints=POS, method=method)
    assert res.converged
    np.testing.assert_allclose(res.params["mu"], X.mean(), rtol=rtol)
    np.testing.assert_allclose(res.params["sigma"], X.std(), rtol=rtol)
    # SEs come from the exact Hessian at the optimum whatever the optimiser
    np.testing.assert_allclose(res.stderr["mu"], X.std() / np.sqrt(50), rtol=10 * rtol)


def test_adam_with_a_loose_tolerance():
    res = jm.fit(normal, X, init={"mu": 0.0, "sigma": 1.0}, constraints=POS, method="adam",
                 tol=1e-4, max_iter=20000)
    assert res.converged and res.method == "adam"
    # adam stops on the gradient test ‖g‖∞ ≤ 1e-4·(1+|f|): ~1e-3 SEs from the optimum
    np.testing.assert_allclose(res.params["mu"], X.mean(), atol=2e-3 * X.std() / np.sqrt(50))


def test_nested_pytree_parameters_and_names():
    rng = np.random.default_rng(1)
    Xd = np.column_stack([np.ones(40), rng.normal(size=(40, 2))])
    y = Xd @ np.array([1.0, -1.0, 0.5]) + rng.normal(scale=0.5, size=40)

    def loglik(p, d):
        return dist.Normal(d["X"] @ p["mean"]["beta"], p["noise"]).log_prob(d["y"])

    init = {"noise": 1.0, "mean": {"beta": jnp.zeros(3)}}
    res = jm.fit(loglik, {"X": Xd, "y": y}, init=init, constraints={"noise": constraints.positive})
    assert res.param_names == ("mean.beta[0]", "mean.beta[1]", "mean.beta[2]", "noise")
    assert res.params["mean"]["beta"].shape == (3,) and res.stderr["noise"].shape == ()
    np.testing.assert_allclose(res.params["mean"]["beta"], np.linalg.lstsq(Xd, y, rcond=None)[0],
                               rtol=1e-9)
    ci = res.confint()
    assert set(ci) == set(res.param_names)
    lo, hi = ci["noise"]
    est = float(res.params["noise"])
    np.testing.assert_allclose([est - lo, hi - est], 1.959963984540054 * float(res.stderr["noise"]),
                               rtol=1e-12)
    assert ci["noise"][0] < res.confint(level=0.9)["noise"][0]


def test_weights_multiply_terms_and_zero_weights_mask_padding():
    x = X[:20]
    padded = np.concatenate([x, np.full(5, 1e6)])
    w = np.concatenate([np.ones(20), np.zeros(5)])
    res = jm.fit(normal, padded, init={"mu": 0.0, "sigma": 1.0}, constraints=POS, weights=w)
    ref = jm.fit(normal, x, init={"mu": 0.0, "sigma": 1.0}, constraints=POS)
    np.testing.assert_allclose(res.params["mu"], ref.params["mu"], rtol=1e-10)
    np.testing.assert_allclose(res.stderr["sigma"], ref.stderr["sigma"], rtol=1e-8)
    assert float(res.nobs) == 20 and float(ref.nobs) == 20
    # integer weights act as frequency weights: the same as repeating rows
    w2 = np.where(np.arange(20) < 5, 2.0, 1.0)
    dup = jm.fit(normal, np.concatenate([x, x[:5]]), init={"mu": 0.0, "sigma": 1.0},
                 constraints=POS)
    res2 = jm.fit(normal, x, init={"mu": 0.0, "sigma": 1.0}, constraints=POS, weights=w2)
    np.testing.assert_allclose(res2.params["sigma"], dup.params["sigma"], rtol=1e-10)
    np.testing.assert_allclose(res2.loglik, dup.loglik, rtol=1e-12)


def test_scalar_loglik_takes_nobs_from_the_data():
    res = jm.fit(lambda p, x: jnp.sum(normal(p, x)), X, init={"mu": 0.0, "sigma": 1.0},
                 constraints=POS)
    assert float(res.nobs) == 50
    np.testing.assert_allclose(res.params["mu"], X.mean(), rtol=1e-10)


TRACES = []


def counted(p, x):
    TRACES.append(1)  # runs only while JAX traces the function
    return dist.Normal(p["mu"], p["sigma"]).log_prob(x)


def test_second_fit_of_same_shaped_data_does_not_recompile():
    jm.fit(counted, X, init={"mu": 0.0, "sigma": 1.0}, constraints=POS)
    traced = len(TRACES)
    assert traced > 0
    for shift in (1.0, 2.0):
        res = jm.fit(counted, X + shift, init={"mu": shift, "sigma": 2.0}, constraints=POS,
                     tol=1e-9, max_iter=300)
        np.testing.assert_allclose(res.params["mu"], X.mean() + shift, rtol=1e-10)
    assert len(TRACES) == traced, "a same-shape refit re-traced the log-likelihood"
    # a new shape compiles once more, as it must
    jm.fit(counted, X[:10], init={"mu": 0.0, "sigma": 1.0}, constraints=POS)
    assert len(TRACES) > traced


def test_result_is_an_immutable_pytree():
    res = jm.fit(normal, X, init={"mu": 0.0, "sigma": 1.0}, constraints=POS)
    with pytest.raises(Exception):
        res.loglik = 0.0
    leaves, treedef = jax.tree_util.tree_flatten(res)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert again.param_names == res.param_names and again.method == "newton"
    # the summary is plain text with every parameter and the fit statistics
    text = str(res.summary())
    for word in ("mu", "sigma", "Log-likelihood", "AIC", "BIC", "P>|z|", "Converged", "yes"):
        assert word in text


def test_float32_fit_says_its_standard_errors_are_float32(tmp_path):
    script = tmp_path / "f32.py"
    script.write_text(
        "import warnings, numpy as np, numpyro.distributions as dist\n"
        "from numpyro.distributions import constraints\n"
        "import jaxmle as jm\n"
        "x = np.random.default_rng(0).normal(3, 2, 50)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    r = jm.fit(lambda p, x: dist.Normal(p['mu'], p['sigma']).log_prob(x), x,\n"
        "               init={'mu': 0.0, 'sigma': 1.0}, constraints={'sigma': constraints.positive})\n"
        "print(r.dtype, r.converged, abs(float(r.params['mu']) - x.mean()) < 1e-4)\n"
        "print(any(issubclass(x.category, jm.PrecisionWarning) for x in w))\n"
        "print(r.summary())\n")
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout
    assert out.splitlines()[0] == "float32 True True"
    assert out.splitlines()[1] == "True"
    assert "float32-accurate only" in out and "jax_enable_x64" in out


def test_logistic_from_exact_zeros_is_not_fooled_by_the_kink_at_logit_zero():
    # NumPyro's Bernoulli(logits=0) has a wrong derivative exactly at 0 (max/abs ties);
    # the solver starts 2e-13 away, so Newton takes its usual few steps.
    rng = np.random.default_rng(42)
    Xd = np.column_stack([np.ones(300), rng.normal(size=(300, 2))])
    y = (rng.random(300) < 0.4).astype(float)
    res = jm.fit(logistic, (Xd, y), init={"beta": jnp.zeros(3)})
    assert res.converged and int(res.n_iter) <= 8
    prob = 1 / (1 + np.exp(-Xd @ np.asarray(res.params["beta"])))
    np.testing.assert_allclose(Xd.T @ (y - prob), 0, atol=1e-6)


class _ArrayLike:
    """Stands for a pandas Series: not a JAX type, but convertible with np.asarray."""

    def __init__(self, values):
        self.values = np.asarray(values)

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)


def test_array_like_data_is_accepted():
    res = jm.fit(normal, {"x": _ArrayLike(X)}["x"], init={"mu": 0.0, "sigma": 1.0},
                 constraints=POS)
    np.testing.assert_allclose(res.params["mu"], X.mean(), rtol=1e-10)

"""Ill-conditioned and badly scaled fits (issue 15, items 1 and 3).

* Badly scaled parameters: the Newton scales its Hessian to unit diagonal before the
  eigen-decomposition; the scaling's floor used to be 1e-12 of the largest diagonal
  entry, so where the diagonal spans more than 12 orders of magnitude (a regression on a
  large-offset covariate with σ free) the small coordinates were not scaled, looked
  numerically null, and the Newton's step along them was floored to a crawl (max_iter).
* Large offsets: y ~ 1 + x with x = c + N(0, 1): the estimates must be right (to a small
  fraction of a standard error) and the fit converged. The standard errors are as good
  as the autodiff information matrix allows: H = XᵀX/σ², summed in float64, loses about
  c²·ε of relative accuracy in its Schur complement (measured: inverting the autodiff H
  exactly gives the same SE error as jaxmle's), so beyond c ~ 1e4 the SEs are only
  accurate to ~c²·ε·n-ish; no factorisation of that H can do better. This is checked at
  c = 1e4 (1e-5) and only loosely above.
* A stationary point with singular information (two merged exponential terms) is not
  accepted before probing along its null direction: the fit escapes to the optimum.
"""

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import jaxmle as jm  # noqa: E402

N = 2000


def regression(p, d):
    return dist.Normal(d["X"] @ p["b"], p["sigma"]).log_prob(d["y"])


def qr_reference(X, y):
    """Householder QR: b and the MLE standard errors (σ² = RSS/n)."""
    q, r = np.linalg.qr(X)
    b = np.linalg.solve(r, q.T @ y)
    res = y - X @ b
    rinv = np.linalg.inv(r)
    return b, np.sqrt(res @ res / len(y) * np.sum(rinv**2, axis=1))


def offset_data(offset, seed=0):
    rng = np.random.default_rng(seed)
    x = offset + rng.normal(size=N)
    X = np.column_stack([np.ones(N), x])
    return X, 1 + 2 * x + rng.normal(size=N)


def fit_regression(X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("error", jm.ConvergenceWarning)
        # at the largest offsets the information's smallest eigenvalue is near rounding:
        # NaN SEs with this warning are an honest outcome there
        warnings.simplefilter("ignore", jm.SingularInformationWarning)
        return jm.fit(regression, {"X": X, "y": y},
                      init={"b": jnp.zeros(X.shape[1]), "sigma": 1.0},
                      constraints={"sigma": constraints.positive}, method="newton")


@pytest.mark.parametrize("offset", [1e4, 1e6, 4e6])
def test_large_offset_regression_converges_to_the_qr_estimates(offset):
    """Before the scaling floor was lowered, offset 4e6 ran to max_iter 2 SE away."""
    X, y = offset_data(offset)
    b_ref, se_ref = qr_reference(X, y)
    res = fit_regression(X, y)
    assert bool(res.converged)
    b = np.asarray(res.params["b"])
    assert np.max(np.abs(b - b_ref) / se_ref) < 1e-3
    se = np.asarray(res.stderr["b"])
    # the autodiff information's own accuracy: ~2e-6 at 1e4, percent level at 1e6; at 4e6
    # (measured 3%-26% depending on the data) nothing is asserted: see the module docstring
    if offset <= 1e6:
        assert np.all(np.isfinite(se))
        assert np.max(np.abs(se / se_ref - 1)) < (1e-5 if offset <= 1e4 else 0.3)


def test_pontius_with_sigma_free_converges_with_accurate_standard_errors():
    """NIST Pontius (columns 1, x, x² with x up to 3e6; the information's diagonal spans
    ~25 orders of magnitude) with σ free: max_iter and NaN SEs before, now converged with
    the certified estimates and SEs."""
    from nist_problems import load_linear, lre

    p = load_linear("Pontius")
    res = jm.fit(regression, {"X": p.X, "y": p.y},
                 init={"b": jnp.zeros(p.k), "sigma": float(np.sqrt(p.y @ p.y / p.n))},
                 constraints={"sigma": constraints.positive}, method="newton")
    assert bool(res.converged)
    assert np.min(lre(np.asarray(res.params["b"]), p.certified_params)) >= 8
    se = np.asarray(res.stderr["b"]) * np.sqrt(p.n / (p.n - p.k))
    assert np.min(lre(se, p.certified_se)) >= 8


def two_exponentials(p, d):
    mean = p["a"][0] * jnp.exp(-p["r"][0] * d["x"]) + p["a"][1] * jnp.exp(-p["r"][1] * d["x"])
    return dist.Normal(mean, 1e-3).log_prob(d["y"])


def test_escape_from_merged_exponential_terms():
    """Started exactly where the two rates are equal (b2 = b4, a stationary point for the
    best single exponential whatever the split of the amplitudes, with singular
    information), the Newton probes along the null direction and reaches the two-term
    optimum."""
    x = np.linspace(0.0, 1.2, 24)
    y = 0.5 * np.exp(-1.0 * x) + 1.5 * np.exp(-4.0 * x)
    y = y + 1e-3 * np.random.default_rng(3).normal(size=x.size)
    data = {"x": x, "y": y}
    # the best single exponential A·e^(−r·x), then split A into a merged pair
    single = jm.fit(lambda p, d: dist.Normal(p["A"] * jnp.exp(-p["r"] * d["x"]), 1e-3)
                    .log_prob(d["y"]), data, init={"A": 2.0, "r": 2.0}, method="newton")
    A, r = float(single.params["A"]), float(single.params["r"])
    init = {"a": jnp.array([-0.3 * A, 1.3 * A]), "r": jnp.array([r, r])}
    res = jm.fit(two_exponentials, data, init=init, method="newton")
    assert bool(res.converged)
    rates = np.sort(np.asarray(res.params["r"]))
    np.testing.assert_allclose(rates, [1.0, 4.0], rtol=0.1)
    assert float(res.loglik) > float(single.loglik) + 10

"""MAP = penalised maximum likelihood: Normal priors are L2 (weight decay), Laplace priors L1.

A logistic regression with 8 correlated covariates, 3 of which do nothing:

* MLE;
* MAP with Normal(0, s) priors on the weights, which is the L2-penalised (weight
  decay) fit  max ℓ(β) − λ‖β‖²  with λ = 1/(2s²) on the log-likelihood *sum* —
  shown by fitting the penalised likelihood written by hand, and scikit-learn's
  L2 logistic regression with C = s² when it is installed;
* MAP with Laplace(0, b) priors, which is the lasso-type L1 fit  max ℓ(β) − ‖β‖₁/b:
  coefficients the penalty wins come out exactly 0 (a proximal Newton step), for a
  path of prior scales b.

Run:  python examples/map_regularisation.py
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import jaxmle as jm  # noqa: E402


def simulate(n=400, seed=3):
    rng = np.random.default_rng(seed)
    cov = 0.5 ** np.abs(np.subtract.outer(np.arange(8), np.arange(8)))   # AR(1) correlation
    X = rng.multivariate_normal(np.zeros(8), cov, size=n)
    beta = np.array([1.2, -0.8, 0.0, 0.6, 0.0, 0.0, -0.4, 0.3])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta - 0.5)))).astype(float)
    return X, y


def loglik(p, data):
    X, y = data
    return dist.Bernoulli(logits=X @ p["beta"] + p["a"]).log_prob(y)


def make_penalised(lam):
    def penalised(p, data):   # ℓ(β) − λ‖β‖², written by hand: the weight-decay objective
        return jnp.sum(loglik(p, data)) - lam * jnp.sum(p["beta"] ** 2)
    return penalised


def main():
    X, y = simulate()
    init = {"a": 0.0, "beta": np.zeros(8)}
    mle = jm.fit(loglik, (X, y), init)

    s = 0.5
    lam = 1 / (2 * s**2)
    ridge_map = jm.fit(loglik, (X, y), init, priors={"beta": dist.Normal(0.0, s)})
    print(ridge_map.summary())
    ridge_pen = jm.fit(make_penalised(lam), (X, y), init)
    rows = {"MLE": mle.params["beta"], f"MAP Normal(0, {s})": ridge_map.params["beta"],
            f"penalised, λ = 1/(2s²) = {lam:g}": ridge_pen.params["beta"]}
    try:
        from sklearn.linear_model import LogisticRegression

        ref = LogisticRegression(C=s**2, tol=1e-10, max_iter=10_000).fit(X, y)
        rows[f"scikit-learn L2, C = s² = {s**2:g}"] = ref.coef_[0]
    except ImportError:
        pass
    print("\nL2 = Normal prior (weights β₀..β₇):")
    for name, b in rows.items():
        print(f"  {name:<34}" + " ".join(f"{v:8.4f}" for v in np.asarray(b)))
    gap = np.max(np.abs(np.asarray(ridge_map.params["beta"]) - np.asarray(ridge_pen.params["beta"])))
    print(f"  max |MAP − penalised| = {gap:.1e}")

    print("\nL1 = Laplace prior: exact zeros along a path of prior scales b (C = b in scikit-learn):")
    print(f"  {'b':>6}  {'zeros':>5}  " + " ".join(f"{'β' + str(j):>8}" for j in range(8)))
    for b in (1.0, 0.1, 0.03, 0.01, 0.005):
        fit = jm.fit(loglik, (X, y), init, priors={"beta": dist.Laplace(0.0, b)})
        beta = np.asarray(fit.params["beta"])
        print(f"  {b:6.3f}  {int(np.sum(beta == 0)):5d}  " + " ".join(f"{v:8.4f}" for v in beta))


if __name__ == "__main__":
    main()

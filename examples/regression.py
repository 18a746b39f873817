"""Logistic and Poisson regression as maximum likelihood, compared with statsmodels.

Run: python examples/regression.py
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import jaxmle as jm  # noqa: E402


def logistic(p, data):
    X, y = data
    return dist.Bernoulli(logits=X @ p["beta"]).log_prob(y)  # per-observation terms


def poisson(p, data):
    X, y = data
    return dist.Poisson(jnp.exp(X @ p["beta"])).log_prob(y)


def simulate(rng, n=500):
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 3))])
    eta = X @ np.array([-0.3, 0.8, -0.5, 0.2])
    y_binary = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    y_count = rng.poisson(np.exp(0.5 * eta)).astype(float)
    return X, y_binary, y_count


def compare_with_statsmodels(res, model_cls, X, y):
    try:
        import statsmodels.api as sm
    except ImportError:
        print("(install statsmodels to compare)")
        return
    ref = getattr(sm, model_cls)(y, X).fit(disp=0)
    est = np.asarray(res.params["beta"])
    print(f"  max |jaxmle - statsmodels| params: {np.max(np.abs(est - ref.params)):.2e}, "
          f"std errors: {np.max(np.abs(np.asarray(res.stderr['beta']) - ref.bse)):.2e}, "
          f"log-likelihood: {abs(float(res.loglik) - ref.llf):.2e}")


def main():
    X, y_binary, y_count = simulate(np.random.default_rng(42))
    for title, loglik, y, peer in [("Logistic regression", logistic, y_binary, "Logit"),
                                   ("Poisson regression", poisson, y_count, "Poisson")]:
        res = jm.fit(loglik, (X, y), init={"beta": jnp.zeros(X.shape[1])})
        print(f"\n{title}")
        print(res.summary())
        compare_with_statsmodels(res, peer, X, y)


if __name__ == "__main__":
    main()

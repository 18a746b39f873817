"""The showcase behind ``jaxmle demo``: textbook maximum-likelihood estimates,
each fitted with :func:`jaxmle.fit` and checked against its closed form.

Run it with ``jaxmle demo`` or ``python -m jaxmle.demo``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Case(NamedTuple):
    title: str
    explanation: str
    run: Callable[[], tuple]  # -> (FitResult, {quantity: (jaxmle value, closed form)})


def _coin():
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    import jaxmle as jm

    tosses = jnp.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1])  # 7 heads in 10

    def loglik(p, x):
        return dist.Bernoulli(probs=p["p"]).log_prob(x)

    res = jm.fit(loglik, tosses, init={"p": 0.5}, constraints={"p": constraints.unit_interval})
    return res, {"p": (res.params["p"], 0.7), "SE(p)": (res.stderr["p"], np.sqrt(0.21 / 10))}


def _heights():
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    import jaxmle as jm

    heights = jnp.array([160., 162., 165., 167., 170., 172., 175., 177., 180., 182.])

    def loglik(p, x):
        return dist.Normal(p["mu"], p["sigma"]).log_prob(x)

    res = jm.fit(loglik, heights, init={"mu": 150.0, "sigma": 10.0},
                 constraints={"sigma": constraints.positive})
    return res, {"mu": (res.params["mu"], 171.0),
                 "sigma^2 (divide by n)": (res.params["sigma"] ** 2, 51.0),
                 "SE(mu) = sigma/sqrt(n)": (res.stderr["mu"], np.sqrt(51.0 / 10))}


def _categorical():
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    import jaxmle as jm

    draws = jnp.array([1, 2, 1, 3, 4, 2, 1, 1, 3, 2, 1, 4, 3, 2, 1, 4, 1, 3, 2, 1]) - 1

    def loglik(p, x):
        return dist.Categorical(probs=p["p"]).log_prob(x)

    res = jm.fit(loglik, draws, init={"p": jnp.full(4, 0.25)}, constraints={"p": constraints.simplex})
    expected = np.array([0.40, 0.25, 0.20, 0.15])
    se = np.sqrt(expected * (1 - expected) / 20)
    return res, {"p": (res.params["p"], expected), "SE(p) = sqrt(p(1-p)/n)": (res.stderr["p"], se)}


def _regression_data():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(200), rng.normal(size=(200, 2))])
    return rng, x


def _linear():
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    import jaxmle as jm

    rng, x = _regression_data()
    y = x @ np.array([1.0, 2.0, -0.5]) + rng.normal(scale=0.7, size=200)

    def loglik(p, d):
        X, y = d
        return dist.Normal(X @ p["beta"], p["sigma"]).log_prob(y)

    res = jm.fit(loglik, (x, y), init={"beta": jnp.zeros(3), "sigma": 1.0},
                 constraints={"sigma": constraints.positive})
    beta_ls, rss = np.linalg.lstsq(x, y, rcond=None)[:2]
    return res, {"beta (least squares)": (res.params["beta"], beta_ls),
                 "sigma^2 = MSE = RSS/n": (res.params["sigma"] ** 2, rss[0] / 200)}


def _logistic():
    import jax.numpy as jnp
    import numpyro.distributions as dist

    import jaxmle as jm

    rng, x = _regression_data()
    y = (rng.random(200) < 1 / (1 + np.exp(-(x @ np.array([-0.5, 1.5, -1.0]))))).astype(float)

    def loglik(p, d):
        X, y = d
        return dist.Bernoulli(logits=X @ p["beta"]).log_prob(y)

    res = jm.fit(loglik, (x, y), init={"beta": jnp.zeros(3)})
    prob = 1 / (1 + np.exp(-(x @ np.asarray(res.params["beta"]))))
    cross_entropy = -np.mean(y * np.log(prob) + (1 - y) * np.log1p(-prob))
    return res, {"-loglik/n = mean cross-entropy": (-float(res.loglik) / 200, cross_entropy)}


CASES = (
    Case("Coin: 7 heads in 10 tosses (Bernoulli)",
         "The MLE of p is the sample fraction; SE = sqrt(p(1-p)/n).", _coin),
    Case("Heights (Normal)",
         "The MLE of mu is the mean; of sigma^2, the biased (divide-by-n) variance.", _heights),
    Case("Categorical draws on the simplex",
         "The MLE is the vector of relative frequencies; its covariance is p_i(d_ij - p_j)/n.",
         _categorical),
    Case("Linear regression as Gaussian MLE",
         "Maximising the Normal likelihood = least squares (minimum MSE).", _linear),
    Case("Logistic regression as Bernoulli MLE",
         "Maximising the Bernoulli likelihood = minimising the cross-entropy.", _logistic),
)


def _fmt(value) -> str:
    return np.array2string(np.asarray(value, dtype=float), precision=6, suppress_small=True)


def run(print_fn: Callable[[str], None] = print) -> bool:
    """Fit every case, print its summary and closed-form check; True if all agree."""
    all_ok = True
    for i, case in enumerate(CASES, 1):
        res, checks = case.run()
        print_fn(f"\n{i}. {case.title}\n   {case.explanation}\n")
        print_fn(str(res.summary()))
        for name, (got, expected) in checks.items():
            ok = np.allclose(np.asarray(got, float), np.asarray(expected, float), rtol=1e-6, atol=1e-9)
            all_ok &= ok
            print_fn(f"   {name:<34} jaxmle {_fmt(got):<40} expected {_fmt(expected)}  "
                     f"{'OK' if ok else 'MISMATCH'}")
    return all_ok


def main() -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    ok = run()
    print("\nAll textbook answers reproduced." if ok else "\nSome answers did not match!")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

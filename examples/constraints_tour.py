"""Constrained parameters: a simplex, an ordered vector and a covariance matrix.

The optimiser works in NumPyro's unconstrained coordinates; estimates, standard
errors and covariances are reported for the natural parameters (delta method).

Run: python examples/constraints_tour.py
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import jaxmle as jm  # noqa: E402


def dice(p, rolls):
    return dist.Categorical(probs=p["p"]).log_prob(rolls)


def ordinal_logit(p, data):
    """Proportional-odds model: P(y ≤ j) = sigmoid(c_j − xβ), cut points ordered."""
    x, y = data
    return dist.OrderedLogistic(x * p["beta"], p["cut"]).log_prob(y)


def gaussian(p, y):
    return dist.MultivariateNormal(p["mean"], covariance_matrix=p["cov"]).log_prob(y)


def main():
    rng = np.random.default_rng(1)

    rolls = rng.choice(6, size=600, p=[0.1, 0.1, 0.1, 0.1, 0.1, 0.5])
    res = jm.fit(dice, rolls, init={"p": jnp.full(6, 1 / 6)}, constraints={"p": constraints.simplex})
    print("A loaded die: probabilities on the simplex")
    print(res.summary())

    x = rng.normal(size=800)
    latent = 1.2 * x + rng.logistic(size=800)
    y = np.digitize(latent, [-1.0, 0.5, 2.0])
    res = jm.fit(ordinal_logit, (x, y), init={"beta": 0.0, "cut": jnp.array([-1.0, 0.0, 1.0])},
                 constraints={"cut": constraints.ordered_vector})
    print("\nOrdinal logistic regression: ordered cut points (true -1, 0.5, 2; slope 1.2)")
    print(res.summary())

    cov = np.array([[1.0, 0.8], [0.8, 2.0]])
    ys = rng.multivariate_normal([0.0, 1.0], cov, size=300)
    res = jm.fit(gaussian, ys, init={"mean": jnp.zeros(2), "cov": jnp.eye(2)},
                 constraints={"cov": constraints.positive_definite})
    print("\nBivariate Normal: the covariance MLE is the divide-by-n sample covariance")
    print(res.summary())
    print("np.cov(bias=True):\n", np.cov(ys.T, bias=True))


if __name__ == "__main__":
    main()

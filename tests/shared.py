"""Log-likelihoods and data shared by the test files.

The suite is compile-bound. jaxmle keeps a model's compiled programs per log-likelihood
*function object* (and per data shape and options): two files that each define the same
``def normal(p, x)`` trace, lower and compile the same programs twice in one worker
process, while one shared module-level function does it once. (The persistent
compilation cache that ``conftest.py`` turns on catches an identical program compiled
from another function object, but not the tracing and lowering before it.) So the common
models live here, once, with the data shapes most tests use:

* ``normal``: Normal(mu, sigma) for a sample ``x`` (``NORMAL_INIT``, ``POS``), and
  ``normal_known_sigma``: Normal(mu, 2);
* ``logit`` / ``poisson_reg``: logistic and Poisson regression on ``{"X": X, "y": y}``;
* ``logistic``: logistic regression on a tuple ``(X, y)`` (NumPyro's Bernoulli);
* ``gamma``: Gamma(shape, rate) for a sample ``x`` (``GAMMA_INIT``, ``GAMMA_CONS``);
* ``zip_poisson``: the zero-inflated Poisson (``ZIP_CONS``).

Data sizes: jaxmle pads the observations to a bucket (the next power of two), so a
program is shared by every n in one bucket; ``logit`` is fitted to n = 200 (3 columns),
300 or 400 (4 columns) and 500 (5 columns).

Tests whose point is that a function is traced once (a counter inside it) keep their
own function: its trace count must not depend on which other tests ran first.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

POS = {"sigma": constraints.positive}
NORMAL_INIT = {"mu": 0.0, "sigma": 1.0}
GAMMA_CONS = {"shape": constraints.positive, "rate": constraints.positive}
GAMMA_INIT = {"shape": 1.0, "rate": 1.0}


def normal(p, x):
    return dist.Normal(p["mu"], p["sigma"]).log_prob(x)


def normal_known_sigma(p, x):
    return dist.Normal(p["mu"], 2.0).log_prob(x)


def logit(p, d):
    # By hand rather than dist.Bernoulli(logits=...): NumPyro's version fails under
    # jax_numpy_dtype_promotion="strict" (bool/float promotion inside NumPyro).
    eta = d["X"] @ p["beta"]
    return d["y"] * eta - jnp.logaddexp(0.0, eta)


def poisson_reg(p, d):
    return dist.Poisson(jnp.exp(d["X"] @ p["beta"])).log_prob(d["y"])


def logistic(p, data):
    X, y = data
    return dist.Bernoulli(logits=X @ p["beta"]).log_prob(y)


def gamma(p, x):
    return dist.Gamma(p["shape"], p["rate"]).log_prob(x)


def zip_poisson(p, y):
    """Zero-inflated Poisson: with probability pi a structural zero."""
    log_pois = dist.Poisson(p["rate"]).log_prob(y)
    zero = jnp.logaddexp(jnp.log(p["pi"]), jnp.log1p(-p["pi"]) + log_pois)
    return jnp.where(y == 0, zero, jnp.log1p(-p["pi"]) + log_pois)


ZIP_CONS = {"rate": constraints.positive, "pi": constraints.unit_interval}


def design(rng, n, k):
    """An intercept column and ``k`` standard-normal covariates."""
    return np.column_stack([np.ones(n), rng.normal(size=(n, k))])


def suite_xla_flags() -> str:
    """The suite's XLA flags for a subprocess (its optimisation level: ``conftest.py``),
    without any device count the parent may carry."""
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                    if "optimization_level" in f)


def private_cache_env(env, name):
    """``env`` with a persistent-cache directory of its own for one of several processes
    that run at the same time (``name`` tells them apart): JAX writes cache entries in
    place, so concurrent processes must not share a directory (see ``conftest.py``)."""
    base = os.environ.get("JAXMLE_CACHE_DIR")
    if not base:
        return env
    path = os.path.join(base + "-concurrent", name)
    os.makedirs(path, exist_ok=True)
    return dict(env, JAXMLE_CACHE_DIR=path)


# --------------------------------------------------------------------------- NumPyro models

# The classic eight-schools data (Rubin 1981) and the centred model as NumPyro's
# documentation writes it (its MAP has no maximum: τ → 0 makes the density unbounded).
Y8 = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA8 = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(J, sigma, y=None):
    import numpyro

    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)

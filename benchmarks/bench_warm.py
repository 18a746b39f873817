"""Warm single-fit time and fit_batch throughput of the checkout on PYTHONPATH (issue 15's
"not worse than 10%" targets): Normal(μ, σ) n = 100 and logistic regression n = 1000,
p = 6 by ``jm.fit`` (host driver; median over new datasets of the same shape, after 10
warm-up fits and any background compilation they started; fewer than 200 fits per model, below the host driver's tier-up), and
``jm.fit_batch`` at B = 10,000 (Normal n = 100; logistic n = 200, p = 6; best of 3 warm
calls).

Usage: ``PYTHONPATH=<checkout> python3 benchmarks/bench_warm.py LABEL`` prints one
markdown row; run it for each checkout, interleaved, in the same minutes.
"""
import sys
import time
import warnings

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import jaxmle as jm  # noqa: E402

warnings.simplefilter("ignore")
POS = {"sigma": constraints.positive}
BETA = np.array([0.5, 1.0, -1.0, 0.5, 0.0, 0.2])


def normal(p, x):
    return dist.Normal(p["mu"], p["sigma"]).log_prob(x)


def logistic(p, d):
    X, y = d
    eta = X @ p["beta"]
    return y * eta - jnp.logaddexp(0.0, eta)


def design(rng, shape):
    X = np.concatenate([np.ones(shape + (1,)), rng.normal(size=shape + (5,))], -1)
    y = (rng.uniform(size=shape) < 1 / (1 + np.exp(-X @ BETA))).astype(float)
    return X, y


def warm_single(fit, datasets):
    for d in datasets[:10]:
        fit(d)
    try:   # the shared solver step compiles in the background after a first fit (fits
        # meanwhile run its NumPy twin): time the steady state
        from jaxmle.fitting.host import wait_solvers
    except ImportError:   # an older checkout: nothing runs in the background
        pass
    else:
        wait_solvers()
    times = []
    for d in datasets[10:]:
        t = time.perf_counter()
        fit(d)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def throughput(call, B):
    call()
    best = min(_timed(call) for _ in range(3))
    return B / best


def _timed(call):
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


def main(label):
    rng = np.random.default_rng(0)
    xs = [rng.normal(3, 2, 100) for _ in range(150)]
    normal_ms = warm_single(lambda x: jm.fit(normal, x, init={"mu": 0.0, "sigma": 1.0},
                                             constraints=POS), xs)
    ds = [design(rng, (1000,)) for _ in range(150)]
    logistic_ms = warm_single(lambda d: jm.fit(logistic, d, init={"beta": np.zeros(6)}), ds)
    B = 10_000
    xb = rng.normal(3, 2, (B, 100))
    nb = throughput(lambda: jm.fit_batch(normal, xb, init={"mu": 0.0, "sigma": 1.0},
                                         constraints=POS), B)
    db = design(rng, (B, 200))
    lb = throughput(lambda: jm.fit_batch(logistic, db, init={"beta": np.zeros(6)}), B)
    print(f"| {label} | {normal_ms:.2f} | {logistic_ms:.2f} | {nb:,.0f} | {lb:,.0f} |",
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "this checkout")

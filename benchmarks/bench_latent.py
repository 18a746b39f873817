"""A latent AR(1) process over time by Laplace (``jm.fit(..., random=["u"])``) against
glmmTMB: the block-tridiagonal inner Hessian (issue 17's banded structure).

    python3 benchmarks/bench_latent.py [--sizes 200,1000,10000] [--dense-max 1000]
        [--md-out FILE]

Workload (seeded, float64): counts y_t ~ Poisson(exp(a + u_t)), t = 1..T, with a
stationary AR(1) latent process u_t = ρ·u_{t−1} + σ·e_t, u_1 ~ N(0, σ²/(1 − ρ²)),
a = 1, ρ = 0.8, σ = 0.3. The joint log-density is written in ``jax.numpy``; jaxmle
probes the inner Hessian's structure (block-tridiagonal here) and integrates u out.

* jaxmle: the first fit in this process (tracing + compilation + fit, per T; an empty
  persistent compilation cache unless ``JAXMLE_CACHE_DIR`` is set) and the
  warm fit (a new dataset of the same T: median of 3), its structure, and, up to
  ``--dense-max``, the same fit with the dense inner Hessian forced (what every
  time-series latent process cost before).
* glmmTMB (``Rscript``, when installed: ``apt-get install r-base-core r-cran-glmmtmb``;
  skipped with a note otherwise): ``glmmTMB(y ~ 1 + ar1(tf + 0 | g), family = poisson)``
  on the same data (one group, ``tf`` the time factor), warm time (the second of two
  fits in one R process) and its estimates. glmmTMB's ``ar1`` SD is the stationary
  SD of u, σ/√(1 − ρ²): compared as such. Agreement: the Laplace log-likelihoods and
  the estimates (a, stationary SD, ρ).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import _common as C  # noqa: E402

# first fits with an empty compilation cache (a new one per run, unless one is given)
os.environ.setdefault("JAXMLE_CACHE_DIR", tempfile.mkdtemp(prefix="jaxmle-bench-latent-"))
import jaxmle as jm  # noqa: E402

A, RHO, SIGMA = 1.0, 0.8, 0.3
CONS = {"sigma": constraints.positive, "rho": constraints.interval(-1.0, 1.0)}


def simulate(T: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.empty(T)
    u[0] = SIGMA / np.sqrt(1 - RHO**2) * rng.normal()
    for t in range(1, T):
        u[t] = RHO * u[t - 1] + SIGMA * rng.normal()
    return rng.poisson(np.exp(A + u)).astype(float)


def ar1_poisson(p, y):
    """The joint log-density of the counts and the stationary AR(1) latent process."""
    u, rho, sigma = p["u"], p["rho"], p["sigma"]
    start = dist.Normal(0.0, sigma / jnp.sqrt(1 - rho**2)).log_prob(u[0])
    steps = dist.Normal(rho * u[:-1], sigma).log_prob(u[1:]).sum()
    return start + steps + dist.Poisson(jnp.exp(p["a"] + u)).log_prob(y).sum()


def init(T: int) -> dict:
    return {"a": 0.0, "rho": 0.0, "sigma": 0.5, "u": np.zeros(T)}


def fit(y: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jm.fit(ar1_poisson, y, init(y.size), constraints=CONS, random=["u"])


def jaxmle_row(T: int, dense_max: int) -> dict:
    t0 = time.perf_counter()
    res = fit(simulate(T, 0))
    first = time.perf_counter() - t0
    warm = []
    for seed in (1, 2, 3):
        y = simulate(T, seed)
        t0 = time.perf_counter()
        fit(y)
        warm.append(time.perf_counter() - t0)
    info = res.random_info
    row = {"T": T, "first": first, "warm": statistics.median(warm),
           "structure": ("block-tridiagonal" if info.band else "block-diagonal")
           if info.n_groups > 1 else "dense",
           "converged": bool(res.converged), "loglik": float(res.loglik),
           "a": float(res.params["a"]), "rho": float(res.params["rho"]),
           "sd": float(res.params["sigma"]) / np.sqrt(1 - float(res.params["rho"]) ** 2)}
    if T <= dense_max:
        from jaxmle.random import structure

        original = structure.next_structure
        structure.next_structure = structure.dense     # the probe's fallback, forced
        try:
            fit(simulate(T, 0))                         # (compile)
            t0 = time.perf_counter()
            dense = fit(simulate(T, 1))
            row["dense_warm"] = time.perf_counter() - t0
            row["dense_loglik_diff"] = abs(float(fit(simulate(T, 0)).loglik) - row["loglik"])
            assert dense.random_info.n_groups == 1
        finally:
            structure.next_structure = original
    return row


R_SCRIPT = r"""
suppressMessages(library(glmmTMB))
args <- commandArgs(trailingOnly = TRUE)
y <- scan(args[1], quiet = TRUE)
d <- data.frame(y = y, tf = factor(seq_along(y)), g = factor(rep(1, length(y))))
fit <- function() glmmTMB(y ~ 1 + ar1(tf + 0 | g), family = poisson, data = d)
m <- fit()
t0 <- proc.time()[["elapsed"]]
m <- fit()
warm <- proc.time()[["elapsed"]] - t0
vc <- VarCorr(m)$cond$g
cat(sprintf('{"warm": %.6f, "loglik": %.10f, "a": %.10f, "sd": %.10f, "rho": %.10f, "conv": %d, "version": "%s"}\n',
    warm, as.numeric(logLik(m)), fixef(m)$cond[[1]], attr(vc, "stddev")[[1]],
    attr(vc, "correlation")[1, 2], m$fit$convergence, as.character(packageVersion("glmmTMB"))))
"""


def glmmtmb_row(T: int) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "y.txt")
        np.savetxt(data, simulate(T, 0), fmt="%d")
        return C.run_rscript(R_SCRIPT, [data], timeout=1800)


def fmt(x: float | None) -> str:
    return "–" if x is None else C.fmt_s(x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200,1000,10000")
    ap.add_argument("--dense-max", type=int, default=1000)
    ap.add_argument("--md-out", default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    lines = ["## Latent AR(1) Poisson process: jaxmle (banded Laplace) vs glmmTMB",
             "", C.machine_info_md(),
             ""]
    rows = []
    for T in sizes:
        j = jaxmle_row(T, args.dense_max)
        r = glmmtmb_row(T)
        agree = "–"
        if r and "error" not in r:
            agree = (f"ℓ {abs(j['loglik'] - r['loglik']):.1e}; a {abs(j['a'] - r['a']):.1e}, "
                     f"sd {abs(j['sd'] - r['sd']):.1e}, ρ {abs(j['rho'] - r['rho']):.1e}")
        rows.append([f"{T:,}", j["structure"], fmt(j["first"]), fmt(j["warm"]),
                     fmt(j.get("dense_warm")),
                     "–" if r is None else r.get("error") or fmt(r["warm"]),
                     "–" if not r or "error" in r else f"{r['warm'] / j['warm']:.1f}×",
                     f"{j['loglik']:.6f}", "–" if not r or "error" in r else f"{r['loglik']:.6f}",
                     agree, "yes" if j["converged"] else "NO"])
        print(rows[-1], flush=True)
    lines.append(C.md_table(
        ["T", "jaxmle structure", "jaxmle first fit", "jaxmle warm", "dense warm",
         "glmmTMB warm", "glmmTMB ÷ jaxmle", "jaxmle ℓ", "glmmTMB ℓ",
         "|jaxmle − glmmTMB|", "converged"], rows))
    lines += ["", "- warm: a new dataset of the same T (jaxmle: median of 3); glmmTMB: the "
              "second of two fits in one R process (`glmmTMB(y ~ 1 + ar1(tf + 0 | g), "
              "family = poisson)`); 'dense warm': jaxmle with the dense inner Hessian forced.",
              "- sd: the stationary SD of u, σ/√(1 − ρ²) (glmmTMB's ar1 SD)."]
    text = "\n".join(lines)
    print(text)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

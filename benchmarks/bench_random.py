"""Random effects by Laplace (``jm.fit(..., random=["b"])``) against the alternatives.

    /tmp/dev/bin/python benchmarks/bench_random.py [--groups 50,500,5000] [--nuts-max 500]
        [--sm-max 5000] [--vb-max 500]

Workloads (seeded, float64), 20 observations per group, intercept + 2 N(0,1) covariates:
  Poisson GLMM  y ~ Poisson(exp(Xβ + b_g)), b_g ~ N(0, 0.5²), β = (0.5, 0.3, −0.2);
  LMM           y = Xβ + b_g + ε, b_g ~ N(0, 1), ε ~ N(0, 1).
jaxmle: first fit in this process (tracing + compilation + fit, for that shape) and
warm fit (a new dataset of the same shape: median of 3). Contenders in the same run:
statsmodels ``MixedLM`` (ML; the LMM), ``PoissonBayesMixedGLM.fit_vb`` (variational
Bayes: a speed reference, not the same estimator), NumPyro NUTS (500 warmup + 500
draws, one chain: a speed reference, small sizes only). Agreement: the LMM's fixed
effects against MixedLM (max |Δ| / SE).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import jaxmle as jm  # noqa: E402

N_PER = 20


def simulate(G: int, seed: int, family: str):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), N_PER)
    X = np.c_[np.ones(G * N_PER), rng.normal(size=(G * N_PER, 2))]
    if family == "poisson":
        b = 0.5 * rng.normal(size=G)
        y = rng.poisson(np.exp(X @ [0.5, 0.3, -0.2] + b[g])).astype(float)
    else:
        y = X @ [0.5, 0.3, -0.2] + rng.normal(size=G)[g] + rng.normal(size=G * N_PER)
    return y, X, g


def poisson(p, data):
    y, X, g = data
    eta = X @ p["beta"] + p["b"][g]
    return (dist.Poisson(jnp.exp(eta)).log_prob(y).sum()
            + dist.Normal(0.0, p["sigma"]).log_prob(p["b"]).sum())


def lmm(p, data):
    y, X, g = data
    mu = X @ p["beta"] + p["b"][g]
    return (dist.Normal(mu, p["eps"]).log_prob(y).sum()
            + dist.Normal(0.0, p["sigma"]).log_prob(p["b"]).sum())


def jaxmle_times(loglik, family, G):
    init = {"beta": jnp.zeros(3), "sigma": 1.0, "b": jnp.zeros(G)}
    cons = {"sigma": constraints.positive}
    if family == "lmm":
        init["eps"] = 1.0
        cons["eps"] = constraints.positive
    t = time.perf_counter()
    res = jm.fit(loglik, simulate(G, 0, family), init, constraints=cons, random=["b"])
    first = time.perf_counter() - t
    warm = []
    for seed in (1, 2, 3):
        data = simulate(G, seed, family)
        t = time.perf_counter()
        r = jm.fit(loglik, data, init, constraints=cons, random=["b"])
        jax.block_until_ready(r.params)
        warm.append(time.perf_counter() - t)
    return first, statistics.median(warm), res


def statsmodels_poisson(G):
    from statsmodels.genmod.bayes_mixed_glm import PoissonBayesMixedGLM

    y, X, g = simulate(G, 1, "poisson")
    exog_vc = np.zeros((len(g), G))
    exog_vc[np.arange(len(g)), g] = 1.0
    import scipy.sparse as sp

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PoissonBayesMixedGLM(y, X, sp.csr_matrix(exog_vc), np.zeros(G, int)).fit_vb()
    return time.perf_counter() - t


def statsmodels_lmm(G, res):
    from statsmodels.regression.mixed_linear_model import MixedLM

    y, X, g = simulate(G, 0, "lmm")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MixedLM(y, X, groups=g).fit(reml=False)
    elapsed = time.perf_counter() - t
    agree = float(np.max(np.abs(np.asarray(res.params["beta"]) - m.fe_params) / m.bse_fe))
    return elapsed, agree


def nuts(G):
    import numpyro

    y, X, g = simulate(G, 1, "poisson")

    def model(y, X, g):
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
        b = numpyro.sample("b", dist.Normal(0.0, sigma).expand([G]).to_event(1))
        numpyro.sample("y", dist.Poisson(jnp.exp(X @ beta + b[g])), obs=y)

    t = time.perf_counter()
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=500, num_samples=500,
                              progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), y, X, g)
    jax.block_until_ready(mcmc.get_samples()["beta"])
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", default="50,500,5000")
    ap.add_argument("--nuts-max", type=int, default=500)
    ap.add_argument("--sm-max", type=int, default=5000)
    ap.add_argument("--vb-max", type=int, default=500)
    args = ap.parse_args()
    rows = []
    for G in [int(x) for x in args.groups.split(",")]:
        first, warm, res = jaxmle_times(poisson, "poisson", G)
        lfirst, lwarm, lres = jaxmle_times(lmm, "lmm", G)
        sm_p = statsmodels_poisson(G) if G <= args.vb_max else float("nan")
        sm_l, agree = statsmodels_lmm(G, lres) if G <= args.sm_max else (float("nan"),) * 2
        nt = nuts(G) if G <= args.nuts_max else float("nan")
        rows.append((G, first, warm, int(res.n_iter), lfirst, lwarm, sm_l, agree, sm_p, nt))
        print(rows[-1], flush=True)
    print("\n| groups (20 obs each) | Poisson GLMM: jaxmle first fit | warm fit | outer iters "
          "| LMM: jaxmle first | warm | statsmodels MixedLM | max \\|Δβ\\|/SE vs MixedLM "
          "| statsmodels PoissonBayesMixedGLM.fit_vb | NumPyro NUTS 500+500 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for G, first, warm, it, lf, lw, sl, ag, sp_, nt in rows:
        def s(x):
            return "–" if x != x else (f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.1f} s")
        print(f"| {G:,} | {s(first)} | {s(warm)} | {it} | {s(lf)} | {s(lw)} | {s(sl)} | "
              f"{'–' if ag != ag else f'{ag:.1e}'} | {s(sp_)} | {s(nt)} |")


if __name__ == "__main__":
    main()

"""A Poisson GLMM fitted by the Laplace approximation: bird counts at 40 sites.

Counts y at site s on visit i depend on the temperature and on an unobserved site
effect b_s ~ N(0, σ²):  y ~ Poisson(exp(β₀ + β₁·temp + b_s)). The site effects are
integrated out (``random=["b"]``); jaxmle reports the fixed effects and σ, and
predicts every site's effect with standard errors that include the uncertainty
of the estimates (as TMB's sdreport). The same model is then run with NumPyro's
NUTS for comparison.

Run: python examples/glmm_sites.py [--plot PATH] [--nuts-samples N]
(the plot needs matplotlib; ``--nuts-samples 0`` leaves out the NUTS comparison)
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import jaxmle as jm  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--plot", help="save predicted against true site effects to this file")
parser.add_argument("--nuts-samples", type=int, default=300,
                    help="NUTS warm-up and kept samples each (300; 0: no NUTS run)")
args = parser.parse_args()

rng = np.random.default_rng(7)
n_sites, n_visits = 40, 12
site = np.repeat(np.arange(n_sites), n_visits)
temp = rng.normal(size=n_sites * n_visits)
true_b = 0.6 * rng.normal(size=n_sites)
counts = rng.poisson(np.exp(1.2 + 0.4 * temp + true_b[site])).astype(float)
X = np.c_[np.ones_like(temp), temp]


def loglik(p, data):
    """The joint log-density of the counts and the site effects."""
    y, X, site = data
    eta = X @ p["beta"] + p["b"][site]
    return (dist.Poisson(jnp.exp(eta)).log_prob(y).sum()
            + dist.Normal(0.0, p["sigma"]).log_prob(p["b"]).sum())


t0 = time.perf_counter()
res = jm.fit(loglik, (counts, X, site),
             init={"beta": jnp.zeros(2), "sigma": 1.0, "b": jnp.zeros(n_sites)},
             constraints={"sigma": constraints.positive}, random=["b"])
print(f"Laplace fit in {time.perf_counter() - t0:.1f} s (compilation included)")
print(res.summary())

print("\nPredicted site effects (mode given the estimates), 95% intervals from sdreport SEs:")
b, se = res.random["b"], res.random_stderr["b"]
for s in range(5):
    print(f"  site {s:2d}: {b[s]: .3f}  [{b[s] - 1.96 * se[s]: .3f}, {b[s] + 1.96 * se[s]: .3f}]"
          f"   (true {true_b[s]: .3f})")


def model(y, X, site):
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    b = numpyro.sample("b", dist.Normal(0.0, sigma).expand([n_sites]).to_event(1))
    numpyro.sample("y", dist.Poisson(jnp.exp(X @ beta + b[site])), obs=y)


if args.nuts_samples > 0:
    t0 = time.perf_counter()
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=args.nuts_samples,
                              num_samples=args.nuts_samples, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), counts, X, site)
    post = mcmc.get_samples()
    print(f"\nNumPyro NUTS ({time.perf_counter() - t0:.1f} s) posterior means (sd) for comparison:")
    print(f"  beta  {np.asarray(post['beta'].mean(0)).round(3)}  ({np.asarray(post['beta'].std(0)).round(3)})")
    print(f"  sigma {float(post['sigma'].mean()):.3f}  ({float(post['sigma'].std()):.3f})")
    print(f"  b[:5] {np.asarray(post['b'].mean(0)[:5]).round(3)}")

if args.plot:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        print("(install matplotlib to plot)")
        raise SystemExit
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(true_b, b, yerr=1.96 * se, fmt="o", ms=3, lw=0.8)
    ax.axline((0, 0), slope=1, color="grey", lw=0.8)
    ax.set(xlabel="true site effect", ylabel="predicted (Laplace, 95% interval)")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"plot saved to {args.plot}")

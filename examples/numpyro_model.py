"""A NumPyro model fitted by maximum likelihood and MAP with ``jm.fit_model``.

Claim counts of 40 groups of insured drivers, each observed for a different
number of policy-years (the exposure, an offset log(exposure) in the linear
predictor), explained by driver age, urban residence and vehicle age:

    y_i ~ Poisson(exposure_i · exp(alpha + x_i' beta)).

The same model function serves NumPyro's NUTS and jaxmle: ``method="mle"``
drops the priors (keeping the supports as constraints), ``method="map"`` keeps
them; the MAP fit's Laplace approximation is compared with the NUTS posterior.
The rate ratios exp(beta) are ``numpyro.deterministic`` sites: fit_model
reports them at the optimum with delta-method standard errors.

Run: python examples/numpyro_model.py
"""

import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

import jaxmle as jm  # noqa: E402

COVARIATES = ["age", "urban", "vehicle_age"]


def claims_model(x, exposure, y=None):
    """An ordinary NumPyro model: nothing jaxmle-specific in it."""
    alpha = numpyro.sample("alpha", dist.Normal(-2.5, 1.5))          # log claims per policy-year
    beta = numpyro.sample("beta", dist.Normal(0.0, 0.5).expand([x.shape[1]]).to_event(1))
    numpyro.deterministic("rate_ratio", jnp.exp(beta))
    with numpyro.plate("groups", x.shape[0]):
        rate = exposure * jnp.exp(alpha + x @ beta)
        numpyro.sample("y", dist.Poisson(rate), obs=y)


def simulate(seed=7, n=40):
    """Seeded, realistic values: ~8 claims per 100 policy-years, 5-60 policy-years a group."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    urban = (rng.random(n) < 0.55).astype(float)
    vehicle_age = rng.gamma(3.0, 2.5, n)
    x = np.column_stack([(age - 45) / 15, urban, (vehicle_age - 7.5) / 4.5])
    exposure = np.round(rng.uniform(5, 60, n), 1)
    rate = np.exp(np.log(0.08) + x @ np.array([-0.30, 0.35, 0.15]))
    y = rng.poisson(exposure * rate).astype(float)
    return x, exposure, y


def nuts(x, exposure, y):
    mcmc = MCMC(NUTS(claims_model), num_warmup=500, num_samples=1000, num_chains=1,
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, exposure, y=y)
    return mcmc.get_samples()


def row(name, values):
    return f"{name:<18}" + "".join(f"{v:>12.4f}" if isinstance(v, float) else f"{v:>12}"
                                   for v in values)


def main():
    x, exposure, y = simulate()
    print(f"{len(y)} groups, {exposure.sum():.0f} policy-years, {y.sum():.0f} claims\n")

    t0 = time.perf_counter()
    mle = jm.fit_model(claims_model, x, exposure, y=y, method="mle")
    map_ = jm.fit_model(claims_model, x, exposure, y=y, method="map")
    lap = map_.laplace()
    draws = lap.sample(jax.random.PRNGKey(1), 4000)
    t_jm = time.perf_counter() - t0
    print(map_.summary())

    t0 = time.perf_counter()
    post = nuts(x, exposure, y)
    t_nuts = time.perf_counter() - t0

    print("\nMLE and MAP (± std err), Laplace and NUTS posterior means (± sd)")
    print(row("parameter", ["MLE", "±", "MAP", "±", "Laplace", "±", "NUTS", "±"]))
    names = ["alpha"] + [f"beta[{c}]" for c in COVARIATES]

    def table(tree):  # {"alpha": (n,), "beta": (n, 3)} -> (n, 4), n = 1 for an estimate
        return np.column_stack([np.reshape(tree["alpha"], (-1, 1)),
                                np.reshape(tree["beta"], (-1, len(COVARIATES)))])

    (est_mle, est_map), (se_mle, se_map) = ([table(getattr(r, a))[0] for r in (mle, map_)]
                                            for a in ("params", "stderr"))
    lap_draws, nuts_draws = table(draws), table(post)
    for j, name in enumerate(names):
        print(row(name, [float(est_mle[j]), float(se_mle[j]), float(est_map[j]), float(se_map[j]),
                         float(lap_draws[:, j].mean()), float(lap_draws[:, j].std()),
                         float(nuts_draws[:, j].mean()), float(nuts_draws[:, j].std())]))
    gap = np.max(np.abs(lap_draws.mean(0) - nuts_draws.mean(0)) / nuts_draws.std(0))
    print(f"\nLaplace vs NUTS: largest difference of means = {gap:.2f} posterior sd")

    print("\nRate ratios exp(beta) (numpyro.deterministic), delta-method std errors:")
    rr, rr_se = map_.deterministic["rate_ratio"], map_.deterministic_stderr["rate_ratio"]
    nuts_rr = np.exp(np.asarray(post["beta"]))
    print(row("", ["MAP", "std err", "NUTS mean", "NUTS sd"]))
    for j, c in enumerate(COVARIATES):
        print(row(c, [float(rr[j]), float(rr_se[j]), float(nuts_rr[:, j].mean()),
                      float(nuts_rr[:, j].std())]))
    print(f"\nLog marginal likelihood (Laplace): {lap.log_evidence:.3f}")
    print(f"Time: fit_model MLE + MAP + Laplace draws {t_jm:.1f} s (compilation included), "
          f"NUTS 500 + 1000 {t_nuts:.1f} s")


if __name__ == "__main__":
    main()

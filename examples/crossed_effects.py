"""Crossed random effects: lme4's Penicillin data, a linear mixed model with 24 plates
crossed with 6 penicillin samples, by REML (lme4's default), next to lme4's numbers.

    python examples/crossed_effects.py

diameter = μ + a_plate + b_sample + ε, with a ~ N(0, σ_a²), b ~ N(0, σ_b²), ε ~ N(0, σ²).
The joint log-density names both random leaves (each with its own SD) and the intercept
with the role "flat" (integrated out under a flat prior: REML). The plates are the groups
of the inner Hessian and the samples and the intercept its border (a bordered
block-diagonal Hessian: cost linear in the number of plates), which the summary names.
"""

import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import jaxmle as jm  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "penicillin.csv"
# lme4 1.1.31 (R 4.2.2): lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin)
LME4 = {"sd plate": 0.846702510258, "sd sample": 1.93161379232, "sd residual": 0.54992268207,
        "intercept": 22.9722222222, "SE(intercept)": 0.808595361421,
        "REML log-likelihood": -165.4302945}


def normal(x, scale):
    return jnp.sum(-0.5 * (x / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi))


def loglik(p, d):
    """log p(diameter | a, b, μ) + log p(a) + log p(b)."""
    mu = p["beta"][0] + p["a"][d["plate"]] + p["b"][d["sample"]]
    return normal(d["y"] - mu, p["sigma"]) + normal(p["a"], p["sa"]) + normal(p["b"], p["sb"])


def main():
    pen = np.loadtxt(DATA, delimiter=",", skiprows=1)
    data = {"y": pen[:, 0], "plate": pen[:, 1].astype(int), "sample": pen[:, 2].astype(int)}
    init = {"beta": np.array([20.0]), "sigma": 1.0, "sa": 1.0, "sb": 1.0,
            "a": np.zeros(24), "b": np.zeros(6)}
    res = jm.fit(loglik, data, init,
                 constraints={k: constraints.positive for k in ("sigma", "sa", "sb")},
                 random={"a": "random", "b": "random", "beta": "flat"})
    print(res.summary())
    ours = {"sd plate": res.params["sa"], "sd sample": res.params["sb"],
            "sd residual": res.params["sigma"], "intercept": res.random["beta"][0],
            "SE(intercept)": res.random_cond_stderr["beta"][0],
            "REML log-likelihood": res.loglik}
    print(f"\n{'':22s}{'jaxmle':>16s}{'lme4':>16s}")
    for name, theirs in LME4.items():
        print(f"{name:22s}{float(ours[name]):16.8f}{theirs:16.8f}")
    print("\nPredicted sample effects (BLUPs) with sdreport SEs:")
    for j, (u, se) in enumerate(zip(res.random["b"], res.random_stderr["b"])):
        print(f"  sample {'ABCDEF'[j]}: {u:+.4f} ({se:.4f})")


if __name__ == "__main__":
    main()

"""Batched fits at simulation scale: ``jm.fit_batch`` against the alternatives.

    /tmp/dev/bin/python benchmarks/bench_batch.py [--B 10000] [--loop-n 200]
        [--scaling 1000,10000,100000,1000000] [--only normal,logistic,gamma,scaling,stragglers]
        [--md-out FILE]

Workloads (seeded, float64, start at mu=0, sigma=1 / beta=0 / shape=rate=1):
  (a) B Normal datasets, n=100, true (mu, sigma) = (1, 2);
  (b) B logistic regressions, n=200, intercept + 5 N(0,1) covariates;
  (c) B Gamma(shape, rate) datasets, n=100, true (2.5, 1.5) (no closed form).
Contenders, all in this run: ``jm.fit_batch``; a hand-written chunked
``jit(lax.map(Newton with jax.hessian, batch_size=500))`` (Cholesky step, eigenvalue
shift when −H is not positive definite, backtracking line search; SEs from the
inverse Hessian); a Python loop over ``jm.fit`` (a jitted single fit); and loops of
``scipy.optimize.minimize`` (BFGS, analytic numpy gradient, then the exact Hessian for
SEs), statsmodels (``Logit``; ``GenericLikelihoodModel`` with numerical derivatives
for Normal and Gamma), iminuit (MIGRAD + HESSE, analytic numpy gradient) and NumPyro
SVI with ``AutoDelta`` (2000 Adam steps, compiled once).
Loops are timed on the first ``--loop-n`` datasets and scaled (fits/s): the table
says so. Compile time (first call minus a warm call) is reported separately.
Agreement: max relative difference of estimates and SEs against the reference
(closed form for Normal; the hand-written Newton for logistic/Gamma).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

jax = C.enable_x64()
import jax.numpy as jnp  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import jaxmle as jm  # noqa: E402

LOGIT_BETA = np.array([0.5, 1.0, -1.0, 0.5, 0.0, 0.25])


# --------------------------------------------------------------------------- workloads

def normal_ll(p, x):
    return dist.Normal(p["mu"], p["sigma"]).log_prob(x)


def logistic_ll(p, d):
    X, y = d
    return dist.Bernoulli(logits=X @ p["beta"]).log_prob(y)


def gamma_ll(p, x):
    return dist.Gamma(p["shape"], p["rate"]).log_prob(x)


WORKLOADS = {
    "normal": dict(ll=normal_ll, init={"mu": 0.0, "sigma": 1.0},
                   cons={"sigma": constraints.positive}),
    "logistic": dict(ll=logistic_ll, init={"beta": np.zeros(6)}, cons={}),
    "gamma": dict(ll=gamma_ll, init={"shape": 1.0, "rate": 1.0},
                  cons={"shape": constraints.positive, "rate": constraints.positive}),
}


def make_data(name: str, B: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    if name == "normal":
        return rng.normal(1.0, 2.0, size=(B, 100))
    if name == "gamma":
        return rng.gamma(2.5, 1 / 1.5, size=(B, 100))
    X = np.concatenate([np.ones((B, 200, 1)), rng.normal(size=(B, 200, 5))], axis=-1)
    y = (rng.random((B, 200)) < 1 / (1 + np.exp(-X @ LOGIT_BETA))).astype(float)
    return X, y


def take(data, idx):
    return tuple(d[idx] for d in data) if isinstance(data, tuple) else data[idx]


# --------------------------------------------------------------------------- contenders

def unconstrained_nll(name):
    """−ℓ in the unconstrained coordinates (log sigma, log shape/rate), as a JAX function."""
    if name == "normal":
        return lambda t, x: -jnp.sum(dist.Normal(t[0], jnp.exp(t[1])).log_prob(x))
    if name == "gamma":
        return lambda t, x: -jnp.sum(dist.Gamma(jnp.exp(t[0]), jnp.exp(t[1])).log_prob(x))
    return lambda b, d: -jnp.sum(dist.Bernoulli(logits=d[0] @ b).log_prob(d[1]))


def to_natural(name, t):
    if name == "normal":
        return {"mu": t[..., 0], "sigma": np.exp(t[..., 1])}
    if name == "gamma":
        return {"shape": np.exp(t[..., 0]), "rate": np.exp(t[..., 1])}
    return {"beta": t}


def handwritten_reference(name: str, batch_size: int = 500):
    """A hand-written robust Newton, as a careful JAX user would write it after reading
    about vmap costs: ``jit(lax.map(fit_one, batch_size=500))``, exact ``jax.hessian``,
    a Cholesky step with an eigenvalue-shift fallback when the Hessian is not positive
    definite, and a backtracking line search over 6 fixed step lengths evaluated at
    once (no nested loop). Returns fit(data) -> (t, cov_t, ok) in the unconstrained
    coordinates."""
    nll = unconstrained_nll(name)
    k = 6 if name == "logistic" else 2
    steps = 0.5 ** jnp.arange(6.0)

    def fit_one(data):
        value_and_grad = jax.value_and_grad(nll)
        hess = jax.hessian(nll)

        def direction(g, H):
            L = jnp.linalg.cholesky(H)
            chol_ok = jnp.all(jnp.isfinite(L))

            def shifted(_):
                w, V = jnp.linalg.eigh(H)
                shift = jnp.maximum(0.0, -2.0 * w[0]) + 1e-6 * jnp.max(jnp.abs(w))
                return -V @ ((V.T @ g) / (w + shift))

            def newton(_):
                return -jax.scipy.linalg.cho_solve((L, True), g)

            return jax.lax.cond(chol_ok, newton, shifted, None)

        def body(c):
            t, f, _, it = c
            _, g = value_and_grad(t, data)
            d = direction(g, hess(t, data))
            trials = jax.vmap(lambda a: nll(t + a * d, data))(steps)
            ok = trials <= f + 1e-4 * steps * (g @ d)
            a = steps[jnp.argmax(ok)]
            a = jnp.where(jnp.any(ok), a, steps[-1])
            t_new = t + a * d
            return t_new, nll(t_new, data), jnp.max(jnp.abs(g)), it + 1

        def cond(c):
            _, f, gmax, it = c
            return (gmax > 1e-8 * (1 + jnp.abs(f))) & (it < 100)

        t0 = jnp.zeros(k)
        t, f, gmax, it = jax.lax.while_loop(cond, body, (t0, nll(t0, data), jnp.inf, 0))
        g = jax.grad(nll)(t, data)
        cov = jnp.linalg.inv(hess(t, data))
        return t, cov, jnp.max(jnp.abs(g)) < 1e-6 * (1 + jnp.abs(f))

    run = jax.jit(lambda data: jax.lax.map(fit_one, data, batch_size=batch_size))
    return run


def natural_se(name, t, cov):
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    if name == "normal":
        return {"mu": np.sqrt(var[..., 0]), "sigma": np.exp(t[..., 1]) * np.sqrt(var[..., 1])}
    if name == "gamma":
        return {"shape": np.exp(t[..., 0]) * np.sqrt(var[..., 0]),
                "rate": np.exp(t[..., 1]) * np.sqrt(var[..., 1])}
    return {"beta": np.sqrt(var)}


def loop_jm_fit(name, data, idx):
    w = WORKLOADS[name]
    for i in idx:
        jm.fit(w["ll"], take(data, i), init=w["init"], constraints=w["cons"])


def numpy_problem(name):
    """−ℓ with its analytic gradient, and the Hessian, in plain numpy (unconstrained
    coordinates): the fastest way to drive scipy and iminuit from Python."""
    from scipy.special import gammaln, polygamma, psi

    if name == "normal":
        def nll_grad(t, x):
            r = x - t[0]
            v = np.exp(2 * t[1])
            ss = r @ r
            f = len(x) * t[1] + 0.5 * ss / v + 0.5 * len(x) * np.log(2 * np.pi)
            return f, np.array([-r.sum() / v, len(x) - ss / v])

        def hess(t, x):
            r, v = x - t[0], np.exp(2 * t[1])
            return np.array([[len(x) / v, 2 * r.sum() / v], [2 * r.sum() / v, 2 * (r @ r) / v]])
    elif name == "gamma":
        def nll_grad(t, x):
            a, b, n = np.exp(t[0]), np.exp(t[1]), len(x)
            slx, sx = np.log(x).sum(), x.sum()
            f = -n * a * t[1] + n * gammaln(a) - (a - 1) * slx + b * sx
            return f, np.array([a * (-n * t[1] + n * psi(a) - slx), -n * a + b * sx])

        def hess(t, x):
            a, b, n = np.exp(t[0]), np.exp(t[1]), len(x)
            g_a = a * (-n * t[1] + n * psi(a) - np.log(x).sum())
            return np.array([[g_a + a * a * n * polygamma(1, a), -n * a],
                             [-n * a, b * x.sum()]])
    else:
        def nll_grad(t, d):
            X, y = d
            eta = X @ t
            p = 1 / (1 + np.exp(-eta))
            return np.sum(np.logaddexp(0, eta) - y * eta), X.T @ (p - y)

        def hess(t, d):
            X, _ = d
            p = 1 / (1 + np.exp(-(X @ t)))
            return (X * (p * (1 - p))[:, None]).T @ X
    return nll_grad, hess


def loop_scipy(name, data, idx):
    """scipy BFGS with an analytic numpy gradient, then the exact Hessian for the SEs."""
    from scipy.optimize import minimize

    nll_grad, hess = numpy_problem(name)
    k = 6 if name == "logistic" else 2
    for i in idx:
        d = take(data, i)
        r = minimize(nll_grad, np.zeros(k), args=(d,), jac=True, method="BFGS")
        np.linalg.inv(hess(r.x, d))


def _sm_models():
    from scipy import stats
    from statsmodels.base.model import GenericLikelihoodModel

    class NormalModel(GenericLikelihoodModel):
        def loglike(self, params):
            return stats.norm.logpdf(self.endog, params[0], np.exp(params[1])).sum()

    class GammaModel(GenericLikelihoodModel):
        def loglike(self, params):
            return stats.gamma.logpdf(self.endog, np.exp(params[0]), scale=np.exp(-params[1])).sum()

    return {"normal": NormalModel, "gamma": GammaModel}


def loop_statsmodels(name, data, idx):
    """statsmodels: Logit for (b); GenericLikelihoodModel (numerical derivatives) else."""
    import statsmodels.api as sm

    models = _sm_models()
    for i in idx:
        d = take(data, i)
        if name == "logistic":
            sm.Logit(d[1], d[0]).fit(disp=0)
        else:
            models[name](d).fit(start_params=np.zeros(2), disp=0, method="newton", maxiter=100)


def loop_iminuit(name, data, idx):
    from iminuit import Minuit

    nll_grad, _ = numpy_problem(name)
    k = 6 if name == "logistic" else 2
    for i in idx:
        d = take(data, i)
        m = Minuit(lambda t: nll_grad(t, d)[0], np.zeros(k), grad=lambda t: nll_grad(t, d)[1])
        m.errordef = Minuit.LIKELIHOOD
        m.migrad()
        m.hesse()


@functools.lru_cache(maxsize=None)
def _svi_runner(name, steps):
    import numpyro
    import optax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoDelta

    w = WORKLOADS[name]

    def model(d):
        params = {}
        for k, v in w["init"].items():
            base = dist.ImproperUniform(w["cons"].get(k, constraints.real), (), np.shape(v))
            params[k] = numpyro.sample(k, base)
        numpyro.factor("ll", jnp.sum(w["ll"](params, d)))

    svi = SVI(model, AutoDelta(model), optax.adam(1e-2), Trace_ELBO())

    @jax.jit
    def run(d):
        state = svi.init(jax.random.PRNGKey(0), d)
        state = jax.lax.fori_loop(0, steps, lambda _, s: svi.update(s, d)[0], state)
        return svi.get_params(state)

    return run


def loop_svi(name, data, idx, steps=2000):
    """NumPyro SVI with AutoDelta (MAP under flat priors = MLE), one jitted run per
    dataset (2000 Adam steps at lr 1e-2, compiled once)."""
    run = _svi_runner(name, steps)
    for i in idx:
        jax.block_until_ready(run(take(data, i)))


# --------------------------------------------------------------------------- measuring

def timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out) if out is not None else None
    return out, time.perf_counter() - t


def throughput_table(name: str, B: int, loop_n: int, skip: set) -> tuple[list, dict]:
    w = WORKLOADS[name]
    data = make_data(name, B)
    rows, extra = [], {}

    def jm_batch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jm.JaxmleWarning)
            return jm.fit_batch(w["ll"], data, init=w["init"], constraints=w["cons"],
                                progress=False)

    small = take(data, slice(0, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jm.JaxmleWarning)
        _, t_first = timed(lambda: jm.fit_batch(w["ll"], small, init=w["init"],
                                                constraints=w["cons"], progress=False))
    bres, t_b = timed(jm_batch)
    bres, t_b2 = timed(jm_batch)
    t_b = min(t_b, t_b2)
    # compile: first call on a fresh shape minus a warm call on it (64 datasets)
    _, t_small = timed(lambda: jm.fit_batch(w["ll"], small, init=w["init"],
                                            constraints=w["cons"], progress=False))
    est = {k: np.asarray(v) for k, v in bres.params.items()}
    se = {k: np.asarray(v) for k, v in bres.stderr.items()}
    failures = int(len(bres) - bres.n_converged)

    ref = handwritten_reference(name)
    ref_data = data if not isinstance(data, tuple) else (data[0], data[1])
    _, t_ref_first = timed(lambda: ref(ref_data))
    (t_hat, cov, ok), t_ref = timed(lambda: ref(ref_data))
    t_hat, cov, ok = np.asarray(t_hat), np.asarray(cov), np.asarray(ok)
    ref_est, ref_se = to_natural(name, t_hat), natural_se(name, t_hat, cov)
    if name == "normal":
        mu = data.mean(axis=1)
        ref_est = {"mu": mu, "sigma": data.std(axis=1)}
    # |est − ref| / max(|ref|, SE): a coefficient near 0 is judged on the SE scale
    agree_est = max(float(np.max(np.abs(est[k] - ref_est[k])
                                 / np.maximum(np.abs(ref_est[k]), ref_se[k]))) for k in est)
    agree_se = max(float(np.nanmax(np.abs(se[k] - ref_se[k]) / ref_se[k])) for k in se)
    ref_agree = max(float(np.max(np.abs(to_natural(name, t_hat)[k] - ref_est[k])
                                 / np.maximum(np.abs(ref_est[k]), ref_se[k]))) for k in est)
    rows.append(("jm.fit_batch", B / t_b, t_b, max(t_first - t_small, 0.0), failures,
                 f"{agree_est:.1e} / {agree_se:.1e}", "all B"))
    rows.append(("hand-written jit(lax.map(Newton))", B / t_ref, t_ref,
                 max(t_ref_first - t_ref, 0.0), int(np.sum(~ok)),
                 f"{ref_agree:.1e} / ref", "all B"))
    idx = range(min(loop_n, B))
    loops = [("loop over jm.fit (jitted single fit)", lambda: loop_jm_fit(name, data, idx)),
             ("scipy.optimize BFGS loop (+ exact Hessian)", lambda: loop_scipy(name, data, idx)),
             ("statsmodels loop", lambda: loop_statsmodels(name, data, idx)),
             ("iminuit MIGRAD+HESSE loop", lambda: loop_iminuit(name, data, idx)),
             ("NumPyro SVI AutoDelta loop (2000 Adam steps)",
              lambda: loop_svi(name, data, range(min(20, B))))]
    warm_ups = {"loop over": loop_jm_fit, "scipy": loop_scipy, "statsmodels": loop_statsmodels,
                "iminuit": loop_iminuit, "SVI": loop_svi}
    for label, fn in loops:
        if any(s in label for s in skip):
            continue
        n = 20 if "SVI" in label else len(idx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key, warm in warm_ups.items():     # compile / import outside the timing
                if label.startswith(key) or key in label:
                    warm(name, data, [B - 1])
            _, t = timed(fn)
        rows.append((label, n / t, t * B / n, None, None, "-", f"{n} timed, scaled to B"))
    extra["ratio_scipy"] = (B / t_b) / next(r[1] for r in rows if r[0].startswith("scipy")) \
        if any(r[0].startswith("scipy") for r in rows) else None
    extra["ratio_ref"] = (B / t_b) / (B / t_ref)
    extra["ratio_loop"] = (B / t_b) / next(r[1] for r in rows if r[0].startswith("loop over"))
    return rows, extra


def scaling_table(sizes: list[int]) -> list:
    w = WORKLOADS["normal"]
    rows = []
    for B in sizes:
        data = make_data("normal", B, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jm.JaxmleWarning)
            run = lambda: jm.fit_batch(w["ll"], data, init=w["init"], constraints=w["cons"],
                                       progress=False)
            _, t_first = timed(run)
            bres, t = timed(run) if B <= 100_000 else (None, t_first)
            if bres is None:
                bres = _
        rows.append((B, t, 1e6 * t / B, B - bres.n_converged, "warm" if B <= 100_000 else
                     "one call (incl. compile)"))
    return rows


def straggler_table(B: int) -> list:
    """All-easy batch vs the same batch in which 1% of the datasets start far away."""
    w = WORKLOADS["normal"]
    data = make_data("normal", B, seed=2)
    easy = {"mu": np.zeros(B), "sigma": np.ones(B)}
    hard = {"mu": np.zeros(B), "sigma": np.ones(B)}
    slow = np.random.default_rng(3).choice(B, B // 100, replace=False)
    hard["sigma"][slow] = 1e-12         # Newton climbs out of log-sigma = -27.6 slowly
    import jaxmle.fitting.batch as _batch

    rows = []
    cases = (("all easy", easy, True), ("1% slow (sigma0 = 1e-12)", hard, True),
             ("1% slow, without the straggler schedule", hard, False))
    default = _batch.STRAGGLER_FRACTION
    for label, init, schedule in cases:
        def run():
            return jm.fit_batch(w["ll"], data, init=init, constraints=w["cons"], progress=False)
        _batch.STRAGGLER_FRACTION = default if schedule else 0.0
        try:
            run()
            res, t = timed(run)
            res2, t2 = timed(run)
        finally:
            _batch.STRAGGLER_FRACTION = default
        rows.append((label, min(t, t2), float(np.median(res.n_iter)), int(np.max(res.n_iter)),
                     len(res) - res.n_converged))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=10_000)
    ap.add_argument("--loop-n", type=int, default=200)
    ap.add_argument("--scaling", default="1000,10000,100000,1000000")
    ap.add_argument("--only", default="normal,logistic,gamma,stragglers,scaling")
    ap.add_argument("--skip", default="", help="comma list of contender substrings to skip")
    ap.add_argument("--md-out")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    md = [f"## Batched fits (`jm.fit_batch`), B = {args.B:,}", "",
          f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} CPU cores; float64; loops timed on {args.loop_n} datasets "
          "(SVI on 20) and scaled.", ""]
    for name in ("normal", "logistic", "gamma"):
        if name not in args.only:
            continue
        C.log(f"--- {name}")
        rows, extra = throughput_table(name, args.B, args.loop_n, skip)
        md += [f"### ({'abc'[['normal', 'logistic', 'gamma'].index(name)]}) {name}", "",
               "| contender | fits/s | time for B (s) | compile (s) | failures | "
               "agreement est / SE | note |", "|---|---|---|---|---|---|---|"]
        for label, fps, t, comp, fail, agree, note in rows:
            md.append(f"| {label} | {fps:,.0f} | {t:.2f} | "
                      f"{'-' if comp is None else f'{comp:.2f}'} | "
                      f"{'-' if fail is None else fail} | {agree} | {note} |")
        md += ["", "Ratios: fit_batch / hand-written = {:.2f}x; / loop over jm.fit = {:.1f}x{}".format(
            extra["ratio_ref"], extra["ratio_loop"],
            "" if extra["ratio_scipy"] is None else f"; / scipy loop = {extra['ratio_scipy']:.0f}x"), ""]
        C.log("\n".join(md[-12:]))
    if "stragglers" in args.only:
        rows = straggler_table(args.B)
        md += ["### Stragglers (Normal, B = {:,})".format(args.B), "",
               "| batch | time (s) | median iterations | max iterations | failures |",
               "|---|---|---|---|---|"]
        md += [f"| {a} | {t:.3f} | {m:.0f} | {mx} | {f} |" for a, t, m, mx, f in rows]
        md += ["", f"Slow/easy time ratio: {rows[1][1] / rows[0][1]:.2f}x with the straggler "
               f"schedule, {rows[2][1] / rows[0][1]:.2f}x without it (every chunk runs until "
               "its slowest fit is done)", ""]
        C.log("\n".join(md[-8:]))
    if "scaling" in args.only:
        sizes = [int(s) for s in args.scaling.split(",") if s]
        rows = scaling_table(sizes)
        md += ["### Time per fit against B (Normal, n = 100)", "",
               "| B | time (s) | µs per fit | failures | timing |", "|---|---|---|---|---|"]
        md += [f"| {B:,} | {t:.2f} | {us:.1f} | {f} | {note} |" for B, t, us, f, note in rows]
        md.append("")
        C.log("\n".join(md[-8:]))
    text = "\n".join(md)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Random effects by Laplace against glmmTMB and lme4, measured in the same run: several
grouping factors (issue 17's bordered block-diagonal structure), and the single-factor
rows of the issue's list (sleepstudy, a Poisson GLMM over sizes).

    python3 benchmarks/bench_crossed.py [--sizes 200x10,2000x30,8000x30]
        [--glmm-groups 500,5000,50000] [--dense-max 300] [--md-out FILE]

Workloads (seeded, float64; the joint log-densities are written in ``jax.numpy``):

* crossed site × year Poisson counts, y ~ Poisson(exp(μ + a_site + b_year)),
  a ~ N(0, 0.6²), b ~ N(0, 0.3²), one count per site and year: ``random=["a", "b"]``
  (the sites group, the years border them). glmmTMB: ``y ~ 1 + (1|site) + (1|year)``.
* cbpp (lme4's data) with an observation-level effect: binomial, period + (1|herd) +
  (1|obs) (the observations group, the herds border them); glmmTMB and lme4 ``glmer``.
* Penicillin (lme4's data): an LMM with plates crossed with samples, ML and REML (the
  intercept integrated out under a flat prior, on the border); lme4 ``lmer``.
* sleepstudy (lme4's data): Reaction ~ Days + (Days | Subject), correlated random
  intercepts and slopes (18 blocks of 2), ML and REML; lme4 ``lmer``.
* a Poisson GLMM, y ~ Poisson(exp(Xβ + b_g)), 20 counts per group, an intercept and two
  N(0, 1) covariates, b ~ N(0, 0.5²), over ``--glmm-groups``; glmmTMB.

jaxmle: the first fit in this process (an empty persistent compilation cache unless
``JAXMLE_CACHE_DIR`` is set) and the warm fit (a new dataset of the same shape for the
simulated rows, median of 3; the same data again for cbpp and Penicillin), and up to
``--dense-max`` random effects the same fit with the dense inner Hessian forced. R (when
``Rscript`` with glmmTMB and lme4 is installed; skipped with a note otherwise): the second
of two fits in one R process. Agreement: the log-likelihoods and the estimates.
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
from jax.scipy.special import gammaln  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402

import _common as C  # noqa: E402

os.environ.setdefault("JAXMLE_CACHE_DIR", tempfile.mkdtemp(prefix="jaxmle-bench-crossed-"))
import jaxmle as jm  # noqa: E402

POS = constraints.positive
DATA = os.path.join(C.REPO_ROOT, "tests", "data")


def _models():
    """The joint log-densities, as the tests define and check them
    (``tests/test_random_border.py``: crossed, cbpp, penicillin)."""
    import importlib.util

    path = os.path.join(C.REPO_ROOT, "tests", "test_random_border.py")
    spec = importlib.util.spec_from_file_location("test_random_border", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MODELS = _models()
crossed, cbpp, penicillin, _normal = MODELS.crossed, MODELS.cbpp, MODELS.penicillin, MODELS._normal


def sleepstudy(p, d):
    """Correlated random intercepts and slopes per subject: b_s ~ N(0, Σ), Σ from the two
    SDs and the correlation."""
    s0, s1, r = p["s0"], p["s1"], p["rho"]
    b0, b1 = p["b"][:, 0], p["b"][:, 1]
    mu = p["beta"][0] + p["beta"][1] * d["days"] + b0[d["subject"]] + b1[d["subject"]] * d["days"]
    # the bivariate normal by its conditional factorisation: b0 ~ N(0, s0²), b1 | b0
    cond = _normal(b1 - r * s1 / s0 * b0, s1 * jnp.sqrt(1 - r ** 2))
    return _normal(d["y"] - mu, p["sigma"]) + _normal(b0, s0) + cond


def glmm(p, d):
    eta = d["X"] @ p["beta"] + p["b"][d["g"]]
    ll = jnp.sum(d["y"] * eta - jnp.exp(eta) - gammaln(d["y"] + 1.0))
    return ll + _normal(p["b"], p["sd"])


def simulate_glmm(G: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), 20)
    X = np.column_stack([np.ones(20 * G), rng.normal(size=(20 * G, 2))])
    y = rng.poisson(np.exp(X @ np.array([0.5, 0.3, -0.2]) + rng.normal(0, 0.5, G)[g]))
    return {"y": y, "X": X, "g": g}


def glmm_workload(G: int) -> dict:
    return dict(loglik=glmm, data=simulate_glmm(G, 0),
                init={"beta": np.zeros(3), "sd": 1.0, "b": np.zeros(G)}, cons={"sd": POS},
                random=["b"], estimates=lambda r: {"sd": r.params["sd"], "b0": r.params["beta"][0]},
                others=[simulate_glmm(G, s) for s in (1, 2, 3)])


def simulate(S: int, Y: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    site, year = np.repeat(np.arange(S), Y), np.tile(np.arange(Y), S)
    y = rng.poisson(np.exp(0.3 + rng.normal(0, 0.6, S)[site] + rng.normal(0, 0.3, Y)[year]))
    return {"y": y, "site": site, "year": year}


def workloads():
    herd, inc, size, period = np.loadtxt(os.path.join(DATA, "cbpp.csv"), delimiter=",",
                                         skiprows=1, dtype=int).T
    pen = np.loadtxt(os.path.join(DATA, "penicillin.csv"), delimiter=",", skiprows=1)
    pen_data = {"y": pen[:, 0], "plate": pen[:, 1].astype(int), "sample": pen[:, 2].astype(int)}
    pen_init = {"beta": np.array([20.0]), "sigma": 1.0, "sa": 1.0, "sb": 1.0,
                "a": np.zeros(24), "b": np.zeros(6)}
    pen_cons = {"sigma": POS, "sa": POS, "sb": POS}
    sl = np.loadtxt(os.path.join(DATA, "sleepstudy.csv"), delimiter=",", skiprows=1)
    sl_data = {"y": sl[:, 0], "days": sl[:, 1], "subject": sl[:, 2].astype(int)}
    sl_init = {"beta": np.array([250.0, 10.0]), "sigma": 30.0, "s0": 20.0, "s1": 5.0, "rho": 0.0,
               "b": np.zeros((18, 2))}
    sl_cons = {"sigma": POS, "s0": POS, "s1": POS, "rho": constraints.interval(-1.0, 1.0)}

    def sl_estimates(r, reml):
        beta = r.random["beta"] if reml else r.params["beta"]
        return {"sd_int": r.params["s0"], "sd_days": r.params["s1"], "corr": r.params["rho"],
                "b0": beta[0]}

    return {
        "sleepstudy ML": dict(loglik=sleepstudy, data=sl_data, init=sl_init, cons=sl_cons,
                              random=["b"], estimates=lambda r: sl_estimates(r, False)),
        "sleepstudy REML": dict(loglik=sleepstudy, data=sl_data, init=sl_init, cons=sl_cons,
                                random={"b": "random", "beta": "flat"},
                                estimates=lambda r: sl_estimates(r, True)),
        "cbpp": dict(loglik=cbpp, data={"X": np.eye(4)[period], "herd": herd, "inc": inc,
                                        "size": size},
                     init={"beta": np.zeros(4), "sb": 1.0, "se": 1.0, "b": np.zeros(15),
                           "e": np.zeros(56)},
                     cons={"sb": POS, "se": POS}, random=["b", "e"],
                     estimates=lambda r: {"sd_herd": r.params["sb"], "sd_obs": r.params["se"],
                                          "b0": r.params["beta"][0]}),
        "penicillin ML": dict(loglik=penicillin, data=pen_data, init=pen_init, cons=pen_cons,
                              random=["a", "b"],
                              estimates=lambda r: {"sd_plate": r.params["sa"],
                                                   "sd_sample": r.params["sb"],
                                                   "b0": r.params["beta"][0]}),
        "penicillin REML": dict(loglik=penicillin, data=pen_data, init=pen_init, cons=pen_cons,
                                random={"a": "random", "b": "random", "beta": "flat"},
                                estimates=lambda r: {"sd_plate": r.params["sa"],
                                                     "sd_sample": r.params["sb"],
                                                     "b0": r.random["beta"][0]}),
    }


def crossed_workload(S, Y):
    return dict(loglik=crossed, data=simulate(S, Y, 0),
                init={"mu": 0.0, "sa": 1.0, "sb": 1.0, "a": np.zeros(S), "b": np.zeros(Y)},
                cons={"sa": POS, "sb": POS}, random=["a", "b"],
                estimates=lambda r: {"sd_site": r.params["sa"], "sd_year": r.params["sb"],
                                     "b0": r.params["mu"]},
                others=[simulate(S, Y, s) for s in (1, 2, 3)])


def _fit(w, data=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jm.fit(w["loglik"], w["data"] if data is None else data, w["init"],
                      constraints=w["cons"], random=w["random"])


def jaxmle_row(w: dict, dense_max: int) -> dict:
    t0 = time.perf_counter()
    res = _fit(w)
    first = time.perf_counter() - t0
    warm = []
    for data in w.get("others") or [w["data"]] * 3:
        t0 = time.perf_counter()
        _fit(w, data)
        warm.append(time.perf_counter() - t0)
    info = res.random_info
    row = {"first": first, "warm": statistics.median(warm), "loglik": float(res.loglik),
           "converged": bool(res.converged), "describe": info.describe(),
           "q": sum(info.sizes), "estimates": {k: float(v) for k, v in w["estimates"](res).items()}}
    if row["q"] <= dense_max:
        from jaxmle.random import structure
        from jaxmle.random.inner import Layout

        original = structure.candidate_layout
        structure.candidate_layout = lambda names, shapes, flat=(): Layout(names, shapes, 1)
        try:
            _fit(w)                                     # (compile)
            t0 = time.perf_counter()
            dense = _fit(w)
            row["dense_warm"] = time.perf_counter() - t0
            row["dense_loglik_diff"] = abs(float(dense.loglik) - row["loglik"])
        finally:
            structure.candidate_layout = original
    return row


R_SCRIPT = r"""
suppressMessages({library(glmmTMB); library(lme4)})
args <- commandArgs(trailingOnly = TRUE)
kind <- args[1]; d <- read.csv(args[2])
sds <- function(m) sapply(VarCorr(m)$cond, function(v) unname(attr(v, "stddev"))[1])
timed <- function(f) { f(); t0 <- proc.time()[["elapsed"]]; m <- f(); list(m = m, warm = proc.time()[["elapsed"]] - t0) }
out <- list()
if (kind == "crossed") {
  d$site <- factor(d$site); d$year <- factor(d$year)
  r <- timed(function() glmmTMB(y ~ 1 + (1 | site) + (1 | year), family = poisson, data = d))
  out$glmmTMB <- list(warm = r$warm, loglik = as.numeric(logLik(r$m)), sd_site = sds(r$m)[["site"]],
                      sd_year = sds(r$m)[["year"]], b0 = fixef(r$m)$cond[[1]])
} else if (kind == "cbpp") {
  d$herd <- factor(d$herd); d$period <- factor(d$period); d$obs <- factor(seq_len(nrow(d)))
  r <- timed(function() glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs),
                                family = binomial, data = d))
  out$glmmTMB <- list(warm = r$warm, loglik = as.numeric(logLik(r$m)), sd_herd = sds(r$m)[["herd"]],
                      sd_obs = sds(r$m)[["obs"]], b0 = fixef(r$m)$cond[[1]])
  r <- timed(function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs),
                              family = binomial, data = d))
  v <- VarCorr(r$m)
  out$lme4 <- list(warm = r$warm, loglik = as.numeric(logLik(r$m)), sd_herd = attr(v$herd, "stddev")[[1]],
                   sd_obs = attr(v$obs, "stddev")[[1]], b0 = fixef(r$m)[[1]])
} else if (kind == "glmm") {
  d$g <- factor(d$g)
  r <- timed(function() glmmTMB(y ~ x1 + x2 + (1 | g), family = poisson, data = d))
  out$glmmTMB <- list(warm = r$warm, loglik = as.numeric(logLik(r$m)), sd = sds(r$m)[["g"]],
                      b0 = fixef(r$m)$cond[[1]])
} else if (kind %in% c("sleep_ml", "sleep_reml")) {
  d$subject <- factor(d$subject)
  r <- timed(function() lmer(reaction ~ days + (days | subject), data = d, REML = kind == "sleep_reml"))
  v <- VarCorr(r$m)$subject
  out$lme4 <- list(warm = r$warm, loglik = as.numeric(logLik(r$m)), sd_int = attr(v, "stddev")[[1]],
                   sd_days = attr(v, "stddev")[[2]], corr = attr(v, "correlation")[1, 2], b0 = fixef(r$m)[[1]])
} else {
  d$plate <- factor(d$plate); d$sample <- factor(d$sample)
  r <- timed(function() lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = d, REML = kind == "reml"))
  v <- VarCorr(r$m)
  out$lme4 <- list(warm = r$warm, loglik = as.numeric(logLik(r$m)), sd_plate = attr(v$plate, "stddev")[[1]],
                   sd_sample = attr(v$sample, "stddev")[[1]], b0 = fixef(r$m)[[1]])
}
out$versions <- paste0("glmmTMB ", packageVersion("glmmTMB"), ", lme4 ", packageVersion("lme4"))
cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = 15), "\n")
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200x10,2000x30,8000x30")
    ap.add_argument("--glmm-groups", default="500,5000,50000")
    ap.add_argument("--dense-max", type=int, default=300)
    ap.add_argument("--md-out", default=None)
    args = ap.parse_args(argv)
    cases = []
    for size in args.sizes.split(","):
        S, Y = (int(x) for x in size.split("x"))
        cases.append((f"crossed {S:,} sites × {Y} years", "crossed", crossed_workload(S, Y)))
    w = workloads()
    for G in (int(x) for x in args.glmm_groups.split(",") if x):
        cases.append((f"Poisson GLMM, {G:,} groups × 20", "glmm", glmm_workload(G)))
    cases += [("sleepstudy, ML", "sleep_ml", w["sleepstudy ML"]),
              ("sleepstudy, REML", "sleep_reml", w["sleepstudy REML"]),
              ("cbpp + observation-level effect", "cbpp", w["cbpp"]),
              ("Penicillin, ML", "ml", w["penicillin ML"]),
              ("Penicillin, REML", "reml", w["penicillin REML"])]
    rows, versions = [], set()
    for label, kind, work in cases:
        j = jaxmle_row(work, args.dense_max)
        with tempfile.TemporaryDirectory() as tmp:
            path, d = os.path.join(tmp, "d.csv"), work["data"]
            if kind == "crossed":
                np.savetxt(path, np.column_stack([d["site"], d["year"], d["y"]]), fmt="%d",
                           delimiter=",", header="site,year,y", comments="")
            elif kind == "glmm":
                np.savetxt(path, np.column_stack([d["g"], d["X"][:, 1:], d["y"]]), fmt="%.17g",
                           delimiter=",", header="g,x1,x2,y", comments="")
            else:
                path = os.path.join(DATA, {"cbpp": "cbpp.csv", "sleep_ml": "sleepstudy.csv",
                                           "sleep_reml": "sleepstudy.csv"}.get(kind, "penicillin.csv"))
            r = C.run_rscript(R_SCRIPT, [kind, path])
        peers = [] if r is None or "error" in r else \
            [(k, v) for k, v in r.items() if k not in ("versions", "process")]
        if r and "versions" in r:
            versions.add(r["versions"])
        for name, p in peers or [(None, None)]:
            agree = "–"
            if p:
                worst = max(abs(j["estimates"][k] - p[k]) for k in j["estimates"] if k in p)
                agree = f"ℓ {j['loglik'] - p['loglik']:+.1e}; estimates ≤ {worst:.1e}"
            how = j["describe"].split("Laplace (", 1)[-1][:-1].replace(" inner Hessian", "")
            rows.append([label, how, C.fmt_s(j["first"]),
                         C.fmt_s(j["warm"]), C.fmt_s(j["dense_warm"]) if "dense_warm" in j else "–",
                         name or ("(R not installed)" if r is None else r.get("error", "–")),
                         C.fmt_s(p["warm"]) if p else "–",
                         f"{p['warm'] / j['warm']:.1f}×" if p else "–",
                         f"{j['loglik']:.6f}", f"{p['loglik']:.6f}" if p else "–", agree,
                         "yes" if j["converged"] else "NO"])
            print(rows[-1], flush=True)
    table = C.md_table(["workload", "jaxmle inner Hessian", "jaxmle first fit", "jaxmle warm",
                        "dense warm", "peer", "peer warm", "peer ÷ jaxmle", "jaxmle ℓ", "peer ℓ",
                        "jaxmle − peer", "converged"], rows)
    C.write_sections(args.md_out, [C.Section(
        "Random effects: jaxmle (Laplace, structured inner Hessians) vs glmmTMB / lme4",
        C.machine_info_md() + "\n\n" + table, [
            f"peers: {', '.join(sorted(versions)) or 'not run'}; warm: the second of two fits "
            "in one R process. jaxmle warm: a new dataset of the same shape (simulated rows, "
            "median of 3) or the same data again (cbpp, Penicillin); 'dense warm': the dense "
            "inner Hessian forced (what these models cost before).",
            "ℓ: the Laplace (LMM: exact) log-likelihood, REML's restricted one for REML; a "
            "positive jaxmle − peer means the peer's optimiser stopped short of the maximum."])])
    return 0


if __name__ == "__main__":
    sys.exit(main())

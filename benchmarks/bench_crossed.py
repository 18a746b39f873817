"""Several grouping factors by Laplace (issue 17's bordered block-diagonal structure)
against glmmTMB and lme4, measured in the same run.

    python3 benchmarks/bench_crossed.py [--sizes 200x10,2000x30,8000x30] [--dense-max 300]
        [--md-out FILE]

Workloads (seeded, float64; the joint log-densities are written in ``jax.numpy``):

* crossed site × year Poisson counts, y ~ Poisson(exp(μ + a_site + b_year)),
  a ~ N(0, 0.6²), b ~ N(0, 0.3²), one count per site and year: ``random=["a", "b"]``
  (the sites group, the years border them). glmmTMB: ``y ~ 1 + (1|site) + (1|year)``.
* cbpp (lme4's data) with an observation-level effect: binomial, period + (1|herd) +
  (1|obs) (the observations group, the herds border them); glmmTMB and lme4 ``glmer``.
* Penicillin (lme4's data): an LMM with plates crossed with samples, ML and REML (the
  intercept integrated out under a flat prior, on the border); lme4 ``lmer``.

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

import numpy as np  # noqa: E402
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
crossed, cbpp, penicillin = MODELS.crossed, MODELS.cbpp, MODELS.penicillin


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
    return {
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
    ap.add_argument("--dense-max", type=int, default=300)
    ap.add_argument("--md-out", default=None)
    args = ap.parse_args(argv)
    cases = []
    for size in args.sizes.split(","):
        S, Y = (int(x) for x in size.split("x"))
        cases.append((f"crossed {S:,} sites × {Y} years", "crossed", crossed_workload(S, Y)))
    w = workloads()
    cases += [("cbpp + observation-level effect", "cbpp", w["cbpp"]),
              ("Penicillin, ML", "ml", w["penicillin ML"]),
              ("Penicillin, REML", "reml", w["penicillin REML"])]
    rows, versions = [], set()
    for label, kind, work in cases:
        j = jaxmle_row(work, args.dense_max)
        with tempfile.TemporaryDirectory() as tmp:
            if kind == "crossed":
                path = os.path.join(tmp, "d.csv")
                d = work["data"]
                np.savetxt(path, np.column_stack([d["site"], d["year"], d["y"]]), fmt="%d",
                           delimiter=",", header="site,year,y", comments="")
            else:
                path = os.path.join(DATA, "cbpp.csv" if kind == "cbpp" else "penicillin.csv")
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
        "Several grouping factors: jaxmle (bordered block-diagonal Laplace) vs glmmTMB / lme4",
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

"""NIST StRD: jaxmle against least-squares and general optimisers, in one run.

    python3 benchmarks/bench_nist.py [--quick] [--only NAME[,NAME]] [--no-peers]
        [--no-warm] [--md-out FILE] [--json-out FILE]

Every NIST Statistical Reference Datasets problem shipped in ``tests/data/nist/`` (27
nonlinear least-squares problems with two certified starts each, 11 linear sets), parsed
by ``tests/nist_problems.py`` (imported by path; the tests keep using it unchanged).

Nonlinear (27 problems x 2 starts = 54 fits per method and formulation):

* jaxmle ``jm.fit(..., method="newton")``, float64, library defaults otherwise (tol 1e-8,
  max_iter 2000), in two formulations:
  (a) ``conc``: sigma profiled out, the concentrated log-likelihood -n/2 log(RSS(b)/n)
      (what ``tests/test_nist.py`` fits);
  (b) ``sigma``: the Gaussian log-likelihood (``numpyro`` ``Normal(mean, sigma)``, one
      term per observation) with sigma a free parameter, ``constraints={"sigma":
      positive}``, started at sqrt(RSS(b0)/n): what a user would write.
* peers on formulation (a)'s least-squares problem from the same starts, Jacobian /
  gradient / Hessian exact by jax (jitted, compiled before the clock starts):
  ``scipy.optimize.least_squares`` method="trf" and method="lm" (MINPACK), max_nfev
  20000; ``scipy.optimize.minimize`` BFGS (maxiter 20000) and trust-exact (maxiter 5000)
  on the negative concentrated log-likelihood n/2 log(RSS(b)/n). Each twice: with tight
  tolerances (least_squares ftol = xtol = gtol = 1e-15, minimize gtol 1e-10: the accuracy
  float64 allows; the per-problem table) and with scipy's defaults (whose success flag is
  the one a user reads; summary rows).

Per fit: min LRE over the coefficients against the certified values (``lre`` of
nist_problems: -log10 relative error, capped at 15), LRE of the RSS, the method's own
success flag (jaxmle: ``converged``, ``status``, iterations, warnings raised, whether the
SEs are finite; scipy: ``success``, status, iterations/nfev). A jaxmle row with
``converged=True`` and min LRE < 6 is flagged CONFIDENTLY WRONG (a peer row with
``success=True`` and LRE < 6 likewise). jaxmle's SEs of b are compared (min LRE) with the
observed-information SEs at the certified b, sqrt(RSS/n * diag((J'J - sum r_i H_i)^-1))
(the same for both formulations: at the MLE the b-sigma block of the information is 0).

Linear (11 sets): Gaussian log-likelihood with sigma free (started at b = 0, sigma =
sqrt(RSS(0)/n)); LRE of the coefficients and of the SEs against NIST's certified SEs.
NIST's SEs use the unbiased sigma^2 = RSS/(n-p), jaxmle's MLE RSS/n, so jaxmle's SEs are
multiplied by sqrt(n/(n-p)) (p = number of coefficients) before the comparison. A
Householder QR solve of X (numpy) with SEs from R is shown next to it for reference.

Timings are totals per method: jaxmle's first call of each model includes its compilation
(``first``), ``warm`` is a second identical fit right after (``--no-warm`` skips it). The
machine is shared, so the 1-minute load average is sampled before each problem.

``--quick``: Misra1a, Chwirut2, Eckerle4, MGH09, Hahn1, Lanczos3 and the linear Norris,
Longley, Filip. ``--only``: a comma list of problem names (nonlinear or linear). The exit
status is 0 unless the script itself fails: misses are results, not errors.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402  (numpy-only module)

LRE_BAR = 6.0
QUICK_NLS = ("Misra1a", "Chwirut2", "Eckerle4", "MGH09", "Hahn1", "Lanczos3")
QUICK_LINEAR = ("Norris", "Longley", "Filip")
STARTS = ("start1", "start2")
FORMS = ("conc", "sigma")
FORM_LABELS = {"conc": "(a) sigma profiled out", "sigma": "(b) sigma free"}
PEERS = ("trf", "lm", "bfgs", "trust-exact")
PEER_LABELS = {"trf": "scipy least_squares TRF", "lm": "scipy least_squares LM (MINPACK)",
               "bfgs": "scipy minimize BFGS", "trust-exact": "scipy minimize trust-exact"}
LSQ_TOL = 1e-15
LSQ_MAX_NFEV = 20000
MIN_GTOL = 1e-10
BFGS_MAXITER = 20000
TRUST_MAXITER = 5000


# ---------------------------------------------------------------------------
# Problems (tests/nist_problems.py, imported by path)
# ---------------------------------------------------------------------------

def load_nist_module():
    path = os.path.join(C.REPO_ROOT, "tests", "nist_problems.py")
    spec = importlib.util.spec_from_file_location("nist_problems", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("nist_problems", mod)     # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


NP = None     # the nist_problems module, set in main()


def load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def lre_min(est, cert) -> float:
    est = np.asarray(est, dtype=np.float64)
    if est.shape != np.shape(cert) or not np.all(np.isfinite(est)):
        return 0.0
    return float(np.min(NP.lre(est, cert)))


def lre_rss(problem, b) -> float:
    b = np.asarray(b, dtype=np.float64)
    if not np.all(np.isfinite(b)):
        return 0.0
    rss = problem.rss_np(b)
    if not math.isfinite(rss):
        return 0.0
    return float(NP.lre(rss, problem.certified_rss))


# ---------------------------------------------------------------------------
# Log-likelihoods and jitted peer functions, one per mean function (cached: problems
# sharing a mean, e.g. Gauss1-3, share the compiled programs)
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def gauss_loglik(mean):
    import numpyro.distributions as dist

    def loglik(params, data):
        return dist.Normal(mean(params["b"], data["x"]), params["sigma"]).log_prob(data["y"])

    return loglik


def linear_mean(b, X):
    return X @ b


@functools.lru_cache(maxsize=None)
def peer_functions(mean):
    """Jitted residuals, Jacobian of the residuals, and f = n/2 log(RSS/n) with its
    gradient and Hessian, all as functions of (b, x, y)."""
    import jax
    import jax.numpy as jnp

    def resid(b, x, y):
        return y - mean(b, x)

    def f(b, x, y):
        r = resid(b, x, y)
        n = r.shape[0]
        return 0.5 * n * jnp.log(jnp.sum(r**2) / n)

    return {
        "resid": jax.jit(resid),
        "jac": jax.jit(jax.jacfwd(resid)),
        "f_and_g": jax.jit(jax.value_and_grad(f)),
        "hess": jax.jit(jax.hessian(f)),
        "mean_jac": jax.jit(jax.jacfwd(mean)),
        "mean_hess": jax.jit(jax.hessian(mean)),
    }


def observed_info_se(problem, b) -> np.ndarray:
    """sqrt(RSS/n * diag((J'J - sum_i r_i H_i)^-1)) at ``b`` (numpy, jax derivatives,
    Jacobi-scaled inverse)."""
    import jax.numpy as jnp

    fns = peer_functions(problem.mean)
    bj, x = jnp.asarray(b), jnp.asarray(problem.x)
    J = np.asarray(fns["mean_jac"](bj, x))
    H = np.asarray(fns["mean_hess"](bj, x))
    r = problem.y - problem.mean_np(b)
    info = J.T @ J - np.einsum("i,ijk->jk", r, H)
    d = np.sqrt(np.diag(J.T @ J))
    inv = np.linalg.inv(info / np.outer(d, d)) / np.outer(d, d)
    return np.sqrt((r @ r) / problem.n * np.diag(inv))


def polished_certified(problem, steps: int = 6) -> np.ndarray:
    """The certified b refined by Gauss-Newton steps (lstsq of J, kept only while the RSS
    does not grow): the float64 stationary point next to NIST's 11-digit values, where
    the observed-information SEs are evaluated (at the rounded certified b itself they
    move by up to 1% on Bennett5, whose scaled cond(J'J) is 3e9)."""
    import jax.numpy as jnp

    fns = peer_functions(problem.mean)
    x = jnp.asarray(problem.x)
    b = np.asarray(problem.certified_params, dtype=np.float64)
    rss = problem.rss_np(b)
    for _ in range(steps):
        J = np.asarray(fns["mean_jac"](jnp.asarray(b), x))
        r = problem.y - problem.mean_np(b)
        step = np.linalg.lstsq(J, r, rcond=None)[0]
        b_new = b + step
        rss_new = problem.rss_np(b_new)
        if not (rss_new <= rss):
            break
        b, rss = b_new, rss_new
    return b


# ---------------------------------------------------------------------------
# jaxmle fits
# ---------------------------------------------------------------------------

def status_label(code) -> str:
    try:
        from jaxmle.core.typing import STATUS_LABELS, Status

        return STATUS_LABELS.get(Status(int(code)), Status(int(code)).name)
    except Exception:
        return str(code)


def run_jaxmle(jm, loglik, data, init, constraints, warm: bool) -> dict:
    """One jm.fit (and, if ``warm``, the same fit again for the warm time)."""
    import jax.numpy as jnp

    data = {k: jnp.asarray(v) for k, v in data.items()}
    rec = {}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = jm.fit(loglik, data, init=init, constraints=constraints, method="newton")
            b = np.asarray(res.params["b"], dtype=np.float64)
        except Exception as e:  # a crash is a result too
            rec.update(error=f"{type(e).__name__}: {e}"[:200], b=None, converged=False,
                       status="exception", n_iter=None, se_finite=False, se_b=None, sigma=None)
            res = None
    rec["t_first"] = time.perf_counter() - t0
    names = []
    for w in caught:
        n = type(w.message).__name__
        if n not in names and issubclass(w.category, Warning) and not issubclass(
                w.category, (DeprecationWarning, PendingDeprecationWarning)):
            names.append(n)
    rec["warnings"] = names
    rec["warning_text"] = [str(w.message)[:300] for w in caught][:3]
    if res is None:
        return rec
    se = {k: np.asarray(v, dtype=np.float64) for k, v in res.stderr.items()}
    rec.update(
        b=b.tolist(),
        converged=bool(np.asarray(res.converged)),
        status=status_label(res.status),
        n_iter=int(np.asarray(res.n_iter)),
        se_finite=bool(all(np.all(np.isfinite(v)) for v in se.values())),
        se_b=se["b"].tolist(),
        sigma=float(np.asarray(res.params["sigma"])) if "sigma" in res.params else None,
        loglik=float(np.asarray(res.loglik)),
    )
    if warm:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res2 = jm.fit(loglik, data, init=init, constraints=constraints, method="newton")
            b2 = np.asarray(res2.params["b"], dtype=np.float64)
        rec["t_warm"] = time.perf_counter() - t0
        rec["warm_same"] = bool(np.array_equal(b2, b, equal_nan=True))
    return rec


def jaxmle_nls(jm, p, start: str, form: str, warm: bool) -> dict:
    import jax.numpy as jnp
    from numpyro.distributions import constraints

    b0 = np.asarray(p.starts[start], dtype=np.float64)
    data = {"x": p.x, "y": p.y}
    if form == "conc":
        rec = run_jaxmle(jm, NP.concentrated_loglik(p.mean), data, {"b": jnp.asarray(b0)}, None, warm)
    else:
        init = {"b": jnp.asarray(b0), "sigma": jnp.asarray(math.sqrt(p.rss_np(b0) / p.n))}
        rec = run_jaxmle(jm, gauss_loglik(p.mean), data, init,
                         {"sigma": constraints.positive}, warm)
    b = rec.get("b")
    rec["lre_b"] = lre_min(NP.canonical(p.name, b), p.certified_params) if b is not None else 0.0
    rec["relabelled"] = b is not None and not np.array_equal(NP.canonical(p.name, b), b)
    rec["lre_rss"] = lre_rss(p, b) if b is not None else 0.0
    return rec


# ---------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------

def run_peer(p, start: str, peer: str, tight: bool = True) -> dict:
    import jax.numpy as jnp
    from scipy import optimize

    fns = peer_functions(p.mean)
    x, y = jnp.asarray(p.x), jnp.asarray(p.y)
    b0 = np.asarray(p.starts[start], dtype=np.float64)

    def resid(b):
        return np.asarray(fns["resid"](jnp.asarray(b), x, y))

    def jac(b):
        return np.asarray(fns["jac"](jnp.asarray(b), x, y))

    def f_and_g(b):
        v, g = fns["f_and_g"](jnp.asarray(b), x, y)
        return float(v), np.asarray(g)

    def hess(b):
        return np.asarray(fns["hess"](jnp.asarray(b), x, y))

    # compile before the clock (one call each)
    resid(b0), jac(b0), f_and_g(b0), hess(b0)
    rec = {}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            try:
                if peer in ("trf", "lm"):
                    tols = dict(ftol=LSQ_TOL, xtol=LSQ_TOL, gtol=LSQ_TOL) if tight else {}
                    r = optimize.least_squares(resid, b0, jac=jac, method=peer,
                                               max_nfev=LSQ_MAX_NFEV, **tols)
                    rec.update(success=bool(r.success), status=int(r.status), n_iter=int(r.nfev),
                               message=str(r.message)[:120])
                else:
                    gtol = {"gtol": MIN_GTOL} if tight else {}
                    if peer == "bfgs":
                        r = optimize.minimize(f_and_g, b0, jac=True, method="BFGS",
                                              options={"maxiter": BFGS_MAXITER, **gtol})
                    else:
                        r = optimize.minimize(f_and_g, b0, jac=True, hess=hess, method="trust-exact",
                                              options={"maxiter": TRUST_MAXITER, **gtol})
                    rec.update(success=bool(r.success), status=int(r.status), n_iter=int(r.nit),
                               message=str(r.message)[:120])
                b = np.asarray(r.x, dtype=np.float64)
            except Exception as e:
                b = None
                rec.update(success=False, status="exception", n_iter=None,
                           message=f"{type(e).__name__}: {e}"[:120])
    rec["t"] = time.perf_counter() - t0
    rec["warnings"] = sorted({type(w.message).__name__ for w in caught})
    rec["b"] = None if b is None else b.tolist()
    rec["lre_b"] = lre_min(NP.canonical(p.name, b), p.certified_params) if b is not None else 0.0
    rec["lre_rss"] = lre_rss(p, b) if b is not None else 0.0
    return rec


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------

def jaxmle_linear(jm, lp, warm: bool) -> dict:
    import jax.numpy as jnp
    from numpyro.distributions import constraints

    init = {"b": jnp.zeros(lp.k), "sigma": jnp.asarray(math.sqrt(float(lp.y @ lp.y) / lp.n))}
    rec = run_jaxmle(jm, gauss_loglik(linear_mean), {"x": lp.X, "y": lp.y}, init,
                     {"sigma": constraints.positive}, warm)
    b = rec.get("b")
    rec["lre_b"] = lre_min(b, lp.certified_params) if b is not None else 0.0
    rec["lre_rss"] = lre_rss(lp, b) if b is not None else 0.0
    with np.errstate(all="ignore"):   # error in certified-SE units (Wampler1/2: SE 0 -> inf)
        rec["err_se_units"] = (float(np.max(np.abs(np.asarray(b) - lp.certified_params)
                                            / lp.certified_se)) if b is not None else None)
    if rec.get("se_b") is not None:
        se = np.asarray(rec["se_b"]) * math.sqrt(lp.n / (lp.n - lp.k))
        rec["lre_se"] = lre_min(se, lp.certified_se)
    else:
        rec["lre_se"] = 0.0
    return rec


def qr_linear(lp) -> dict:
    """Reference: Householder QR of X (numpy), b = R^-1 Q'y, SEs sqrt(RSS/(n-p) diag(R^-1 R^-T))."""
    from scipy.linalg import solve_triangular

    Q, R = np.linalg.qr(lp.X)
    b = solve_triangular(R, Q.T @ lp.y)
    rss = lp.rss_np(b)
    with np.errstate(all="ignore"):
        rinv = solve_triangular(R, np.eye(lp.k))
        se = np.sqrt(rss / (lp.n - lp.k) * np.sum(rinv**2, axis=1))
    return {"lre_b": lre_min(b, lp.certified_params), "lre_rss": lre_rss(lp, b),
            "lre_se": lre_min(se, lp.certified_se)}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def f1(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def jm_cell_flags(rec) -> str:
    if rec.get("converged") and rec["lre_b"] < LRE_BAR:
        return "**CONFIDENTLY WRONG**"
    return ""


def short_warn(rec) -> str:
    w = [n.replace("Warning", "W") for n in rec.get("warnings", [])]
    return ", ".join(w) if w else "–"


def summary_section(nls, lin, peers_on, timings, n_nls) -> str:
    rows = []
    for form in FORMS:
        recs = [r["jm"][form] for r in nls]
        ok = sum(r["lre_b"] >= LRE_BAR for r in recs)
        ok_rss = sum(r["lre_b"] >= LRE_BAR and r["lre_rss"] >= LRE_BAR for r in recs)
        conv = sum(bool(r.get("converged")) for r in recs)
        wrong = sum(bool(r.get("converged")) and r["lre_b"] < LRE_BAR for r in recs)
        t = timings.get(f"jm-{form}", {})
        tstr = f"{t.get('first', 0):.1f} (warm {t['warm']:.1f})" if "warm" in t else f"{t.get('first', 0):.1f}"
        rows.append((f"jaxmle Newton {FORM_LABELS[form]}", f"{ok}/{n_nls}", f"{ok_rss}/{n_nls}",
                     f"{conv}/{n_nls}", wrong, tstr))
    if peers_on:
        for which, suffix, label in (("peers", "", "tight tol"), ("peers_default", "-default",
                                                                    "scipy's default tol")):
            for peer in PEERS:
                recs = [r[which][peer] for r in nls]
                ok = sum(r["lre_b"] >= LRE_BAR for r in recs)
                ok_rss = sum(r["lre_b"] >= LRE_BAR and r["lre_rss"] >= LRE_BAR for r in recs)
                succ = sum(bool(r.get("success")) for r in recs)
                wrong = sum(bool(r.get("success")) and r["lre_b"] < LRE_BAR for r in recs)
                rows.append((f"{PEER_LABELS[peer]} on (a), {label}", f"{ok}/{n_nls}",
                             f"{ok_rss}/{n_nls}", f"{succ}/{n_nls}", wrong,
                             f"{timings.get(peer + suffix, 0):.1f}"))
    tab = C.md_table(["method", "LRE ≥ 6 (coefs)", "coefs and RSS ≥ 6", "reports success",
                      "confidently wrong (success, LRE < 6)", "total s"], rows)
    out = [tab]
    if lin:
        n = len(lin)
        ok_b = sum(r["jm"]["lre_b"] >= LRE_BAR for r in lin)
        ok_se = sum(r["jm"]["lre_b"] >= LRE_BAR and r["jm"]["lre_se"] >= LRE_BAR for r in lin)
        conv = sum(bool(r["jm"].get("converged")) for r in lin)
        wrong = sum(bool(r["jm"].get("converged")) and r["jm"]["lre_b"] < LRE_BAR for r in lin)
        ref_b = sum(r["qr"]["lre_b"] >= LRE_BAR for r in lin)
        ref_se = sum(r["qr"]["lre_b"] >= LRE_BAR and r["qr"]["lre_se"] >= LRE_BAR for r in lin)
        t = timings.get("jm-linear", {})
        tstr = f"{t.get('first', 0):.1f} (warm {t['warm']:.1f})" if "warm" in t else f"{t.get('first', 0):.1f}"
        out.append(C.md_table(
            ["linear (σ free)", "coefs LRE ≥ 6", "coefs and SEs ≥ 6", "reports converged",
             "confidently wrong", "total s"],
            [("jaxmle Newton", f"{ok_b}/{n}", f"{ok_se}/{n}", f"{conv}/{n}", wrong, tstr),
             ("numpy Householder QR (reference)", f"{ref_b}/{n}", f"{ref_se}/{n}", "–", "–", "–")]))
    return "\n\n".join(out)


def jaxmle_table(nls) -> str:
    rows = []
    for r in nls:
        for form in FORMS:
            j = r["jm"][form]
            rows.append((
                r["name"], r["start"][-1], form,
                f1(j["lre_b"]), f1(j["lre_rss"]), f1(j.get("lre_se")),
                "yes" if j.get("converged") else "no", j.get("status"), j.get("n_iter"),
                short_warn(j), "yes" if j.get("se_finite") else "no",
                fmt_t(j.get("t_first")) + (f" / {fmt_t(j['t_warm'])}" if "t_warm" in j else ""),
                jm_cell_flags(j) or ("miss" if j["lre_b"] < LRE_BAR else ""),
            ))
    return C.md_table(["problem", "start", "form", "LRE b", "LRE RSS", "LRE SE", "converged",
                       "status", "iter", "warnings", "SEs finite", "s (first / warm)", "flag"], rows)


def peers_table(nls) -> str:
    rows = []
    for r in nls:
        cells = [r["name"], r["start"][-1], r["difficulty"]]
        for form in FORMS:
            j = r["jm"][form]
            cells.append(f"{f1(j['lre_b'])} / {f1(j['lre_rss'])}{'' if j.get('converged') else ' ✗'}")
        for peer in PEERS:
            q = r["peers"][peer]
            mark = "" if q.get("success") else " ✗"
            if q.get("success") and q["lre_b"] < LRE_BAR:
                mark = " **!**"
            cells.append(f"{f1(q['lre_b'])} / {f1(q['lre_rss'])}{mark}")
        rows.append(cells)
    heads = ["problem", "start", "difficulty", "jm (a)", "jm (b)"] + [
        {"trf": "TRF", "lm": "LM", "bfgs": "BFGS", "trust-exact": "trust-exact"}[p] for p in PEERS]
    return C.md_table(heads, rows)


def linear_table(lin) -> str:
    rows = []
    for r in lin:
        j, q = r["jm"], r["qr"]
        flag = "**CONFIDENTLY WRONG**" if j.get("converged") and j["lre_b"] < LRE_BAR else (
            "miss" if j["lre_b"] < LRE_BAR or j["lre_se"] < LRE_BAR else "")
        if not j.get("converged"):
            flag = (flag + ", " if flag else "") + "not converged"
        e = j.get("err_se_units")
        e = "–" if e is None else ("inf" if not math.isfinite(e) else f"{e:.1e}")
        rows.append((r["name"], r["n"], r["k"], f1(j["lre_b"]), e, f1(j["lre_se"]), f1(j["lre_rss"]),
                     "yes" if j.get("converged") else "no", j.get("status"), j.get("n_iter"),
                     short_warn(j), "yes" if j.get("se_finite") else "no",
                     f"{f1(q['lre_b'])} / {f1(q['lre_se'])}", flag))
    return C.md_table(["set", "n", "p", "LRE b", "max \\|Δb\\|/SE", "LRE SE (×√(n/(n−p)))", "LRE RSS", "converged",
                       "status", "iter", "warnings", "SEs finite", "QR: LRE b / SE", "flag"], rows)


def fmt_t(x) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def git_info() -> str:
    def run(*a):
        try:
            return subprocess.run(["git", "-C", C.REPO_ROOT, *a], capture_output=True,
                                  text=True).stdout.strip()
        except Exception:
            return "?"
    head = run("rev-parse", "--short", "HEAD")
    dirty = run("status", "--short", "--", "jaxmle")
    n = len([ln for ln in dirty.splitlines() if ln.strip()])
    return head + (f" (+ {n} uncommitted change(s) under jaxmle/ in the working tree)" if n else
                   " (jaxmle/ clean)")


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"only {','.join(QUICK_NLS + QUICK_LINEAR)}")
    ap.add_argument("--only", default=None, help="comma list of problem names (nonlinear or linear)")
    ap.add_argument("--no-peers", action="store_true", help="jaxmle only")
    ap.add_argument("--no-warm", action="store_true", help="skip the second (warm) jaxmle fit")
    ap.add_argument("--md-out", default=None, help="also write the markdown here")
    ap.add_argument("--json-out", default=None, help="write every fit's record as JSON")
    return ap.parse_args(argv)


def main(argv=None):
    global NP
    args = parse_args(argv)
    NP = load_nist_module()
    nls_names = list(NP.NLS_NAMES)
    lin_names = list(NP.LINEAR_NAMES)
    if args.quick:
        nls_names = [n for n in nls_names if n in QUICK_NLS]
        lin_names = [n for n in lin_names if n in QUICK_LINEAR]
    if args.only:
        want = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in want if w not in NP.NLS_NAMES and w not in NP.LINEAR_NAMES]
        if unknown:
            raise SystemExit(f"unknown problem(s) {unknown}; known: {NP.NLS_NAMES + NP.LINEAR_NAMES}")
        nls_names = [n for n in nls_names if n in want]
        lin_names = [n for n in lin_names if n in want]

    load_start = load_avg()
    t_run = time.perf_counter()
    C.enable_x64()
    jm, msg = C.jaxmle_status()
    if jm is None:
        raise SystemExit(msg)
    info = C.machine_info()
    loads = [load_start]
    warm = not args.no_warm
    timings: dict = {f"jm-{f}": {"first": 0.0, "warm": 0.0} if warm else {"first": 0.0}
                     for f in FORMS + ("linear",)}
    for p_ in PEERS:
        timings[p_] = timings[p_ + "-default"] = 0.0

    nls = []
    for name in nls_names:
        p = NP.load_nls(name)
        loads.append(load_avg())
        try:
            b_ref = polished_certified(p)
            se_ref = observed_info_se(p, b_ref)
        except Exception:
            se_ref = None
        for start in STARTS:
            row = {"name": name, "start": start, "difficulty": p.difficulty, "jm": {}, "peers": {},
                   "peers_default": {}}
            for form in FORMS:
                rec = jaxmle_nls(jm, p, start, form, warm)
                if se_ref is not None and rec.get("se_b") is not None:
                    rec["lre_se"] = lre_min(rec["se_b"], se_ref)
                row["jm"][form] = rec
                timings[f"jm-{form}"]["first"] += rec["t_first"]
                if warm and "t_warm" in rec:
                    timings[f"jm-{form}"]["warm"] += rec["t_warm"]
            if not args.no_peers:
                for peer in PEERS:
                    q = run_peer(p, start, peer)
                    row["peers"][peer] = q
                    timings[peer] += q["t"]
                    q = run_peer(p, start, peer, tight=False)
                    row["peers_default"][peer] = q
                    timings[peer + "-default"] += q["t"]
            nls.append(row)
            a, b = row["jm"]["conc"], row["jm"]["sigma"]
            C.log(f"{name:9s} {start}: jm(a) {a['lre_b']:5.1f} {a.get('converged')!s:5} {a.get('status')}"
                  f" | jm(b) {b['lre_b']:5.1f} {b.get('converged')!s:5} {b.get('status')} {b['warnings']}"
                  + ("" if args.no_peers else " | " + " ".join(
                      f"{k} {v['lre_b']:.1f}{'' if v['success'] else 'x'}" for k, v in row["peers"].items())))

    lin = []
    for name in lin_names:
        lp = NP.load_linear(name)
        loads.append(load_avg())
        rec = jaxmle_linear(jm, lp, warm)
        timings["jm-linear"]["first"] += rec["t_first"]
        if warm and "t_warm" in rec:
            timings["jm-linear"]["warm"] += rec["t_warm"]
        lin.append({"name": name, "n": lp.n, "k": lp.k, "jm": rec, "qr": qr_linear(lp)})
        C.log(f"{name:9s} linear: b {rec['lre_b']:.1f} se {rec['lre_se']:.1f} {rec.get('converged')}"
              f" {rec.get('status')} {rec['warnings']}")

    loads.append(load_avg())
    wall = time.perf_counter() - t_run
    n_nls = len(nls)

    # ---------------------------------------------------------------- markdown
    misses = [(r, f) for r in nls for f in FORMS if r["jm"][f]["lre_b"] < LRE_BAR]
    wrong = [(r, f) for r, f in misses if r["jm"][f].get("converged")]
    fl = [x for x in loads if math.isfinite(x)]
    head = (
        f"Run {info.get('date')}, git {git_info()}, jaxmle source sha1 "
        f"{info.get('jaxmle_source_sha1', '?')}; jax {info.get('jax')}, numpy {info.get('numpy')}, "
        f"scipy {info.get('scipy')}, numpyro {info.get('numpyro')}; {info.get('cpu_count')} CPUs "
        f"({info.get('cpu', '?')}), backend {info.get('jax_backend')}. Machine load (1-min average, "
        f"sampled before each problem): start {load_start:.2f}, min {min(fl):.2f}, mean "
        f"{sum(fl) / len(fl):.2f}, max {max(fl):.2f}, end {loads[-1]:.2f} (a shared box: other "
        f"jobs ran at the same time). Whole run {wall:.0f} s in one process."
        + (f" Subset: {', '.join(nls_names + lin_names)}." if (args.quick or args.only) else ""))
    body = [head, "", "### Summary (nonlinear: 27 problems × 2 certified starts)" if n_nls == 54
            else f"### Summary (nonlinear: {n_nls} fits, problem × start)", "",
            summary_section(nls, lin, not args.no_peers, timings, n_nls), ""]
    body += ["### jaxmle misses (min coefficient LRE < 6)", ""]
    if misses:
        body.append(C.md_table(
            ["problem", "start", "form", "LRE b", "converged", "status", "iter", "warnings", "SEs finite"],
            [(r["name"], r["start"][-1], f, f1(r["jm"][f]["lre_b"]),
              "yes" if r["jm"][f].get("converged") else "no", r["jm"][f].get("status"),
              r["jm"][f].get("n_iter"), short_warn(r["jm"][f]),
              "yes" if r["jm"][f].get("se_finite") else "no") for r, f in misses]))
    else:
        body.append("None.")
    relab = [(r, f) for r in nls for f in FORMS if r["jm"][f].get("relabelled")]
    body += ["", f"jaxmle fits that ended at an equivalent labelling of the certified optimum "
             f"(terms in another order, Eckerle4's sign: same curve and RSS): {len(relab)}" + (": " + "; ".join(
                 f"{r['name']} start {r['start'][-1]} ({f})" for r, f in relab) if relab else ".")]
    body += ["", f"Confidently wrong (converged = True, LRE < 6): {len(wrong)}"
             + (": " + "; ".join(f"{r['name']} start {r['start'][-1]} ({f})" for r, f in wrong)
                if wrong else "."), ""]
    body += ["### jaxmle, every nonlinear fit", "", jaxmle_table(nls), ""]
    if not args.no_peers:
        body += ["### Every method, nonlinear: min LRE of the coefficients / LRE of the RSS", "",
                 "✗: the method did not report success; **!**: it reported success with LRE < 6.",
                 "", peers_table(nls), ""]
    if lin:
        body += ["### Linear sets (Gaussian log-likelihood, σ free, from b = 0)", "",
                 linear_table(lin), ""]
    notes = [
        "LRE = −log10(|estimate − certified| / |certified|), capped at 15; the LRE b column is "
        "the minimum over the coefficients. A fit counts as solved at LRE ≥ 6.",
        "jaxmle: `jm.fit(..., method=\"newton\")`, float64, default tol (1e-8) and max_iter (2000). "
        "(a) maximises −n/2·log(RSS(b)/n) over b; (b) the per-observation "
        "`numpyro` `Normal(mean(b), σ).log_prob(y)` over (b, σ) with σ positive, started at "
        "σ₀ = √(RSS(b₀)/n). `warnings`: the classes raised during the fit (W = Warning).",
        "LRE SE (nonlinear): jaxmle's SEs of b against the observed-information SEs "
        "√(RSS/n·diag((JᵀJ − Σ rᵢHᵢ)⁻¹)) at the certified b (not NIST's Gauss–Newton SDs, "
        "which use RSS/(n−p) and drop the Σ rᵢHᵢ term), evaluated after Gauss–Newton steps "
        "that take the 11-digit certified b to the float64 stationary point next to it "
        "(kept only while the RSS falls): at the rounded b itself Bennett5's SEs move by 1% "
        "(scaled cond(JᵀJ) 3e9). Meaningful only where LRE b is high: the SEs of an "
        "ill-conditioned problem move with the last digits of b (Bennett5, MGH10, MGH17).",
        "Linear SEs: NIST certifies SEs with σ² = RSS/(n−p); jaxmle's MLE uses RSS/n, so its SEs "
        "are multiplied by √(n/(n−p)) (p = number of coefficients) before the LRE. Wampler1/2 "
        "are exact fits (certified RSS 0, certified SEs 0): with σ free the likelihood is "
        "unbounded (σ → 0), so no maximum exists there; their SE LRE is against 0 "
        "(absolute error). max |Δb|/SE: the largest coefficient error in units of its "
        "certified SE (inf where the certified SE is 0).",
        "Lanczos1–3 (three exponential terms) and Gauss1–3 (two Gaussian peaks) are the same "
        "curve under any order of their terms: every method's coefficients are compared after "
        "putting the terms in the certified order (`nist_problems.canonical`: increasing rate / "
        "location); Eckerle4, (b1/b2)·exp(−½((x − b3)/b2)²), is the same curve at (−b1, −b2, b3) "
        "and is compared with b2 > 0, as certified; a jaxmle fit that ended at such a relabelling "
        "is counted in the summary.",
        "LRE of the RSS for Lanczos1 is not meaningful: the certified RSS (1.4e-25) is below what "
        "float64 residuals of data ~1 can resolve (RSS at the 11-digit certified b is ~4e-21).",
        f"Peers: Jacobian, gradient and Hessian by jax (jitted, compiled before the clock); "
        f"BFGS and trust-exact minimise n/2·log(RSS(b)/n). Each peer runs twice from every "
        f"start: *tight tol* (the per-problem table) = `least_squares` ftol = xtol = gtol = "
        f"{LSQ_TOL:g}, BFGS and trust-exact gtol {MIN_GTOL:g}, which asks for all the accuracy "
        f"float64 allows (BFGS and trust-exact then end on 'precision loss' / 'bad "
        f"approximation', i.e. success = False, even at the right answer, so their success "
        f"count means little there); *scipy's default tol* (ftol = xtol = gtol = 1e-8; BFGS gtol "
        f"1e-5; trust-exact gtol 1e-8), the setting whose success flag a user would read. "
        f"Both: max_nfev {LSQ_MAX_NFEV}, BFGS maxiter {BFGS_MAXITER}, trust-exact maxiter "
        f"{TRUST_MAXITER}.",
        "Times: sums over the fits. jaxmle's `first` includes compiling each model (problems "
        "sharing a mean function, e.g. Gauss1–3, share programs); `warm` is the same fit again "
        "right after. Peer times exclude the jit compilation of their derivative functions. "
        "jaxmle's persistent compilation cache: "
        + ("off (JAXMLE_NO_COMPILATION_CACHE)" if os.environ.get("JAXMLE_NO_COMPILATION_CACHE")
           else f"on (its default; {os.environ.get('JAXMLE_CACHE_DIR', '~/.cache/jaxmle')}, which "
                "may hold programs from earlier runs, so `first` is not a cold-compile time)") + ".",
    ]
    sec = C.Section("(k) NIST StRD: jaxmle against least-squares and general optimisers",
                    "\n".join(body).rstrip(), notes)
    C.write_sections(args.md_out, [sec])
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"info": info, "loads": loads, "timings": timings, "nls": nls, "linear": lin},
                      f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        sys.exit(1)

"""First-run latency in fresh processes, with an empty and a warm persistent compilation cache.

    python3 benchmarks/bench_latency.py [--quick] [--repeats 1] [--md-out FILE]
        [--only imports,normal,logistic,gamma,cli,glmm,warm] [--no-peers]

What a user waits for the first time they use jaxmle in a new Python process, next to
statsmodels and scipy doing the same steps in the same run. Every measurement runs in a
FRESH interpreter (this file re-invokes itself with ``--child``); the child's timer starts
before ``import jax``/``import jaxmle``/``import statsmodels.api``/``import scipy...``
(numpy and the data are ready before it) and every step ends with its results held as
numpy/Python numbers.

* imports         ``import jaxmle`` vs ``import jax`` alone, ``import statsmodels.api``,
                  ``import scipy.optimize``: separate fresh processes.
* normal, logistic, gamma
                  one session per process: import, first fit of a new model, summary,
                  profile CIs, a ``fixed=`` refit, LRT, delta method (these six steps after
                  the import are the "research script", timed end to end including the
                  import), then ``n_starts=8``, a refit on n=190 after n=200, a second
                  ``fixed=`` refit holding another parameter, a second profile confint (of
                  the n=190 fit). Models are custom log-likelihoods in jax.numpy, float64:
                  Normal linear regression (b0, b1, sigma), logistic regression (p=3 +
                  intercept), Gamma GLM with log link (b0..b2, shape), all n=200.
                  jaxmle runs with an EMPTY cache (a new temporary ``JAXMLE_CACHE_DIR``),
                  then again with the same directory (WARM). statsmodels (OLS / Logit /
                  GLM Gamma) and scipy (``minimize`` + numerical Hessian, profile CIs by
                  ``brentq`` on the profile deviance) do the same steps where they exist.
* cli             ``jaxmle fit data.csv --dist normal,gamma,weibull`` (``jaxmle.cli.main``,
                  what the entry point calls) in a fresh process, empty and warm cache; scipy
                  peer: ``scipy.stats.{norm,gamma,weibull_min}.fit`` + AIC + KS test.
* glmm            Poisson GLMM with 500 groups (``random=["b"]``, Laplace), fresh process,
                  empty and warm cache. No peer (statsmodels only has Bayesian mixed GLMs).
* warm            Normal(mu, sigma) n=100 single fit in one process: median of repeats after
                  the first (each on new data), as ``bench_small.py``.

Compilations are counted with ``jax.monitoring`` listeners registered right after ``import
jax`` (before ``import jaxmle``): every XLA executable jax builds or loads emits
``/jax/core/compile/backend_compile_duration``; with the persistent cache on, a load from the
cache also emits ``/jax/compilation_cache/cache_hits`` (a new build ``cache_misses``). The
"compiles" column gives XLA compilations = backend_compile events - cache hits, and "+k
from cache" the loads. A child that uses jaxmle gets ``JAXMLE_CACHE_DIR=<dir>`` and also calls
``jm.enable_compilation_cache()`` (so this works whether or not the cache is on by default).
The box is noisy: the load average before and after each part is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402  (numpy-only module)

WORKLOADS = ("normal", "logistic", "gamma")
PARTS = ("imports", "normal", "logistic", "gamma", "cli", "glmm", "warm")
LIBS = ("jaxmle", "statsmodels", "scipy")
N, N2 = 200, 190                      # first data set, then the refit on a different length
LOGIT_P = 3
GLMM_GROUPS, GLMM_PER_GROUP = 500, 4
CLI_DISTS = "normal,gamma,weibull"
WARM_N = C.NORMAL_N

SCRIPT_STEPS = ("import", "fit", "summary", "confint", "fixed", "lrt", "delta")
FOLLOW_STEPS = ("n_starts", "refit_n", "fixed2", "confint2")
STEP_LABELS = {
    "import": "import (jax + x64 + jaxmle / statsmodels.api / scipy)",
    "fit": "first fit (estimates + SEs as numpy)",
    "summary": "summary()",
    "confint": "profile CIs `confint(method=\"profile\")`",
    "fixed": "`fixed=` refit",
    "lrt": "LRT `jm.lrt(restricted, full)`",
    "delta": "delta `res.delta(fn)`",
    "script": "**6-step script end to end (import … delta)**",
    "n_starts": "`n_starts=8` refit",
    "refit_n": f"refit on new data, n={N2} (after n={N})",
    "fixed2": "second `fixed=` refit (another parameter held)",
    "confint2": f"second profile confint (of the n={N2} fit)",
}
# What each workload holds fixed and derives (natural parameters, flat names).
SPEC = {
    "normal": {"fixed": {"beta[1]": 0.0}, "fixed2": {"sigma": 2.0}, "delta": "-b0/b1 (x where the mean is 0)"},
    "logistic": {"fixed": {"beta[3]": 0.0}, "fixed2": {"beta[0]": 0.25}, "delta": "exp(b1) (odds ratio)"},
    "gamma": {"fixed": {"beta[2]": 0.0}, "fixed2": {"shape": 2.0}, "delta": "exp(b0 + b1) (mean at x1=1, x2=0)"},
}
TITLES = {
    "normal": f"Normal linear regression y = b0 + b1·x + σ·ε, n={N}",
    "logistic": f"Logistic regression, n={N}, p={LOGIT_P}+intercept",
    "gamma": f"Gamma GLM (log link, shape k), n={N}, p=2+intercept",
}
PEER_NOTES = {
    "statsmodels": {
        "normal": "`sm.OLS`; profile CIs: none in statsmodels, `conf_int()` (Wald t) instead; fixed b1=0: OLS on the "
                  "intercept; LRT by hand from `llf`; delta: `numdiff.approx_fprime` + `cov_params()`; n_starts: n/a "
                  "(closed form); sigma held: `sm.GLM(Gaussian).fit(scale=4)`",
        "logistic": "`sm.Logit`; profile CIs: `conf_int()` (Wald) instead; fixed b3=0: Logit without the column; b0 "
                    "held: `Logit(..., offset=0.25)` on the other columns; n_starts: 8 `fit(start_params=0.5·N(0,1))`, failures skipped",
        "gamma": "`sm.GLM(Gamma(log))` (scale by Pearson χ², not the ML shape); profile CIs: `conf_int()` (Wald) "
                 "instead; shape held: `fit(scale=1/2)`; n_starts: 8 `fit(start_params=0.5·N(0,1))`, failures skipped",
    },
    "scipy": "`scipy.optimize.minimize` (BFGS, analytic gradient, gtol 1e-8) in (β, log σ / log k), SEs from a "
             "central-difference Hessian of the gradient; profile CIs: `brentq` on the profile deviance "
             "(a `minimize` per point); fixed: `minimize` over the other coordinates; n_starts: 8 `minimize` from "
             "random starts",
}

# ---------------------------------------------------------------------------
# Data (numpy, fixed seeds)
# ---------------------------------------------------------------------------


def make_data(workload: str, n: int, seed: int = 0):
    rng = np.random.default_rng(70_000 + 1_000 * WORKLOADS.index(workload) + seed + n)
    if workload == "normal":
        x = rng.standard_normal(n)
        X = np.column_stack([np.ones(n), x])
        return X, X @ np.array([1.0, 0.5]) + 2.0 * rng.standard_normal(n)
    if workload == "logistic":
        return C.logistic_data(50 + seed + n, n, LOGIT_P)
    X = np.column_stack([np.ones(n), rng.standard_normal(n), rng.standard_normal(n)])
    mu = np.exp(X @ np.array([0.5, 0.3, -0.2]))
    return X, rng.gamma(2.0, mu / 2.0)


def glmm_data():
    rng = np.random.default_rng(80_000)
    g = np.repeat(np.arange(GLMM_GROUPS), GLMM_PER_GROUP)
    x = rng.standard_normal(g.size)
    b = 0.5 * rng.standard_normal(GLMM_GROUPS)
    y = rng.poisson(np.exp(0.3 + 0.4 * x + b[g])).astype(np.float64)
    return y, np.column_stack([np.ones_like(x), x]), g


def cli_data_path(directory: str) -> str:
    path = os.path.join(directory, "data.csv")
    x = np.random.default_rng(90_000).gamma(3.0, 2.0, size=N)
    np.savetxt(path, x, header="x", comments="", fmt="%.10g")
    return path


# ---------------------------------------------------------------------------
# Child side: compile counter and the three libraries' sessions
# ---------------------------------------------------------------------------

BACKEND = "/jax/core/compile/backend_compile_duration"
HITS = "/jax/compilation_cache/cache_hits"
MISSES = "/jax/compilation_cache/cache_misses"
TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"


class CompileCounter:
    """Counts jax.monitoring events; ``snap()`` - ``snap()`` gives a step's compilations."""

    def __init__(self):
        import jax.monitoring as mon

        self.n, self.secs = {}, {}

        def on_event(name, *a, **kw):
            self.n[name] = self.n.get(name, 0) + 1

        def on_duration(name, secs, *a, **kw):
            self.n[name] = self.n.get(name, 0) + 1
            self.secs[name] = self.secs.get(name, 0.0) + float(secs)

        mon.register_event_listener(on_event)
        mon.register_event_duration_secs_listener(on_duration)

    def snap(self):
        return (self.n.get(BACKEND, 0), self.n.get(HITS, 0), self.n.get(MISSES, 0), self.secs.get(BACKEND, 0.0),
                self.secs.get(TRACE, 0.0) + self.secs.get(LOWER, 0.0))

    @staticmethod
    def diff(a, b):
        req, hits, misses, secs, trace = (y - x for x, y in zip(a, b))
        return {"compiled": req - hits, "loaded": hits, "misses": misses, "compile_s": secs, "trace_s": trace}


class Session:
    """Times named steps back to back; a failing step is recorded and its dependants skipped."""

    def __init__(self, t0):
        self.t0, self.t, self.counter, self.steps, self.errors = t0, t0, None, {}, {}
        self._snap = None

    def attach_counter(self):
        self.counter = CompileCounter()
        self._snap = self.counter.snap()

    def step(self, name, fn, needs=()):
        missing = [d for d in needs if d not in self.steps]
        if missing:
            self.errors[name] = f"skipped: needs {', '.join(missing)}"
            self.t = time.perf_counter()
            return None
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # a crashing step is a finding, not the end of the run
            self.errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            sys.stderr.write(traceback.format_exc())
            out = None
        t1 = time.perf_counter()
        if name not in self.errors:
            rec = {"s": t1 - t}
            if self.counter is not None:
                s = self.counter.snap()
                rec.update(CompileCounter.diff(self._snap, s))
                self._snap = s
            self.steps[name] = rec
        elif self.counter is not None:
            self._snap = self.counter.snap()
        self.t = t1
        return out

    def mark(self, name):
        """Elapsed time from the session start (a cumulative row, e.g. the 6-step script)."""
        if all(s in self.steps for s in SCRIPT_STEPS):
            self.steps[name] = {"s": time.perf_counter() - self.t0}

    def record(self, **extra):
        return {"steps": self.steps, "errors": self.errors, **extra}


def _np(tree):
    import jax

    return jax.tree_util.tree_map(lambda v: np.asarray(v, dtype=np.float64), tree)


def _import_jaxmle(sess: Session, cache_dir: str | None):
    """import jax, register the compile counter, x64, import jaxmle, turn the cache on."""
    import jax

    sess.attach_counter()
    jax.config.update("jax_enable_x64", True)
    import jaxmle as jm

    if cache_dir and hasattr(jm, "enable_compilation_cache"):
        jm.enable_compilation_cache()          # reads $JAXMLE_CACHE_DIR
    return jm


def jaxmle_models():
    """The three custom log-likelihoods (defined once, with def) and their starts."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import gammaln
    from numpyro.distributions import constraints

    def normal_ll(p, d):
        X, y = d
        r = (y - X @ p["beta"]) / p["sigma"]
        return -0.5 * r * r - jnp.log(p["sigma"]) - 0.5 * jnp.log(2 * jnp.pi)

    def logistic_ll(p, d):
        X, y = d
        eta = X @ p["beta"]
        return y * eta - jax.nn.softplus(eta)

    def gamma_ll(p, d):
        X, y = d
        k, mu = p["shape"], jnp.exp(X @ p["beta"])
        return k * jnp.log(k / mu) - gammaln(k) + (k - 1) * jnp.log(y) - k * y / mu

    pos = constraints.positive
    return {
        "normal": (normal_ll, {"beta": jnp.zeros(2), "sigma": 1.0}, {"sigma": pos},
                   lambda p: -p["beta"][0] / p["beta"][1]),
        "logistic": (logistic_ll, {"beta": jnp.zeros(LOGIT_P + 1)}, {}, lambda p: jnp.exp(p["beta"][1])),
        "gamma": (gamma_ll, {"beta": jnp.zeros(3), "shape": 1.0}, {"shape": pos},
                  lambda p: jnp.exp(p["beta"][0] + p["beta"][1])),
    }


def session_jaxmle(workload, cache_dir, t0):
    sess = Session(t0)
    d1, d2 = make_data(workload, N), make_data(workload, N2)
    spec = SPEC[workload]
    jm = sess.step("import", lambda: _import_jaxmle(sess, cache_dir))
    if jm is None:
        return sess.record()
    ll, init, cons, dfn = jaxmle_models()[workload]
    box = {}

    def fit(data, **kw):
        r = jm.fit(ll, data, init, constraints=cons, **kw)
        _np((r.params, r.stderr))
        return r

    box["res"] = sess.step("fit", lambda: fit(d1))
    sess.step("summary", lambda: str(box["res"].summary()), needs=("fit",))
    sess.step("confint", lambda: box["res"].confint(method="profile"), needs=("fit",))
    box["r0"] = sess.step("fixed", lambda: fit(d1, fixed=spec["fixed"]), needs=("fit",))
    sess.step("lrt", lambda: float(jm.lrt(box["r0"], box["res"]).pvalue), needs=("fit", "fixed"))
    sess.step("delta", lambda: _np(_delta_numbers(box["res"].delta(dfn))), needs=("fit",))
    sess.mark("script")
    sess.step("n_starts", lambda: fit(d1, n_starts=8))
    box["r2"] = sess.step("refit_n", lambda: fit(d2))
    sess.step("fixed2", lambda: fit(d1, fixed=spec["fixed2"]))
    sess.step("confint2", lambda: box["r2"].confint(method="profile"), needs=("refit_n",))
    res = box.get("res")
    est = None
    if res is not None:
        est = {"params": {k: np.ravel(v).tolist() for k, v in _np(res.params).items()},
               "stderr": {k: np.ravel(v).tolist() for k, v in _np(res.stderr).items()}}
    return sess.record(estimates=est)


def _delta_numbers(dres):
    return (dres.estimate, dres.stderr)


# ---- scipy: a small hand-written MLE toolkit, as a scipy user would write -------------------

def scipy_models():
    from scipy.special import digamma, gammaln

    def normal(w, d):                        # w = (b0, b1, log sigma)
        X, y = d
        r = y - X @ w[:2]
        s2 = math.exp(2 * w[2])
        nll = y.size * w[2] + 0.5 * (r @ r) / s2 + 0.5 * y.size * math.log(2 * math.pi)
        return nll, np.concatenate([-(X.T @ r) / s2, [y.size - (r @ r) / s2]])

    def logistic(w, d):
        X, y = d
        eta = X @ w
        p = 1.0 / (1.0 + np.exp(-eta))
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta)), X.T @ (p - y)

    def gamma(w, d):                          # w = (b0, b1, b2, log k)
        X, y = d
        k, eta = math.exp(w[3]), X @ w[:3]
        mu = np.exp(eta)
        ll = k * (math.log(k) - eta) - gammaln(k) + (k - 1) * np.log(y) - k * y / mu
        dk = math.log(k) + 1 - eta - digamma(k) + np.log(y) - y / mu
        return -float(np.sum(ll)), -np.concatenate([X.T @ (k * (y / mu - 1)), [k * np.sum(dk)]])

    return {  # nll+grad, start, indices on the log scale, flat names, delta fn of the natural θ
        "normal": (normal, np.zeros(3), [2], ["beta[0]", "beta[1]", "sigma"], lambda t: -t[0] / t[1]),
        "logistic": (logistic, np.zeros(LOGIT_P + 1), [], [f"beta[{i}]" for i in range(LOGIT_P + 1)],
                     lambda t: math.exp(t[1])),
        "gamma": (gamma, np.zeros(4), [3], ["beta[0]", "beta[1]", "beta[2]", "shape"],
                  lambda t: math.exp(t[0] + t[1])),
    }


class ScipyMLE:
    """minimize (BFGS + analytic gradient) in working coordinates, numerical Hessian, profile
    CIs by brentq; ``fixed`` is {flat name: natural value}."""

    def __init__(self, f, start, logs, names, data, fixed=None, x0=None):
        from scipy import optimize

        self.opt, self.f, self.logs, self.names, self.data = optimize, f, logs, names, data
        self.fixed = {names.index(k): (math.log(v) if names.index(k) in logs else v)
                      for k, v in (fixed or {}).items()}
        self.free = [i for i in range(len(names)) if i not in self.fixed]
        w0 = np.array(start if x0 is None else x0, dtype=float)
        for i, v in self.fixed.items():
            w0[i] = v
        self.w = self._minimize(w0, self.free)
        self.nll = self.f(self.w, data)[0]
        self.theta = self.natural(self.w)
        H = self._hessian(self.w)                       # free working coordinates
        cov_w = np.linalg.inv(H)
        J = np.diag([self.theta[i] if i in logs else 1.0 for i in self.free])
        self.cov = J @ cov_w @ J.T                      # natural coordinates (free ones)
        self.se_w = np.sqrt(np.diag(cov_w))
        self.stderr = np.full(len(names), np.nan)
        self.stderr[self.free] = np.sqrt(np.diag(self.cov))

    def natural(self, w):
        t = np.array(w, dtype=float)
        t[self.logs] = np.exp(t[self.logs])
        return t

    def _minimize(self, w0, free, gtol=1e-8):
        w0 = np.array(w0, dtype=float)

        def fg(z):
            w = w0.copy()
            w[free] = z
            v, g = self.f(w, self.data)
            return v, g[free]

        r = self.opt.minimize(fg, w0[free], jac=True, method="BFGS", options={"gtol": gtol, "maxiter": 2000})
        w = w0.copy()
        w[free] = r.x
        return w

    def _hessian(self, w, h=1e-5):
        k = len(self.free)
        H = np.empty((k, k))
        for a, i in enumerate(self.free):
            e = np.zeros_like(w)
            e[i] = h * max(1.0, abs(w[i]))
            H[:, a] = (self.f(w + e, self.data)[1][self.free] - self.f(w - e, self.data)[1][self.free]) / (2 * e[i])
        return 0.5 * (H + H.T)

    def profile_ci(self, level=0.95):
        from scipy import stats

        target = 0.5 * stats.chi2.ppf(level, 1)
        out = {}
        for a, i in enumerate(self.free):
            others = [j for j in self.free if j != i]
            warm = {"w": self.w.copy()}

            def g(t):
                w0 = warm["w"].copy()
                w0[i] = t
                w = self._minimize(w0, others, gtol=1e-7) if others else w0
                warm["w"] = w
                return self.f(w, self.data)[0] - self.nll - target

            ends = []
            for side in (-1, 1):
                warm["w"] = self.w.copy()
                step, lo = 2.0 * self.se_w[a], self.w[i]
                hi = lo + side * step
                while g(hi) < 0 and abs(hi - lo) < 1e3:
                    lo, hi = hi, hi + side * step
                ends.append(self.opt.brentq(g, *sorted((lo, hi)), xtol=1e-8))
            lo_t, hi_t = (np.exp(ends) if i in self.logs else ends)
            out[self.names[i]] = (float(lo_t), float(hi_t))
        return out

    def delta(self, fn):
        free = self.free

        def fn_free(z):
            t = self.theta.copy()
            t[free] = z
            return fn(t)

        g = self.opt.approx_fprime(self.theta[free], fn_free, 1e-7)
        return fn(self.theta), math.sqrt(g @ self.cov @ g)

    def summary(self):
        from scipy import stats

        lines = [f"{'':10s}{'coef':>12s}{'std err':>12s}{'z':>10s}{'P>|z|':>10s}"]
        for n, t, s in zip(self.names, self.theta, self.stderr):
            z = t / s
            lines.append(f"{n:10s}{t:12.6g}{s:12.6g}{z:10.3f}{2 * stats.norm.sf(abs(z)):10.3f}")
        return "\n".join(lines)


def session_scipy(workload, t0):
    sess = Session(t0)
    d1, d2 = make_data(workload, N), make_data(workload, N2)
    spec = SPEC[workload]

    def imp():
        import scipy.optimize  # noqa: F401
        import scipy.special  # noqa: F401
        import scipy.stats  # noqa: F401
        return True

    sess.step("import", imp)
    f, start, logs, names, dfn = scipy_models()[workload]
    box = {}
    box["res"] = sess.step("fit", lambda: ScipyMLE(f, start, logs, names, d1))
    sess.step("summary", lambda: box["res"].summary(), needs=("fit",))
    sess.step("confint", lambda: box["res"].profile_ci(), needs=("fit",))
    box["r0"] = sess.step("fixed", lambda: ScipyMLE(f, start, logs, names, d1, fixed=spec["fixed"]), needs=("fit",))

    def lrt():
        from scipy import stats

        stat = 2 * (box["r0"].nll - box["res"].nll)
        return float(stats.chi2.sf(stat, 1))

    sess.step("lrt", lrt, needs=("fit", "fixed"))
    sess.step("delta", lambda: box["res"].delta(dfn), needs=("fit",))
    sess.mark("script")

    def multistart():
        rng = np.random.default_rng(0)
        fits = [ScipyMLE(f, start, logs, names, d1, x0=start + (rng.standard_normal(start.size) if k else 0))
                for k in range(8)]
        return min(fits, key=lambda r: r.nll)

    sess.step("n_starts", multistart)
    box["r2"] = sess.step("refit_n", lambda: ScipyMLE(f, start, logs, names, d2))
    sess.step("fixed2", lambda: ScipyMLE(f, start, logs, names, d1, fixed=spec["fixed2"]))
    sess.step("confint2", lambda: box["r2"].profile_ci(), needs=("refit_n",))
    r = box.get("res")
    est = None if r is None else {"theta": r.theta.tolist(), "stderr": r.stderr.tolist(), "names": names}
    return sess.record(estimates=est)


# ---- statsmodels -----------------------------------------------------------------------------

def session_statsmodels(workload, t0):
    sess = Session(t0)
    (X, y), (X2, y2) = make_data(workload, N), make_data(workload, N2)
    box = {}

    def imp():
        import statsmodels.api as sm

        box["sm"] = sm
        return sm

    sess.step("import", imp)
    if "sm" not in box:
        return sess.record()
    sm = box["sm"]

    def model(Xm, ym, **kw):
        if workload == "normal":
            return sm.OLS(ym, Xm)
        if workload == "logistic":
            return sm.Logit(ym, Xm, **kw)
        return sm.GLM(ym, Xm, family=sm.families.Gamma(link=sm.families.links.Log()), **kw)

    def fit(Xm, ym, **kw):
        fkw = {"disp": 0} if workload == "logistic" else {}
        fkw.update(kw.pop("fit_kw", {}))
        r = model(Xm, ym, **kw).fit(**fkw)
        np.asarray(r.params), np.asarray(r.bse)
        return r

    def delta_fn(b):
        if workload == "normal":
            return -b[0] / b[1]
        return math.exp(b[1]) if workload == "logistic" else math.exp(b[0] + b[1])

    box["res"] = sess.step("fit", lambda: fit(X, y))
    sess.step("summary", lambda: str(box["res"].summary()), needs=("fit",))
    sess.step("confint", lambda: np.asarray(box["res"].conf_int()), needs=("fit",))
    drop = {"normal": 1, "logistic": 3, "gamma": 2}[workload]
    keep = [j for j in range(X.shape[1]) if j != drop]
    box["r0"] = sess.step("fixed", lambda: fit(X[:, keep], y), needs=("fit",))

    def lrt():
        from scipy import stats

        return float(stats.chi2.sf(2 * (box["res"].llf - box["r0"].llf), 1))

    sess.step("lrt", lrt, needs=("fit", "fixed"))

    def delta():
        from statsmodels.tools.numdiff import approx_fprime

        r = box["res"]
        b = np.asarray(r.params)
        g = np.ravel(approx_fprime(b, delta_fn, centered=True))
        return delta_fn(b), math.sqrt(g @ np.asarray(r.cov_params()) @ g)

    sess.step("delta", delta, needs=("fit",))
    sess.mark("script")
    if workload != "normal":
        def multistart():  # 8 starts (zeros, then 0.5·N(0, 1)); a start that fails is skipped
            rng = np.random.default_rng(0)
            fits = []
            for k in range(8):
                try:
                    fits.append(fit(X, y, fit_kw={"start_params": 0.5 * rng.standard_normal(X.shape[1]) * (k > 0)}))
                except Exception:
                    pass
            return max(fits, key=lambda r: r.llf)

        sess.step("n_starts", multistart)
    box["r2"] = sess.step("refit_n", lambda: fit(X2, y2))
    if workload == "normal":
        sess.step("fixed2", lambda: np.asarray(sm.GLM(y, X).fit(scale=4.0).bse))
    elif workload == "logistic":
        sess.step("fixed2", lambda: fit(X[:, 1:], y, offset=np.full(y.size, 0.25)))
    else:
        sess.step("fixed2", lambda: fit(X, y, fit_kw={"scale": 0.5}))
    sess.step("confint2", lambda: np.asarray(box["r2"].conf_int()), needs=("refit_n",))
    r = box.get("res")
    est = None if r is None else {"params": np.asarray(r.params).tolist(), "bse": np.asarray(r.bse).tolist()}
    return sess.record(estimates=est)


# ---- the other child kinds -------------------------------------------------------------------

def child_import(module, t0):
    jax_counter = None
    if module == "jaxmle":                     # count compiles during `import jaxmle` too
        import jax

        jax_counter = CompileCounter()
        import jaxmle  # noqa: F401
    elif module == "jax":
        import jax  # noqa: F401
    elif module == "statsmodels.api":
        import statsmodels.api  # noqa: F401
    elif module == "scipy.optimize":
        import scipy.optimize  # noqa: F401
    else:
        raise ValueError(module)
    s = time.perf_counter() - t0
    rec = {"steps": {"import": {"s": s}}, "errors": {}}
    if jax_counter is not None:
        rec["steps"]["import"].update(CompileCounter.diff((0, 0, 0, 0.0, 0.0), jax_counter.snap()))
    return rec


def child_cli(lib, csv_path, t0):
    import contextlib
    import io

    sess = Session(t0)
    if lib == "jaxmle":
        def run():
            import jax  # noqa: F401  (the counter needs it; the CLI imports it anyway)

            sess.attach_counter()
            from jaxmle.cli import main as cli_main

            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = cli_main(["fit", csv_path, "--dist", CLI_DISTS])
            if rc != 0:
                raise RuntimeError(f"jaxmle fit exited {rc}: {out.getvalue()[-300:]}")
            return rc
    else:
        def run():
            from scipy import stats

            x = np.loadtxt(csv_path, skiprows=1)
            rows = []
            for name, dist, kw in (("normal", stats.norm, {}), ("gamma", stats.gamma, {"floc": 0}),
                                   ("weibull", stats.weibull_min, {"floc": 0})):
                par = dist.fit(x, **kw)
                ll = float(np.sum(dist.logpdf(x, *par)))
                k = len(par) - len(kw)
                rows.append((2 * k - 2 * ll, name, stats.kstest(x, dist.cdf, args=par).statistic))
            return sorted(rows)

    sess.step("cli", run)
    return sess.record()


def child_glmm(cache_dir, t0):
    sess = Session(t0)
    y, X, g = glmm_data()
    jm = sess.step("import", lambda: _import_jaxmle(sess, cache_dir))
    if jm is None:
        return sess.record()
    import jax.numpy as jnp
    from jax.scipy.special import gammaln
    from numpyro.distributions import constraints

    def joint(p, d):
        yy, XX, gg = d
        eta = XX @ p["beta"] + p["b"][gg]
        z = p["b"] / p["sigma"]
        return (jnp.sum(yy * eta - jnp.exp(eta) - gammaln(yy + 1))
                + jnp.sum(-0.5 * z * z - jnp.log(p["sigma"]) - 0.5 * jnp.log(2 * jnp.pi)))

    def fit():
        r = jm.fit(joint, (y, X, g), {"beta": jnp.zeros(2), "sigma": 1.0, "b": jnp.zeros(GLMM_GROUPS)},
                   constraints={"sigma": constraints.positive}, random=["b"])
        _np((r.params, r.stderr))
        if not bool(r.converged):
            raise RuntimeError(f"GLMM fit did not converge: {r.status_message}")
        return r

    r = sess.step("fit", fit)
    sess.steps["total"] = {"s": time.perf_counter() - t0}
    est = None if r is None else {k: np.ravel(v).tolist() for k, v in _np(r.params).items()}
    return sess.record(estimates=est)


def child_warm(lib, repeats, t0):
    import _contenders as K

    fn = {"jaxmle": K.jaxmle_normal, "statsmodels": K.statsmodels_ols_normal, "scipy": K.scipy_normal}[lib]
    datas = [C.normal_data(s) for s in range(repeats + 1)]
    counter = None
    t = time.perf_counter()
    if lib == "jaxmle":
        import jax  # noqa: F401

        counter = CompileCounter()
    C.materialise(fn(datas[0]))
    first = time.perf_counter() - t
    settle = None
    if lib == "jaxmle":   # the shared solver step compiles in the background after a first
        # fit (fits meanwhile run its NumPy twin): the warm figure is the steady one
        t = time.perf_counter()
        try:
            from jaxmle.fitting.host import wait_solvers
        except ImportError:   # an older checkout: nothing runs in the background
            pass
        else:
            wait_solvers()
        settle = time.perf_counter() - t
    snap = counter.snap() if counter else None
    times = []
    for d in datas[1:]:
        t = time.perf_counter()
        C.materialise(fn(d))
        times.append(time.perf_counter() - t)
    rec = {"steps": {"first": {"s": first}, "warm": {"s": C.median(times), "all": times}}, "errors": {}}
    if settle is not None:
        rec["steps"]["settle"] = {"s": settle}
    if counter:
        rec["steps"]["warm"].update(CompileCounter.diff(snap, counter.snap()))
    return rec


def child_main(spec):
    heavy = [m for m in ("jax", "jaxmle", "scipy", "statsmodels") if m in sys.modules]
    assert not heavy, f"heavy modules imported before the timer: {heavy}"
    kind = spec["kind"]
    if kind == "glmm":
        glmm_data()           # data before the timer
    t0 = time.perf_counter()
    if kind == "import":
        rec = child_import(spec["module"], t0)
    elif kind == "session":
        lib, wl = spec["lib"], spec["workload"]
        if lib == "jaxmle":
            rec = session_jaxmle(wl, spec.get("cache_dir"), t0)
        elif lib == "scipy":
            rec = session_scipy(wl, t0)
        else:
            rec = session_statsmodels(wl, t0)
    elif kind == "cli":
        rec = child_cli(spec["lib"], spec["csv"], t0)
    elif kind == "glmm":
        rec = child_glmm(spec.get("cache_dir"), t0)
    elif kind == "warm":
        rec = child_warm(spec["lib"], spec["repeats"], t0)
    else:
        raise ValueError(kind)
    if spec.get("cache_dir"):
        rec["cache_files"] = sum(len(f) for _, _, f in os.walk(spec["cache_dir"]))
    print("@@RESULT " + json.dumps(rec), flush=True)


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------

def run_child(spec, timeout=600.0):
    env_extra = {}
    if spec.get("cache_dir"):
        env_extra["JAXMLE_CACHE_DIR"] = spec["cache_dir"]
    own_dir = None
    if not spec.get("cache_dir"):
        # Children that do not ask for a cache (peers, imports, the warm fit) get an empty one of
        # their own, thrown away after: should jaxmle turn its cache on by default, they still
        # start cold and leave nothing behind.
        own_dir = env_extra["JAXMLE_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxmle-bench-latency-own-")
    env = C.child_env(env_extra)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    t0 = C.now()
    try:
        r = subprocess.run(cmd, cwd=C.REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"steps": {}, "errors": {"*": f"child timed out after {timeout:.0f} s"}, "process_wall": timeout}
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    wall = C.now() - t0
    rec, tail = C.child_record(r)
    if rec is None:
        C.log(f"child {spec} failed (rc={r.returncode}):\n{r.stderr[-2000:]}")
        return {"steps": {}, "errors": {"*": f"child crashed: {tail}"}, "process_wall": wall}
    if rec["errors"]:
        C.log(f"child {spec['kind']}/{spec.get('lib', spec.get('module'))}/{spec.get('workload', '')}: "
              f"errors {rec['errors']}\n{r.stderr[-3000:]}")
    rec["process_wall"] = wall
    return rec


def fmt_t(x) -> str:
    """C.fmt_s with the unit written out for seconds too."""
    t = C.fmt_s(x)
    return t if t == "–" or t.endswith("s") else t + " s"


def loadavg():
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "?"


class Runs:
    """Collects repeated child records per (column key): medians per step."""

    def __init__(self):
        self.recs = {}

    def add(self, key, rec):
        self.recs.setdefault(key, []).append(rec)

    def med(self, key, step, field="s"):
        vals = [r["steps"][step][field] for r in self.recs.get(key, []) if step in r["steps"]]
        return C.median(vals) if vals else None

    def error(self, key, step):
        for r in self.recs.get(key, []):
            e = r["errors"].get(step) or r["errors"].get("*")
            if e:
                return e
        return None

    def compiles(self, key, step):
        recs = [r["steps"][step] for r in self.recs.get(key, []) if step in r["steps"]]
        recs = [s for s in recs if "compiled" in s]
        if not recs:
            return None
        c = int(C.median([s["compiled"] for s in recs]))
        lo = int(C.median([s["loaded"] for s in recs]))
        xla = C.median([s["compile_s"] for s in recs])
        tr = C.median([s.get("trace_s", math.nan) for s in recs])
        if not (c or lo):
            return "0"
        detail = [f"{'load' if lo and not c else 'XLA'} {fmt_t(xla)}"] + ([f"trace {fmt_t(tr)}"] if tr >= 0.05 else [])
        return f"{c}" + (f", {lo} cached" if lo else "") + f" ({', '.join(detail)})"


def cell(runs, key, step, na="n/a"):
    if key not in runs.recs:
        return "–"
    t = runs.med(key, step)
    if t is None:
        e = runs.error(key, step)
        return f"✗ {e}" if e and not e.startswith("skipped") else (f"({e})" if e else na)
    return fmt_t(t)


def ratio_cell(runs, step, base_key, peers):
    """jaxmle time ÷ peer time (> 1: jaxmle is slower by that factor)."""
    base = runs.med(base_key, step)
    parts = []
    for label, key in peers:
        t = runs.med(key, step)
        if t is not None and base is not None:
            parts.append(f"{label} {C.fmt_ratio(base, t)}")
    return " · ".join(parts) or "–"


def part_imports(args, runs):
    mods = ["jax", "jaxmle", "statsmodels.api", "scipy.optimize"]
    for r in range(args.repeats_import):
        for m in mods[r % len(mods):] + mods[:r % len(mods)]:
            runs.add(("import", m), run_child({"kind": "import", "module": m}))
        C.log(f"[imports] repeat {r + 1}/{args.repeats_import}")
    base = runs.med(("import", "jax"), "import")
    rows = []
    for m in mods:
        key = ("import", m)
        rows.append([f"`import {m}`", cell(runs, key, "import"), runs.compiles(key, "import") or "–",
                     C.fmt_ratio(runs.med(key, "import"), base),
                     fmt_t(C.median([x["process_wall"] for x in runs.recs.get(key, [])]))])
    return C.Section("(1) Import time, fresh processes",
                     C.md_table(["import", "time", "compiles", "× `import jax`", "process wall"], rows),
                     [f"median of {args.repeats_import} fresh process(es) each; 'process wall' adds interpreter "
                      "start-up and exit; compiles during `import jaxmle` counted with a listener registered "
                      "right after `import jax`."])


def part_workload(wl, args, runs):
    peers = [p for p in ("statsmodels", "scipy") if not args.no_peers]
    for rep in range(args.repeats):
        cache = tempfile.mkdtemp(prefix=f"jaxmle-bench-latency-{wl}-")
        try:
            order = ["jaxmle"] + peers
            order = order[rep % len(order):] + order[:rep % len(order)]
            for lib in order:
                if lib == "jaxmle":
                    runs.add((wl, "empty"), run_child({"kind": "session", "lib": "jaxmle", "workload": wl,
                                                       "cache_dir": cache}))
                    runs.add((wl, "warm"), run_child({"kind": "session", "lib": "jaxmle", "workload": wl,
                                                      "cache_dir": cache}))
                    runs.recs[(wl, "warm")][-1].setdefault("cache_files_before", runs.recs[(wl, "empty")][-1]
                                                           .get("cache_files"))
                else:
                    runs.add((wl, lib), run_child({"kind": "session", "lib": lib, "workload": wl}))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        C.log(f"[{wl}] repeat {rep + 1}/{args.repeats} done (load {loadavg()})")
    rows = []
    for step in SCRIPT_STEPS + ("script",) + FOLLOW_STEPS:
        ce, cw = runs.compiles((wl, "empty"), step), runs.compiles((wl, "warm"), step)
        comp = "–" if ce is None and cw is None else f"{ce or '–'} / {cw or '–'}"
        peer_cells = [cell(runs, (wl, p), step) if p in peers else "–" for p in ("statsmodels", "scipy")]
        pl = [("sp" if p == "scipy" else "sm", (wl, p)) for p in peers]
        rows.append([STEP_LABELS[step], cell(runs, (wl, "empty"), step), cell(runs, (wl, "warm"), step), comp,
                     *peer_cells, ratio_cell(runs, step, (wl, "empty"), pl), ratio_cell(runs, step, (wl, "warm"), pl)])
    table = C.md_table(["step", "jaxmle (empty cache)", "jaxmle (warm cache)", "compiles (empty / warm)",
                        "statsmodels", "scipy", "jaxmle ÷ peer (empty)", "jaxmle ÷ peer (warm)"], rows)
    notes = [f"fresh process per column, steps run in this order in one process; median of {args.repeats} "
             "process(es); each row is the time of that step alone, except the script row (elapsed from "
             "before the import to the delta result).",
             f"held fixed: {SPEC[wl]['fixed']} (then LRT against the full fit), second: {SPEC[wl]['fixed2']}; "
             f"delta: {SPEC[wl]['delta']}."]
    if "statsmodels" in peers:
        notes.append("statsmodels: " + PEER_NOTES["statsmodels"][wl] + ".")
    if "scipy" in peers:
        notes.append("scipy: " + PEER_NOTES["scipy"] + ".")
    files = [r.get("cache_files") for r in runs.recs.get((wl, "empty"), [])]
    notes.append(f"cache files after the empty-cache session: {files}. compiles = XLA compilations (`+k from cache`: "
                 "executables loaded from the persistent cache), with the seconds jax spent in backend compile/load and, "
                 "when ≥ 50 ms, in tracing + lowering to MLIR (these two are paid even on a cache hit).")
    notes += agreement_notes(wl, runs, peers)
    return C.Section(f"(2-4) {TITLES[wl]}", table, notes)


def agreement_notes(wl, runs, peers):
    """Sanity check: first-fit estimates of jaxmle vs the peers (not a precision benchmark)."""
    jm = [r.get("estimates") for r in runs.recs.get((wl, "empty"), []) if r.get("estimates")]
    if not jm:
        return []
    jflat = np.concatenate([np.ravel(v) for v in jm[0]["params"].values()])
    out = []
    sp = [r.get("estimates") for r in runs.recs.get((wl, "scipy"), []) if r.get("estimates")]
    if sp:
        d = float(np.max(np.abs(np.array(sp[0]["theta"]) - jflat) / np.maximum(np.abs(jflat), 1e-3)))
        out.append(f"check: jaxmle vs scipy first-fit estimates, max rel. diff {d:.1e}")
    sm = [r.get("estimates") for r in runs.recs.get((wl, "statsmodels"), []) if r.get("estimates")]
    if sm:
        nb = len(sm[0]["params"])
        d = float(np.max(np.abs(np.array(sm[0]["params"]) - jflat[:nb]) / np.maximum(np.abs(jflat[:nb]), 1e-3)))
        out.append(f"check: jaxmle vs statsmodels coefficients, max rel. diff {d:.1e}")
    return out


def part_cli(args, runs):
    work = tempfile.mkdtemp(prefix="jaxmle-bench-latency-cli-")
    csv = cli_data_path(work)
    try:
        for rep in range(args.repeats):
            cache = tempfile.mkdtemp(prefix="jaxmle-bench-latency-clicache-")
            try:
                runs.add(("cli", "empty"), run_child({"kind": "cli", "lib": "jaxmle", "csv": csv, "cache_dir": cache}))
                runs.add(("cli", "warm"), run_child({"kind": "cli", "lib": "jaxmle", "csv": csv, "cache_dir": cache}))
                if not args.no_peers:
                    runs.add(("cli", "scipy"), run_child({"kind": "cli", "lib": "scipy", "csv": csv}))
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            C.log(f"[cli] repeat {rep + 1}/{args.repeats} done")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def wall(key):
        return C.median([r["process_wall"] for r in runs.recs.get(key, [])]) if key in runs.recs else None

    rows = [[f"`jaxmle fit data.csv --dist {CLI_DISTS}` (import → ranking printed)", cell(runs, ("cli", "empty"), "cli"),
             cell(runs, ("cli", "warm"), "cli"),
             f"{runs.compiles(('cli', 'empty'), 'cli') or '–'} / {runs.compiles(('cli', 'warm'), 'cli') or '–'}",
             "n/a", cell(runs, ("cli", "scipy"), "cli"),
             ratio_cell(runs, "cli", ("cli", "empty"), [("sp", ("cli", "scipy"))]),
             ratio_cell(runs, "cli", ("cli", "warm"), [("sp", ("cli", "scipy"))])],
            ["same, process wall (interpreter start-up and exit included)", fmt_t(wall(("cli", "empty"))),
             fmt_t(wall(("cli", "warm"))), "", "n/a", fmt_t(wall(("cli", "scipy"))), "", ""]]
    table = C.md_table(["step", "jaxmle (empty cache)", "jaxmle (warm cache)", "compiles (empty / warm)",
                        "statsmodels", "scipy", "jaxmle ÷ peer (empty)", "jaxmle ÷ peer (warm)"], rows)
    notes = [f"n={N} positive values (Gamma(3, scale 2), fixed seed) in a one-column CSV; the child calls "
             "`jaxmle.cli.main([...])` (what the `jaxmle` entry point runs) with its stdout captured; the CLI "
             "turns the persistent cache on itself (`$JAXMLE_CACHE_DIR`).",
             "scipy peer: `stats.norm.fit`, `stats.gamma.fit(floc=0)`, `stats.weibull_min.fit(floc=0)`, log-likelihood, "
             "AIC ranking and `stats.kstest` per candidate (no SEs: scipy's `fit` gives none; jaxmle's CLI prints "
             "SEs and CIs)."]
    return C.Section("(5) Command line: `jaxmle fit`", table, notes)


def part_glmm(args, runs):
    for rep in range(args.repeats):
        cache = tempfile.mkdtemp(prefix="jaxmle-bench-latency-glmm-")
        try:
            runs.add(("glmm", "empty"), run_child({"kind": "glmm", "cache_dir": cache}))
            runs.add(("glmm", "warm"), run_child({"kind": "glmm", "cache_dir": cache}))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        C.log(f"[glmm] repeat {rep + 1}/{args.repeats} done")
    rows = []
    for step, label in (("import", STEP_LABELS["import"]), ("fit", "first fit, `random=[\"b\"]` (Laplace)"),
                        ("total", "end to end (import → estimates + SEs)")):
        ce, cw = runs.compiles(("glmm", "empty"), step), runs.compiles(("glmm", "warm"), step)
        rows.append([label, cell(runs, ("glmm", "empty"), step), cell(runs, ("glmm", "warm"), step),
                     "–" if ce is None and cw is None else f"{ce or '–'} / {cw or '–'}", "n/a", "n/a", "–", "–"])
    table = C.md_table(["step", "jaxmle (empty cache)", "jaxmle (warm cache)", "compiles (empty / warm)",
                        "statsmodels", "scipy", "jaxmle ÷ peer (empty)", "jaxmle ÷ peer (warm)"], rows)
    notes = [f"Poisson GLMM, {GLMM_GROUPS} groups × {GLMM_PER_GROUP} observations, log μ = b0 + b1·x + u_g, "
             "u_g ~ N(0, σ²); joint log-density in jax.numpy, `random=[\"b\"]`.",
             "no peer: statsmodels has only variational-Bayes mixed GLMs (`PoissonBayesMixedGLM`), not the Laplace "
             "ML fit; a scipy Laplace fit would be a hand-written inner Newton loop."]
    return C.Section(f"(6) Random effects: first fit of a Poisson GLMM with {GLMM_GROUPS} groups", table, notes)


def part_warm(args, runs):
    libs = ["jaxmle"] + ([] if args.no_peers else ["statsmodels", "scipy"])
    for lib in libs:
        runs.add(("warm", lib), run_child({"kind": "warm", "lib": lib, "repeats": args.repeats_warm}))
    base = runs.med(("warm", "jaxmle"), "warm")
    rows = []
    for lib in libs:
        key = ("warm", lib)
        rows.append([{"jaxmle": "jaxmle `jm.fit` (newton)", "statsmodels": "statsmodels OLS (closed form)",
                      "scipy": "scipy minimize trust-exact (analytic derivatives)"}[lib],
                     cell(runs, key, "first"), cell(runs, key, "warm"), runs.compiles(key, "warm") or "–",
                     C.fmt_ratio(base, runs.med(key, "warm"))])
    table = C.md_table(["library", "first fit in the process (import included)", f"warm fit (median of {args.repeats_warm})",
                        "compiles during the warm fits", "jaxmle ÷ this (warm)"], rows)
    notes = [f"Normal(mu, sigma), n={WARM_N}, fits 2..R+1 on new data of the same shape (the `bench_small.py` "
             "contenders from `_contenders.py`); one fresh process per library, no persistent cache (an empty "
             "`JAXMLE_CACHE_DIR` of its own, so 'first fit' is an empty-cache first fit).",
             "jaxmle: after the first fit the warm fits start once the shared solver step, compiled in the "
             f"background after a first fit, is ready (waited {cell(runs, ('warm', 'jaxmle'), 'settle')} here; "
             "fits in that window run its NumPy twin, ~0.4 ms an iteration slower)."]
    return C.Section(f"(7) Warm single fit, Normal n={WARM_N}", table, notes)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Normal only (+ imports, warm), fewest repeats")
    ap.add_argument("--repeats", type=int, default=None, help="fresh-process repeats per session (default 1)")
    ap.add_argument("--repeats-import", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--repeats-warm", type=int, default=None, help="default 30 (10 with --quick)")
    ap.add_argument("--only", default=None, help=f"comma list of {','.join(PARTS)}")
    ap.add_argument("--no-peers", action="store_true", help="jaxmle only")
    ap.add_argument("--md-out", default=None, help="also write the markdown here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.repeats = a.repeats or 1
    a.repeats_import = a.repeats_import or (1 if a.quick else 3)
    a.repeats_warm = a.repeats_warm or (10 if a.quick else 30)
    default = "imports,normal,warm" if a.quick else ",".join(PARTS)
    a.only = [p for p in (a.only or default).split(",") if p]
    bad = [p for p in a.only if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {PARTS}")
    return a


def main(argv=None):
    args = parse(argv)
    if args.child is not None:
        child_main(json.loads(args.child))
        return 0
    ok, why = C.jaxmle_importable_in_child()
    if not ok:
        print(f"ERROR: jaxmle is not importable in a fresh process ({why}); nothing to measure", file=sys.stderr)
        return 1
    t_start = C.now()
    load = [("start", loadavg())]
    C.log("warm-up child (imports jaxmle, statsmodels.api, scipy: .pyc and OS file cache)")
    C.warm_up_child("jax, jaxmle, statsmodels.api, scipy.optimize, scipy.stats", "jaxmle-bench-latency-warmup-")
    runs, sections = Runs(), []
    for part in PARTS:
        if part not in args.only:
            continue
        C.log(f"== {part} (load {loadavg()})")
        if part == "imports":
            sections.append(part_imports(args, runs))
        elif part in WORKLOADS:
            sections.append(part_workload(part, args, runs))
        elif part == "cli":
            sections.append(part_cli(args, runs))
        elif part == "glmm":
            sections.append(part_glmm(args, runs))
        else:
            sections.append(part_warm(args, runs))
        load.append((f"after {part}", loadavg()))
    errors = sorted({f"{k[0]}/{k[1]}: {s}: {e}" for k, recs in runs.recs.items() for r in recs
                     for s, e in r["errors"].items() if not e.startswith("skipped")})
    info = C.machine_info()
    info["load average (1/5/15 min)"] = "; ".join(f"{w}: {v}" for w, v in load)
    info["total wall"] = f"{C.now() - t_start:.0f} s"
    try:
        dirty = subprocess.run(["git", "-C", C.REPO_ROOT, "status", "--porcelain", "--", "jaxmle"],
                               capture_output=True, text=True).stdout.split("\n")
        info["uncommitted jaxmle/ files"] = len([d for d in dirty if d.strip()])
    except Exception:
        pass
    head = C.Section("Latency benchmark: machine and load", C.machine_info_md(info), [
        "time = inside the fresh child, from before the first heavy import. In the workload tables 'jaxmle ÷ peer' "
        "= jaxmle time / peer time (sm = statsmodels, sp = scipy; > 1: jaxmle is slower by that factor); in (1) "
        "the factor is the import ÷ `import jax`, in (7) the jaxmle warm fit ÷ that library's. "
        "A single warm-up child imported every library first (.pyc, OS file cache).",
        "load average is of the whole shared box (2 cores); compare runs only at similar load."]
        + ([f"errors: {e}" for e in errors] or ["no step failed."]))
    C.write_sections(args.md_out, [head] + sections)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

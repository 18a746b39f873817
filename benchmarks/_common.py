"""Shared helpers for the jaxmle benchmarks.

Only numpy and the standard library are imported at module level: the cold-start
child process (``_child.py``) imports this module *before* its timer starts, so
anything heavy imported here would be hidden from the cold-latency numbers.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)

# ---------------------------------------------------------------------------
# Fixed problem definitions (seeds and true parameters)
# ---------------------------------------------------------------------------

NORMAL_N = 100
NORMAL_TRUE = {"mu": 1.0, "sigma": 2.0}

LOGIT_SMALL_N = 1_000
LOGIT_SMALL_P = 5                       # covariates; +1 intercept column
LOGIT_BIG_N = 1_000_000
LOGIT_BIG_P = 20                        # covariates; +1 intercept column

ROBUST_N = 50
# Per-dataset true parameters are drawn from these ranges (fixed seed), so the
# naive start (mu=0, sigma=1 / concentration=1, rate=1) is far off for many of
# the datasets.
ROBUST_NORMAL_RANGES = {"mu": ("uniform", -10.0, 10.0), "sigma": ("loguniform", 0.1, 10.0)}
ROBUST_GAMMA_RANGES = {"concentration": ("loguniform", 0.5, 20.0), "rate": ("loguniform", 0.1, 10.0)}

# Agreement tolerance (relative), see `rel_err`.
RTOL = 1e-6


def enable_x64():
    """Import jax with float64 enabled (call inside timed regions where relevant)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


# ---------------------------------------------------------------------------
# jaxmle availability
# ---------------------------------------------------------------------------

def _ensure_repo_on_path():
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)


_ensure_repo_on_path()

_JAXMLE_STATUS: tuple | None = None


def jaxmle_status():
    """Return (module_or_None, message). Never raises."""
    global _JAXMLE_STATUS
    if _JAXMLE_STATUS is None:
        try:
            enable_x64()
            import jaxmle  # noqa: F401

            missing = [a for a in ("fit",) if not hasattr(jaxmle, a)]
            if missing:
                _JAXMLE_STATUS = (None, f"jaxmle imported but lacks {missing}; jaxmle rows skipped")
            else:
                _JAXMLE_STATUS = (jaxmle, f"jaxmle {getattr(jaxmle, '__version__', '?')} from {os.path.dirname(jaxmle.__file__)}")
        except Exception as e:  # pragma: no cover - depends on dev state
            _JAXMLE_STATUS = (None, f"jaxmle is not importable yet ({type(e).__name__}: {e}); jaxmle rows skipped")
    return _JAXMLE_STATUS


def jaxmle_available() -> bool:
    return jaxmle_status()[0] is not None


def jaxmle_importable_in_child() -> tuple[bool, str]:
    """Check importability in a fresh interpreter (without importing it here)."""
    code = "import jaxmle, sys; sys.exit(0 if hasattr(jaxmle, 'fit') else 3)"
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=300, env=child_env())
    except Exception as e:
        return False, f"check failed: {e}"
    if r.returncode == 0:
        return True, "ok"
    tail = (r.stderr or "").strip().splitlines()[-1:] or ["jaxmle.fit missing"]
    return False, tail[0]


# ---------------------------------------------------------------------------
# Data generators (numpy only, fixed seeds)
# ---------------------------------------------------------------------------

def normal_data(seed: int, n: int = NORMAL_N) -> np.ndarray:
    rng = np.random.default_rng(10_000 + seed)
    return rng.normal(NORMAL_TRUE["mu"], NORMAL_TRUE["sigma"], size=n)


def logistic_beta(p: int) -> np.ndarray:
    """Intercept 0.25 then a fixed pattern of slopes (some zero)."""
    pattern = np.array([0.5, -1.0, 0.25, 0.0, 0.75, -0.5, 0.1, 0.0, -0.25, 0.3])
    slopes = np.resize(pattern, p) / np.sqrt(max(1.0, p / 5.0))
    return np.concatenate([[0.25], slopes])


def logistic_data(seed: int, n: int, p: int):
    """X (n, p+1) with an intercept column, y in {0., 1.} (float64)."""
    rng = np.random.default_rng(20_000 + seed)
    X = np.empty((n, p + 1))
    X[:, 0] = 1.0
    X[:, 1:] = rng.standard_normal((n, p))
    eta = X @ logistic_beta(p)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return X, y


def _draw(rng, spec, size):
    kind, lo, hi = spec
    if kind == "uniform":
        return rng.uniform(lo, hi, size)
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def robust_normal_sets(m: int, n: int = ROBUST_N, seed: int = 0):
    rng = np.random.default_rng(30_000 + seed)
    mu = _draw(rng, ROBUST_NORMAL_RANGES["mu"], m)
    sigma = _draw(rng, ROBUST_NORMAL_RANGES["sigma"], m)
    x = mu[:, None] + sigma[:, None] * rng.standard_normal((m, n))
    return x, {"mu": mu, "sigma": sigma}


def robust_gamma_sets(m: int, n: int = ROBUST_N, seed: int = 0):
    rng = np.random.default_rng(40_000 + seed)
    a = _draw(rng, ROBUST_GAMMA_RANGES["concentration"], m)
    b = _draw(rng, ROBUST_GAMMA_RANGES["rate"], m)
    x = rng.gamma(a[:, None], 1.0 / b[:, None], size=(m, n))
    # Guard against exact zeros (possible for tiny shapes) - log(x) must be finite.
    x = np.maximum(x, np.finfo(np.float64).tiny)
    return x, {"concentration": a, "rate": b}


# ---------------------------------------------------------------------------
# Reference solutions (independent of every contender)
# ---------------------------------------------------------------------------

def normal_reference(x: np.ndarray):
    """Closed-form MLE and observed-information SEs for Normal(mu, sigma)."""
    n = x.size
    mu = x.mean()
    sigma = math.sqrt(np.mean((x - mu) ** 2))
    return {"mu": mu, "sigma": sigma}, {"mu": sigma / math.sqrt(n), "sigma": sigma / math.sqrt(2 * n)}


def logistic_reference(X: np.ndarray, y: np.ndarray, tol: float = 1e-13, max_iter: int = 100):
    """Plain numpy Newton to machine precision; SEs from the exact Hessian."""
    beta = np.zeros(X.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        g = X.T @ (y - p)
        H = (X * (p * (1 - p))[:, None]).T @ X
        step = np.linalg.solve(H, g)
        beta = beta + step
        if np.max(np.abs(step)) < tol * max(1.0, np.max(np.abs(beta))):
            break
    p = 1.0 / (1.0 + np.exp(-(X @ beta)))
    H = (X * (p * (1 - p))[:, None]).T @ X
    return {"beta": beta}, {"beta": np.sqrt(np.diag(np.linalg.inv(H)))}


def gamma_reference(x: np.ndarray):
    """scipy.stats.gamma.fit(floc=0), polished by Newton on the profile score equation
    log(a) - digamma(a) = log(mean x) - mean(log x) to ~1 ulp.  Returns (params, a_scipy)."""
    from scipy import special, stats

    a_scipy, _, _ = stats.gamma.fit(x, floc=0)
    s = np.log(x.mean()) - np.mean(np.log(x))
    a = a_scipy
    for _ in range(6):  # f(a) = log a - digamma(a) - s ; f'(a) = 1/a - trigamma(a)
        f = np.log(a) - special.digamma(a) - s
        a = a - f / (1.0 / a - special.polygamma(1, a))
    return {"concentration": a, "rate": a / x.mean()}, a_scipy


# ---------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------

def flat(d: dict, keys: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.atleast_1d(np.asarray(d[k], dtype=np.float64)).ravel() for k in keys])


def rel_err(est, ref, scale=None) -> float:
    """max_i |est_i - ref_i| / max(|ref_i|, scale_i)  (scale = reference SE for params,
    so near-zero coefficients are judged relative to their standard error)."""
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.abs(ref)
    if scale is not None:
        den = np.maximum(den, np.asarray(scale, dtype=np.float64))
    den = np.maximum(den, 1e-300)
    if est.shape != ref.shape or not np.all(np.isfinite(est)):
        return float("inf")
    return float(np.max(np.abs(est - ref) / den))


# ---------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------

def now() -> float:
    return time.perf_counter()


def median(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else float("nan")


def iqr(xs):
    xs = sorted(x for x in xs if x is not None and math.isfinite(x))
    if len(xs) < 4:
        return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def materialise(result: dict) -> dict:
    """Convert a contender result to plain numpy/python (forces JAX to finish)."""
    out = {}
    for k in ("params", "stderr"):
        out[k] = {name: np.asarray(v, dtype=np.float64) for name, v in result[k].items()}
    out["converged"] = bool(np.asarray(result.get("converged", True)))
    if "n_iter" in result and result["n_iter"] is not None:
        out["n_iter"] = int(np.asarray(result["n_iter"]))
    return out


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # No persistent cache unless the child enables one explicitly.
    for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
        env.pop(k, None)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


def child_record(proc: subprocess.CompletedProcess) -> tuple[dict | None, str]:
    """A child's ``@@RESULT <json>`` record (None if it printed none) and the last line of
    its stderr (else its exit code), for a crash message."""
    rec = None
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT "):
            rec = json.loads(line[len("@@RESULT "):])
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"rc={proc.returncode}"]
    return rec, tail[0][:200]


def warm_up_child(modules: str, prefix: str) -> None:
    """One throwaway child that imports ``modules`` (fills the .pyc and OS file caches
    before anything is timed), with a compilation cache of its own, removed after."""
    warm_dir = tempfile.mkdtemp(prefix=prefix)
    try:
        subprocess.run([sys.executable, "-c", f"import {modules}"], cwd=REPO_ROOT,
                       env=child_env({"JAXMLE_CACHE_DIR": warm_dir}), capture_output=True,
                       timeout=600)
    finally:
        shutil.rmtree(warm_dir, ignore_errors=True)


def run_child(workload: str, contender: str, seed: int = 0, cache_dir: str | None = None,
              timeout: float = 600.0) -> dict:
    """Run one fit in a fresh interpreter; returns the child's JSON record plus the
    wall time seen by the parent (interpreter start-up and teardown included)."""
    cmd = [sys.executable, os.path.join(HERE, "_child.py"), workload, contender, str(seed)]
    if cache_dir:
        cmd.append(cache_dir)
    t0 = now()
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=child_env())
    wall = now() - t0
    rec = None
    for line in r.stdout.splitlines():
        if line.startswith("@@RESULT "):
            rec = json.loads(line[len("@@RESULT "):])
    if rec is None:
        raise RuntimeError(f"child {workload}/{contender} failed (rc={r.returncode}):\n{r.stderr[-3000:]}")
    rec["process_wall"] = wall
    return rec


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.0f} µs"


def fmt_ratio(x, base) -> str:
    if x is None or base is None or not math.isfinite(x) or not math.isfinite(base) or base <= 0:
        return "–"
    r = x / base
    if r >= 100:
        return f"{r:.0f}×"
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


def fmt_err(x) -> str:
    if x is None:
        return "–"
    if not math.isfinite(x):
        return "inf"
    return "0" if x == 0 else f"{x:.1e}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def _version(mod):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "?")
    except Exception:
        return "not installed"


def machine_info() -> dict:
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("jax", "jaxlib", "numpy", "scipy", "statsmodels", "iminuit", "optax", "numpyro"):
        info[mod] = _version(mod)
    try:
        import jax

        info["jax_backend"] = jax.default_backend()
    except Exception:
        pass
    mod, msg = jaxmle_status()
    info["jaxmle"] = msg
    if mod is not None:
        import hashlib

        h = hashlib.sha1()
        pkg = os.path.dirname(mod.__file__)
        for root, _, files in sorted(os.walk(pkg)):
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(root, f), "rb") as fh:
                        h.update(f.encode() + fh.read())
        info["jaxmle_source_sha1"] = h.hexdigest()[:12] + " (of jaxmle/**/*.py)"
    try:
        r = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        info["git_head"] = r.stdout.strip() or "(no commits)"
    except Exception:
        pass
    return info


def machine_info_md(info: dict | None = None) -> str:
    info = info or machine_info()
    return md_table(["key", "value"], [(k, v) for k, v in info.items()])


@dataclass
class Section:
    """One markdown section produced by a benchmark script."""

    title: str
    body: str
    notes: list = field(default_factory=list)

    def to_md(self) -> str:
        s = f"## {self.title}\n\n{self.body}\n"
        if self.notes:
            s += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return s


def write_sections(path: str | None, sections: Sequence[Section]):
    text = "\n".join(s.to_md() for s in sections)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text)
    return text


def run_rscript(script: str, args: Sequence[str], timeout: float = 3600) -> dict | None:
    """``Rscript`` on the R source ``script`` with ``args``: its last line of output parsed
    as JSON, with ``process`` (the wall time); None when R is not installed, ``{"error": …}``
    when the script fails."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fit.R")
        with open(path, "w") as f:
            f.write(script)
        t0 = time.perf_counter()
        out = subprocess.run(["Rscript", path, *args], capture_output=True, text=True,
                             timeout=timeout)
        wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec["process"] = wall
    return rec


def log(*a):
    print(*a, file=sys.stderr, flush=True)

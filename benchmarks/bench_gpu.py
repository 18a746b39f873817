"""Batch throughput on whatever JAX backend is present (GPU there, CPU here).

    python3 benchmarks/bench_gpu.py [--sizes 10000,100000] [--problems normal,logistic,gamma]
        [--repeats 3] [--max-chunk 16384] [--float32] [--budget-s 300]
        [--big-n 1000000] [--big-p 20] [--glmm-groups 50000]
        [--out FILE.json] [--md-out FILE.md] [--quick]

Default sizes by backend: B = 1e4, 1e5, 1e6, 1e7 on a GPU, 1e4 and 1e5 on CPU (a cell whose
data would not fit in host or device memory is skipped, with the reason in the table).

For every (problem, B) it runs ``jm.fit_batch`` and the hand-written JAX reference of
``bench_batch.py`` (``handwritten_reference``: a robust Newton with ``jax.hessian``,
Cholesky step / eigenvalue shift, backtracking line search, ``jit(lax.map(...,
batch_size))``) in the same process, on the same data (``bench_batch.make_data``, seed 0):

* **chunk**: both contenders get the same chunk: ``fit_batch(chunk_size=c)`` and
  ``lax.map(batch_size=c)``, with c = B split into equal chunks of at most
  ``--max-chunk`` (16384 by default on a GPU, where one chunk should hold thousands of
  fits; 1024 on CPU, where a vmap of ~10⁴ members with a while loop has hung XLA:CPU).
  fit_batch compiles one program set per chunk size, the reference one per B.
* **first call**: the first call of that shape in the process (tracing + compilation +
  run); **warm**: the median of ``--repeats`` further calls on the same data. Both
  are timed from host numpy data to host numpy results (device transfers included:
  fit_batch returns host arrays; the reference's outputs are fetched with
  ``jax.device_get`` after ``jax.block_until_ready``).
* **jm / ref**: warm fits/s of fit_batch over those of the reference (> 1: jm faster).
* **accuracy**: max |Δθ| (natural parameters) between fit_batch and the reference, the
  same scaled by max(|ref|, SE) as in bench_batch, the max relative difference of the SEs,
  and for Normal the max |Δθ| of each against the closed form (mean, std with ddof 0,
  in float64 numpy); converged counts of each.

float64 by default (``jax_enable_x64``); ``--float32`` runs both in float32. The
reference's loop stops at max |grad| ≤ 1e-8 (1 + |f|), a float64 rule that float32 seldom
meets, so there most of its fits run to the 100-iteration cap (its time is then an upper
bound; its "converged" flag is a looser 1e-6 check made after the loop).

float32 honesty (``--float32``): fit_batch must say it ran in float32 (its
``PrecisionWarning``); the table checks that it did, and how far the float32 estimates
and SEs are from a float64 fit_batch of the same (float32-rounded) data, in SEs and
relative SE: what "float32-accurate only" means in numbers.

After the batch table: **big single fit** (``--big-n``, comma list; "" skips): logistic
regression, n observations, ``--big-p`` covariates + intercept (p = 21 columns by
default), ``jm.fit`` with standard errors, first call and warm (median of 2), checked
against a float64 numpy IRLS (max |Δβ| in SEs); and a **GLMM** (``--glmm-groups``; ""
skips): the Poisson random-intercept GLMM of ``bench_crossed.py`` (20 counts per group,
3 fixed effects) by ``jm.fit(..., random=["b"])``, first call and warm (a second dataset
of the same shape). Defaults: n = 1e7 and 50,000 groups on a GPU, n = 1e6 and 50,000
groups on CPU.

``--budget-s``: a (problem, B) cell is skipped when the time already spent plus its
estimate (from the previous size of the same problem) would pass the budget; sizes run
smallest first, problems within each size, so a short budget drops the largest sizes.
``--out`` writes JSON (device, versions, every figure), rewritten after each cell so a
run that is cut short still leaves its results. Exit status 1 if, in float64, fit_batch
leaves a fit unconverged or differs from the reference by more than 1e-5 (scaled).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import bench_batch as BB  # noqa: E402  (enables x64, imports jax, numpyro, jaxmle)

jax = BB.jax
jm = BB.jm

AGREE_TOL = 1e-5          # float64 check: max |Δθ| / max(|ref|, SE) between jm and the reference


# --------------------------------------------------------------------------- helpers

def chunk_for(B: int, max_chunk: int) -> int:
    """Equal chunks of at most max_chunk (no padded tail)."""
    n = -(-B // max_chunk)
    return -(-B // n)


def cast(data, dtype):
    if isinstance(data, tuple):
        return tuple(np.asarray(d, dtype) for d in data)
    return np.asarray(data, dtype)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def device_info() -> dict:
    devs = jax.devices()
    d0 = devs[0]
    info = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devs],
        "device_kind": getattr(d0, "device_kind", "?"),
        "device_count": len(devs),
        "jax": jax.__version__,
        "jaxlib": getattr(__import__("jaxlib"), "__version__", "?"),
        "jaxmle": getattr(jm, "__version__", "?"),
        "x64": bool(jax.config.jax_enable_x64),
        "cpu_count": os.cpu_count(),
    }
    try:
        import jax.extend.backend as jeb  # platform version (CUDA driver/runtime on GPU)
        info["platform_version"] = jeb.get_backend().platform_version
    except Exception:
        pass
    return info


def memory_left() -> tuple[float, float | None]:
    """Bytes of host memory available, and of device memory (None on CPU)."""
    try:
        host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        host = float("inf")
    device = None
    if jax.default_backend() != "cpu":
        try:
            stats = jax.devices()[0].memory_stats() or {}
            device = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0) or None
        except Exception:
            device = None
    return float(host), device


def too_big(data_bytes: float, host_factor: float = 4.0, device_factor: float = 2.0) -> str | None:
    """Why a cell with this much data would not fit (None if it fits): the host holds the
    data, its cast and fit_batch's prepared copy; the device the reference's whole batch."""
    host, device = memory_left()
    if data_bytes * host_factor > host:
        return f"data {data_bytes / 2**30:.1f} GiB × {host_factor:g} > host memory free {host / 2**30:.1f} GiB"
    if device is not None and data_bytes * device_factor > device:
        return (f"data {data_bytes / 2**30:.1f} GiB × {device_factor:g} > device memory free "
                f"{device / 2**30:.1f} GiB")
    return None


def data_bytes(name: str, B: int, dtype) -> float:
    per = {"normal": 100, "gamma": 100, "logistic": 200 * 7}[name]
    return float(B) * per * np.dtype(dtype).itemsize


def max_abs(a: dict, b: dict) -> float:
    d = [np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) for k in a]
    m = max(float(np.max(x)) for x in d)
    return m if all(np.all(np.isfinite(x)) for x in d) else float("nan")


def max_scaled(a: dict, ref: dict, se: dict) -> float:
    """bench_batch's agreement metric: max |a − ref| / max(|ref|, SE_ref)."""
    vals = [np.abs(np.asarray(a[k], np.float64) - ref[k]) / np.maximum(np.abs(ref[k]), se[k])
            for k in a]
    if not all(np.all(np.isfinite(v)) for v in vals):
        return float("nan")
    return max(float(np.max(v)) for v in vals)


def max_rel_se(a: dict, ref: dict) -> float:
    vals = [np.abs(np.asarray(a[k], np.float64) - ref[k]) / np.abs(ref[k]) for k in a]
    if not all(np.all(np.isfinite(v)) for v in vals):
        return float("nan")
    return max(float(np.max(v)) for v in vals)


# --------------------------------------------------------------------------- one cell

def run_cell(name: str, B: int, max_chunk: int, repeats: int, dtype, deadline: float) -> dict:
    w = BB.WORKLOADS[name]
    data = cast(BB.make_data(name, B, seed=0), dtype)
    chunk = chunk_for(B, max_chunk)
    rec = {"problem": name, "B": B, "chunk": chunk, "dtype": np.dtype(dtype).name}

    precision_warned = []

    def jm_run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", jm.JaxmleWarning)
            res = jm.fit_batch(w["ll"], data, init=w["init"], constraints=w["cons"],
                               chunk_size=chunk, progress=False)
        precision_warned.append(any(issubclass(c.category, jm.PrecisionWarning) for c in caught))
        # fit_batch hands back host arrays; materialise anyway (no-op if already numpy)
        jax.block_until_ready(res.params)
        return res, {k: np.asarray(v) for k, v in res.params.items()}

    ref_fn = BB.handwritten_reference(name, batch_size=chunk)

    def ref_run():
        out = ref_fn(data)
        return jax.device_get(jax.block_until_ready(out))

    def warm(fn, t_first):
        left = deadline - time.perf_counter()
        n = max(1, min(repeats, int(left / max(t_first, 1e-3)) if left > 0 else 1))
        ts, out = [], None
        for _ in range(n):
            out, t = timed(fn)
            ts.append(t)
        return out, ts

    C.log(f"--- {name}, B = {B:,}, chunk {chunk:,}")
    (bres, est), rec["jm_first_s"] = timed(jm_run)
    (bres, est), ts = warm(jm_run, rec["jm_first_s"])
    rec["jm_warm_runs_s"] = ts
    rec["jm_warm_s"] = C.median(ts)
    rec["jm_fits_per_s"] = B / rec["jm_warm_s"]
    rec["jm_compile_s"] = max(rec["jm_first_s"] - rec["jm_warm_s"], 0.0)
    rec["jm_converged"] = int(bres.n_converged)
    rec["jm_median_iter"] = float(np.median(np.asarray(bres.n_iter)))
    rec["jm_max_iter"] = int(np.max(np.asarray(bres.n_iter)))
    se = {k: np.asarray(v, np.float64) for k, v in bres.stderr.items()}
    C.log(f"    jm.fit_batch: first {rec['jm_first_s']:.2f} s, warm {rec['jm_warm_s']:.4f} s")

    (t_hat, cov, ok), rec["ref_first_s"] = timed(ref_run)
    (t_hat, cov, ok), ts = warm(ref_run, rec["ref_first_s"])
    rec["ref_warm_runs_s"] = ts
    rec["ref_warm_s"] = C.median(ts)
    rec["ref_fits_per_s"] = B / rec["ref_warm_s"]
    rec["ref_compile_s"] = max(rec["ref_first_s"] - rec["ref_warm_s"], 0.0)
    rec["ref_converged"] = int(np.sum(np.asarray(ok)))
    t_hat, cov = np.asarray(t_hat, np.float64), np.asarray(cov, np.float64)
    ref_est, ref_se = BB.to_natural(name, t_hat), BB.natural_se(name, t_hat, cov)
    C.log(f"    hand-written: first {rec['ref_first_s']:.2f} s, warm {rec['ref_warm_s']:.4f} s")

    rec["speedup_jm_over_ref"] = rec["ref_warm_s"] / rec["jm_warm_s"]
    # agreement over the datasets the reference converged on (its failures are its own:
    # the closed-form column judges jm on every dataset)
    good = np.asarray(ok, bool)

    def on(d):
        return {k: np.asarray(v)[good] for k, v in d.items()}

    rec["max_abs_dtheta_jm_ref"] = max_abs(on(est), on(ref_est))
    rec["max_scaled_dtheta_jm_ref"] = max_scaled(on(est), on(ref_est), on(ref_se))
    rec["max_rel_dse_jm_ref"] = max_rel_se(on(se), on(ref_se))
    if name == "normal":
        x = np.asarray(data, np.float64)
        closed = {"mu": x.mean(axis=1), "sigma": x.std(axis=1)}
        rec["max_abs_dtheta_jm_closed"] = max_abs(est, closed)
        rec["max_abs_dtheta_ref_closed"] = max_abs(ref_est, closed)
    rec["precision_warning"] = bool(precision_warned and precision_warned[-1])
    if np.dtype(dtype) == np.float32:
        rec.update(float32_honesty(w, data, chunk, est, se))
    return rec


def float32_honesty(w: dict, data, chunk: int, est: dict, se: dict) -> dict:
    """The float32 fits against float64 fit_batch on the same (float32-rounded) data."""
    with jax.enable_x64(True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jm.JaxmleWarning)
            ref = jm.fit_batch(w["ll"], cast(data, np.float64), init=w["init"],
                               constraints=w["cons"], chunk_size=chunk, progress=False)
    ok = np.asarray(ref.converged, bool)
    est64 = {k: np.asarray(v, np.float64)[ok] for k, v in ref.params.items()}
    se64 = {k: np.asarray(v, np.float64)[ok] for k, v in ref.stderr.items()}
    d_in_se = [np.abs(np.asarray(est[k], np.float64)[ok] - est64[k]) / se64[k] for k in est64]
    d_se = [np.abs(np.asarray(se[k], np.float64)[ok] - se64[k]) / se64[k] for k in se64]
    return {"f32_vs_f64_dtheta_in_se": max(float(np.nanmax(d)) for d in d_in_se),
            "f32_vs_f64_rel_dse": max(float(np.nanmax(d)) for d in d_se),
            "f64_converged": int(ok.sum())}


# --------------------------------------------------------------------------- big fit, GLMM

def big_logistic(p, d):
    X, y = d
    return BB.dist.Bernoulli(logits=X @ p["beta"]).log_prob(y)


def run_big(n: int, p: int, dtype) -> dict:
    """One logistic fit on n observations, p covariates + intercept, with SEs."""
    rec = {"n": n, "p": p + 1, "dtype": np.dtype(dtype).name}
    why = too_big(float(n) * (p + 2) * 8, host_factor=4.0, device_factor=3.0)
    if why:
        rec["skipped"] = why
        return rec
    X, y = C.logistic_data(0, n, p)
    Xc, yc = np.asarray(X, dtype), np.asarray(y, dtype)
    init = {"beta": np.zeros(p + 1, dtype)}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jm.JaxmleWarning)
            res = jm.fit(big_logistic, (Xc, yc), init)
        return res, np.asarray(res.params["beta"], np.float64), np.asarray(res.stderr["beta"])

    C.log(f"--- big logistic fit: n = {n:,}, p = {p + 1}")
    (res, beta, se), rec["first_s"] = timed(run)
    ts = []
    for _ in range(2):
        (res, beta, se), t = timed(run)
        ts.append(t)
    rec["warm_s"] = C.median(ts)
    rec["converged"] = bool(res.converged)
    rec["n_iter"] = int(res.n_iter)
    (ref, _), rec["numpy_irls_s"] = timed(lambda: (C.logistic_reference(X, y), None))
    ref_beta = np.asarray(ref[0]["beta"], np.float64)
    rec["max_dbeta_in_se"] = float(np.max(np.abs(beta - ref_beta) / np.asarray(se, np.float64)))
    rec["se_finite"] = bool(np.all(np.isfinite(se)))
    C.log(f"    first {rec['first_s']:.2f} s, warm {rec['warm_s']:.2f} s, numpy IRLS "
          f"{rec['numpy_irls_s']:.2f} s, max |Δβ| {rec['max_dbeta_in_se']:.1e} SE")
    return rec


def run_glmm(G: int) -> dict:
    """The Poisson random-intercept GLMM of bench_crossed (20 counts per group)."""
    import bench_crossed as BC

    rec = {"groups": G}
    why = too_big(float(G) * 20 * 6 * 8 * 50, host_factor=1.0, device_factor=1.0)
    if why:
        rec["skipped"] = why
        return rec
    w = BC.glmm_workload(G)

    def run(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return jm.fit(w["loglik"], data, w["init"], constraints=w["cons"], random=w["random"])

    C.log(f"--- Poisson GLMM: {G:,} groups × 20")
    res, rec["first_s"] = timed(lambda: run(w["data"]))
    ts = []
    for data in w["others"][:2]:
        _, t = timed(lambda: run(data))
        ts.append(t)
    rec["warm_s"] = C.median(ts)
    rec["converged"] = bool(res.converged)
    rec["sd"] = float(res.params["sd"])
    rec["beta"] = np.asarray(res.params["beta"]).tolist()
    rec["se_sd"] = float(res.stderr["sd"])
    C.log(f"    first {rec['first_s']:.2f} s, warm {rec['warm_s']:.2f} s, sd {rec['sd']:.4f}")
    return rec


# --------------------------------------------------------------------------- report

def fnum(x, spec):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(info: dict, cells: list, skipped: list, args, total_s: float,
             big: list = (), glmm: list = ()) -> str:
    md = [f"Device: {info['device_kind']} ({info['backend']}, {info['device_count']} device(s): "
          f"{', '.join(info['devices'])}); jax {info['jax']}, jaxlib {info['jaxlib']}; "
          f"{'float64' if info['x64'] else 'float32'}; {info['cpu_count']} CPU cores.",
          f"Warm = median of up to {args.repeats} repeats after the first call; "
          f"chunk = B in equal chunks of ≤ {args.max_chunk:,} for both contenders. "
          f"Total wall {total_s:.0f} s.", "",
          "| problem | B | chunk | jm first call (s) | jm warm (s) | jm fits/s | ref first call (s) "
          "| ref warm (s) | ref fits/s | jm / ref | max \\|Δθ\\| jm−ref | scaled Δθ | max rel ΔSE "
          "| \\|Δθ\\| vs closed form jm / ref | converged jm / ref | jm median / max iter "
          "| jm µs per fit |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in cells:
        closed = (f"{C.fmt_err(r['max_abs_dtheta_jm_closed'])} / {C.fmt_err(r['max_abs_dtheta_ref_closed'])}"
                  if "max_abs_dtheta_jm_closed" in r else "–")
        md.append(
            f"| {r['problem']} | {r['B']:,} | {r['chunk']:,} | {r['jm_first_s']:.2f} | "
            f"{r['jm_warm_s']:.4f} | {r['jm_fits_per_s']:,.0f} | {r['ref_first_s']:.2f} | "
            f"{r['ref_warm_s']:.4f} | {r['ref_fits_per_s']:,.0f} | {r['speedup_jm_over_ref']:.2f}× | "
            f"{C.fmt_err(r['max_abs_dtheta_jm_ref'])} | {C.fmt_err(r['max_scaled_dtheta_jm_ref'])} | "
            f"{C.fmt_err(r['max_rel_dse_jm_ref'])} | {closed} | "
            f"{r['jm_converged']:,} / {r['ref_converged']:,} | "
            f"{r['jm_median_iter']:.0f} / {r['jm_max_iter']} | {1e6 * r['jm_warm_s'] / r['B']:.2f} |")
    md += ["", "- jm / ref: warm fits/s of `jm.fit_batch` over those of the hand-written "
           "`jit(lax.map(Newton))` (> 1: jm faster). First call = tracing + compilation + run.",
           "- scaled Δθ = max |θ_jm − θ_ref| / max(|θ_ref|, SE_ref) (bench_batch's metric); "
           "ΔSE relative to the reference's SE; both over the datasets the reference "
           "converged on."]
    if not info["x64"]:
        md.append("- float32: the reference's loop stops at max |grad| ≤ 1e-8 (1 + |f|), which "
                  "float32 seldom meets, so most of its fits run to its 100-iteration cap (its "
                  "time is an upper bound; its converged flag is a looser 1e-6 check after the loop).")
    for s in skipped:
        md.append(f"- skipped {s['problem']} B = {s['B']:,}: {s['why']}")
    if big:
        md += ["", "Big single fit: logistic regression, `jm.fit` with SEs; first call "
               "(compile included), warm = median of 2; checked against a float64 numpy IRLS.",
               "", "| n | p | dtype | first call (s) | warm (s) | iterations | numpy IRLS (s) "
               "| max \\|Δβ\\| / SE vs IRLS | converged |", "|---:|---:|---|---:|---:|---:|---:|---:|---|"]
        for r in big:
            if "skipped" in r:
                md.append(f"| {r['n']:,} | {r['p']} | {r['dtype']} | skipped: {r['skipped']} | | | | | |")
                continue
            md.append(f"| {r['n']:,} | {r['p']} | {r['dtype']} | {r['first_s']:.2f} | "
                      f"{r['warm_s']:.2f} | {r['n_iter']} | {r['numpy_irls_s']:.2f} | "
                      f"{C.fmt_err(r['max_dbeta_in_se'])} | {r['converged']} |")
    if glmm:
        md += ["", "Poisson random-intercept GLMM (`bench_crossed.py`'s, 20 counts per group, "
               "3 fixed effects), `jm.fit(..., random=[\"b\"])`; warm = median over 2 other "
               "datasets of the same shape.", "",
               "| groups | first call (s) | warm (s) | sd | SE(sd) | converged |",
               "|---:|---:|---:|---:|---:|---|"]
        for r in glmm:
            if "skipped" in r:
                md.append(f"| {r['groups']:,} | skipped: {r['skipped']} | | | | |")
                continue
            md.append(f"| {r['groups']:,} | {r['first_s']:.2f} | {r['warm_s']:.2f} | "
                      f"{r['sd']:.4f} | {r['se_sd']:.4f} | {r['converged']} |")
    if not info["x64"] and cells:
        md += ["", "float32 honesty: the float32 fits against float64 `fit_batch` on the same "
               "(float32-rounded) data, over the datasets converged in float64.", "",
               "| problem | B | PrecisionWarning raised | max \\|θ32 − θ64\\| / SE64 "
               "| max \\|SE32 − SE64\\| / SE64 | converged f32 / f64 |", "|---|---:|---|---:|---:|---|"]
        for r in cells:
            md.append(f"| {r['problem']} | {r['B']:,} | {'yes' if r['precision_warning'] else 'NO'} | "
                      f"{C.fmt_err(r.get('f32_vs_f64_dtheta_in_se'))} | "
                      f"{C.fmt_err(r.get('f32_vs_f64_rel_dse'))} | "
                      f"{r['jm_converged']:,} / {r.get('f64_converged', 0):,} |")
    return "\n".join(md)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None,
                    help="batch sizes (default: 1e4,1e5,1e6,1e7 on a GPU, 1e4,1e5 on CPU; "
                         "'' skips the batch table)")
    ap.add_argument("--big-n", default=None,
                    help="observations of the big logistic fit, comma list (default 1e7 on a "
                         "GPU, 1e6 on CPU; '' skips)")
    ap.add_argument("--big-p", type=int, default=20, help="covariates of the big fit (+ intercept)")
    ap.add_argument("--glmm-groups", default="50000", help="groups of the GLMM, comma list ('' skips)")
    ap.add_argument("--problems", default="normal,logistic,gamma")
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats (median)")
    ap.add_argument("--max-chunk", type=int, default=None,
                    help="default 16384 on a GPU, 1024 on CPU (a vmap of ~1e4 members with a "
                         "while loop has hung XLA:CPU: the hand-written reference at chunk "
                         "10,000, seen in this issue's CPU run)")
    ap.add_argument("--float32", action="store_true", help="run in float32 instead of float64")
    ap.add_argument("--budget-s", type=float, default=300.0,
                    help="skip cells that would end past this many seconds from the start")
    ap.add_argument("--quick", action="store_true",
                    help="CPU smoke run: --sizes 256,1000 --repeats 2 (not representative)")
    ap.add_argument("--out", help="write the figures as JSON to this file")
    ap.add_argument("--md-out", help="also write the markdown to this file")
    args = ap.parse_args(argv)
    gpu = BB.jax.default_backend() != "cpu"
    if args.sizes is None:
        args.sizes = "10000,100000,1000000,10000000" if gpu else "10000,100000"
    if args.max_chunk is None:
        args.max_chunk = 16384 if gpu else 1024
    if args.big_n is None:
        args.big_n = "10000000" if gpu else "1000000"
    if args.quick:
        args.sizes, args.repeats, args.big_n, args.glmm_groups = "256,1000", 2, "", ""
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    machine = C.machine_info()        # before the float32 switch: it turns x64 back on
    if args.float32:
        jax.config.update("jax_enable_x64", False)
    dtype = np.float32 if args.float32 else np.float64
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    problems = [p for p in args.problems.split(",") if p]
    unknown = [p for p in problems if p not in BB.WORKLOADS]
    if unknown:
        ap.error(f"unknown problems {unknown}; choose from {sorted(BB.WORKLOADS)}")

    jax.block_until_ready(jax.numpy.ones(8) * 2)      # backend start-up outside the cells
    info = device_info()
    C.log(f"devices: {info['devices']} ({info['device_kind']}); jax {info['jax']}; "
          f"x64 {info['x64']}")
    if info["backend"] == "cpu" and not args.quick:
        C.log("NOTE: JAX found no GPU (backend cpu). For a GPU run install the CUDA plugin of "
              f"this jax: pip install -U \"jax[cuda12]=={jax.__version__}\"")
    cells, skipped = [], []
    last: dict = {}                                   # problem -> (B, first-call s, warm s)
    meta = {"args": vars(args), "device": info, "machine": machine}

    def dump():
        if args.out:
            with open(args.out, "w") as f:
                json.dump({**meta, "cells": cells, "skipped": skipped,
                           "total_s": time.perf_counter() - t_start}, f, indent=1)

    failures = []
    for B in sizes:
        for name in problems:
            now = time.perf_counter()
            est = None
            if name in last:
                b0, first0, warm0 = last[name]
                # compile again (new chunk/shape) + (1 + repeats) runs scaled linearly in B
                est = 2 * (first0 - warm0) + 2 * (1 + args.repeats) * warm0 * B / b0
            why = too_big(data_bytes(name, B, dtype))
            if why is None and (now >= deadline or (est is not None and now + est > deadline)):
                why = (f"budget {args.budget_s:.0f} s: {now - t_start:.0f} s spent"
                       + ("" if est is None else f", estimate {est:.0f} s"))
            if why is not None:
                skipped.append({"problem": name, "B": B, "why": why})
                C.log(f"--- skip {name}, B = {B:,} ({why})")
                dump()
                continue
            t0 = time.perf_counter()
            rec = run_cell(name, B, args.max_chunk, args.repeats, dtype, deadline)
            rec["cell_wall_s"] = time.perf_counter() - t0
            cells.append(rec)
            last[name] = (B, rec["jm_first_s"] + rec["ref_first_s"],
                          rec["jm_warm_s"] + rec["ref_warm_s"])
            if not args.float32 and (rec["jm_converged"] < B or
                                     not rec["max_scaled_dtheta_jm_ref"] <= AGREE_TOL):
                failures.append(f"{name} B={B}: jm converged {rec['jm_converged']}/{B}, "
                                f"scaled Δθ vs reference {rec['max_scaled_dtheta_jm_ref']:.1e}")
            dump()
    big = [run_big(int(n), args.big_p, dtype) for n in args.big_n.split(",") if n]
    meta["big"] = big
    dump()
    glmm = [run_glmm(int(g)) for g in args.glmm_groups.split(",") if g]
    meta["glmm"] = glmm
    if info["backend"] != "cpu":
        try:
            meta["device_memory"] = jax.devices()[0].memory_stats()
        except Exception:
            pass
    total = time.perf_counter() - t_start
    dump()
    text = markdown(info, cells, skipped, args, total, big, glmm)
    print(text)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(text + "\n")
    for f in failures:
        C.log("AGREEMENT CHECK FAILED: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

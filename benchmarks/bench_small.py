"""Workload (a): single small fits -- cold, persistent-cache-warm and warm latency.

    /tmp/dev/bin/python benchmarks/bench_small.py [--repeats-cold 5] [--repeats-warm 30]
        [--workloads normal,logistic] [--contenders scipy,iminuit,...] [--md-out FILE]

Workloads: Normal(mu, sigma) n=100 (init mu=0, sigma=1, sigma constrained positive) and
logistic regression n=1000, p=5 + intercept (init beta=0).  All float64.

* cold        fresh interpreter per fit (subprocess); timed *inside* the child from before
              the library import (``import jax``/``import jaxmle``/``import scipy...``) until
              estimates and standard errors are numpy floats.  One discarded warm-up child per
              contender first, so .pyc files and the OS file cache are warm (as for a user).
* cache-warm  same, but JAX's persistent compilation cache is enabled (min compile time 0,
              min entry size -1) and was populated by a previous child; JAX contenders only.
* warm        second and later fits in one process, each on NEW data of the same shape
              (seeds 1..R); the first fit (seed 0) is discarded.

Contenders are interleaved (round-robin with rotating order) in every repeat so machine
noise hits them equally.  Reported: medians; ratio = contender time / jaxmle (newton) time
(> 1 means jaxmle is faster).  Every contender's estimates and SEs are checked against an
independent reference (closed form for Normal, machine-precision numpy Newton for logistic).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _contenders as K  # noqa: E402

WORKLOAD_TITLES = {
    "normal": f"Normal(mu, sigma), n={C.NORMAL_N}",
    "logistic": f"Logistic regression, n={C.LOGIT_SMALL_N}, p={C.LOGIT_SMALL_P}+intercept",
}


def rotate(names, r):
    k = r % len(names)
    return names[k:] + names[:k]


def check(workload, name, res, data, ref=None):
    """Return (param_err, se_err, ok)."""
    (rp, rs), keys = ref if ref is not None else K.reference(workload, data)
    pe = C.rel_err(C.flat(res["params"], keys), C.flat(rp, keys), C.flat(rs, keys))
    se = C.rel_err(C.flat(res["stderr"], keys), C.flat(rs, keys))
    ptol, stol = K.tolerances(workload, name)
    ok = bool(res["converged"]) and pe <= ptol and se <= stol
    return pe, se, ok


def run_workload(workload, names, args, jaxmle_ok):
    stats = {n: {"cold": [], "cold_wall": [], "cache": [], "warm": [], "perr": 0.0, "seerr": 0.0,
                 "ok": True, "notes": set()} for n in names}

    def record(n, res, data, ref=None):
        pe, se, ok = check(workload, n, res, data, ref)
        st = stats[n]
        st["perr"] = max(st["perr"], pe)
        st["seerr"] = max(st["seerr"], se)
        if not ok:
            st["ok"] = False
            if not res["converged"]:
                st["notes"].add("not converged")

    data0 = K.make_data(workload, 0)
    ref0 = K.reference(workload, data0)

    # ---- cold ------------------------------------------------------------
    if args.repeats_cold > 0:
        C.log(f"[{workload}] cold: warm-up children")
        for n in names:
            C.run_child(workload, n, 0)
        for r in range(args.repeats_cold):
            for n in rotate(names, r):
                rec = C.run_child(workload, n, 0)
                stats[n]["cold"].append(rec["seconds"])
                stats[n]["cold_wall"].append(rec["process_wall"])
                record(n, rec, data0, ref0)
            C.log(f"[{workload}] cold repeat {r + 1}/{args.repeats_cold} done")

    # ---- persistent-cache warm --------------------------------------------
    jax_names = [n for n in names if n in K.JAX_CONTENDERS]
    if args.repeats_cache > 0 and jax_names:
        dirs = {n: tempfile.mkdtemp(prefix=f"jaxmle-bench-cache-{workload}-{n}-") for n in jax_names}
        try:
            for n in jax_names:  # populate
                rec = C.run_child(workload, n, 0, dirs[n])
                cfg = rec.get("cache_config", {})
                stats[n]["cache_files"] = rec.get("cache_files")
                stats[n]["cache_how"] = rec.get("cache_enabled_by")
                if cfg.get("min_compile_time_secs") not in (0, 0.0) or cfg.get("min_entry_size_bytes") not in (-1, 0):
                    stats[n]["notes"].add(f"cache thresholds {cfg}")
            for r in range(args.repeats_cache):
                for n in rotate(jax_names, r):
                    rec = C.run_child(workload, n, 0, dirs[n])
                    stats[n]["cache"].append(rec["seconds"])
                    record(n, rec, data0, ref0)
                C.log(f"[{workload}] cache-warm repeat {r + 1}/{args.repeats_cache} done")
        finally:
            for d in dirs.values():
                shutil.rmtree(d, ignore_errors=True)

    # ---- warm (in process, new data each time) ----------------------------
    if args.repeats_warm > 0:
        C.log(f"[{workload}] warm: first fit per contender (discarded)")
        for n in names:
            record(n, C.materialise(K.CONTENDERS[workload][n](data0)), data0, ref0)
        datas = [K.make_data(workload, s) for s in range(1, args.repeats_warm + 1)]
        refs = [K.reference(workload, d) for d in datas]
        for r, (d, ref) in enumerate(zip(datas, refs)):
            for n in rotate(names, r):
                fn = K.CONTENDERS[workload][n]
                t0 = C.now()
                res = C.materialise(fn(d))
                stats[n]["warm"].append(C.now() - t0)
                record(n, res, d, ref)
    return stats


def make_table(workload, names, stats, base_name):
    def med(n, k):
        return C.median(stats[n][k]) if stats[n][k] else None

    base = {k: (med(base_name, k) if base_name else None) for k in ("cold", "cache", "warm")}
    headers = ["contender", "cold (s)", "× jaxmle", "cold, proc. wall", "cache-warm (s)", "× jaxmle",
               "warm (s)", "× jaxmle", "max rel err params", "max rel err SE", "agrees"]
    rows = []
    for n in names:
        st = stats[n]
        ptol, stol = K.tolerances(workload, n)
        agree = "✓" if st["ok"] else "✗ " + ", ".join(sorted(st["notes"]))
        if st["ok"] and (ptol != C.RTOL or stol != C.RTOL):
            agree += f" (tol {ptol:g}/{stol:g})"
        rows.append([
            K.label(workload, n),
            C.fmt_s(med(n, "cold")), C.fmt_ratio(med(n, "cold"), base["cold"]),
            C.fmt_s(med(n, "cold_wall")),
            C.fmt_s(med(n, "cache")) if n in K.JAX_CONTENDERS else "n/a",
            C.fmt_ratio(med(n, "cache"), base["cache"]) if n in K.JAX_CONTENDERS else "",
            C.fmt_s(med(n, "warm")), C.fmt_ratio(med(n, "warm"), base["warm"]),
            C.fmt_err(st["perr"]), C.fmt_err(st["seerr"]), agree,
        ])
    return C.md_table(headers, rows)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats-cold", type=int, default=5)
    ap.add_argument("--repeats-cache", type=int, default=None, help="default: same as --repeats-cold")
    ap.add_argument("--repeats-warm", type=int, default=30)
    ap.add_argument("--workloads", default="normal,logistic")
    ap.add_argument("--contenders", default=None, help="comma list; default all")
    ap.add_argument("--md-out", default=None, help="also write the markdown section(s) here")
    a = ap.parse_args(argv)
    if a.repeats_cache is None:
        a.repeats_cache = a.repeats_cold
    return a


def main(argv=None):
    args = parse(argv)
    jaxmle_ok, why = C.jaxmle_importable_in_child()
    mod, msg = C.jaxmle_status()
    if not (jaxmle_ok and mod is not None):
        print(f"NOTE: {msg if mod is None else why} -- benchmarking the peers only.", flush=True)
        jaxmle_ok = False
    sections, all_ok = [], True
    for wl in args.workloads.split(","):
        names = list(K.CONTENDERS[wl])
        if args.contenders:
            want = args.contenders.split(",")
            names = [n for n in names if n in want]
        if not jaxmle_ok:
            names = [n for n in names if n not in K.JAXMLE_CONTENDERS]
        base = "jaxmle-newton" if "jaxmle-newton" in names else None
        stats = run_workload(wl, names, args, jaxmle_ok)
        notes = [
            f"medians of {args.repeats_cold} cold / {args.repeats_cache} cache-warm / {args.repeats_warm} warm runs; "
            "ratio = contender / jaxmle (newton), > 1 means jaxmle is faster.",
            "cold = fresh process, timed inside the child from before the library import to materialised "
            "estimates + SEs; 'proc. wall' adds interpreter start-up, numpy import, data generation and exit.",
            "rel err: max_i |est_i - ref_i| / max(|ref_i|, SE_i) for params, |se_i - ref_i| / ref_i for SEs, "
            "against the closed form (Normal) or a machine-precision numpy Newton (logistic); "
            f"asserted ≤ {C.RTOL:g} unless a looser tolerance is shown (numerical-Hessian SEs).",
        ]
        if base is None:
            notes.append(f"jaxmle rows skipped: {msg if mod is None else why}")
        for n in names:
            if stats[n].get("cache_how"):
                notes.append(f"{K.label(wl, n)}: cache enabled via {stats[n]['cache_how']}, "
                             f"{stats[n].get('cache_files')} file(s) in the cache dir")
            for note in sorted(stats[n]["notes"]):
                if note.startswith("cache thresholds"):
                    notes.append(f"{K.label(wl, n)}: {note}")
            all_ok &= stats[n]["ok"]
        sections.append(C.Section(f"(a) Small fit: {WORKLOAD_TITLES[wl]}", make_table(wl, names, stats, base), notes))
    C.write_sections(args.md_out, sections)
    if not all_ok:
        print("ERROR: some contenders disagree with the reference (see ✗ above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

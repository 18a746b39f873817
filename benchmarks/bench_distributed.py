"""``fit_batch`` across processes (``jax.distributed``, gloo on loopback) against one process.

    python3 benchmarks/bench_distributed.py [--B 100000] [--n 100] [--processes 2]
        [--repeats 3] [--rounds 2] [--one-thread] [--stragglers none,spread,one]
        [--json FILE] [--md-out FILE]

For each straggler layout, B Normal datasets of n observations (``bench_batch.make_data``,
seed 0; every process builds the same host arrays and passes them with
``distributed="global"``, so each fits its contiguous 1/P share) are fitted

* by one process (``distributed=None``; its CPU device), and
* by P processes on this machine (``jax.distributed.initialize`` on 127.0.0.1, gloo CPU
  collectives; one CPU device each), every process getting the whole result
  (``gather=True``).

Each contender first fits a 4,096-dataset slice (same chunk: compiles the programs),
then the whole batch ``--repeats`` times; the time is the median, from a barrier to the
return of ``fit_batch`` on the slowest process (the gather included). The two launches
alternate ``--rounds`` times per layout (medians over the rounds), since the load of a
shared machine drifts. ``--one-thread``: one XLA:CPU compute thread per process of the
P-process launch (one process per core, as a cluster would place them). The distributed
results are checked bitwise against the one-process results (estimates, SEs, status,
iterations), and every process's share size is recorded.

Stragglers (``--stragglers``): ``none`` (every fit starts at mu = 0, sigma = 1),
``spread`` (1% of the datasets start at sigma = 1e-12, Newton then needs ~10x the
iterations; spread uniformly), ``one`` (the same 1%, all in the last process's share:
the worst case for finishing stragglers where they are). For each process the table
gives the time of its own fit (first passes + its straggler continuation) and of the
straggler continuation alone. ``spread`` is what rebalancing the stragglers of ``one``
between the processes would at best reach (their solver states moved for free), so
the two P-process times say what rebalancing is worth.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

CHILD = r"""
import json, os, sys, time, warnings
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
nproc, pid, port = int(os.environ["BD_NPROC"]), int(os.environ["BD_PID"]), os.environ["BD_PORT"]
if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc,
                               process_id=pid)
sys.path.insert(0, os.environ["BD_HERE"])
import bench_batch as BB
import jaxmle as jm
import jaxmle.fitting.batch as _batch

B, n, repeats, layout = int(os.environ["BD_B"]), int(os.environ["BD_N"]), int(os.environ["BD_REPEATS"]), os.environ["BD_LAYOUT"]
w = BB.WORKLOADS["normal"]
rng = np.random.default_rng(0)
data = rng.normal(1.0, 2.0, size=(B, n))
init = {"mu": np.zeros(B), "sigma": np.ones(B)}
if layout != "none":
    k = B // 100
    pool = np.arange(B) if layout == "spread" else np.arange(B - B // max(nproc, 2), B)
    init["sigma"][np.random.default_rng(3).choice(pool, k, replace=False)] = 1e-12
marks = {}
run_batch, plan = _batch.run_batch, _batch._ContinuationPlan.__init__

def timed_run_batch(*a, **k):
    marks["start"] = time.perf_counter()
    out = run_batch(*a, **k)
    marks["end"] = time.perf_counter()
    return out

def timed_plan(self, *a, **k):
    marks["plan"] = time.perf_counter()
    plan(self, *a, **k)

_batch.run_batch, _batch._ContinuationPlan.__init__ = timed_run_batch, timed_plan
mode = "global" if nproc > 1 else None

def fit(d, i):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jm.JaxmleWarning)
        return jm.fit_batch(w["ll"], d, i, constraints=w["cons"], progress=False,
                            distributed=mode, chunk_size=1024)

def barrier(name):
    if nproc > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)

small = 4096
fit(data[:small], {k: v[:small] for k, v in init.items()})
times, own, tail = [], [], []
for r in range(repeats):
    barrier(f"go{r}")
    t = time.perf_counter()
    res = fit(data, init)
    times.append(time.perf_counter() - t)
    own.append(marks["end"] - marks["start"])
    tail.append(marks["end"] - marks["plan"])
    barrier(f"done{r}")
out = {"pid": pid, "times": times, "own": own, "tail": tail,
       "mu": np.asarray(res.params["mu"]).tolist() if pid == 0 else None,
       "se": np.asarray(res.stderr["sigma"]).tolist() if pid == 0 else None,
       "status": np.asarray(res.status).tolist() if pid == 0 else None,
       "n_iter": np.asarray(res.n_iter).tolist() if pid == 0 else None,
       "converged": int(res.n_converged)}
print("RESULT " + json.dumps(out))
if nproc > 1:
    jax.distributed.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, B: int, n: int, repeats: int, layout: str,
           one_thread: bool = False) -> list[dict]:
    port = free_port()
    procs = []
    for pid in range(nproc):
        env = dict(os.environ, JAX_PLATFORMS="cpu", BD_NPROC=str(nproc), BD_PID=str(pid),
                   BD_PORT=str(port), BD_HERE=HERE, BD_B=str(B), BD_N=str(n),
                   BD_REPEATS=str(repeats), BD_LAYOUT=layout,
                   PYTHONPATH=os.pathsep.join([os.path.dirname(HERE),
                                               os.environ.get("PYTHONPATH", "")]))
        env.pop("XLA_FLAGS", None)
        if one_thread:   # one XLA:CPU compute thread per process (one process per core)
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        base = os.environ.get("JAXMLE_CACHE_DIR")
        if base:   # concurrent processes must not share a persistent-cache directory
            env["JAXMLE_CACHE_DIR"] = os.path.join(base + "-distributed", f"p{pid}")
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"a benchmark process failed:\n{stderr[-3000:]}")
        outs.append(json.loads(next(ln for ln in stdout.splitlines()
                                    if ln.startswith("RESULT "))[7:]))
    return outs


def median(xs):
    return float(np.median(xs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stragglers", default="none,spread,one")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the one-process and the P-process launch this many times "
                         "per layout (medians over the rounds: the load of a shared machine "
                         "drifts)")
    ap.add_argument("--one-thread", action="store_true",
                    help="one XLA:CPU compute thread in each of the P processes (the one "
                         "process keeps its thread pool)")
    ap.add_argument("--json")
    ap.add_argument("--md-out")
    args = ap.parse_args(argv)
    rows, record, same_all = [], [], True
    load = os.getloadavg()
    for layout in [s for s in args.stragglers.split(",") if s]:
        t1s, tps, owns, tails = [], [], [], []
        for _ in range(args.rounds):
            one = launch(1, args.B, args.n, args.repeats, layout)[0]
            many = launch(args.processes, args.B, args.n, args.repeats, layout, args.one_thread)
            t1s.append(median(one["times"]))
            tps.append(median([max(o["times"][r] for o in many) for r in range(args.repeats)]))
            owns.append([median(o["own"]) for o in many])
            tails.append([median(o["tail"]) for o in many])
        t1, tp = median(t1s), median(tps)
        own = np.median(np.array(owns), axis=0).tolist()
        tail = np.median(np.array(tails), axis=0).tolist()
        ref, got = one, many[0]
        same = all(np.array_equal(np.asarray(ref[k], float), np.asarray(got[k], float),
                                  equal_nan=True) for k in ("mu", "se", "status", "n_iter"))
        same_all &= same
        rows.append(f"| {layout} | {args.B:,} | {t1:.2f} | {tp:.2f} | {tp / t1:.2f}× | "
                    f"{' / '.join(f'{x:.2f}' for x in own)} | "
                    f"{' / '.join(f'{x:.2f}' for x in tail)} | "
                    f"{'yes' if same else 'NO'} | {one['converged']:,} / {got['converged']:,} |")
        record.append({"layout": layout, "t1": t1, "tp": tp, "t1_rounds": t1s, "tp_rounds": tps,
                       "tails": tails,
                       "one": {k: v for k, v in one.items()
                                                 if k not in ("mu", "se", "status", "n_iter")},
                       "many": [{k: v for k, v in o.items()
                                 if k not in ("mu", "se", "status", "n_iter")} for o in many],
                       "bitwise_equal": same})
        print(rows[-1], flush=True)
    load_after = os.getloadavg()
    md = [f"B Normal datasets of n = {args.n} (float64), {args.processes} processes × 1 CPU "
          f"device on one machine ({os.cpu_count()} cores; gloo on loopback) against one "
          f"process{' (one XLA thread each)' if args.one_thread else ''}; chunk 1,024; median "
          f"of {args.repeats} calls per launch, then over {args.rounds} alternating rounds of "
          f"launches. Load average before / after: "
          f"{load[0]:.1f} / {load_after[0]:.1f}.", "",
          "| stragglers | B | 1 process (s) | P processes (s) | ratio | own fit per process (s) "
          "| straggler continuation per process (s) | bitwise equal | converged 1 / P |",
          "|---|---:|---:|---:|---:|---|---|---|---|"] + rows
    by = {r["layout"]: r for r in record}
    if "one" in by and "spread" in by:
        one_tail = max(np.median(np.array(by["one"]["tails"]), axis=0))
        md += ["", f"Stragglers all in one process's share, finished where they are: "
               f"{by['one']['tp']:.2f} s, of which that process's straggler continuation took "
               f"{one_tail:.2f} s: the most that moving its stragglers to the other processes "
               f"after the first passes could save (the rest of the imbalance is in the first "
               f"passes of its chunks, which hold the slow fits). The same stragglers spread "
               f"over the shares: {by['spread']['tp']:.2f} s."]
    text = "\n".join(md)
    print(text)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "load": [load, load_after], "cases": record}, f,
                      indent=1)
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())

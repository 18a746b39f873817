"""Batched fits across processes (``fit_batch(distributed=...)``, the distributed bootstrap
and multi-start) with ``jax.distributed`` on loopback (gloo collectives), checked dataset
by dataset against one process.

One launch of two processes and one of four (each runs several checks, so the programs
compile once per process; the batches, shares and the bootstrap all run in chunks of 256,
one program); every result must equal the one-process result computed here to the last
bit (the same arithmetic: each dataset is fitted by the same program).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from numpyro.distributions import constraints

import jaxmle as jm
from jaxmle.core.typing import Status
from shared import normal, private_cache_env, suite_xla_flags

INIT = {"mu": 0.0, "sigma": 1.0}
CONS = {"sigma": constraints.positive}

WORKER = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc,
                               process_id=pid)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    import jaxmle as jm, numpyro.distributions as dist
    import jaxmle.fitting.batch as _batch
    from numpyro.distributions import constraints

    def normal(p, x):
        return dist.Normal(p["mu"], p["sigma"]).log_prob(x)

    INIT, CONS = {"mu": 0.0, "sigma": 1.0}, {"sigma": constraints.positive}
    sizes = []                    # every batch this process fits (each dataset once)
    original = _batch.fit_batch

    def counted(loglik, data, *a, **k):
        sizes.append(int(np.shape(jax.tree_util.tree_leaves(data)[0])[0]))
        return original(loglik, data, *a, **k)

    _batch.fit_batch = counted
    out = {}

    def fields(bres):
        return {"mu": np.asarray(bres.params["mu"]).tolist(),
                "se": np.asarray(bres.stderr["sigma"]).tolist(),
                "status": np.asarray(bres.status).tolist(),
                "n_iter": np.asarray(bres.n_iter).tolist()}

    def fit(data, **kw):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bres = jm.fit_batch(normal, data, INIT, constraints=CONS, progress=False, **kw)
        return bres, [str(w.message) for w in caught if "did not converge" in str(w.message)]

    def error(fn):
        try:
            fn()
        except (ValueError, TypeError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    xs = np.random.default_rng(0).normal(2.0, 1.5, size=(%(B)d, 20))
    xs[%(NAN)d, 3] = np.nan
    cut = np.array(%(CUTS)s)           # "local" shares of different sizes
    mine = slice(cut[pid], cut[pid + 1])
""")

TWO = textwrap.dedent("""
    bres, warned = fit(xs[mine], distributed="local")
    out["local"], out["local_warned"] = fields(bres), warned
    out["local_sizes"] = list(sizes)
    bres, _ = fit(xs, distributed="global")                   # host arrays: even halves
    out["global_host"] = fields(bres)
    out["global_sizes"] = sizes[len(out["local_sizes"]):]

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    half = 120
    xg = jax.make_array_from_process_local_data(rows, xs[half * pid:half * (pid + 1)])
    assert not xg.is_fully_addressable and xg.shape == (240, 20)
    bres, _ = fit(xg)                                           # global array: "global" implied
    out["global_array"] = fields(bres)
    starts = {"mu": np.zeros(len(xs)), "sigma": np.ones(len(xs))}   # batched init: its rows follow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bres = jm.fit_batch(normal, xs, starts, constraints=CONS, progress=False,
                            distributed="global")
    out["batched_init"] = fields(bres)
    share240 = xs[:240][[slice(0, 141), slice(141, 240)][pid]]     # shares 141 and 99
    moved, _ = fit(share240, distributed="local", gather=False)    # rows move to their devices
    out["moved"] = [np.asarray(s.data).tolist() for s in moved.params["mu"].addressable_shards]
    kept, _ = fit(xg, gather=False)                            # global arrays back
    mu = kept.params["mu"]
    out["kept"] = {"type": type(mu).__name__, "shape": list(mu.shape),
                   "addressable": mu.is_fully_addressable,
                   "rows": [[s.index[0].start, s.index[0].stop] for s in mu.addressable_shards],
                   "mu": [np.asarray(s.data).tolist() for s in mu.addressable_shards]}

    # bad input: every process raises a clear error (none hangs in a collective)
    cols = NamedSharding(Mesh(np.array(jax.devices()), ("obs",)), PartitionSpec(None, "obs"))
    by_cols = jax.make_array_from_process_local_data(cols, xs[:240, 10 * pid:10 * (pid + 1)])
    out["err_cols"] = error(lambda: fit(by_cols))
    out["err_uneven_keep"] = error(lambda: fit(xs, distributed="global", gather=False))
    share = xs[mine].copy()
    if pid == 1:
        share[:] = np.nan                                       # process 1's share is all NaN
    out["err_remote"] = error(lambda: fit(share, distributed="local"))

    # the bootstrap and the multi-start, split by replicate / start
    res = jm.fit(normal, xs[0], INIT, constraints=CONS)

    def simulate(p, key):
        return p["mu"] + p["sigma"] * jax.random.normal(key, (20,))

    boot = res.bootstrap(simulate, n=241, key=jax.random.PRNGKey(3), distributed=True)
    out["boot"] = {"draws": boot.draws.tolist(), "n_failed": boot.n_failed}
    ms = jm.fit(normal, xs[1], INIT, constraints=CONS, n_starts=5, distributed=True)
    out["ms"] = {"mu": float(ms.params["mu"]), "at_best": ms.n_at_best,
                 "loglik": np.asarray(ms.starts.loglik).tolist()}
    if pid == 0:    # the one-process answers (distributed=None: this process's device only)
        out["ref_boot"] = res.bootstrap(simulate, n=241, key=jax.random.PRNGKey(3)).draws.tolist()
        ms = jm.fit(normal, xs[1], INIT, constraints=CONS, n_starts=5)
        out["ref_ms"] = {"mu": float(ms.params["mu"]), "at_best": ms.n_at_best,
                         "loglik": np.asarray(ms.starts.loglik).tolist()}
""")

FOUR = textwrap.dedent("""
    bres, warned = fit(xs[mine], distributed="local")
    out["local"], out["local_warned"] = fields(bres), warned
    out["local_sizes"] = list(sizes)
    bres, _ = fit(xs, distributed="global")
    out["global_host"] = fields(bres)
""")

END = """
if pid == 0:
    out["ref"] = fields(fit(xs)[0])
print(json.dumps(out))
jax.distributed.shutdown()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc, body, **values):
    code = WORKER % values + body + END
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = suite_xla_flags()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), str(nproc), str(port)],
                              env=private_cache_env(env, f"distributed-batch-{nproc}-{i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(nproc)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _same(got, ref, rows=slice(None)):
    """Bitwise equal, dataset by dataset (NaN where the reference has NaN)."""
    for key in ("mu", "se", "status", "n_iter"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(ref[key])[rows])


def test_two_then_four_processes_fit_every_dataset_once_as_one_process_does():
    """Process 0 also computes the one-process answers (``distributed=None``, its own
    device: the same program a lone process runs), which costs no compilation there."""
    B, nan, cuts = 241, 200, [0, 141, 241]   # shares of 141 and 100; the NaN in process 1's
    outs = _launch(2, TWO, B=B, NAN=nan, CUTS=cuts)
    ref = outs[0]["ref"]
    assert ref["status"][nan] == Status.NONFINITE_DATA and ref["status"].count(0) == B - 1
    for pid, out in enumerate(outs):
        # every dataset fitted once, on the process whose share it is
        assert out["local_sizes"] == [cuts[pid + 1] - cuts[pid]]
        assert out["global_sizes"] == [121 - pid]
        _same(out["local"], ref)
        _same(out["global_host"], ref)
        # the failing dataset is reported with its global index, on every process
        assert len(out["local_warned"]) == 1 and "[200]" in out["local_warned"][0]
        assert out["local_warned"][0].startswith(f"1 of {B} fits")
        _same(out["global_array"], ref, slice(0, 240))
        _same(out["batched_init"], ref)
        np.testing.assert_array_equal(out["moved"][0], ref["mu"][120 * pid:120 * (pid + 1)])
        kept = out["kept"]
        assert kept["type"] == "ArrayImpl" and kept["shape"] == [240]
        assert not kept["addressable"] and kept["rows"] == [[120 * pid, 120 * (pid + 1)]]
        np.testing.assert_array_equal(kept["mu"][0], ref["mu"][120 * pid:120 * (pid + 1)])
        assert "split along axis 1" in out["err_cols"] and out["err_cols"].startswith("ValueError")
        assert "divisible" in out["err_uneven_keep"]
        assert out["err_remote"].startswith("ValueError")
        assert "NaN" in out["err_remote"]
        if pid == 0:
            assert "failed on process 1 of 2" in out["err_remote"]
        assert len(out["boot"]["draws"]) == 241 and out["boot"]["n_failed"] == 0
        np.testing.assert_array_equal(out["boot"]["draws"], outs[0]["ref_boot"])
        single = outs[0]["ref_ms"]
        np.testing.assert_allclose(out["ms"]["mu"], single["mu"], rtol=1e-12)
        assert out["ms"]["at_best"] == single["at_best"] == 5
        np.testing.assert_allclose(out["ms"]["loglik"], single["loglik"], rtol=1e-12)
    # the one-process answer is the closed form
    xs = np.random.default_rng(0).normal(2.0, 1.5, size=(B, 20))
    ok = np.arange(B) != nan
    np.testing.assert_allclose(np.asarray(ref["mu"])[ok], xs[ok].mean(axis=1), rtol=1e-7)

    B, nan, cuts = 203, 61, [0, 60, 110, 160, 203]    # 60, 50, 50, 43; the NaN in process 1's
    outs = _launch(4, FOUR, B=B, NAN=nan, CUTS=cuts)
    for pid, out in enumerate(outs):
        assert out["local_sizes"] == [cuts[pid + 1] - cuts[pid]]
        _same(out["local"], outs[0]["ref"])
        _same(out["global_host"], outs[0]["ref"])      # split 51, 51, 51, 50
        assert len(out["local_warned"]) == 1 and "[61]" in out["local_warned"][0]


def test_the_share_flag_without_the_distributed_runtime_is_refused():
    xs = np.random.default_rng(0).normal(2.0, 1.5, size=(8, 20))
    with pytest.raises(ValueError, match="jax.distributed.initialize"):
        jm.fit_batch(normal, xs, INIT, constraints=CONS, distributed="local")
    with pytest.raises(ValueError, match="'local'.*'global'"):
        jm.fit_batch(normal, xs, INIT, constraints=CONS, distributed="everywhere")
    res = jm.fit(normal, xs[1], INIT, constraints=CONS)
    with pytest.raises(ValueError, match="jax.distributed.initialize"):
        res.bootstrap(lambda p, k: p["mu"] + jax.random.normal(k, (20,)), n=4, distributed=True)
    with pytest.raises(ValueError, match="n_starts"):
        jm.fit(normal, xs[1], INIT, constraints=CONS, distributed=True)

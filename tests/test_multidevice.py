"""Several devices (forced CPU devices) and several processes (jax.distributed on loopback).

Each case runs in a subprocess, because the device count is fixed when JAX starts;
its results must equal the single-device ones computed here.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
from numpyro.distributions import constraints

import jaxmle as jm
from shared import logistic, normal, private_cache_env, suite_xla_flags

PRELUDE = textwrap.dedent("""
    import json, sys
    import numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    import jaxmle as jm, numpyro.distributions as dist
    from numpyro.distributions import constraints

    def normal(p, x):
        return dist.Normal(p["mu"], p["sigma"]).log_prob(x)

    def logistic(p, d):
        X, y = d
        return dist.Bernoulli(logits=X @ p["beta"]).log_prob(y)

    rng = np.random.default_rng(0)
    xs = rng.normal(2.0, 1.5, size=(10, 25))
    X = np.concatenate([np.ones((1001, 1)), rng.normal(size=(1001, 2))], axis=1)
    y = (rng.random(1001) < 1 / (1 + np.exp(-X @ np.array([0.3, 1.0, -0.5])))).astype(float)
""")


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env.pop("XLA_FLAGS", None) if "XLA_FLAGS" not in extra else None
    return env


def _run(code, env, timeout=300):
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _local_reference():
    rng = np.random.default_rng(0)
    xs = rng.normal(2.0, 1.5, size=(10, 25))
    X = np.concatenate([np.ones((1001, 1)), rng.normal(size=(1001, 2))], axis=1)
    y = (rng.random(1001) < 1 / (1 + np.exp(-X @ np.array([0.3, 1.0, -0.5])))).astype(float)
    bres = jm.fit_batch(normal, xs, init={"mu": 0.0, "sigma": 1.0},
                        constraints={"sigma": constraints.positive})
    big = jm.fit(logistic, (X, y), init={"beta": np.zeros(3)})
    return bres, big


def test_four_devices_shard_the_batch_and_the_observations():
    out = _run("""
        assert len(jax.devices()) == 4
        import jaxmle.fitting.sharding as sharding
        place = sharding.placer()
        assert place(np.zeros((8, 3))).sharding.num_devices == 4
        bres = jm.fit_batch(normal, xs, init={"mu": 0.0, "sigma": 1.0},
                            constraints={"sigma": constraints.positive})
        data, w = jm.shard_observations((X, y))       # 1001 rows: padded to 1004, weight 0
        assert data[0].sharding.num_devices == 4 and w.shape == (1004,)
        big = jm.fit(logistic, data, init={"beta": np.zeros(3)}, weights=w)
        starts = jm.fit(normal, xs[0], init={"mu": 0.0, "sigma": 1.0}, n_starts=5,
                        constraints={"sigma": constraints.positive})   # 5 starts, 4 devices
        print(json.dumps({"ms_mu": float(starts.params["mu"]), "ms_best": starts.n_at_best,"mu": bres.params["mu"].tolist(), "se": bres.stderr["sigma"].tolist(),
                          "n_iter": bres.n_iter.tolist(), "beta": big.params["beta"].tolist(),
                          "beta_se": big.stderr["beta"].tolist(), "nobs": float(big.nobs)}))
    """, _env(XLA_FLAGS="--xla_force_host_platform_device_count=4 " + suite_xla_flags()))
    bres, big = _local_reference()
    np.testing.assert_allclose(out["mu"], bres.params["mu"], rtol=1e-12)
    np.testing.assert_allclose(out["se"], bres.stderr["sigma"], rtol=1e-10)
    assert out["n_iter"] == bres.n_iter.tolist()
    np.testing.assert_allclose(out["beta"], big.params["beta"], rtol=1e-10)
    np.testing.assert_allclose(out["beta_se"], big.stderr["beta"], rtol=1e-9)
    assert out["nobs"] == 1001.0
    np.testing.assert_allclose(out["ms_mu"], bres.params["mu"][0], rtol=1e-9)
    assert out["ms_best"] == 5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_fit_one_dataset_split_by_rows():
    """jax.distributed on loopback (gloo): each process holds half of the rows."""
    port = _free_port()
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np, jax
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        pid = int(sys.argv[1])
        jax.distributed.initialize(coordinator_address="127.0.0.1:{port}", num_processes=2,
                                   process_id=pid)
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        import jaxmle as jm, numpyro.distributions as dist
        rng = np.random.default_rng(0)
        X = np.concatenate([np.ones((1000, 1)), rng.normal(size=(1000, 2))], axis=1)
        y = (rng.random(1000) < 1 / (1 + np.exp(-X @ np.array([0.3, 1.0, -0.5])))).astype(float)
        rows = slice(500 * pid, 500 * (pid + 1))           # this process's half
        mesh = Mesh(np.array(jax.devices()), ("obs",))
        sharding = NamedSharding(mesh, PartitionSpec("obs"))
        Xg = jax.make_array_from_process_local_data(sharding, X[rows])
        yg = jax.make_array_from_process_local_data(sharding, y[rows])
        assert not Xg.is_fully_addressable
        def logistic(p, d):
            return dist.Bernoulli(logits=d[0] @ p["beta"]).log_prob(d[1])
        res = jm.fit(logistic, (Xg, yg), init={{"beta": np.zeros(3)}})
        print(json.dumps({{"beta": np.asarray(res.params["beta"]).tolist(),
                          "se": np.asarray(res.stderr["beta"]).tolist(),
                          "nobs": float(res.nobs), "converged": bool(res.converged)}}))
        jax.distributed.shutdown()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)],
                              env=private_cache_env(_env(), f"distributed-{i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    rng = np.random.default_rng(0)
    X = np.concatenate([np.ones((1000, 1)), rng.normal(size=(1000, 2))], axis=1)
    y = (rng.random(1000) < 1 / (1 + np.exp(-X @ np.array([0.3, 1.0, -0.5])))).astype(float)
    local = jm.fit(logistic, (X, y), init={"beta": np.zeros(3)})
    for out in outs:
        assert out["converged"] and out["nobs"] == 1000.0
        np.testing.assert_allclose(out["beta"], local.params["beta"], rtol=1e-10)
        np.testing.assert_allclose(out["se"], local.stderr["beta"], rtol=1e-9)


def test_a_huge_batch_runs_in_chunks_and_does_not_hang():
    """A single vmap over ~1e5 members once hung XLA:CPU; fit_batch always chunks."""
    out = _run("""
        big = rng.normal(1.0, 2.0, size=(100_000, 10))
        bres = jm.fit_batch(normal, big, init={"mu": 0.0, "sigma": 1.0},
                            constraints={"sigma": constraints.positive})
        err = np.max(np.abs(bres.params["mu"] - big.mean(axis=1)) / bres.stderr["mu"])
        print(json.dumps({"n_converged": bres.n_converged, "err_in_se": float(err)}))
    """, _env(), timeout=400)
    assert out["n_converged"] == 100_000
    assert out["err_in_se"] < 1e-6

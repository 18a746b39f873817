"""Latency (issue 14): what compiles, the two drivers, shape buckets, the cache.

Compilations are counted with ``jax.monitoring`` (one backend-compile event per program
compiled or loaded from the persistent cache, with the program's name), never timed.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions import constraints as npc

import jaxmle as jm
from jaxmle.fitting import ahead, buckets, cache, host, host_solver, single

POS = {"sigma": npc.positive}
INIT = {"mu": 0.0, "sigma": 1.0}
MODEL_PROGRAMS = {"fgh", "point", "initial_z"}
SOLVER_PROGRAMS = {"_advance"}   # the rest of the solver runs in NumPy (core/xp.py)


def normal_ll(p, x):
    return -0.5 * ((x - p["mu"]) / p["sigma"]) ** 2 - jnp.log(p["sigma"])


def regression_ll(p, d):
    mu = p["b"][0] + p["b"][1] * d["x"]
    return -0.5 * ((d["y"] - mu) / p["sigma"]) ** 2 - jnp.log(p["sigma"])


def centred_ll(p, x):   # rows interact (the mean over the data): never padded
    return -0.5 * ((x - jnp.mean(x) - p["mu"]) / p["sigma"]) ** 2 - jnp.log(p["sigma"])


class Compiles:
    """The programs compiled (or loaded from the persistent cache) inside the block."""

    def __enter__(self):
        host.wait_solvers()   # the solver's background compilations of earlier fits settle
        self.names = []

        def listen(event, duration, **kw):
            if event == "/jax/core/compile/backend_compile_duration":
                self.names.append(str(kw.get("fun_name", "?")))

        self._listen = listen
        jax.monitoring.register_event_duration_secs_listener(listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)

    def model(self):
        return [n for n in self.names if n.removeprefix("jit(").rstrip(")") in MODEL_PROGRAMS]


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return {"x": x, "y": 1.0 + 2.0 * x + rng.normal(0.0, 0.5, n)}


def test_a_research_script_compiles_the_model_once():
    """fit, a new dataset, fixed= (two different sets), profiles of two parameters, a
    second confint, LRT, delta, multi-start, another n in the bucket, sandwich: the
    model's f/∇f/∇²f program is compiled once; the options reuse it."""
    init = {"b": np.zeros(2), "sigma": 1.0}
    d = _data(200)
    with Compiles() as first:
        res = jm.fit(regression_ll, d, init, constraints=POS)
        host.wait_solvers()   # (a first fit's solver step compiles in the background)
    assert sum(n == "jit(fgh)" for n in first.names) == 1

    steps = {
        "new data": lambda: jm.fit(regression_ll, _data(200, 1), init, constraints=POS),
        "fixed b[1]": lambda: jm.fit(regression_ll, d, init, constraints=POS,
                                     fixed={"b[1]": 0.0}),
        "fixed sigma": lambda: jm.fit(regression_ll, d, init, constraints=POS,
                                      fixed={"sigma": 0.7}),
        "fixed b[1] again": lambda: jm.fit(regression_ll, d, init, constraints=POS,
                                           fixed={"b[1]": 1.5}),
        "profile": lambda: res.confint(method="profile"),
        "profile again": lambda: res.profile("sigma"),
        "lrt": lambda: jm.lrt(jm.fit(regression_ll, d, init, constraints=POS,
                                     fixed={"b[1]": 0.0}), res),
        "delta": lambda: res.delta(lambda p: p["b"][1] / p["sigma"]),
        "n_starts": lambda: jm.fit(regression_ll, d, init, constraints=POS, n_starts=8),
        "n_starts 5": lambda: jm.fit(regression_ll, d, init, constraints=POS, n_starts=5),
        "new n": lambda: jm.fit(regression_ll, _data(190), init, constraints=POS),
        "sandwich": lambda: jm.fit(regression_ll, d, init, constraints=POS,
                                   cov_type="sandwich"),
    }
    seen = {}
    for name, step in steps.items():
        with Compiles() as c:
            step()
        seen[name] = c.names
        assert not c.model(), f"{name} recompiled the model's programs: {c.names}"
    # what may compile, and only the first time: the fixed elements' scores (one small
    # program per model), the delta's own function, the starts' draw, the meat of the
    # sandwich
    # (and the host's checks of a new value, e.g. that it lies in the constraint's
    # support, may compile one-operation programs the first time they meet a shape)
    programs = MODEL_PROGRAMS | SOLVER_PROGRAMS | {"one", "run", "meat", "_draw_starts",
                                                  "verdict"}
    for name in ("new data", "fixed sigma", "fixed b[1] again", "profile again", "lrt",
                 "n_starts 5", "new n"):
        assert not {n.removeprefix("jit(").rstrip(")") for n in seen[name]} & programs, \
            (name, seen[name])
        assert len(seen[name]) <= 2, (name, seen[name])
    assert len(seen["delta"]) == 1
    assert set(seen["sandwich"]) <= {"jit(meat)"}


def test_a_new_model_compiles_only_its_own_programs():
    """The solver's programs are shared: a second model of the same size compiles its
    f/∇f/∇²f, its values at the optimum and its start (plus the padding check)."""
    x = np.random.default_rng(3).normal(2.0, 1.5, 64)
    jm.fit(normal_ll, x, INIT, constraints=POS)
    host.wait_solvers()

    def other_ll(p, x):
        return -0.5 * ((x - p["mu"]) / p["sigma"]) ** 2 - jnp.log(p["sigma"]) - 0.0 * x

    with Compiles() as c:
        jm.fit(other_ll, x, INIT, constraints=POS)
    solver = [n for n in c.names if n.removeprefix("jit(").rstrip(")") in SOLVER_PROGRAMS]
    assert solver == [], c.names
    # (the start in z is computed in NumPy for an elementwise transform: no initial_z)
    assert sorted(c.model()) == ["jit(fgh)", "jit(point)"]


@pytest.mark.parametrize("case", ["constrained", "fixed", "map", "sandwich", "simplex"])
def test_host_and_fused_drivers_give_the_same_fit(case):
    """jm.fit drives the Newton from Python; inside jax.jit the same functions run as
    one traced program. Same iterations, same numbers (n = 64 is its own bucket)."""
    x = np.random.default_rng(5).normal(1.0, 2.0, 64)
    ll, init, kw = normal_ll, INIT, {"constraints": POS}
    if case == "fixed":
        kw["fixed"] = {"mu": 0.5}
    elif case == "map":
        import numpyro.distributions as dist
        kw["priors"] = {"mu": dist.Normal(0.0, 1.0)}
    elif case == "sandwich":
        kw["cov_type"] = "sandwich"
    elif case == "simplex":
        counts = np.array([12.0, 30.0, 22.0])

        def ll(p, c):
            return jnp.sum(c * jnp.log(p["p"]))

        x, init, kw = counts, {"p": np.ones(3) / 3}, {"constraints": {"p": npc.simplex}}
    a = jm.fit(ll, x, init, **kw)
    b = jax.jit(lambda d: jm.fit(ll, d, init, **kw))(x)
    assert isinstance(a.cov, np.ndarray) and isinstance(b.cov, jax.Array)   # two drivers
    assert int(a.n_iter) == int(b.n_iter) and int(a.status) == int(b.status)
    for u, v in [(a.params, b.params), (a.stderr, b.stderr), (a.cov, b.cov),
                 (a.loglik, b.loglik), (a.score, b.score), (a.stats.z, b.stats.z)]:
        for p, q in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(v)):
            np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-14)


def test_vmap_and_jit_around_fit():
    """The README's claim: a user's jit/vmap passes through the whole fit."""
    xs = np.random.default_rng(7).normal(1.0, 2.0, (4, 50))
    mus = jax.vmap(lambda x: jm.fit(normal_ll, x, INIT, constraints=POS).params["mu"])(xs)
    np.testing.assert_allclose(mus, xs.mean(axis=1), rtol=1e-10)
    sd = jax.jit(lambda x: jm.fit(normal_ll, x, INIT, constraints=POS).stderr["mu"])(xs[0])
    np.testing.assert_allclose(sd, xs[0].std() / np.sqrt(50), rtol=1e-8)


def test_padded_fits_equal_unpadded_fits():
    """n = 100 runs in the 128 bucket (zero-weight padding rows): the same estimates,
    SEs and log-likelihood as the unpadded fused fit, and nobs = 100."""
    d = _data(100, 11)
    init = {"b": np.zeros(2), "sigma": 1.0}
    cfg_rows = buckets.bucket_size(100)
    assert cfg_rows == 128 and buckets.bucket_size(128) == 128
    a = jm.fit(regression_ll, d, init, constraints=POS)
    b = jax.jit(lambda d: jm.fit(regression_ll, d, init, constraints=POS))(d)
    assert float(a.nobs) == 100.0
    for u, v in [(a.params, b.params), (a.stderr, b.stderr), (a.loglik, b.loglik)]:
        for p, q in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(v)):
            np.testing.assert_allclose(p, q, rtol=1e-10)
    assert np.isclose(float(a.aic), float(b.aic), rtol=1e-12)


def test_rows_that_interact_are_not_padded():
    """A log-likelihood using the mean of the data would change with padding rows: the
    check at its first padded fit finds that, and it is fitted unpadded."""
    x = np.random.default_rng(13).normal(3.0, 2.0, 100)
    res = jm.fit(centred_ll, x, INIT, constraints=POS)
    key = (centred_ll, jax.tree_util.tree_structure(x))
    assert buckets._VERDICT[key] is False
    assert abs(float(res.params["mu"])) < 1e-10
    np.testing.assert_allclose(float(res.params["sigma"]), x.std(), rtol=1e-10)


def test_bucket_sizes():
    assert [buckets.bucket_size(n) for n in (1, 5, 9, 100, 4096)] == [8, 8, 16, 128, 4096]
    for n in (4097, 10_000, 123_457, 10**6):
        b = buckets.bucket_size(n)
        assert n <= b <= 1.125 * n + 1 and buckets.bucket_size(b) == b


def test_warmup_compiles_so_the_fit_does_not():
    x = np.random.default_rng(17).normal(0.0, 1.0, 32)

    def fresh_ll(p, x):
        return -0.5 * ((x - p["mu"]) / p["sigma"]) ** 2 - jnp.log(p["sigma"]) + 0.0

    assert jm.warmup(fresh_ll, x, INIT, constraints=POS) >= 2   # fgh, point
    with Compiles() as c:
        res = jm.fit(fresh_ll, x, INIT, constraints=POS)
    assert c.names == [] and bool(res.converged)


def test_cache_prune_keeps_the_newest(tmp_path):
    for i in range(6):
        f = tmp_path / f"entry{i}"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1000 + i, 1000 + i))
    assert cache.prune(str(tmp_path), 250) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == \
        ["entry4", "entry5"]
    assert cache.prune(str(tmp_path), 0) == 0   # checked at most once an hour


def test_cache_default_dir_and_opt_out(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMLE_CACHE_DIR", str(tmp_path / "c"))
    assert cache.default_cache_dir() == str(tmp_path / "c")
    code = "import jax, jaxmle; print(jax.config.jax_compilation_cache_dir)"
    env = {**os.environ, "JAXMLE_CACHE_DIR": str(tmp_path / "c"),
           "JAXMLE_NO_COMPILATION_CACHE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "None"
    env.pop("JAXMLE_NO_COMPILATION_CACHE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == str(tmp_path / "c")


def test_host_driver_is_the_newton_only():
    assert host.eligible(type("C", (), {"method": "newton"})())
    assert not host.eligible(type("C", (), {"method": "lbfgs"})())


def test_a_loop_of_fits_tiers_up_to_the_fused_program_without_waiting(monkeypatch):
    """After TIER_UP host-driven fits of one model and shapes, the fused program is lowered
    and compiled on a worker thread; the fits go on meanwhile, and once it is ready the
    next fit uses it without compiling anything, with the host driver's answer."""
    monkeypatch.setattr(single, "TIER_UP", 3)

    def loop_ll(p, x):   # a model of its own: its keys are fresh in this process
        return -0.5 * ((x - p["mu"]) / p["sigma"]) ** 2 - jnp.log(p["sigma"]) - 0.0

    x = np.random.default_rng(11).normal(2.0, 1.5, 37)
    host_fits = [jm.fit(loop_ll, x, INIT, constraints=POS) for _ in range(4)]
    pending = [f for f in single._TIERING.values() if f is not None]
    assert pending, "the fourth fit starts the fused program's compilation"
    ahead.wait(*pending)
    host_calls = []
    monkeypatch.setattr(host, "host_fit", lambda *a, **k: host_calls.append(a))
    with Compiles() as c:
        fused = jm.fit(loop_ll, x, INIT, constraints=POS)
    assert c.names == [], c.names
    assert host_calls == [], "the fifth fit runs the fused program"
    ref = host_fits[0]
    assert int(fused.status) == int(ref.status) and bool(fused.converged)
    for name in ("mu", "sigma"):
        np.testing.assert_allclose(float(fused.params[name]), float(ref.params[name]),
                                   rtol=1e-10)
        np.testing.assert_allclose(float(fused.stderr[name]), float(ref.stderr[name]),
                                   rtol=1e-8)


def test_a_solve_of_a_new_size_starts_the_solver_compilation():
    """A solve that no first fit prepared (a profile or multi-start of a size not yet
    fitted) starts the solver's background compilation itself, and its NumPy steps give
    the answer meanwhile."""
    from types import SimpleNamespace

    m = next(m for m in range(61, 200)
             if host_solver._solver_key(m, np.float64) not in host_solver._PREPARED)
    inputs = SimpleNamespace(held=SimpleNamespace(z=np.zeros(m, bool)))

    def evaluate(inputs, weights, z):   # f = ½‖z − 1‖²
        return 0.5 * np.sum((z - 1.0) ** 2), z - 1.0, np.eye(m)

    final = host_solver.solve(None, inputs, None, np.zeros(m), 1e-10, 50, evaluate=evaluate)
    assert bool(final.done) and np.allclose(final.z, 1.0, atol=1e-8)
    assert host_solver._PREPARED[host_solver._solver_key(m, np.float64)] is not \
        host_solver._LATER
    host.wait_solvers()


def test_a_new_size_compiles_the_solver_once():
    """Everything of the solver but ``_advance`` runs in NumPy: a first fit with a new
    number of parameters compiles the model's programs and ``_advance``, nothing else."""
    # a size no earlier test of this process has used (the suite's order varies by worker)
    k = next(k for k in range(11, 60)
             if host_solver._solver_key(k + 1, np.float64) not in host_solver._PREPARED)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, k))
    d = {"X": X, "y": X @ np.linspace(-1, 1, k) + rng.normal(size=40)}

    def ll(p, d):
        return -0.5 * ((d["y"] - d["X"] @ p["b"]) / p["sigma"]) ** 2 - jnp.log(p["sigma"])

    with Compiles() as c:
        jm.fit(ll, d, {"b": np.zeros(k), "sigma": 1.0}, constraints=POS)
        host.wait_solvers()   # the solver's step compiles after the first fit, meanwhile
        # the fit's iterations take the NumPy step
    # the model's f/∇f/∇²f and values at the optimum, the solver's step, and the padding
    # check (n = 40 is padded to 64: ℓ on both, one value-only program)
    assert sorted(c.names) == ["jit(_advance)", "jit(fgh)", "jit(point)", "jit(verdict)"]


def _spd(rng, m, cond):
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    return (q * np.geomspace(1.0, cond, m)) @ q.T


@pytest.mark.parametrize("kind", ["spd", "indefinite", "singular", "nonfinite"])
def test_solver_functions_agree_in_numpy_and_in_a_program(kind):
    """The solver's and the inference's functions are written once (core/xp.py): on
    NumPy arrays (the host driver) and traced (the fused program) they agree to rounding,
    including where LAPACK fails (NaN, not an exception, on both sides)."""
    from jaxmle.core.covariance import Transform, combine
    from jaxmle.core.solvers.dense import eigen, factorize, newton_direction

    rng = np.random.default_rng(11)
    m = 4
    h = _spd(rng, m, 1e3)
    if kind == "indefinite":
        h = h - 2.0 * np.eye(m)
    elif kind == "singular":
        v = rng.normal(size=m)
        h = np.outer(v, v) + np.outer(h[0], h[0])
    elif kind == "nonfinite":
        h[1, 2] = h[2, 1] = np.nan
    g = rng.normal(size=m)
    held = np.array([False, False, True, False])
    jdiag = np.exp(rng.normal(size=m))

    def run(h, g, damping, held, jdiag):
        fac = jax.tree_util.tree_map(lambda x: x[0], factorize(h[None], damping[None]))
        step, used = newton_direction(g, fac, damping)
        e = eigen(h, held)
        inf = combine("elementwise", Transform(None, jdiag, None), held, h, g, e)
        return step, used, e.values, inf.cov, inf.stderr, inf.singular

    args = (h, g, np.asarray(0.0), held, jdiag)
    with np.errstate(all="ignore"):
        on_host = run(*args)
    in_program = jax.jit(run)(*[jnp.asarray(a) for a in args])
    assert all(isinstance(x, (np.ndarray, np.generic)) for x in on_host)
    for a, b in zip(on_host, in_program):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["positive", "unit_interval", "interval", "greater_than",
                                  "less_than", "softplus_positive", "real"])
def test_host_transforms_equal_numpyro(name):
    """Host-side checks and profile bookkeeping evaluate the common bijections in NumPy
    (no one-operation programs): the same values as NumPyro's, both ways."""
    from numpyro.distributions import transforms as T

    from jaxmle.core.host_space import host_transform

    c = {"interval": npc.interval(-2.0, 5.0), "greater_than": npc.greater_than(3.0),
         "less_than": npc.less_than(-1.0)}.get(name) or getattr(npc, name)
    t = T.biject_to(c)
    x = np.linspace(-30.0, 30.0, 25)
    y = host_transform(t, x)
    np.testing.assert_allclose(y, np.asarray(t(jnp.asarray(x))), rtol=1e-14, atol=1e-300)
    inner = np.abs(x) <= 15   # the inverse is ill-conditioned where y meets a bound
    np.testing.assert_allclose(host_transform(t, y[inner], inverse=True),
                               np.asarray(t.inv(jnp.asarray(y[inner]))), rtol=1e-12, atol=1e-12)
    with Compiles() as c:
        host_transform(t, x[:7])
    assert c.names == []


HOST_CDF_CASES = {
    "Normal": dict(loc=1.0, scale=2.0), "LogNormal": dict(loc=0.3, scale=0.7),
    "Exponential": dict(rate=0.8), "Gamma": dict(concentration=2.5, rate=1.3),
    "InverseGamma": dict(concentration=3.0, rate=2.0),
    "Weibull": dict(scale=2.0, concentration=1.7), "HalfNormal": dict(scale=1.5),
    "Cauchy": dict(loc=0.5, scale=1.2), "Gumbel": dict(loc=1.0, scale=2.0),
    "Logistic": dict(loc=0.2, scale=0.9), "Laplace": dict(loc=1.0, scale=0.8),
    "StudentT": dict(df=4.5, loc=0.5, scale=1.3),
    "Beta": dict(concentration1=2.0, concentration0=3.0)}


@pytest.mark.parametrize("name", sorted(HOST_CDF_CASES))
def test_host_cdfs_equal_numpyro(name):
    """Goodness-of-fit CDFs of the common distributions are closed forms on the host
    (nothing compiled), equal to NumPyro's cdf; outside the support 0 (or 1)."""
    import numpyro.distributions as dist

    from jaxmle.distributions.host_cdf import host_cdf

    cls, params = getattr(dist, name), HOST_CDF_CASES[name]
    x = np.linspace(0.01, 0.99, 25) if name == "Beta" else np.linspace(-3.0, 8.0, 45)
    inside = np.asarray(cls(**params).support.check(jnp.asarray(x)))
    with Compiles() as c:
        got = host_cdf(cls, params, x)
    assert c.names == []
    want = np.asarray(cls(**{k: jnp.asarray(v) for k, v in params.items()}).cdf(
        jnp.asarray(x[inside])))
    np.testing.assert_allclose(got[inside], want, rtol=1e-13, atol=1e-14)
    if (~inside).any():
        np.testing.assert_array_equal(got[~inside], 0.0)


def test_fixed_scores_from_the_model_program_equal_the_score_program():
    """A host-driven fit with ``fixed=`` takes the fixed elements' scores from the model's
    f/∇f/∇²f program (no score program compiled): the same numbers as the gradient
    program, for a free-line and a positive parameter held."""
    from jaxmle.core.held import Inputs, nothing_held
    from jaxmle.fitting import free_rows

    d = _data(150, 9)
    init = {"b": np.zeros(2), "sigma": 1.0}
    for fixed in ({"b[1]": 1.5}, {"sigma": 0.7}):
        with Compiles() as c:
            res = jm.fit(regression_ll, d, init, constraints=POS, fixed=fixed)
        assert not any(n == "jit(one)" for n in c.names), c.names
        config = res.context.config
        inputs = Inputs(res.context.data, nothing_held(config.space, np.float64))
        want = np.asarray(free_rows.score_program(config)(inputs, res.context.weights,
                                                          res.params))
        got = np.concatenate([np.ravel(res.score[k]) for k in ("b", "sigma")])
        name = next(iter(fixed))
        i = {"b[1]": 1, "sigma": 2}[name]
        np.testing.assert_allclose(got[i], want[i], rtol=1e-10, atol=1e-10)
        assert abs(got[i]) > 1e-3   # held away from the optimum: a real score


def test_the_cached_start_equals_init_then_ask():
    """The host's start state and first proposal come from a per-size template: the same
    arrays as ``DampedNewton.init`` then ``ask`` at z0 (the proposal does not depend on z0)."""
    from jaxmle.core import solvers

    rng = np.random.default_rng(2)
    for held in (np.zeros(3, bool), np.array([False, True, False])):
        for _ in range(2):
            z0 = rng.normal(size=3) * 5
            s, p, zt = host_solver._start(z0, held)
            newton = host_solver._newton(held)
            with np.errstate(all="ignore"):
                s2 = newton.init(None, z0 + solvers.kink_jitter(z0, held), None)
                p2 = newton.ask(s2)
            for a, b in zip(jax.tree_util.tree_leaves((s, p)),
                            jax.tree_util.tree_leaves((s2, p2))):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(zt, s2.z + p2.step)

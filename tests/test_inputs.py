"""Everyday inputs: data containers (tuples, lists, pandas), fit_batch reading data as fit
does, ``stack_datasets``, clear errors for ordinary mistakes, chunk sizes, progress."""


import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest
from numpyro.distributions import constraints

import jaxmle as jm
import jaxmle.fitting.batch as _batch
import jaxmle.fitting.kernel as _kernel
from shared import GAMMA_CONS, POS, gamma, normal

B, N = 8, 20
_rng = np.random.default_rng(12)
XS = _rng.normal(size=(B, N))
YS = 1.0 + 0.5 * XS + _rng.normal(size=(B, N))
AB = {"a": 0.0, "b": 0.0}


def linreg(p, d):                       # d = (y, x), as jm.fit takes it
    y, x = d
    return dist.Normal(p["a"] + p["b"] * x, 1.0).log_prob(y)


def linreg_dict(p, d):
    return dist.Normal(p["a"] + p["b"] * d["x"], 1.0).log_prob(d["y"])


def poisson_flag(p, d):
    """Counts (an integer column) with a 0/1 covariate (a boolean column)."""
    return dist.Poisson(jnp.exp(p["a"] + p["b"] * d["flag"])).log_prob(d["count"])


def ols(y, x):
    X = np.column_stack([np.ones_like(x), x])
    return np.linalg.lstsq(X, y, rcond=None)[0]


# --------------------------------------------------------------------------- 1. fit_batch


@pytest.fixture(scope="module")
def tuple_batch():
    return jm.fit_batch(linreg, (YS, XS), AB, progress=False)


def test_fit_batch_reads_a_tuple_as_fit_does(tuple_batch):
    assert len(tuple_batch) == B            # not 2 "datasets" stacked from the tuple
    for i in (0, 5):
        np.testing.assert_allclose([tuple_batch.params["a"][i], tuple_batch.params["b"][i]],
                                   ols(YS[i], XS[i]), rtol=1e-9)


def test_stack_datasets_turns_a_list_of_datasets_into_the_same_batch(tuple_batch):
    stacked = jm.stack_datasets([(YS[i], XS[i]) for i in range(B)])
    assert isinstance(stacked, tuple) and stacked[0].shape == (B, N)
    bres = jm.fit_batch(linreg, stacked, AB, progress=False)
    np.testing.assert_array_equal(bres.params["a"], tuple_batch.params["a"])
    frames = [pd.DataFrame({"y": YS[i], "x": XS[i]}) for i in range(B)]
    as_dicts = jm.stack_datasets(frames)       # DataFrames stack to a dict of (B, n) columns
    assert set(as_dicts) == {"x", "y"} and as_dicts["x"].shape == (B, N)
    np.testing.assert_array_equal(as_dicts["y"], YS)


def test_fit_batch_refuses_an_ambiguous_list_and_names_mismatched_leading_sizes():
    with pytest.raises(TypeError, match=r"Python list of 2 items.*stack_datasets"):
        jm.fit_batch(linreg, [YS, XS], AB)
    with pytest.raises(ValueError, match=r"leading sizes differ \('0': 8, '1': 5\).*stack_datasets"):
        jm.fit_batch(linreg, (YS, XS[:5]), AB)
    with pytest.raises(ValueError, match=r"'x' has shape \(3,\) in dataset 1 but \(2,\) in dataset 0"):
        jm.stack_datasets([{"x": np.ones(2)}, {"x": np.ones(3)}])
    with pytest.raises(ValueError, match="dataset 2 has a different structure"):
        jm.stack_datasets([(1.0, 2.0), (1.0, 2.0), {"y": 1.0}])
    with pytest.raises(TypeError, match=r"pandas DataFrame.*stack_datasets"):
        jm.fit_batch(linreg_dict, pd.DataFrame({"y": YS[0], "x": XS[0]}), AB)
    with pytest.raises(ValueError, match="empty list"):
        jm.stack_datasets([])
    with pytest.raises(TypeError, match="dataset 1: data leaf 'y' is a string"):
        jm.stack_datasets([{"y": 1.0}, {"y": "a"}])


# --------------------------------------------------------------------------- 2. containers


def test_a_dataframe_is_a_dict_of_its_columns_with_int_and_bool_columns():
    rng = np.random.default_rng(3)
    flag = rng.random(60) < 0.4
    count = rng.poisson(np.where(flag, 4.0, 1.5))
    frame = pd.DataFrame({"count": count, "flag": flag, "label": ["x"] * 60})
    res = jm.fit(poisson_flag, frame[["count", "flag"]], AB)
    # closed form: exp(a) = mean count without the flag, exp(a + b) = mean count with it
    # (Newton stops within tol = 1e-8 standard errors of the maximum: SE ≈ 0.1 here)
    np.testing.assert_allclose(res.params["a"], np.log(count[~flag].mean()), atol=1e-8)
    np.testing.assert_allclose(res.params["b"], np.log(count[flag].mean() / count[~flag].mean()),
                               atol=1e-8)
    with pytest.raises(TypeError, match=r"column 'label' has dtype .*cat\.codes"):
        jm.fit(poisson_flag, frame, AB)
    frame["count"] = frame["count"].astype("Int64")
    frame.loc[3, "count"] = pd.NA
    with pytest.raises(ValueError, match=r"data leaf 'count' contains 1 NaN/inf.*index 3"):
        jm.fit(poisson_flag, frame[["count", "flag"]], AB)


def test_a_series_and_lists_inside_a_tuple_are_arrays():
    s = pd.Series(XS[0], name="x")
    res = jm.fit(normal, s, {"mu": 0.0, "sigma": 1.0}, constraints=POS)
    np.testing.assert_allclose(res.params["mu"], XS[0].mean(), rtol=1e-10)
    res = jm.fit(linreg, (list(YS[0]), XS[0].tolist()), AB)
    np.testing.assert_allclose([res.params["a"], res.params["b"]], ols(YS[0], XS[0]), rtol=1e-9)


@pytest.mark.parametrize("data, match", [
    ({"y": YS[0], "x": None}, r"data leaf 'x' is None"),
    ({"y": YS[0], "x": "abc"}, r"data leaf 'x' is a string"),
    ((YS[0], np.array(["a", "b"])), r"data leaf '1' must be numeric"),
    ({"y": YS[0], "x": [object(), object()]}, r"data leaf 'x.0' must be numeric"),
    (pd.DataFrame({"y": YS[0], "g": pd.Categorical(["a", "b"] * 10)}), r"column 'g'"),
    (pd.DataFrame({"y": YS[0], "t": pd.date_range("2020", periods=N)}), r"column 't'.*dates"),
])
def test_non_numeric_data_is_a_type_error_naming_the_leaf(data, match):
    with pytest.raises(TypeError, match=match):
        jm.fit(linreg_dict, data, AB)


# --------------------------------------------------------------------------- 3. bad input


def test_init_of_the_wrong_shape_names_the_parameter_and_shapes():
    def regression(p, d):
        return dist.Normal(d["X"] @ p["beta"], p["sigma"]).log_prob(d["y"])

    data = {"X": np.ones((N, 3)), "y": YS[0]}
    with pytest.raises(TypeError, match=r"'beta' \(2,\).*shape of 'beta' appears"):
        jm.fit(regression, data, {"beta": np.zeros(2), "sigma": 1.0}, constraints=POS)


def test_a_parameter_missing_from_init_is_named_with_what_init_holds():
    with pytest.raises(KeyError, match=r"reads parameter 'b', which init does not hold; init "
                                       r"holds \['a'\]"):
        jm.fit(linreg, (YS[0], XS[0]), {"a": 0.0})
    with pytest.raises(KeyError, match=r"reads data field 'x', which data does not hold; data "
                                       r"holds \['xx', 'y'\]"):
        jm.fit(linreg_dict, {"y": YS[0], "xx": XS[0]}, AB)


@pytest.mark.parametrize("loglik, match", [
    (3.0, r"loglik must be a function loglik\(params, data\), got float"),
    (lambda p, x: "ll", r"loglik returned a str"),
    (lambda p, x: None, r"loglik returned None \(a missing `return`\?\)"),
    (lambda p, x: {"ll": jnp.sum(x * p["a"])}, r"loglik returned a dict"),
    (lambda p, x: (jnp.sum(x * p["a"]), 0.0), r"loglik returned a tuple"),
    (lambda p, x: object(), r"loglik returned a object"),
    (lambda p, x: jnp.sum(x > p["a"]), r"dtype int.*floating-point"),
])
def test_a_loglik_that_is_not_a_function_of_real_output(loglik, match):
    with pytest.raises(TypeError, match=match):
        jm.fit(loglik, XS[0], {"a": 0.0})


def traces_of(monkeypatch, module, name, program_cache):
    """Record every trace of ``module.name`` (the body of a cached compiled program)."""
    traced, original = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: traced.append(1) or original(*a))
    program_cache.cache_clear()   # the caller clears it again after the test
    return traced


def test_a_loglik_not_finite_at_init_raises_before_compiling_and_names_the_parameters(
        monkeypatch):
    traced = traces_of(monkeypatch, _kernel, "fit_kernel", _kernel.compiled_kernel)
    x = np.array([1.0, 2.0, -1.0, 3.0, -0.5])
    with pytest.raises(ValueError, match=r"-inf at init \(rate=2, shape=1\): 2 of 5 "
                                         r"per-observation terms.*observation\(s\) \[2, 4\]"):
        jm.fit(gamma, x, {"shape": 1.0, "rate": 2.0}, constraints=GAMMA_CONS)
    assert traced == []           # the fit's program was never traced, let alone compiled
    _kernel.compiled_kernel.cache_clear()


def test_weights_all_zero():
    with pytest.raises(ValueError, match="no observations with positive weight"):
        jm.fit(normal, XS[0], {"mu": 0.0, "sigma": 1.0}, constraints=POS, weights=np.zeros(N))
    with pytest.raises(ValueError, match=r"no observations with positive weight.*dataset\(s\) \[1\]"):
        w = np.ones((B, N))
        w[1] = 0.0
        jm.fit_batch(normal, XS, {"mu": 0.0, "sigma": 1.0}, constraints=POS, weights=w)


def test_a_batched_init_of_the_wrong_batch_size_is_explained():
    with pytest.raises(TypeError, match=r"'mu' \(5,\).*leading axis of length B = 8"):
        jm.fit_batch(normal, XS, {"mu": np.zeros(5), "sigma": np.ones(5)}, constraints=POS)
    with pytest.raises(ValueError, match=r"B = 8 on every leaf; not so for \['mu', 'sigma'\]"):
        jm.fit_batch(normal, XS, {"mu": np.zeros(5), "sigma": np.ones(5)}, constraints=POS,
                     batched_init=True)


def _runaway_fit():
    """A joint density of data and random effects maximised over the effects: tau -> 0."""
    g = np.repeat(np.arange(6), 4)
    y = 1.0 + np.random.default_rng(5).normal(size=6)[g] + np.random.default_rng(6).normal(size=24)

    def joint(p, d):
        y, g = d
        return (jnp.sum(dist.Normal(0.0, p["tau"]).log_prob(p["u"]))
                + jnp.sum(dist.Normal(p["mu"] + p["u"][g], p["sigma"]).log_prob(y)))

    init = {"mu": 0.0, "sigma": 1.0, "tau": 1.0, "u": np.zeros(6)}
    return jm.fit(joint, (y, g), init, constraints={"sigma": constraints.positive,
                                                    "tau": constraints.positive}, max_iter=400)


def test_a_runaway_to_an_unbounded_likelihood_is_not_converged():
    with pytest.warns(jm.ConvergenceWarning):
        res = _runaway_fit()
    assert not res.converged


def test_a_runaway_to_an_unbounded_likelihood_names_the_parameter_and_random():
    """At the start (u = 0) tau's row of H is exactly 0 while ℓ is linear in log tau: with
    the Newton's scaling floored at 1e-3·|g|/max(|z|, 1) the damping can shorten its step
    and the fit runs tau -> 0 (with only the ε⁴ floor the step was unbounded whatever the
    damping, and the fit stalled at the start); the warning names tau and suggests
    random=."""
    with pytest.warns(jm.ConvergenceWarning, match=r"unbounded.*\['tau'\].*tau = .*random=\["):
        res = _runaway_fit()
    assert not res.converged and float(res.params["tau"]) < 1e-10


# --------------------------------------------------------------------------- chunks, progress


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, "8", None])
def test_illegal_chunk_sizes_are_errors(chunk):
    if chunk is None:
        assert _batch.resolve_chunk_size(None, XS, B, 1) >= 1
        return
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        jm.fit_batch(normal, XS, {"mu": 0.0, "sigma": 1.0}, constraints=POS, chunk_size=chunk)


def test_every_pass_of_the_schedule_makes_progress():
    for size in range(1, 200):
        assert 0 <= _batch._stop_at(size) < size
    for chunk in (1, 2, 3, 8, 15, 16, 64, 1024):
        plan = _batch._ContinuationPlan(chunk, _batch._small_chunk(chunk, 1),
                                        np.int32(_batch._stop_at(chunk)), 10)
        for pool in (1, 2, 3, chunk, 5 * chunk + 1):
            size, stop_at, _ = plan.next_pass(pool)
            assert stop_at < min(size, pool) or stop_at == 0


def test_chunk_size_one_with_slow_members_finishes_with_the_same_fits(capsys):
    starts = {"mu": np.r_[0.0, 0.0, 1e4, 0.0, -3e3], "sigma": np.r_[1.0, 1.0, 1e-3, 1.0, 50.0]}
    xs = XS[:5]
    bres = jm.fit_batch(normal, xs, starts, constraints=POS, chunk_size=1, progress=True)
    assert bres.converged.all() and bres.n_iter[2] > 2 * bres.n_iter[0]
    # closed forms, within tol = 1e-8 standard errors (SE(mu) = sigma/sqrt(n) ≈ 0.2)
    np.testing.assert_allclose(bres.params["mu"], xs.mean(axis=1), atol=1e-8)
    np.testing.assert_allclose(bres.params["sigma"], xs.std(axis=1), atol=1e-8)
    err = capsys.readouterr().err
    assert "compiling…" in err and "5/5" in err


def test_the_progress_bar_starts_its_clock_after_compiling_and_names_the_slow_phase(capsys):
    import time

    with _batch._Progress(True, 10) as bar:
        assert "compiling…" in bar.bar.desc
        time.sleep(0.05)
        before = time.time()
        bar.compiled()
        assert bar.bar.start_t >= before and bar.bar.n == 0
        bar.update(6)                        # 6 finished, 4 still iterating: 60%, not 100%
        bar.phase("continuing 4 slow fits")
        assert bar.bar.n == 6 and "continuing 4 slow fits" in bar.bar.desc
        bar.update(4)
    err = capsys.readouterr().err
    assert "continuing 4 slow fits" in err and "10/10" in err
    assert _batch._Progress(False, 10).bar is None


def test_fit_batch_raises_before_compiling_when_no_dataset_has_a_finite_start(monkeypatch):
    import jaxmle.fitting.batch_kernel as _batch_kernel

    traced = traces_of(monkeypatch, _batch_kernel, "advance", _batch_kernel.compiled_passes)
    with pytest.raises(ValueError, match=r"-inf at init \(rate=1, shape=2\).*for every dataset"):
        jm.fit_batch(gamma, -np.abs(XS[:, :5]), {"shape": 2.0, "rate": 1.0}, constraints=GAMMA_CONS)
    assert traced == []
    _batch_kernel.compiled_passes.cache_clear()

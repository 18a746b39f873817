"""fit_batch: the same fits as a loop of fit, with per-fit truth, chunks and stragglers."""


import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

import jaxmle as jm
import jaxmle.fitting.batch as _batch
import jaxmle.fitting.batch_kernel as _batch_kernel
from jaxmle.core.typing import Status
from shared import GAMMA_CONS, gamma, logistic, normal
from shared import NORMAL_INIT as INIT
from shared import POS as POSITIVE


@pytest.fixture(scope="module")
def normal_sets():
    return np.random.default_rng(0).normal(3.0, 2.0, size=(7, 40))


def assert_same_fit(batched, single, rtol=1e-9):
    for name in single.params:
        np.testing.assert_allclose(batched.params[name], single.params[name], rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(batched.stderr[name], single.stderr[name], rtol=1e-7)
    np.testing.assert_allclose(batched.cov, single.cov, rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(batched.loglik, single.loglik, rtol=1e-12)
    assert bool(batched.converged) == bool(single.converged)
    assert int(batched.n_iter) == int(single.n_iter)
    assert int(batched.status) == int(single.status)


def test_fit_batch_equals_a_loop_of_fit(normal_sets):
    bres = jm.fit_batch(normal, normal_sets, init=INIT, constraints=POSITIVE)
    assert len(bres) == 7 and bres.params["mu"].shape == (7,)
    assert bres.cov.shape == (7, 2, 2) and bres.converged.shape == (7,)
    assert bres.loglik.shape == (7,) and bres.n_iter.shape == (7,)
    # converged to within tol = 1e-8 standard errors of the closed forms
    np.testing.assert_allclose(bres.params["mu"], normal_sets.mean(axis=1), rtol=0,
                               atol=np.max(1e-8 * bres.stderr["mu"]))
    np.testing.assert_allclose(bres.params["sigma"], normal_sets.std(axis=1), rtol=0,
                               atol=np.max(1e-8 * bres.stderr["sigma"]))
    for i, x in enumerate(normal_sets):
        assert_same_fit(bres[i], jm.fit(normal, x, init=INIT, constraints=POSITIVE))


def test_chunked_and_unchunked_batches_agree(normal_sets):
    whole = jm.fit_batch(normal, normal_sets, init=INIT, constraints=POSITIVE)
    chunked = jm.fit_batch(normal, normal_sets, init=INIT, constraints=POSITIVE, chunk_size=3)
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(chunked)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_per_dataset_starts(normal_sets):
    starts = {"mu": np.linspace(-5, 5, 7), "sigma": np.linspace(0.5, 4, 7)}
    bres = jm.fit_batch(normal, normal_sets, init=starts, constraints=POSITIVE)
    for i in (0, 6):
        single = jm.fit(normal, normal_sets[i], init={k: v[i] for k, v in starts.items()},
                        constraints=POSITIVE)
        assert_same_fit(bres[i], single)
    # a shared vector parameter whose length happens to be B is taken as shared when told so
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 40, 3))
    y = (rng.random((3, 40)) < 0.5).astype(float)
    b2 = jm.fit_batch(logistic, (X, y), init={"beta": np.zeros(3)}, batched_init=False)
    assert b2.params["beta"].shape == (3, 3)


def test_ragged_datasets_padded_with_zero_weights():
    rng = np.random.default_rng(2)
    lengths = [25, 40, 33]
    sets = [rng.gamma(2.5, 1 / 1.5, size=n) for n in lengths]
    padded = np.zeros((3, 40))          # 0 is outside the Gamma support: masking must hold
    w = np.zeros((3, 40))
    for i, x in enumerate(sets):
        padded[i, :len(x)], w[i, :len(x)] = x, 1.0
    init = {"shape": 1.0, "rate": 1.0}
    bres = jm.fit_batch(gamma, padded, init=init, constraints=GAMMA_CONS, weights=w)
    for i, x in enumerate(sets):
        single = jm.fit(gamma, x, init=init, constraints=GAMMA_CONS)
        np.testing.assert_allclose(bres.params["shape"][i], single.params["shape"], rtol=1e-8)
        np.testing.assert_allclose(bres.stderr["rate"][i], single.stderr["rate"], rtol=1e-6)
        assert float(bres.nobs[i]) == len(x)


def test_a_nan_dataset_is_reported_and_does_not_poison_the_rest(normal_sets):
    xs = normal_sets.copy()
    xs[4, 7] = np.nan
    with pytest.warns(jm.ConvergenceWarning, match=r"1 of 7 fits .*NaN/inf in the data.*\[4\]"):
        bres = jm.fit_batch(normal, xs, init=INIT, constraints=POSITIVE)
    assert bres.status[4] == Status.NONFINITE_DATA and not bres.converged[4]
    assert np.isnan(bres.params["mu"][4]) and np.isnan(bres.cov[4]).all()
    assert list(bres.failed) == [4] and bres.n_converged == 6
    clean = jm.fit_batch(normal, normal_sets, init=INIT, constraints=POSITIVE)
    keep = np.arange(7) != 4
    np.testing.assert_array_equal(bres.params["mu"][keep], clean.params["mu"][keep])


def test_failed_fits_are_counted_and_the_others_returned(normal_sets):
    starts = {"mu": np.zeros(7), "sigma": np.ones(7)}
    starts["mu"][2] = 1e7                  # cannot get there in 25 iterations
    with pytest.warns(jm.ConvergenceWarning, match=r"1 of 7 fits did not converge.*\[2\]"):
        bres = jm.fit_batch(normal, normal_sets, init=starts, constraints=POSITIVE, max_iter=25)
    assert list(bres.converged) == [True, True, False, True, True, True, True]
    assert bres.status[2] == Status.MAX_ITER and bres.n_iter[2] == 25
    for i in (0, 3):
        single = jm.fit(normal, normal_sets[i], init=INIT, constraints=POSITIVE)
        assert_same_fit(bres[i], single)
    counts = bres.summary().as_dict()["status"]
    assert sum(counts.values()) == 7 and counts["converged"] == 6


def test_stragglers_are_continued_and_give_the_single_fit_answers(monkeypatch):
    """Members far from their optimum stop holding up their chunk: the chunk's pass ends
    once ≤ 2% are active, the rest continue later, with the same results as fit()."""
    rng = np.random.default_rng(4)
    n_sets = 60
    xs = rng.normal(1.0, 1.0, size=(n_sets, 30))
    starts = {"mu": np.zeros(n_sets), "sigma": np.ones(n_sets)}
    slow = [5, 33]
    starts["mu"][slow] = [4e3, -9e3]       # far: many capped steps
    calls = []
    original = _batch.compiled_passes

    def counting(bc):
        begin, advance = original(bc)

        def counted(d, w, state, *rest):
            calls.append(int(np.sum(~np.asarray(state.done))))
            return advance(d, w, state, *rest)

        return begin, counted

    monkeypatch.setattr(_batch, "compiled_passes", counting)
    bres = jm.fit_batch(normal, xs, init=starts, constraints=POSITIVE, chunk_size=32)
    assert bres.n_converged == n_sets
    assert len(calls) >= 3                 # two first passes, then at least one continuation
    assert calls[-1] < 32                  # the continuation holds only the unfinished
    assert min(bres.n_iter[slow]) > 2 * np.median(bres.n_iter)
    for i in slow + [0]:
        single = jm.fit(normal, xs[i], init={k: v[i] for k, v in starts.items()},
                        constraints=POSITIVE)
        assert_same_fit(bres[i], single)


def test_batch_result_api(normal_sets):
    bres = jm.fit_batch(normal, normal_sets, init=INIT, constraints=POSITIVE)
    one = bres[2]
    assert isinstance(one, jm.FitResult) and one.params["mu"].shape == ()
    assert "mu" in str(one.summary())
    assert len(bres[1:4]) == 3 and len(bres[bres.converged]) == 7
    assert bres[-1].loglik == bres.loglik[-1]
    with pytest.raises(IndexError):
        bres[7]
    lo, hi = bres.confint()["mu"]
    assert lo.shape == (7,) and np.all(lo < bres.params["mu"]) and np.all(hi > bres.params["mu"])
    assert bres.flat_params().shape == (7, 2) and bres.aic.shape == (7,)
    summary = bres.summary()
    assert summary.as_dict()["status"] == {"converged": 7}
    assert "SE/SD" in str(summary)
    assert "7 fits" in repr(bres)
    # a pytree: jit/vmap and tree utilities pass through
    assert jax.tree_util.tree_structure(bres).num_leaves > 5


def test_summary_se_matches_spread_in_a_simulation_study():
    """Cramér–Rao in a simulation: the mean SE matches the SD of the estimates."""
    xs = np.random.default_rng(5).normal(3.0, 2.0, size=(2000, 50))
    row = jm.fit_batch(normal, xs, init=INIT, constraints=POSITIVE).summary().as_dict()
    mu = row["params"]["mu"]
    assert abs(mu["mean"] - 3.0) < 4 * 2.0 / np.sqrt(50 * 2000)
    assert 0.93 < mu["se_over_sd"] < 1.07     # 2000 replicates: SD known to ~±3%


def test_same_shapes_do_not_recompile(normal_sets):
    jm.fit_batch(normal, normal_sets, init=INIT, constraints=POSITIVE)
    traces = []
    original = _batch_kernel.advance

    def counted(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    try:
        _batch_kernel.advance = counted
        _batch_kernel.compiled_passes.cache_clear()
        jm.fit_batch(normal, normal_sets + 1.0, init=INIT, constraints=POSITIVE)
        jm.fit_batch(normal, normal_sets * 2.0, init={"mu": 1.0, "sigma": 2.0},
                     constraints=POSITIVE)
        assert len(traces) == 1
    finally:
        _batch_kernel.advance = original
        _batch_kernel.compiled_passes.cache_clear()


def test_bad_batches_are_rejected_with_clear_errors(normal_sets):
    with pytest.raises(ValueError, match="leading sizes differ"):
        jm.fit_batch(logistic, (np.ones((3, 5, 2)), np.ones((4, 5))), init={"beta": np.zeros(2)})
    with pytest.raises(ValueError, match="leading batch axis"):
        jm.fit_batch(normal, np.float64(1.0), init=INIT)
    with pytest.raises(ValueError, match=r"weights must be \(n,\) shared"):
        jm.fit_batch(normal, normal_sets, init=INIT, weights=np.ones((3, 40)))
    with pytest.raises(ValueError, match=r"violates its constraint.*dataset\(s\) \[2\]"):
        jm.fit_batch(normal, normal_sets, init={"mu": np.zeros(7), "sigma": np.r_[1, 1, -1, 1, 1, 1, 1.0]},
                     constraints=POSITIVE)
    with pytest.raises(ValueError, match="every one of the 7 datasets"):
        jm.fit_batch(normal, np.full((7, 3), np.nan), init=INIT)
    with pytest.raises(ValueError, match="-inf at init.*every dataset"):
        jm.fit_batch(gamma, -np.ones((3, 5)), init={"shape": 1.0, "rate": 1.0},
                     constraints=GAMMA_CONS)
    with pytest.raises(ValueError, match="chunk_size"):
        jm.fit_batch(normal, normal_sets, init=INIT, chunk_size=0)


def test_lbfgs_batches_match_single_fits(normal_sets):
    bres = jm.fit_batch(normal, normal_sets[:3], init=INIT, constraints=POSITIVE, method="lbfgs")
    for i in range(3):
        single = jm.fit(normal, normal_sets[i], init=INIT, constraints=POSITIVE, method="lbfgs")
        np.testing.assert_allclose(bres.params["mu"][i], single.params["mu"], rtol=1e-10)
        assert int(bres.n_iter[i]) == int(single.n_iter)


# --------------------------------------------------------------------------- multi-start


def mixture(p, x):
    return jnp.logaddexp(jnp.log(p["w"]) + dist.Normal(p["mu1"], 1.0).log_prob(x),
                         jnp.log1p(-p["w"]) + dist.Normal(p["mu2"], 1.0).log_prob(x))


MIX_CONS = {"w": constraints.unit_interval}


@pytest.fixture(scope="module")
def mixture_data():
    rng = np.random.default_rng(6)
    return np.concatenate([rng.normal(0.0, 1.0, 300), rng.normal(6.0, 1.0, 100)])


def test_multistart_finds_the_global_maximum_of_a_bimodal_likelihood(mixture_data):
    bad_start = {"w": 0.9, "mu1": 3.0, "mu2": 30.0}
    # from here the Newton path reaches the degenerate point w = 1 (mu2 unidentified, the
    # information singular); the single fit's escape probes along the null direction
    # leave it for the global maximum, which the multi-start finds as well
    local = jm.fit(mixture, mixture_data, init=bad_start, constraints=MIX_CONS)
    best = jm.fit(mixture, mixture_data, init=bad_start, constraints=MIX_CONS, n_starts=16,
                  key=jax.random.PRNGKey(1), start_scale=1.0)
    assert best.converged and local.converged
    np.testing.assert_allclose(float(local.loglik), float(best.loglik), rtol=1e-9)
    mus = sorted([float(best.params["mu1"]), float(best.params["mu2"])])
    np.testing.assert_allclose(mus, [0.0, 6.0], atol=0.3)
    assert 1 <= best.n_at_best <= 16 and best.starts.loglik.shape == (16,)
    assert np.all(best.starts.loglik[best.starts.converged] <= best.loglik + 1e-6)
    assert "multi-start" in str(best.summary())
    again = jm.fit(mixture, mixture_data, init=bad_start, constraints=MIX_CONS, n_starts=16,
                   key=jax.random.PRNGKey(1))
    assert float(again.loglik) == float(best.loglik)     # reproducible from the key
    # the best fit equals a single fit from the start that reached it
    z0 = best.starts.z0[int(np.argmax(best.starts.at_best))]
    assert np.isfinite(z0).all()


def test_multistart_keeps_the_users_init_when_it_is_best(normal_sets):
    res = jm.fit(normal, normal_sets[0], init=INIT, constraints=POSITIVE, n_starts=4)
    single = jm.fit(normal, normal_sets[0], init=INIT, constraints=POSITIVE)
    assert res.n_at_best == 4
    np.testing.assert_allclose(res.params["mu"], single.params["mu"], rtol=1e-10)
    assert int(res.n_iter) == int(single.n_iter)
    with pytest.raises(ValueError, match="n_starts"):
        jm.fit(normal, normal_sets[0], init=INIT, n_starts=0)


def test_batch_summary_checks_its_level_and_method():
    """The batch summary has no per-fit intervals: a bad level or an interval method
    other than Wald is an error naming the way to get them, not silently ignored."""
    xs = np.random.default_rng(11).normal(1.0, 2.0, size=(3, 30))   # test_result_data's shape
    bres = jm.fit_batch(normal, xs, init=INIT, constraints=POSITIVE)
    assert "mu" in str(bres.summary(0.9))
    with pytest.raises(ValueError, match="level must be in"):
        bres.summary(1.5)
    with pytest.raises(ValueError, match=r"take a member first.*bres\[0\]\.summary"):
        bres.summary(method="profile")
    with pytest.raises(ValueError, match="no per-fit intervals"):
        bres.summary(ci="bootstrap")

"""A result is data: fits of one problem share a treedef, jit does not retrace for a
second fit, and a member of a batch refits (profile, bootstrap, lrt) like a single fit."""

import jax
import numpy as np
import pytest
from numpyro.distributions import constraints

import jaxmle as jm
from shared import normal

X = np.random.default_rng(11).normal(1.0, 2.0, size=(3, 30))
KW = dict(init={"mu": 0.0, "sigma": 1.0}, constraints={"sigma": constraints.positive})


@pytest.fixture(scope="module")
def fits():
    singles = [jm.fit(normal, x, **KW) for x in X]
    return singles, jm.fit_batch(normal, X, **KW)


def test_two_fits_share_a_treedef_and_map_together(fits):
    (r0, r1, _), _ = fits
    assert jax.tree_util.tree_structure(r0) == jax.tree_util.tree_structure(r1)
    both = jax.tree_util.tree_map(lambda a, b: np.stack([a, b]), r0, r1)
    np.testing.assert_array_equal(both.params["mu"], [r0.params["mu"], r1.params["mu"]])


def test_jit_of_a_function_of_results_traces_once(fits):
    traces = []

    @jax.jit
    def z(res):
        traces.append(1)
        return res.params["mu"] / res.stderr["mu"]

    (r0, r1, _), _ = fits
    np.testing.assert_allclose(z(r1), r1.params["mu"] / r1.stderr["mu"], rtol=1e-12)
    z(r0)
    assert len(traces) == 1


def test_a_batch_member_refits_like_the_single_fit(fits):
    singles, bres = fits
    member, single = bres[2], singles[2]
    p_m, p_s = member.profile("mu"), single.profile("mu")
    np.testing.assert_allclose(p_m.values, p_s.values, rtol=1e-12)
    np.testing.assert_allclose(p_m.loglik, p_s.loglik, rtol=1e-10)
    np.testing.assert_allclose(member.confint(method="profile")["sigma"],
                               single.confint(method="profile")["sigma"], rtol=1e-8)

    def simulate(p, key):
        return p["mu"] + p["sigma"] * jax.random.normal(key, (30,))

    key = jax.random.PRNGKey(3)
    b_m, b_s = member.bootstrap(simulate, n=20, key=key), single.bootstrap(simulate, n=20, key=key)
    np.testing.assert_allclose(b_m.stderr, b_s.stderr, rtol=1e-8)
    np.testing.assert_allclose(member.delta(lambda p: p["mu"] ** 2).estimate,
                               single.params["mu"] ** 2, rtol=1e-10)
    restricted = jm.fit(normal, X[2], fixed={"mu": 1.0}, **KW)
    t = jm.lrt(restricted, member)
    assert t.nested == "checked"
    np.testing.assert_allclose(t.statistic, jm.lrt(restricted, single).statistic, rtol=1e-10)


def test_each_member_carries_its_own_data_and_shared_settings(fits):
    _, bres = fits
    for i in range(len(X)):
        ctx = bres[i].context
        np.testing.assert_array_equal(ctx.data, X[i])
        assert np.shape(ctx.tol) == () and ctx.weights is None
    with pytest.raises(ValueError, match=r"take a member of the batch first \(bres\[i\]\)"):
        jm.FitResult.profile(bres.fits, "mu")


def test_a_batch_is_a_fit_result_with_a_leading_axis(fits):
    singles, bres = fits
    assert isinstance(bres, jm.FitResult) and len(bres) == len(X)
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *singles)
    assert jax.tree_util.tree_structure(stacked) == jax.tree_util.tree_structure(bres.fits)
    np.testing.assert_allclose(bres.aic, [r.aic for r in singles], rtol=1e-10)
    np.testing.assert_allclose(bres.pvalues["mu"], [r.pvalues["mu"] for r in singles], rtol=1e-7)
    np.testing.assert_allclose(bres.confint(names="mu")["mu"][0],
                               [r.confint()["mu"][0] for r in singles], rtol=1e-8)
    with pytest.raises(ValueError, match=r"take a member of the batch first"):
        bres.profile("mu")
    assert type(bres[1:]) is jm.BatchFitResult and type(bres[1]) is jm.FitResult

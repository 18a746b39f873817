"""Results that leave Python: to_dict (JSON-safe), to_dataframe, z/p-values, the
simulation-study summary of a batch (checked against numpy on the closed-form MLE)."""

import dataclasses
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st
from numpy.testing import assert_allclose, assert_array_equal

import jaxmle as jm
from jaxmle.inference.bootstrap import BootstrapResult
from jaxmle.results.export import jsonable, versions
from shared import POS, logit, normal
from shared import NORMAL_INIT as INIT

MU, SIGMA, N_SIM, B_SIM = 1.0, 2.0, 30, 400


def strict_json(d):
    """json round trip with the default encoder and no NaN/inf allowed."""
    return json.loads(json.dumps(d, allow_nan=False))


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(MU, SIGMA, 50)


@pytest.fixture(scope="module")
def res(x):
    return jm.fit(normal, x, INIT, constraints=POS)


@pytest.fixture(scope="module")
def logit_data():
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(200), rng.normal(size=(200, 2))])
    y = rng.binomial(1, 1 / (1 + np.exp(-X @ np.array([0.3, -0.8, 0.0])))).astype(float)
    return {"X": X, "y": y}


@pytest.fixture(scope="module")
def logit_fixed(logit_data):
    return jm.fit(logit, logit_data, {"beta": np.zeros(3)}, fixed={"beta[2]": 0.0})


@pytest.fixture(scope="module")
def logit_full(logit_data):
    return jm.fit(logit, logit_data, {"beta": np.zeros(3)})


@pytest.fixture(scope="module")
def sim():
    xs = np.random.default_rng(1).normal(MU, SIGMA, (B_SIM, N_SIM))
    return xs, jm.fit_batch(normal, xs, INIT, constraints=POS)


# ---------------------------------------------------------------- plain values


def test_jsonable_maps_numpy_jax_nan_and_containers_to_plain_python():
    from typing import NamedTuple

    class Pair(NamedTuple):
        a: object
        b: object

    value = {"f": np.float32(1.5), "i": np.int64(3), "b": np.bool_(True), "nan": math.nan,
             "inf": np.float64(-np.inf), "arr": jnp.array([[1.0, jnp.nan], [jnp.inf, 2.0]]),
             "ints": np.arange(3), 7: (Pair(np.float64(0.25), None), "s")}
    out = jsonable(value)
    assert out == {"f": 1.5, "i": 3, "b": True, "nan": None, "inf": None,
                   "arr": [[1.0, None], [None, 2.0]], "ints": [0, 1, 2],
                   "7": [{"a": 0.25, "b": None}, "s"]}
    assert type(out["f"]) is float and type(out["i"]) is int and type(out["b"]) is bool
    assert all(type(v) is float for v in out["arr"][0][:1] + out["arr"][1][1:])
    assert strict_json(out) == out
    v = versions()
    assert set(v) == {"jaxmle", "jax", "jaxlib", "numpyro", "numpy", "python"}
    assert v["jaxmle"] == jm.__version__ and v["jax"] == jax.__version__


# ---------------------------------------------------------------- FitResult


def test_fit_to_dict_is_strict_json_and_holds_the_fit(res, x):
    d = strict_json(res.to_dict())
    assert d["kind"] == "mle" and d["method"] == res.method and d["cov_type"] == "observed"
    assert d["param_names"] == ["mu", "sigma"] and d["fixed_names"] == []
    assert d["params"] == {"mu": float(res.params["mu"]), "sigma": float(res.params["sigma"])}
    assert d["stderr"] == {k: float(v) for k, v in res.stderr.items()}
    assert_allclose(d["params"]["mu"], x.mean(), rtol=1e-9)
    assert_allclose(d["params"]["sigma"], x.std(), rtol=1e-8)
    assert_array_equal(np.array(d["cov"]), np.asarray(res.cov))
    for key in ("loglik", "logpost", "aic", "bic", "nobs", "grad_norm"):
        assert d[key] == float(getattr(res, key)), key
    assert d["logpost"] == d["loglik"] and d["nobs"] == 50.0 and d["n_free"] == 2
    assert (d["converged"], d["status"], d["status_label"]) == (True, 0, "converged")
    assert d["n_iter"] == int(res.n_iter) and d["singular"] == [] and d["priors"] == []
    assert d["versions"] == versions()
    assert not {"random", "deterministic", "starts"} & set(d)
    sig = d["estimates"]["sigma"]
    z = sig["estimate"] / sig["stderr"]
    assert_allclose(sig["z"], z, rtol=1e-13)
    assert_allclose(sig["pvalue"], 2 * st.norm.sf(z), rtol=1e-9)
    lo, hi = res.confint(0.95)["sigma"]
    assert_allclose([sig["ci_lower"], sig["ci_upper"]], [lo, hi], rtol=1e-13)
    d90 = res.to_dict(level=0.9)
    assert d90["level"] == 0.9
    assert_allclose(d90["estimates"]["mu"]["ci_upper"], res.confint(0.9)["mu"][1], rtol=1e-13)


def test_pvalues_and_zvalues_are_pytrees_like_params(res, logit_fixed):
    for name in ("mu", "sigma"):
        z = float(res.params[name]) / float(res.stderr[name])
        assert_allclose(res.zvalues[name], z, rtol=1e-13)
        assert_allclose(res.pvalues[name], 2 * st.norm.sf(abs(z)), rtol=1e-9)
    assert res.tvalues["mu"] == res.zvalues["mu"]
    z, p = logit_fixed.zvalues["beta"], logit_fixed.pvalues["beta"]
    assert z.shape == p.shape == (3,) and np.isnan(z[2]) and np.isnan(p[2])
    beta, se = np.asarray(logit_fixed.params["beta"]), np.asarray(logit_fixed.stderr["beta"])
    assert_allclose(z[:2], beta[:2] / se[:2], rtol=1e-13)
    assert_allclose(p[:2], 2 * st.norm.sf(np.abs(beta[:2] / se[:2])), rtol=1e-9)
    rows = logit_fixed.summary().rows          # the printed table agrees
    assert_allclose([r["pvalue"] for r in rows[:2]], p[:2], rtol=1e-12)


def test_fixed_parameters_in_dict_and_dataframe(logit_fixed):
    d = strict_json(logit_fixed.to_dict())
    assert d["param_names"] == ["beta[0]", "beta[1]"] and d["fixed_names"] == ["beta[2]"]
    assert d["params"]["beta"] == np.asarray(logit_fixed.params["beta"]).tolist()
    assert d["stderr"]["beta"][2] is None                   # NaN SE of the fixed element
    fixed = d["estimates"]["beta[2]"]
    assert fixed == {"estimate": 0.0, "stderr": None, "z": None, "pvalue": None,
                     "ci_lower": None, "ci_upper": None, "fixed": True}
    assert np.array(d["cov"]).shape == (2, 2)
    df = logit_fixed.to_dataframe()
    assert list(df.index) == ["beta[0]", "beta[1]", "beta[2]"]
    assert list(df.columns) == ["estimate", "stderr", "z", "pvalue", "ci_lower", "ci_upper",
                                "fixed"]
    assert df["fixed"].tolist() == [False, False, True]
    assert_allclose(df["estimate"], np.asarray(logit_fixed.params["beta"]), rtol=1e-15)
    assert_allclose(df["stderr"][:2], np.asarray(logit_fixed.stderr["beta"])[:2], rtol=1e-15)
    assert np.isnan(df.loc["beta[2]", "stderr"]) and np.isnan(df.loc["beta[2]", "pvalue"])
    ci = logit_fixed.confint()
    assert_allclose(df.loc["beta[1]", ["ci_lower", "ci_upper"]].to_numpy(float), ci["beta[1]"],
                    rtol=1e-13)
    assert list(logit_fixed.to_dataframe(include_fixed=False).index) == ["beta[0]", "beta[1]"]


def test_summary_numbers_are_floats_and_export(res, logit_fixed):
    s = res.summary()
    stats = s.as_dict()["stats"]
    assert stats["loglik"] == float(res.loglik) and stats["aic"] == float(res.aic)
    assert stats["n_iter"] == int(res.n_iter) and stats["converged"] is True
    assert all(isinstance(r[k], float) for r in s.rows
               for k in ("estimate", "stderr", "z", "pvalue", "lower", "upper"))
    d = strict_json(logit_fixed.summary().to_dict())
    assert d["stats"]["nobs"] == 200.0 and d["params"]["beta[2] (fixed)"]["stderr"] is None
    assert d["params"]["beta[0]"]["stderr"] == float(logit_fixed.stderr["beta"][0])
    assert any("held fixed" in n for n in d["notes"])
    df = s.to_dataframe()
    assert list(df.columns) == ["estimate", "stderr", "z", "pvalue", "ci_lower", "ci_upper"]
    assert_allclose(df["pvalue"], [res.pvalues["mu"], res.pvalues["sigma"]], rtol=1e-12)


# ---------------------------------------------------------------- other results


def test_lrt_profile_delta_to_dict_and_dataframe(res, logit_fixed, logit_full):
    test = jm.lrt(logit_fixed, logit_full)
    d = strict_json(test.to_dict())
    assert d["statistic"] == test.statistic and d["df"] == 1 and d["pvalue"] == test.pvalue
    assert d["nested"] == "checked" and d["boundary"] == [] and d["pvalue_boundary"] is None
    assert_allclose(d["pvalue"], st.chi2.sf(d["statistic"], 1), rtol=1e-8)
    row = test.to_dataframe()
    assert len(row) == 1 and row["statistic"].iloc[0] == test.statistic

    prof = res.profile("sigma", n_points=7)
    d = strict_json(prof.to_dict())
    assert d["name"] == "sigma" and (d["lower_status"], d["upper_status"]) == ("crossed",) * 2
    assert d["lower"] == prof.lower and d["upper"] == prof.upper
    assert d["values"] == np.asarray(prof.values).tolist()
    assert len(d["deviance"]) == len(d["converged"]) == len(prof.values)
    df = prof.to_dataframe()
    assert list(df.columns) == ["value", "loglik", "deviance", "converged"]
    assert_allclose(df["deviance"], 2 * (prof.max_loglik - np.asarray(prof.loglik)), rtol=1e-12)

    ratio = res.delta(lambda p: jnp.stack([p["mu"] / p["sigma"], p["mu"]]))
    d = strict_json(ratio.to_dict())
    assert d["names"] == ["fn[0]", "fn[1]"] and d["shape"] == [2]
    assert d["estimates"]["fn[1]"]["stderr"] == float(res.stderr["mu"])
    df = ratio.to_dataframe()
    assert_allclose(df["ci_upper"], np.ravel(ratio.upper), rtol=1e-15)
    assert_allclose(df["pvalue"], 2 * st.norm.sf(np.abs(ratio.estimate / ratio.stderr)),
                    rtol=1e-9)


def test_bootstrap_result_to_dict_and_dataframe():
    draws = np.array([[1.0, 2.0], [1.5, 2.5], [0.5, 3.0]])
    boot = BootstrapResult(("mu", "sigma"), np.array([1.0, 2.5]), draws.std(0, ddof=1),
                           np.array([0.55, 2.05]), np.array([1.45, 2.95]),
                           draws.mean(0) - [1.0, 2.5], 0.9, 4, 1, (("iteration limit", 1),),
                           draws, None, None)
    d = strict_json(boot.to_dict())
    assert d["names"] == ["mu", "sigma"] and d["failures"] == {"iteration limit": 1}
    assert d["estimates"]["sigma"] == {"estimate": 2.5, "bias": 0.0, "stderr": 0.5,
                                       "ci_lower": 2.05, "ci_upper": 2.95}
    assert "draws" not in d and boot.to_dict(draws=True)["draws"] == draws.tolist()
    df = boot.to_dataframe()
    assert list(df.columns) == ["estimate", "bias", "stderr", "ci_lower", "ci_upper"]
    assert_allclose(df.loc["mu"].to_numpy(float), [1.0, 0.0, 0.5, 0.55, 1.45])


def test_distribution_fit_and_comparison_are_strict_json(x):
    table = jm.compare_distributions(np.abs(x) + 0.1, [dist.Exponential])
    d = strict_json(table.to_dict())
    assert d["ranking"][0]["gof_pvalue"] is None                   # KS: NaN p-value
    fit = table["Exponential"]
    f = d["fits"]["Exponential"]
    assert f["params"]["rate"] == fit.params["rate"] and f["status_label"] == "converged"
    assert_allclose(f["estimates"]["rate"]["pvalue"],
                    2 * st.norm.sf(fit.params["rate"] / fit.stderr["rate"]), rtol=1e-9)
    assert table.to_dataframe().loc["Exponential", "aic"] == fit.aic
    held = jm.fit_distribution(dist.Normal, x, fixed={"loc": 1.0, "scale": 2.0})
    d = strict_json(held.to_dict())
    assert d["stderr"] == {"loc": None, "scale": None} and d["method"] == "none"
    assert d["estimates"]["scale"]["fixed"] is True
    assert held.to_dataframe()["fixed"].tolist() == [True, True]


# ---------------------------------------------------------------- batches


def test_batch_to_dict_dataframe_and_pvalues(sim):
    xs, bres = sim
    d = strict_json(bres.to_dict())
    assert d["n_fits"] == B_SIM and d["n_converged"] == bres.n_converged == B_SIM
    assert d["params"]["mu"] == np.asarray(bres.params["mu"]).tolist()
    assert np.array(d["cov"]).shape == (B_SIM, 2, 2) and len(d["status_label"]) == B_SIM
    assert d["converged"] == [True] * B_SIM and d["loglik"][3] == float(bres.loglik[3])
    df = bres.to_dataframe()
    assert df.index.name == "fit" and len(df) == B_SIM
    assert list(df.columns) == ["mu", "sigma", "se_mu", "se_sigma", "converged", "status",
                                "status_label", "loglik", "n_iter", "grad_norm"]
    assert_allclose(df["sigma"], xs.std(axis=1), rtol=1e-8)
    assert_allclose(df["se_sigma"], xs.std(axis=1) / np.sqrt(2 * N_SIM), rtol=1e-6)
    assert_array_equal(df["n_iter"], np.asarray(bres.n_iter))
    z = np.asarray(bres.params["mu"]) / np.asarray(bres.stderr["mu"])
    assert bres.pvalues["mu"].shape == (B_SIM,)
    assert_allclose(bres.zvalues["mu"], z, rtol=1e-13)
    assert_allclose(bres.pvalues["mu"], 2 * st.norm.sf(np.abs(z)), rtol=1e-9)
    assert_allclose(bres[5].pvalues["sigma"], bres.pvalues["sigma"][5], rtol=1e-15)
    summary = strict_json(bres.summary().to_dict())
    assert summary["status"] == {"converged": B_SIM}
    assert_allclose(summary["params"]["sigma"]["sd"], np.std(xs.std(axis=1), ddof=1), rtol=1e-7)
    assert_allclose(bres.summary().to_dataframe().loc["mu", "mean"], xs.mean(), rtol=1e-9)


def test_simulation_summary_against_numpy_and_theory(sim):
    xs, bres = sim
    n, q = N_SIM, st.norm.ppf(0.975)
    mu_hat, sig_hat = xs.mean(axis=1), xs.std(axis=1)                # closed-form MLEs
    se = {"mu": sig_hat / np.sqrt(n), "sigma": sig_hat / np.sqrt(2 * n)}
    est, true = {"mu": mu_hat, "sigma": sig_hat}, {"mu": MU, "sigma": SIGMA}
    ss = bres.simulation_summary({"mu": MU, "sigma": SIGMA}, level=0.95)
    for name in ("mu", "sigma"):
        r, e, s, t = ss[name], est[name], se[name], true[name]
        cover = np.mean(np.abs(e - t) <= q * s)
        assert r["n"] == r["n_se"] == B_SIM and r["true"] == t
        assert_allclose([r["mean"], r["bias"], r["sd"], r["mean_se"], r["rmse"]],
                        [e.mean(), e.mean() - t, e.std(ddof=1), s.mean(),
                         np.sqrt(np.mean((e - t) ** 2))], rtol=1e-6)
        assert_allclose(r["se_sd_ratio"], s.mean() / e.std(ddof=1), rtol=1e-6)
        assert_allclose(r["bias_mcse"], e.std(ddof=1) / np.sqrt(B_SIM), rtol=1e-6)
        assert r["coverage"] == cover
        assert_allclose(r["coverage_mcse"], np.sqrt(cover * (1 - cover) / B_SIM), rtol=1e-12)
    # theory: E[σ̂²] = (n−1)/n σ², E[σ̂] = c4·√((n−1)/n)·σ, and the coverage of μ is
    # P(|t_{n−1}| ≤ z·√((n−1)/n))
    var_mc = np.sqrt(2 * (n - 1)) / n * SIGMA ** 2 / np.sqrt(B_SIM)   # MC SE of mean σ̂²
    assert abs(np.mean(sig_hat ** 2) - (n - 1) / n * SIGMA ** 2) < 3 * var_mc
    c4 = math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))
    exact_bias = SIGMA * (c4 * math.sqrt((n - 1) / n) - 1)
    assert abs(ss["sigma"]["bias"] - exact_bias) < 3 * ss["sigma"]["bias_mcse"]
    assert ss["sigma"]["bias"] < 0 < ss["sigma"]["bias"] + 6 * ss["sigma"]["bias_mcse"]
    exact_cover = 1 - 2 * st.t.sf(q * math.sqrt((n - 1) / n), n - 1)
    assert abs(ss["mu"]["coverage"] - exact_cover) < 3 * ss["mu"]["coverage_mcse"]
    assert abs(ss["sigma"]["coverage"] - 0.95) < 0.05
    # the same from array leaves; a partial dict leaves the others out
    assert bres.simulation_summary({"sigma": np.float32(SIGMA), "mu": jnp.asarray(MU)}).rows \
        == ss.rows
    only = bres.simulation_summary({"sigma": SIGMA})
    assert [r["name"] for r in only.rows] == ["sigma"] and only.rows[0] == ss.rows[1]
    d = strict_json(ss.to_dict())
    assert d["n_fits"] == d["n_converged"] == B_SIM
    assert d["params"]["mu"]["coverage"] == ss["mu"]["coverage"]
    df = ss.to_dataframe()
    assert list(df.index) == ["mu", "sigma"] and df.loc["sigma", "bias"] == ss["sigma"]["bias"]
    text = str(ss)
    assert "400 fits, 400 converged" in text and "95% Wald coverage" in text
    assert "sigma" in text and "SE/SD" in text
    with pytest.raises(ValueError, match=r"\['tau'\].*not parameters"):
        bres.simulation_summary({"mu": MU, "tau": 1.0})
    with pytest.raises(ValueError, match="level must be in"):
        bres.simulation_summary({"mu": MU}, level=95)


def test_simulation_summary_uses_converged_fits_only(sim):
    xs, bres = sim
    half = bres[:10]
    fits = dataclasses.replace(half.fits, converged=np.arange(10) < 7)   # pretend 3 failed
    ss = jm.BatchFitResult.of(fits).simulation_summary({"mu": MU})
    assert ss.n_fits == 10 and ss.n_converged == 7 and ss["mu"]["n"] == 7
    assert_allclose(ss["mu"]["mean"], xs[:7].mean(), rtol=1e-9)


# ---------------------------------------------------------------- pandas is optional


def test_to_dataframe_without_pandas_is_a_clear_import_error(res, sim, monkeypatch):
    ss = sim[1].simulation_summary({"mu": MU})
    monkeypatch.setitem(sys.modules, "pandas", None)
    for call in (res.to_dataframe, sim[1].to_dataframe, ss.to_dataframe,
                 res.summary().to_dataframe):
        with pytest.raises(ImportError, match="pip install pandas"):
            call()
    assert strict_json(res.to_dict())["param_names"] == ["mu", "sigma"]   # to_dict needs none

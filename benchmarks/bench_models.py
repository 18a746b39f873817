"""NumPyro models as their authors write them, fitted unedited by ``jm.fit_model``: the
corpus table of issue 16.

    python3 benchmarks/bench_models.py [--quick] [--only KEY[,KEY]] [--timeout 120]
        [--md-out FILE]

The models are not copied here: they are the ones the tests already fit and check.

* ``tests/test_model_corpus.py`` (imported by path, ``tests/`` on ``sys.path`` for its
  ``from shared import ...``): each test function runs as it is, and its own assertions
  decide "passed": agreement with scipy (BFGS then Newton, float64) on NumPyro's own
  densities (``scipy_mode``: ``log_density`` for MAP, the observed sites of
  ``log_likelihood`` for MLE). The test's ``timed(name, fit)`` records the first fit and an
  identical warm refit in ``TIMES``; ``assert_agrees`` records, before it asserts, the
  largest |θ̂ − θ̂_scipy| / SE over every estimate and |objective − scipy's objective| in
  ``AGREEMENT``. The corpus module also defines ``ucbadmit_glmm`` (NumPyro's
  ``examples/ucbadmit.py`` GLMM) that no test fits: it is fitted here and checked the same
  way (``scipy_mode`` and the test module's ``AGREE`` / ``VALUE_ATOL`` tolerances).
* models of issue 16 that other tests define: ``tests/test_contract.py`` (centred eight
  schools by MAP and a Dirichlet(0.5) mixture by MAP, where no maximum exists: the test
  asserts that the fit says so, so "flagged" with its status is the correct outcome),
  ``tests/test_model.py`` (a model with a ``numpyro.param`` site, masks, ``obs_mask``,
  ``factor`` and ``scale``; a centred hierarchical model; a Dirichlet mixture by MLE).
  The test runs as it is; ``jaxmle.fit_model`` is wrapped (in the child process only) to
  time its first call and keep its arguments, refitted once after the test for the warm
  time, and, where the model's latent sites are all parameters, checked with the corpus'
  ``scipy_mode``.
* ``examples/numpyro_model.py``'s ``claims_model`` (a Poisson regression with an exposure
  offset), MLE and MAP, each in its own process, checked with ``scipy_mode``.
* models the issue lists that exist nowhere in the repository are listed as "not in the
  corpus" (no model is written for this benchmark).

Every row runs in its own FRESH interpreter (this file re-invoked with ``--child KEY``)
with ``JAXMLE_CACHE_DIR`` set to a new, empty temporary directory (deleted after), so
"first fit" is the first ``fit_model`` call of that model in a new process with an empty
persistent compilation cache: tracing, site discovery, compilation and the fit, estimates
and SEs included, the imports not (jax, jaxmle, numpyro and the test module are imported
before). "warm refit" is the same call again right after. "child" is the child's whole
wall time (interpreter start, imports, the test with its scipy reference, exit). A child
that runs longer than ``--timeout`` seconds (default 120) is killed and reported so.
A warm-up child imports jax, jaxmle, numpyro and scipy first (.pyc, OS file cache).

``--quick``: three rows (divorce MAP, the zero-inflated Poisson MLE, the centred
eight-schools MAP that must be flagged). ``--only``: a comma list of row keys. The exit
status is 1 if a test failed or a child crashed or timed out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402  (numpy-only module)

TESTS_DIR = os.path.join(C.REPO_ROOT, "tests")
CORPUS = "tests/test_model_corpus.py"
EXAMPLES = "tests/test_model_corpus_examples.py"

def _example(model, follows, method, test, times, check=None):
    """A row run by a test of ``tests/test_model_corpus_examples.py`` (its ``timed`` name);
    a ``check_…`` function or a parametrization pytest does not run is run here only."""
    here = test.startswith("check_") or test.endswith("[ar2_for_loop]")
    row = dict(model=model, follows=follows, method=method, expect="converged",
               src=f"`{EXAMPLES}`" + (" (run here only: the suite's time)" if here else ""),
               run=("corpus", test, times, "test_model_corpus_examples"))
    return row if check is None else dict(row, check=check)


# key: (model, NumPyro example it follows, method, where it is defined / how it runs, expect)
# runner: ("corpus", test function, TIMES name) | ("test", module, test function, scipy kind)
#       | ("fit", builder name)
ROWS = {
    "divorce": dict(
        model="divorce regression (marriage, age)", follows="tutorial *Bayesian Regression* (WaffleDivorce)",
        method="MAP + `laplace()`", src=f"`{CORPUS}`", expect="converged",
        run=("corpus", "test_divorce_regression_map_and_laplace", "divorce (MAP)")),
    "schools_nc": dict(
        model="eight schools, non-centred (`deterministic` θ)", follows="README eight schools (non-centred)",
        method="MAP", src=f"`{CORPUS}`", expect="converged",
        run=("corpus", "test_eight_schools_noncentred_map", "eight schools, non-centred (MAP)")),
    "schools_random": dict(
        model="eight schools, centred", follows="README eight schools",
        method='MAP, `random=["theta"]`', src=f"`{CORPUS}`", expect="converged (τ̂ = 0 on its boundary)",
        run=("corpus", "test_eight_schools_centred_with_random_theta_reports_tau_on_its_boundary",
             "eight schools, centred, random=theta (MAP)")),
    "ucb_glm": dict(
        model="UCBadmit GLM, boolean `male`, `np.unique(dept)`", follows="`examples/ucbadmit.py` data (GLM)",
        method="MAP", src=f"`{CORPUS}`", expect="converged",
        run=("corpus", "test_ucbadmit_with_boolean_male_and_np_unique", "UCBadmit GLM, bool male (MAP)")),
    "ucb_glmm": dict(
        model="UCBadmit GLMM (LKJCholesky, non-centred z)", follows="`examples/ucbadmit.py` (`glmm`)",
        method="MAP", src=f"`{CORPUS}` (defined, no test fits it)", expect="?",
        run=("fit", "ucbadmit_glmm")),
    "titanic": dict(
        model="Titanic, NaN ages imputed (`np.isnan`, `.mask(False)`)", follows="tutorial *Bayesian Imputation*",
        method="MAP", src=f"`{CORPUS}`", expect="converged",
        run=("corpus", "test_titanic_imputation_with_nan_ages_and_a_normal_prior_on_a_scale",
             "Titanic imputation, NaN ages (MAP)")),
    "titanic_nan": dict(
        model="Titanic without imputation (NaN reaches the likelihood)", follows="tutorial *Bayesian Imputation*",
        method="MAP", src=f"`{CORPUS}`", expect="clear error",
        run=("corpus", "test_nan_that_reaches_the_likelihood_is_a_clear_error", None)),
    "zip": dict(
        model="zero-inflated Poisson regression", follows="`examples/zero_inflated_poisson.py`",
        method="MLE", src=f"`{CORPUS}`", expect="converged",
        run=("corpus", "test_zero_inflated_poisson_mle", "zero-inflated Poisson (MLE)")),
    "deterministic": dict(
        model="regression with `deterministic` sites, Normal(0, 1) priors", follows="tutorial *Bayesian Regression*",
        method="MAP", src=f"`{CORPUS}`", expect="converged",
        run=("corpus", "test_deterministic_sites_with_integer_priors_are_reported",
             "regression with deterministic sites, Normal(0, 1) (MAP)")),
    "schools_map": dict(
        model="eight schools, centred", follows="README eight schools",
        method="MAP", src="`tests/test_contract.py`", expect="flagged",
        run=("test", "test_contract", "test_centred_eight_schools_map_is_not_a_maximum", None)),
    "dirichlet": dict(
        model="Gaussian mixture, Dirichlet(0.5) weights", follows="tutorial *Gaussian Mixture Model*",
        method="MAP", src="`tests/test_contract.py`", expect="flagged",
        run=("test", "test_contract", "test_mixture_map_with_a_weight_at_its_edge_is_not_a_maximum", None)),
    "param_site": dict(
        model="`numpyro.param` scale, mask, `obs_mask`, `factor`, `scale`", follows="(handlers of the SVI examples)",
        method="MAP", src="`tests/test_model.py` (`messy`)", expect="converged",
        check="no scipy_mode (`obs_mask`'s latent `z_unobserved` is no parameter); the test: a hand-written "
              "log posterior has ∇ = 0 (atol 1e-7) there, its inverse Hessian = cov (rtol 1e-8)",
        run=("test", "test_model", "test_plates_masks_obs_mask_factor_scale_and_param_sites_are_honoured",
             None)),
    "hierarchical": dict(
        model="centred hierarchical Normal, LogNormal(0, 0.5) τ prior", follows="(partial pooling, as eight schools)",
        method="MAP", src="`tests/test_model.py` (`hierarchical`)", expect="converged",
        run=("test", "test_model", "test_hierarchical_map_is_the_mode_of_numpyros_log_density", "map")),
    "mixture_mle": dict(
        model="Gaussian mixture, simplex weights (data as a list)", follows="tutorial *Gaussian Mixture Model*",
        method="MLE", src="`tests/test_model.py` (`mixture`)", expect="converged",
        run=("test", "test_model", "test_mixture_mle_with_a_simplex_parameter_equals_scipy", "mle")),
    "claims_mle": dict(
        model="Poisson claims with exposure offset, `deterministic` rate ratios", follows="(GLM with offset)",
        method="MLE", src="`examples/numpyro_model.py`", expect="converged",
        run=("fit", "claims_mle")),
    "claims_map": dict(
        model="Poisson claims with exposure offset, `deterministic` rate ratios", follows="(GLM with offset)",
        method="MAP", src="`examples/numpyro_model.py`", expect="converged",
        run=("fit", "claims_map")),
    "baseball_pooled": _example(
        "baseball, fully pooled (Uniform prior)", "`examples/baseball.py` (`fully_pooled`)", "MAP",
        "test_baseball_pooled_and_unpooled_are_the_batting_averages", "baseball, fully pooled (MAP)"),
    "baseball_unpooled": _example(
        "baseball, not pooled (18 Uniform priors)", "`examples/baseball.py` (`not_pooled`)", "MAP",
        "test_baseball_pooled_and_unpooled_are_the_batting_averages", "baseball, not pooled (MAP)",
        check="closed form (batting averages), asserted"),
    "baseball_partial_joint": dict(
        model="baseball, partial pooling (Beta, κ ~ Pareto) jointly", follows="`examples/baseball.py` "
        "(`partially_pooled`)", method="MAP", src=f"`{EXAMPLES}` (run here only: the suite's time)",
        expect="flagged",
        run=("corpus", "check_baseball_partial_pooling_jointly_has_no_maximum_and_is_named", None,
             "test_model_corpus_examples")),
    "baseball_partial": _example(
        "baseball, partial pooling (Beta), φ ∈ (0, 1) integrated out",
        "`examples/baseball.py` (`partially_pooled`)", 'MAP, `random=["phi"]`',
        "test_baseball_partial_pooling_with_the_abilities_integrated_out",
        "baseball, partial pooling, random=phi (MAP)"),
    "baseball_logit": dict(
        model="baseball, logit partial pooling, α integrated out",
        follows="`examples/baseball.py` (`partially_pooled_with_logit`)", method='MAP, `random=["alpha"]`',
        src=f"`{EXAMPLES}`", expect="converged", run=("fit", "baseball_logit")),
    "measurement_error": _example(
        "measurement error, true rates integrated out", "tutorial *Bayesian Regression* (`model_se`)",
        'MAP, `random=["divorce_rate"]`',
        "test_measurement_error_with_the_true_rates_integrated_out_is_exact",
        "measurement error, random=divorce_rate (MAP)"),
    "ar2_scan": _example(
        "AR(2) with `scan` + `condition`", "`examples/ar2.py` (`ar2_scan`)", "MLE, MAP",
        "test_ar2_mle_is_least_squares_and_its_map_numpyros_mode[ar2_scan]", "AR(2), scan (MLE)",
        check="MLE = least squares (rtol 1e-8), asserted"),
    "ar2_loop": _example(
        "AR(2) as a Python loop (60 observed sites)", "`examples/ar2.py` (`ar2_for_loop`)", "MLE",
        "test_ar2_mle_is_least_squares_and_its_map_numpyros_mode[ar2_for_loop]", "AR(2), loop (MLE)",
        check="least squares (rtol 1e-8), asserted"),
    "sv": _example(
        "stochastic volatility, `GaussianRandomWalk` integrated out (banded)",
        "`examples/stochastic_volatility.py`", 'MAP, `random=["s"]`',
        "check_stochastic_volatility",
        "stochastic volatility, random=s (MAP)"),
    "ordinal": _example(
        "ordinal regression, `ImproperUniform` ordered cut-points",
        "tutorial *Ordinal Regression* (model 1)", "MLE",
        "test_ordinal_regression_equals_statsmodels_and_its_induced_dirichlet_prior",
        "ordinal regression, ImproperUniform cut-points (MLE)",
        check="statsmodels `OrderedModel` (rtol 1e-6), asserted"),
    "ordinal_dirichlet": _example(
        "ordinal regression, induced-Dirichlet cut-points", "tutorial *Ordinal Regression* (model 2)",
        "MAP", "test_ordinal_regression_equals_statsmodels_and_its_induced_dirichlet_prior",
        "ordinal regression, induced Dirichlet prior (MAP)"),
    "param_coin": _example(
        "`numpyro.param` coin fairness on the unit interval", "SVI tutorial (coin)", "MLE",
        "test_param_sites_are_point_parameters_with_their_constraints",
        "coin, numpyro.param fairness (MLE)", check="closed form (sample fraction), asserted"),
    "param_regression": _example(
        "`numpyro.param` sites (value and init function) with a `sample` site",
        "(SVI-style parameters)", "MAP", "test_param_sites_are_point_parameters_with_their_constraints",
        "regression with param sites and a prior site (MAP)"),
    "proportion": _example(
        "proportion test, `MultivariateNormal` prior", "`examples/proportion_test.py`",
        "MAP (and MLE = statsmodels)", "test_proportion_test_map_and_mle", "proportion test (MAP)"),
}
QUICK = ("divorce", "zip", "schools_map")

# Issue 16's models that no test, example or benchmark in the repository defines (none now).
NOT_IN_CORPUS: list = []


# ---------------------------------------------------------------------------
# Modules, imported by path (the tests keep using them unchanged)
# ---------------------------------------------------------------------------

def load_by_path(name, path):
    if TESTS_DIR not in sys.path:
        sys.path.insert(0, TESTS_DIR)           # test modules do `from shared import ...`
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def corpus_module():
    return load_by_path("test_model_corpus", os.path.join(TESTS_DIR, "test_model_corpus.py"))


def test_module(name):
    return load_by_path(name, os.path.join(TESTS_DIR, name + ".py"))


def example_module():
    return load_by_path("numpyro_model_example", os.path.join(C.REPO_ROOT, "examples", "numpyro_model.py"))


def builders():
    """The direct fits: (model, args, kwargs, method) from the modules that define them."""
    corpus = corpus_module()

    def claims(method):
        ex = example_module()
        x, exposure, y = ex.simulate()
        return ex.claims_model, (x, exposure), {"y": y}, method

    def examples(name, method, **kw):
        ex = load_by_path("test_model_corpus_examples", os.path.join(TESTS_DIR, "test_model_corpus_examples.py"))
        return getattr(ex, name), (ex.AT_BATS,), {"hits": ex.HITS, **kw}, method

    return {
        "baseball_logit": lambda: examples("partially_pooled_with_logit", "map", random=["alpha"]),
        "ucbadmit_glmm": lambda: (corpus.ucbadmit_glmm, (corpus.DEPT, corpus.MALE, corpus.APPLICATIONS),
                                  {"admit": corpus.ADMIT}, "map"),
        "claims_mle": lambda: claims("mle"),
        "claims_map": lambda: claims("map"),
    }


# ---------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------

class FitRecorder:
    """Wraps ``jaxmle.fit_model`` (in this child process only): the first call's time,
    arguments and result."""

    def __init__(self, jaxmle):
        self.jaxmle, self.real, self.calls = jaxmle, jaxmle.fit_model, []

    def __enter__(self):
        def fit_model(model, *args, **kwargs):
            t0 = time.perf_counter()
            res = self.real(model, *args, **kwargs)
            self.calls.append(dict(seconds=time.perf_counter() - t0, model=model, args=args,
                                   kwargs=kwargs, res=res))
            return res

        self.jaxmle.fit_model = fit_model
        return self

    def __exit__(self, *exc):
        self.jaxmle.fit_model = self.real
        return False

    def warm_refit(self):
        first = self.calls[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            self.real(first["model"], *first["args"], **first["kwargs"])
            return time.perf_counter() - t0


def outcome(res):
    from jaxmle.core.typing import STATUS_LABELS, Status

    status = int(res.status)
    try:
        label = STATUS_LABELS[Status(status)]
    except (ValueError, KeyError):
        label = str(status)
    return {"converged": bool(res.converged), "status": status, "status_label": label}


def scipy_check(corpus, model, args, kwargs, res, kind):
    """(max |θ̂ − θ̂_scipy| / SE, |objective − scipy's|) by the corpus' scipy_mode, or an error."""
    args = tuple(np.asarray(a) if isinstance(a, list) else a for a in args)   # NumPyro's
    try:                                        # log_likelihood takes no list of numbers
        ref, value = corpus.scipy_mode(model, args, kwargs, res, kind)
    except Exception as e:      # a model scipy_mode cannot evaluate (a latent site held out)
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    mine = float(res.logpost) if kind == "map" else float(res.loglik)
    return corpus.agreement(res, ref, -value, mine), None


def laplace_check(corpus, model, args, kwargs, res):
    """Agreement with the dense Laplace reference of ``tests/test_model_corpus_examples.py``."""
    ex = test_module("test_model_corpus_examples")
    (site,) = kwargs["random"]
    try:
        ref, value, _ = ex.laplace_reference(model, args, {k: v for k, v in kwargs.items()
                                                            if k != "random"}, res, site)
    except Exception as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return corpus.agreement(res, ref, value, float(res.logpost)), None


def child_main(key):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxmle

    corpus = corpus_module()
    row = ROWS[key]
    kind = row["run"][0]
    rec = {"key": key, "passed": None, "error": None}
    if kind == "corpus":
        _, test_name, times_name, *where = row["run"]
        mod = test_module(where[0]) if where else corpus
        test_name, _, arg = test_name.partition("[")     # "test[name]": a parametrized test
        with FitRecorder(jaxmle) as rc:
            try:
                getattr(mod, test_name)(*([getattr(mod, arg.rstrip("]"))] if arg else []))
                rec["passed"] = True
            except BaseException as e:
                rec["passed"], rec["error"] = False, f"{type(e).__name__}: {str(e)[:400]}"
                rec["traceback"] = traceback.format_exc()[-3000:]
        if times_name in corpus.TIMES:
            rec["first"], rec["warm"] = corpus.TIMES[times_name]
        if times_name in corpus.AGREEMENT:
            rec["agreement"] = list(corpus.AGREEMENT[times_name])
        if rc.calls:
            rec.update(outcome(rc.calls[0]["res"]))
    elif kind == "test":
        _, module, test_name, scipy_kind = row["run"]
        mod = test_module(module)
        with FitRecorder(jaxmle) as rc:
            try:
                getattr(mod, test_name)()
                rec["passed"] = True
            except BaseException as e:
                rec["passed"], rec["error"] = False, f"{type(e).__name__}: {str(e)[:400]}"
                rec["traceback"] = traceback.format_exc()[-3000:]
        if rc.calls:
            first = rc.calls[0]
            rec["first"] = first["seconds"]
            rec.update(outcome(first["res"]))
            rec["warm"] = rc.warm_refit()
            if scipy_kind:
                ag, why = scipy_check(corpus, first["model"], first["args"],
                                      {k: v for k, v in first["kwargs"].items() if k not in ("method", "random")},
                                      first["res"], scipy_kind)
                rec["agreement"], rec["agreement_error"] = ag, why
    else:                                           # a direct fit, checked here
        model, args, kwargs, method = builders()[row["run"][1]]()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                res = jaxmle.fit_model(model, *args, method=method, **kwargs)
                t1 = time.perf_counter()
                jaxmle.fit_model(model, *args, method=method, **kwargs)
                rec["first"], rec["warm"] = t1 - t0, time.perf_counter() - t1
            rec["warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught})
            rec.update(outcome(res))
            if row["expect"] == "flagged":      # no maximum: the fit must say so
                rec["passed"] = not bool(res.converged)
            else:
                if "random" in kwargs:          # the examples' dense Laplace reference
                    ag, why = laplace_check(corpus, model, args, kwargs, res)
                else:
                    ag, why = scipy_check(corpus, model, args, kwargs, res, method)
                rec["agreement"], rec["agreement_error"] = ag, why
                rec["passed"] = bool(res.converged) and ag is not None and \
                    ag[0] <= corpus.AGREE and ag[1] <= corpus.VALUE_ATOL
        except BaseException as e:
            rec["passed"], rec["error"] = False, f"{type(e).__name__}: {str(e)[:400]}"
            rec["traceback"] = traceback.format_exc()[-3000:]
    print("@@RESULT " + json.dumps(rec, default=float), flush=True)


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------

def loadavg():
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "?"


def run_child(key, timeout):
    cache = tempfile.mkdtemp(prefix="jaxmle-bench-models-")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", key]
    t0 = C.now()
    try:
        r = subprocess.run(cmd, cwd=C.REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                           env=C.child_env({"JAXMLE_CACHE_DIR": cache}))
    except subprocess.TimeoutExpired:
        return {"key": key, "passed": False, "error": f"timed out after {timeout:.0f} s", "timeout": True,
                "process_wall": C.now() - t0}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    wall = C.now() - t0
    rec, tail = C.child_record(r)
    if rec is None:
        C.log(f"child {key} crashed (rc={r.returncode}):\n{r.stderr[-3000:]}")
        return {"key": key, "passed": False, "error": f"child crashed: {tail}", "process_wall": wall}
    if rec.get("traceback"):
        C.log(f"child {key}: {rec['traceback']}")
    rec["process_wall"] = wall
    return rec


def fmt_t(x):
    t = C.fmt_s(x)
    return t if t == "–" or t.endswith("s") else t + " s"


def outcome_cell(row, rec):
    if rec.get("timeout"):
        return f"**{rec['error']}**"
    if "converged" not in rec:
        if row["expect"] == "clear error" and rec.get("passed"):
            return "clear `ValueError` before compiling (expected)"
        return f"**error**: {rec.get('error') or 'no fit'}"
    if rec["converged"]:
        return "converged"
    flagged = f"flagged (status {rec['status']}: {rec['status_label']})"
    return f"no maximum, {flagged}" if row["expect"] == "flagged" else f"**{flagged}**"


def agreement_cell(row, rec):
    ag = rec.get("agreement")
    if ag:
        return f"{C.fmt_err(ag[0])} SE, Δobj {C.fmt_err(ag[1])}"
    if row["expect"] == "flagged":
        return "– (no maximum)"
    if row["expect"].startswith("converged (τ̂"):
        return "closed form at τ̂ = 0 (μ̂ rtol 1e-8, SE 1e-6), asserted"
    if row.get("check"):
        return row["check"]
    if rec.get("agreement_error"):
        return f"scipy_mode n/a ({rec['agreement_error'][:60]}); the test's own check"
    return "–"


def test_cell(row, rec):
    kind = row["run"][0]
    if rec.get("passed"):
        return "passed" if kind != "fit" else "passed (benchmark check)"
    return f"**FAILED**: {(rec.get('error') or 'outside tolerance')[:160]}".replace("|", "\\|").replace("\n", " ")


def table(recs):
    rows = []
    for key, rec in recs.items():
        row = ROWS[key]
        rows.append([row["model"], row["follows"], row["method"], row["src"], "yes", outcome_cell(row, rec),
                     agreement_cell(row, rec), test_cell(row, rec), fmt_t(rec.get("first")),
                     fmt_t(rec.get("warm")), fmt_t(rec.get("process_wall"))])
    for name, follows, where in NOT_IN_CORPUS:
        rows.append([name, follows, "–", where, "–", "not in the corpus", "–", "–", "–", "–", "–"])
    return C.md_table(["model", "NumPyro example it follows", "method", "defined in", "runs unedited", "outcome",
                       "agreement with scipy (max \\|Δθ\\|/SE, Δobjective)", "test", "first fit (fresh process, "
                       "empty cache)", "warm refit", "child"], rows)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"three rows: {','.join(QUICK)}")
    ap.add_argument("--only", default=None, help=f"comma list of {','.join(ROWS)}")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per child (default 120)")
    ap.add_argument("--md-out", default=None, help="also write the markdown here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.only = [k for k in a.only.split(",") if k] if a.only else list(QUICK if a.quick else ROWS)
    bad = [k for k in a.only if k not in ROWS]
    if bad:
        ap.error(f"unknown row(s) {bad}; choose from {list(ROWS)}")
    return a


def main(argv=None):
    args = parse(argv)
    if args.child is not None:
        child_main(args.child)
        return 0
    t_start = C.now()
    load = [("start", loadavg())]
    C.log("warm-up child (imports jax, jaxmle, numpyro, scipy: .pyc and OS file cache)")
    C.warm_up_child("jax, jaxmle, numpyro.infer.util, scipy.optimize", "jaxmle-bench-models-warmup-")
    recs = {}
    for key in args.only:
        C.log(f"== {key} (load {loadavg()})")
        recs[key] = run_child(key, args.timeout)
        r = recs[key]
        C.log(f"   passed={r.get('passed')} first={r.get('first')} warm={r.get('warm')} "
              f"agreement={r.get('agreement')} status={r.get('status_label')} wall={r['process_wall']:.1f}s"
              + (f" error={r['error']}" if r.get("error") else ""))
    load.append(("end", loadavg()))
    info = C.machine_info()
    info["load average (1/5/15 min)"] = "; ".join(f"{w}: {v}" for w, v in load)
    info["total wall"] = f"{C.now() - t_start:.0f} s"
    try:
        dirty = subprocess.run(["git", "-C", C.REPO_ROOT, "status", "--porcelain", "--", "jaxmle"],
                               capture_output=True, text=True).stdout.split("\n")
        info["uncommitted jaxmle/ files"] = len([d for d in dirty if d.strip()])
    except Exception:
        pass
    failed = [k for k, r in recs.items() if not r.get("passed")]
    head = C.Section("NumPyro models as written: machine and load", C.machine_info_md(info), [
        "load average is of the whole shared box (2 cores); compare times only at similar load."])
    body = C.Section("NumPyro models fitted unedited by `jm.fit_model`", table(recs), [
        "first fit: the model's first `fit_model` call in a fresh process whose `JAXMLE_CACHE_DIR` is a new "
        "empty directory (tracing, site discovery, compilation, fit, SEs); warm refit: the same call again; "
        "child: the child process's whole wall time (start-up, imports, the test with its scipy reference).",
        "agreement: largest |θ̂ − θ̂_scipy| / SE over every estimate and |objective − scipy's| against scipy "
        "(BFGS + Newton, float64) on NumPyro's own density (`scipy_mode` of the corpus); the corpus tests "
        "assert ≤ 1e-5 SE and ≤ 1e-8.",
        "test: the test function's own assertions (run as written, outside pytest); 'benchmark check' rows "
        "(no test fits them): converged and within the same tolerances.",
    ] + ([f"not passed: {', '.join(failed)}"] if failed else ["every row passed."]))
    C.write_sections(args.md_out, [head, body])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""NIST StRD certified-value tests.

Two groups:

1. Harness checks (no jaxmle needed): the parsed data, the mean formulas and the
   standard-error formula reproduce NIST's certified RSS and standard deviations.
2. jaxmle checks: ``jm.fit`` with ``method="newton"`` on the Gaussian likelihood
   recovers the certified least-squares estimates from NIST's starting values.

Least squares with Gaussian errors is maximum likelihood. We maximise the
concentrated (profile) log-likelihood ``-n/2 * log(RSS(b)/n)`` (sigma profiled
out), whose maximiser is exactly the least-squares estimate. Accuracy is measured
as the log relative error (LRE, ~number of correct significant digits); the usual
bar is LRE >= 6 per parameter.
"""

import functools
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from nist_problems import (  # noqa: E402
    LINEAR_NAMES,
    NLS_NAMES,
    LinearProblem,
    NistProblem,
    canonical,
    concentrated_loglik,
    load_linear,
    load_nls,
    lre,
)

MAX_ITER = 5000  # Bennett5 from Start 1 takes ~900 damped Newton steps; leave margin
LRE_BAR = 6.0
EPS = np.finfo(np.float64).eps

ALL_PROBLEMS = [("nls", n) for n in NLS_NAMES] + [("linear", n) for n in LINEAR_NAMES]
ALL_IDS = [f"{kind}-{name}" for kind, name in ALL_PROBLEMS]


def _load(kind: str, name: str) -> NistProblem | LinearProblem:
    return load_nls(name) if kind == "nls" else load_linear(name)


# ---------------------------------------------------------------------------
# Shared numerics
# ---------------------------------------------------------------------------


def float64_rss_floor(problem, rss: float) -> float:
    """Absolute error of an RSS evaluated in float64 near ``rss``.

    Each residual y - mean carries an absolute rounding error of a few ulps of
    max|y| (10 ulps here), so the computed RSS is uncertain by about
    ``2*sqrt(n*rss)*d + n*d**2`` with ``d = 10*eps*max|y|``. This only matters where the
    RSS is tiny relative to the data: Lanczos1 (1.4e-25) and the exact fits
    Wampler1/2 (0); elsewhere it is far below 1e-8 relative.
    """
    d = 10 * EPS * float(np.max(np.abs(problem.y)))
    return 2 * np.sqrt(problem.n * rss) * d + problem.n * d**2


def certified_point_rss_tolerance(problem) -> tuple[float, float]:
    """(rtol, atol) for the RSS evaluated *at the certified parameter values*.

    The RSS is stationary at the optimum, so rounding the certified values (11
    significant digits for NLS, 15 for linear) moves it only to second order and
    1e-8 relative is ample, except:

    * Lanczos1: the data are generated from the model with (almost) no noise,
      certified RSS 1.4e-25. Rounding the parameters to 11 digits moves each fitted
      value by ~1e-11, giving RSS ~4e-21 at the certified values; 1e-20 absolute.
    * Filip: so ill-conditioned (cond(X) = 1.8e15) that even in exact rational
      arithmetic the RSS at the 15-digit certified betas differs from the certified
      minimum by 6.8e-9 relative (LRE 8.2; 7.9 in float64); 1e-7 relative.
    """
    floor = float64_rss_floor(problem, problem.certified_rss)
    if problem.name == "Lanczos1":
        return 1e-8, max(floor, 1e-20)
    if problem.name == "Filip":
        return 1e-7, floor
    return 1e-8, floor


def gauss_newton_se(J: np.ndarray, rss: float) -> np.ndarray:
    """NIST's standard errors sqrt(RSS/(n-k) * diag((J^T J)^{-1})), via QR of J."""
    n, k = J.shape
    r_inv = np.linalg.inv(np.linalg.qr(J, mode="r"))
    return np.sqrt(rss / (n - k) * np.sum(r_inv**2, axis=1))


@functools.lru_cache(maxsize=None)
def jitted(mean, what: str):
    """The Jacobian (jacfwd) or the Hessian of ``mean`` as one compiled program per problem
    (cached): run op by op they would compile every primitive for every shape."""
    return jax.jit({"jacobian": jax.jacfwd(mean), "hessian": jax.hessian(mean)}[what])


def nls_jacobian(problem: NistProblem, b) -> np.ndarray:
    """Jacobian d mean / d b (n x k) by forward-mode autodiff of the jnp mean."""
    return np.asarray(jitted(problem.mean, "jacobian")(jnp.asarray(b), jnp.asarray(problem.x)))


def assert_lre_at_least(estimate, certified, bar: float, what: str) -> None:
    """Every component must have LRE >= bar (relative error <= 10**-bar).

    ``lre`` uses the absolute error where a certified value is exactly 0 (none of the
    NIST values is; tiny ones such as Pontius b2 = -3.2e-15 or Nelson b2 = 5.6e-9
    are far from 0 relative to their own precision, so relative error is right).
    """
    digits = lre(estimate, certified)
    assert np.all(digits >= bar), (
        f"{what}: LRE {np.round(digits, 2).tolist()} < {bar}\n"
        f"  estimate  {np.asarray(estimate).tolist()}\n  certified {np.asarray(certified).tolist()}"
    )


# ---------------------------------------------------------------------------
# 1. Harness checks (no jaxmle)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NLS_NAMES)
def test_nls_file_parsed(name):
    p = load_nls(name)
    assert p.difficulty in {"Lower", "Average", "Higher"}
    assert p.x.shape[0] == p.y.shape[0] == p.n
    assert p.x.ndim == (2 if name == "Nelson" else 1)
    for arr in (p.start1, p.start2, p.certified_params, p.certified_sd):
        assert arr.shape == (p.k,)
    assert f"b{p.k}" in p.formula and f"b{p.k + 1}" not in p.formula
    assert np.all(np.isfinite(p.x)) and np.all(np.isfinite(p.y))
    assert np.all(p.certified_sd > 0) and p.certified_rss > 0


def test_problem_lists():
    assert len(NLS_NAMES) == 27 and NLS_NAMES == sorted(NLS_NAMES)
    assert LINEAR_NAMES == sorted(
        ["Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley"]
        + [f"Wampler{i}" for i in range(1, 6)]
    )
    assert [load_linear(n).k for n in ("NoInt1", "NoInt2", "Longley", "Filip")] == [1, 1, 7, 11]


@pytest.mark.parametrize(("kind", "name"), ALL_PROBLEMS, ids=ALL_IDS)
def test_certified_rss_matches(kind, name):
    """numpy float64 RSS at the certified values reproduces the certified RSS."""
    p = _load(kind, name)
    rtol, atol = certified_point_rss_tolerance(p)
    np.testing.assert_allclose(p.rss_np(p.certified_params), p.certified_rss, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", NLS_NAMES)
def test_jax_mean_matches_numpy(name):
    """The jnp mean (what jaxmle differentiates) equals the numpy one at both starts."""
    p = load_nls(name)
    for b in (p.start1, p.start2, p.certified_params):
        got = np.asarray(p.mean(jnp.asarray(b), jnp.asarray(p.x)))   # op by op: (jit fuses
        # and rounds differently, e.g. 2e-12 relative at a near-zero Kirby2 value)
        np.testing.assert_allclose(got, p.mean_np(b), rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", NLS_NAMES)
def test_nls_starts_are_finite(name):
    """Both NIST starting values give a finite RSS (overflow happens only mid-solve)."""
    p = load_nls(name)
    assert np.isfinite(p.rss_np(p.start1)) and np.isfinite(p.rss_np(p.start2))


# Certified SDs carry 11 significant digits (linear: 15); (J^T J)^{-1} via QR costs at
# most ~log10(cond J) digits. Observed LREs: NLS >= 9.3 (Thurber), linear >= 12.7
# except Filip (7.4, cond(X) = 1.8e15). Bars: 8, and 7 for Filip.
SD_HARNESS_BAR = {"Filip": 7.0}


@pytest.mark.parametrize(("kind", "name"), ALL_PROBLEMS, ids=ALL_IDS)
def test_certified_sd_matches_gauss_newton(kind, name):
    """sqrt(RSS/(n-k) diag((J^T J)^{-1})) at the certified values gives NIST's SDs.

    This checks the harness (data, formulas, jacfwd of the jnp mean, the SE formula)
    independently of jaxmle. For the exact fits Wampler1/2 both sides are 0.
    """
    p = _load(kind, name)
    J = nls_jacobian(p, p.certified_params) if kind == "nls" else p.X
    certified = p.certified_sd if kind == "nls" else p.certified_se
    se = gauss_newton_se(J, p.certified_rss)
    assert_lre_at_least(se, certified, SD_HARNESS_BAR.get(name, 8.0), f"{name} GN SE")


def test_filip_hessian_is_numerically_singular():
    """Why Filip is excluded from the jaxmle beta-accuracy test (see LINEAR_BETA_BAR).

    Even after the best diagonal (Jacobi) scaling, cond(X^T X) > 1/eps: any method that
    solves with the likelihood Hessian (proportional to X^T X here) has no correct
    digits to offer. numpy's normal equations give LRE ~0; only orthogonal
    factorisation of X itself (QR: LRE 7.9) gets somewhere.
    """
    X = load_linear("Filip").X
    A = X.T @ X
    d = np.sqrt(np.diag(A))
    assert np.linalg.cond(A / np.outer(d, d)) > 1 / EPS


# ---------------------------------------------------------------------------
# 2. jaxmle checks
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jm():
    """jaxmle, imported lazily so the harness checks run without it."""
    import jaxmle

    return jaxmle


@functools.lru_cache(maxsize=None)
def known_scale_loglik(mean):
    """Gaussian log-likelihood with sigma fixed at 1: -RSS(b)/2 (constants dropped).

    Used only for the exact fits Wampler1/2 (certified RSS = 0): there the
    concentrated log-likelihood is unbounded above (-> +inf as RSS -> 0), its
    gradient n*J^T r/RSS blows up near the solution, and an iterate that lands on the
    exact solution gives log(0). With sigma known the maximiser is the same
    least-squares estimate and the problem is well posed.
    """

    def loglik(params, data):
        r = data["y"] - mean(params["b"], data["x"])
        return -0.5 * jnp.sum(r**2)

    return loglik


def linear_mean(b, X):
    """Mean of a linear model; ``data["x"]`` is the design matrix."""
    return X @ b


def _data(problem) -> dict:
    x = problem.X if isinstance(problem, LinearProblem) else problem.x
    return {"x": jnp.asarray(x), "y": jnp.asarray(problem.y)}


def solver_tol(certified, sd, bar: float) -> float:
    """``tol`` for jm.fit such that its stopping rule implies LRE >= ``bar``.

    jaxmle's Newton stops when the Newton decrement is <= tol, i.e. when the remaining
    error is <= tol standard errors. Requiring that to be <= 0.1 * 10**-bar * |b| for
    every parameter gives tol = 0.1 * 10**-bar * min(|b| / SE), capped at jaxmle's
    float64 default 1e-8. That is 1e-8 for all 27 NLS problems (max SE/|b| is 2.4,
    ENSO) and for most linear ones; Wampler3/4/5 (SE/|b| 2.4e3/2.4e5/2.4e7) get
    4e-11/4e-13/4e-15. A fixed tight tol (1e-12) is wrong the other way: the decrement
    cannot get that small in float64 on many problems and the fit hits max_iter.
    """
    sd = np.asarray(sd, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ratio = np.abs(np.asarray(certified, dtype=np.float64)) / sd  # inf where SD = 0
    return float(min(1e-8, 0.1 * 10.0**-bar * np.min(ratio)))


def _fit(jm, loglik, problem, start, tol: float):
    return jm.fit(
        loglik,
        _data(problem),
        init={"b": jnp.asarray(start, dtype=jnp.float64)},
        method="newton",
        max_iter=MAX_ITER,
        tol=tol,
    )


_NLS_FITS: dict = {}


def fit_nls(jm, name: str, start: str):
    """jm.fit of NLS problem ``name`` from ``start`` ("start1"/"start2"), cached."""
    key = (name, start)
    if key not in _NLS_FITS:
        p = load_nls(name)
        tol = solver_tol(p.certified_params, p.certified_sd, LRE_BAR)
        _NLS_FITS[key] = _fit(jm, concentrated_loglik(p.mean), p, p.starts[start], tol)
    return _NLS_FITS[key]


def assert_rss_matches(problem, b) -> None:
    """RSS at the estimate equals the certified RSS to 1e-8 relative (float64 floor).

    For the exact fits (Wampler1/2, certified RSS 0) a relative bar is meaningless;
    there the fitted values must match y as closely as LRE_BAR asks of the betas:
    ||r|| <= 10**-LRE_BAR * ||y||, i.e. RSS <= 10**(-2*LRE_BAR) * sum(y**2).
    """
    rss = problem.rss_np(b)
    if problem.certified_rss == 0.0:
        assert rss <= 10.0 ** (-2 * LRE_BAR) * float(problem.y @ problem.y), rss
        return
    atol = float64_rss_floor(problem, problem.certified_rss)
    np.testing.assert_allclose(rss, problem.certified_rss, rtol=1e-8, atol=atol)


# Solver notes for these tests (measured with reference implementations, see the report
# that accompanied this file): at 53 of the 54 NLS starting points the Hessian of the
# concentrated log-likelihood is NOT negative definite, and a full Newton step lowers
# the log-likelihood at most of them (Rat43 Start 1: the full step overflows exp, -inf).
# Lanczos1-3 attract Newton-type iterations to the saddle manifold b2 == b4 (two
# exponentials merged); MGH10 Start 1 can jump to a plateau where the model underflows to
# 0 and the gradient is ~1e-286; BoxBOD and MGH17 Start 1 produce inf/nan trial points.
# Lanczos1-3: the Newton path reaches the degenerate critical point where two of the three
# exponentials merge (b2 == b4); its information is singular, so the Newton probes along
# the null direction (jaxmle.core.solvers.escape.probe_plan) and escapes along the negative
# curvature it finds there, to the certified optimum, sometimes with the terms in another
# order (compared after :func:`nist_problems.canonical`).
# Known limitations, each checked strictly (an xfail that starts passing fails the run):
# - Lanczos1 (both starts): an exact fit (certified RSS 1.4e-25): at the optimum the
#   residuals are ~1e-13 with rounding noise ~1e-16, so f = -n/2 log(RSS/n) is too noisy
#   for the decrement to fall below tol (it stays ~5e-3 standard errors): the Newton
#   reaches the optimum but reports not converged (iteration limit).
NLS_KNOWN_FAILURES = {("Lanczos1", "start1"), ("Lanczos1", "start2")}
NLS_SE_KNOWN_FAILURES = {"Lanczos1"}


def _known(cases, reason):
    return lambda *key: pytest.param(*key, marks=pytest.mark.xfail(strict=True, reason=reason)) \
        if (key if len(key) > 1 else key[0]) in cases else pytest.param(*key)


_NLS_CASES = [_known(NLS_KNOWN_FAILURES, "known solver limitation (see comment)")(n, s)
              for n in NLS_NAMES for s in ("start1", "start2")]


@pytest.mark.parametrize("name, start", _NLS_CASES)
def test_nls_fit_matches_certified(jm, name, start):
    p = load_nls(name)
    res = fit_nls(jm, name, start)
    b = canonical(name, res.params["b"])     # Lanczos/Gauss terms in the certified order
    assert bool(res.converged), f"{name} {start}: not converged after {res.n_iter} iterations"
    assert_lre_at_least(b, p.certified_params, LRE_BAR, f"{name} {start} params")
    assert_rss_matches(p, b)
    # the reported log-likelihood is the concentrated one at the estimate
    np.testing.assert_allclose(
        float(res.loglik), -0.5 * p.n * np.log(p.rss_np(b) / p.n), rtol=1e-10, atol=1e-10
    )


def observed_information_se(problem: NistProblem, b) -> np.ndarray:
    """SEs from the observed information of the concentrated log-likelihood, at ``b``.

    Computed independently of the log-likelihood's autodiff Hessian. At a stationary
    point of -n/2 log(RSS/n),

        -d2 loglik = (n/RSS) * (J^T J - sum_i r_i * d2 mean_i / db2),

    so SE = sqrt(RSS/n * diag((J^T J - sum_i r_i H_i)^{-1})).
    """
    bj, x = jnp.asarray(b), jnp.asarray(problem.x)
    J = np.asarray(jitted(problem.mean, "jacobian")(bj, x))
    H = np.asarray(jitted(problem.mean, "hessian")(bj, x))  # (n, k, k)
    r = problem.y - problem.mean_np(b)
    info = J.T @ J - np.einsum("i,ijk->jk", r, H)
    return np.sqrt((r @ r) / problem.n * np.diag(np.linalg.inv(info)))


# Standard errors, NLS. jaxmle's SEs come from the observed information of the
# concentrated likelihood: sqrt(RSS/n * diag((J^T J - sum_i r_i H_i)^{-1})). NIST's
# certified SDs are sqrt(RSS/(n-k) * diag((J^T J)^{-1})). Rescaling by sqrt(n/(n-k))
# fixes the first difference but not the residual-curvature term sum_i r_i H_i, which is
# non-zero for all 27 (nonlinear) models and changes the SEs by up to 23% (ENSO, MGH09,
# Thurber; BoxBOD 13%). So comparing jaxmle's SEs to the certified SDs would be wrong.
# Instead: (a) test_certified_sd_matches_gauss_newton checks the certified SDs against
# the Gauss-Newton formula (harness check, above), and (b) here jaxmle's SEs are checked
# against the observed-information SEs computed independently at jaxmle's own estimate.
# rtol 1e-4: the two routes agree to >= 6.8 digits at a fully converged estimate
# (Bennett5, cond ~3e9, is the worst); 1e-4 leaves room for an estimate that is only
# LRE 6 and still separates observed from Gauss-Newton SEs for most problems.
@pytest.mark.parametrize("name", [_known(NLS_SE_KNOWN_FAILURES, "exact fit: not converged at "
                                         "the precision limit of f")(n) for n in NLS_NAMES])
def test_nls_stderr_is_observed_information(jm, name):
    p = load_nls(name)
    res = fit_nls(jm, name, "start2")
    b = np.asarray(res.params["b"])
    np.testing.assert_allclose(
        np.asarray(res.stderr["b"]), observed_information_se(p, b), rtol=1e-4
    )


# Linear problems: per-problem LRE bar for the betas, with the reason. Baselines
# measured in float64 (min LRE over the betas):
#
#             lstsq   QR   normal-eqns  NE + refinement   scaled cond(X^T X)
#   Filip      0.0   7.9      -0.1         diverges            2.4e16
#   Longley   10.9  10.9       7.4          11.6               1.9e9
#   Wampler4   7.8   7.8       6.4           8.3               4.9e6
#   Wampler5   5.8   5.8       6.4           7.4               4.9e6
#   others    >=6.3 >=9.1     >=6.4         >=10.8
#
# Filip: excluded. Its Hessian (proportional to X^T X) is singular to working precision
#   even after Jacobi scaling (test_filip_hessian_is_numerically_singular): a Newton
#   MLE cannot produce a single reliable digit, and only QR of X itself gets 7.9. It is
#   checked separately by test_linear_filip_fit_is_sane.
# Wampler5: bar 5. Its certified SE/|beta| is 2.4e7 (RSS 8.4e15 for betas of 1), so
#   float64 rounding of the gradient J^T r alone (|r_i| up to ~4e7) perturbs b1 by
#   ~2e-7; backward-stable least squares (numpy lstsq, QR) reach only 5.8 digits.
# Wampler4 (SE/|beta| 2.4e5) still reaches 7.8-8.3 in float64, so it keeps bar 6, but a
#   solver that stops when the log-likelihood value stops changing ends near LRE 3:
#   the last digits must come from gradient-based (Newton) steps, not value decreases.
LINEAR_BETA_BAR = {"Wampler5": 5.0}
LINEAR_FIT_NAMES = [n for n in LINEAR_NAMES if n != "Filip"]


def linear_loglik(problem: LinearProblem):
    """Concentrated loglik, or the known-scale one for exact fits (Wampler1/2)."""
    if problem.certified_rss == 0.0:
        return known_scale_loglik(linear_mean)
    return concentrated_loglik(linear_mean)


_LINEAR_FITS: dict = {}


def fit_linear(jm, name: str):
    """jm.fit of linear problem ``name`` from zeros, cached."""
    if name not in _LINEAR_FITS:
        p = load_linear(name)
        bar = LINEAR_BETA_BAR.get(name, LRE_BAR)
        tol = solver_tol(p.certified_params, p.certified_se, bar)
        _LINEAR_FITS[name] = _fit(jm, linear_loglik(p), p, np.zeros(p.k), tol)
    return _LINEAR_FITS[name]


# Pontius: columns 1, x, x² with x up to 3e6: the diagonal of the information spans ~25
# orders of magnitude. Until the Newton's diagonal scaling floor was lowered from 1e-12 to
# ε⁴ of the largest diagonal entry, the small entries were not scaled at all, the
# information looked singular (NaN SEs) and, with σ free, the fit crawled to max_iter;
# now the estimates and the SEs reach LRE > 11. (The filter stays for safety.)
_PONTIUS_SINGULAR = pytest.mark.filterwarnings("ignore::jaxmle.SingularInformationWarning")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_PONTIUS_SINGULAR) if n == "Pontius"
                                  else n for n in LINEAR_FIT_NAMES])
def test_linear_fit_matches_certified(jm, name):
    p = load_linear(name)
    res = fit_linear(jm, name)
    b = np.asarray(res.params["b"])
    assert bool(res.converged), f"{name}: not converged after {res.n_iter} iterations"
    assert_lre_at_least(b, p.certified_params, LINEAR_BETA_BAR.get(name, LRE_BAR), f"{name} beta")
    assert_rss_matches(p, b)


# Linear SEs: the model is linear, so the residual-curvature term is exactly 0 and at
# the optimum the concentrated likelihood's observed information is (n/RSS) X^T X.
# jaxmle's SE * sqrt(n/(n-k)) is therefore exactly NIST's certified SE. Excluded:
# Filip (Hessian numerically singular, see above) and the exact fits Wampler1/2
# (certified SE 0; they are fitted with the known-scale likelihood, whose SEs are
# sqrt(diag((X^T X)^{-1})), a different quantity). Reference Newton: LRE >= 7.9.
LINEAR_SE_NAMES = [n for n in LINEAR_FIT_NAMES if load_linear(n).certified_rss > 0]


@pytest.mark.parametrize("name", [pytest.param(n, marks=_PONTIUS_SINGULAR) if n == "Pontius"
                                  else n for n in LINEAR_SE_NAMES])
def test_linear_stderr_matches_certified(jm, name):
    p = load_linear(name)
    res = fit_linear(jm, name)
    se = np.asarray(res.stderr["b"]) * np.sqrt(p.n / (p.n - p.k))
    assert_lre_at_least(se, p.certified_se, LRE_BAR, f"{name} SE")


def test_linear_filip_fit_is_sane(jm):
    """Filip: no accuracy claim (see LINEAR_BETA_BAR), but the fit must not break.

    jaxmle may well warn here (no convergence, singular information): that is the
    honest outcome, so its warnings are silenced. The result must be finite and no
    worse than the starting point (beta = 0).
    """
    p = load_linear("Filip")
    loglik = concentrated_loglik(linear_mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jm.JaxmleWarning)
        res = fit_linear(jm, "Filip")
    b = np.asarray(res.params["b"])
    assert np.all(np.isfinite(b))
    start_ll = float(loglik({"b": jnp.zeros(p.k)}, _data(p)))
    assert np.isfinite(float(res.loglik)) and float(res.loglik) >= start_ll


# ---------------------------------------------------------------------------
# 3. The second formulation: sigma a free positive parameter
# ---------------------------------------------------------------------------
#
# What a user would write: the per-observation Gaussian log-likelihood with sigma free
# (constraints positive), started at sigma0 = sqrt(RSS(b0)/n). The Newton path differs
# from the concentrated one (sigma moves with b). For the suite's time budget these run
# on the problems whose paths differ most between the formulations (the Lanczos merges,
# a far start that stalls, the one local maximum), both starts; benchmarks/bench_nist.py
# runs all 54 and RESULTS.md (k) has the table. MGH09 start 1 (σ free) ends on a ray to
# infinity and is checked to be flagged DIVERGED (test_mgh09_start1_sigma_free_...).
SIGMA_FREE_NAMES = ["Eckerle4", "Hahn1", "Lanczos2", "Lanczos3"]
# Eckerle4 start 1: the damped Newton's path runs onto a plateau where the Gaussian peak
# sits outside the data (b3 ~ 511 for x on 400-500; near-stationary, Nelder-Mead and
# dogbox stay there too) and stalls; the stalled fit is rescued by the scoring-metric
# path (:mod:`jaxmle.fitting.rescue`: H where positive definite, else the per-observation
# scores' outer product), which reaches the optimum's mirror image (-b1, -b2, b3), the
# same curve (compared after :func:`nist_problems.canonical`).
# (Hahn1 start 2 converged to a genuine local maximum, RSS 20.0 against 1.53, until the
# Newton's diagonal scaling floor was lowered; the better-scaled path now reaches the
# certified optimum. Nothing in the solver keeps a path out of a local maximum.)
SIGMA_FREE_KNOWN: set = set()


@functools.lru_cache(maxsize=None)
def sigma_free_loglik(mean):
    """One Normal(mean(b), sigma) term per observation (as benchmarks/bench_nist.py)."""
    import numpyro.distributions as dist

    def loglik(params, data):
        return dist.Normal(mean(params["b"], data["x"]), params["sigma"]).log_prob(data["y"])

    return loglik


@pytest.mark.parametrize("name, start", [
    _known(SIGMA_FREE_KNOWN, "known miss with sigma free (see comment)")(n, s)
    for n in SIGMA_FREE_NAMES for s in ("start1", "start2")])
def test_nls_sigma_free_matches_certified(jm, name, start):
    from numpyro.distributions import constraints

    p = load_nls(name)
    b0 = np.asarray(p.starts[start], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jm.ConvergenceWarning)
        res = jm.fit(sigma_free_loglik(p.mean), _data(p),
                     init={"b": jnp.asarray(b0), "sigma": jnp.asarray(np.sqrt(p.rss_np(b0) / p.n))},
                     constraints={"sigma": constraints.positive}, method="newton",
                     max_iter=MAX_ITER)
    b = canonical(name, res.params["b"])
    assert bool(res.converged), f"{name} {start}: status {int(res.status)}"
    assert_lre_at_least(b, p.certified_params, LRE_BAR, f"{name} {start} (sigma free) params")
    assert_rss_matches(p, b)
    np.testing.assert_allclose(float(res.params["sigma"]) ** 2, p.certified_rss / p.n, rtol=1e-6)


def test_mgh09_start1_sigma_free_is_flagged_not_confidently_wrong(jm):
    """MGH09 from its first start with σ free ends on a ray b ≈ (5e10, −14, −2e12, −1e12)
    along which the rational model tends to a limit and ℓ still rises by ~1e-15 relative
    (RSS 1.03e-3 against the certified 3.08e-4): locally a maximum to float64's precision.
    Before the real-line edge probe (|b| ≥ 1e10 scaled by e) it was reported converged."""
    from numpyro.distributions import constraints

    p = load_nls("MGH09")
    b0 = np.asarray(p.starts["start1"], dtype=np.float64)
    with pytest.warns(jm.ConvergenceWarning, match=r"towards ±infinity"):
        res = jm.fit(sigma_free_loglik(p.mean), _data(p),
                     init={"b": jnp.asarray(b0), "sigma": jnp.asarray(np.sqrt(p.rss_np(b0) / p.n))},
                     constraints={"sigma": constraints.positive}, method="newton",
                     max_iter=MAX_ITER)
    b = np.asarray(res.params["b"])
    if np.min(lre(b, p.certified_params)) < LRE_BAR:   # the certified optimum would pass
        from jaxmle.core.typing import Status

        assert not bool(res.converged) and int(res.status) == int(Status.DIVERGED)


def test_filip_with_sigma_free_converges_to_the_certified_values(jm):
    """NIST Filip (degree-10 polynomial, cond(X) = 1.8e15) through the Gaussian
    log-likelihood with σ free: the Newton's Hessian is singular to rounding, its steps
    along the weak directions are noise (it crawled to max_iter, LRE 0); it now stops
    crawling after ``Rules.crawl`` steps and the polish in the whitened basis
    (:mod:`jaxmle.core.refine`) converges to LRE ≥ 6 in b and in the SEs (measured 6.9 and
    7.0; QR of X: 8.1, 7.3)."""
    from numpyro.distributions import constraints

    p = load_linear("Filip")

    def loglik(params, data):
        import numpyro.distributions as dist
        return dist.Normal(data["X"] @ params["b"], params["sigma"]).log_prob(data["y"])

    res = jm.fit(loglik, {"X": p.X, "y": p.y},
                 init={"b": jnp.zeros(p.k), "sigma": float(np.sqrt(p.y @ p.y / p.n))},
                 constraints={"sigma": constraints.positive}, method="newton")
    assert bool(res.converged)
    assert np.min(lre(np.asarray(res.params["b"]), p.certified_params)) >= LRE_BAR
    se = np.asarray(res.stderr["b"]) * np.sqrt(p.n / (p.n - p.k))
    assert np.min(lre(se, p.certified_se)) >= LRE_BAR


def test_eckerle4_start1_sigma_free_rescue_in_fit_batch_and_its_limits(jm):
    """The stalled plain Newton from Eckerle4's first start is rescued by the scoring-metric
    path (:mod:`jaxmle.fitting.rescue`) in ``fit_batch`` exactly as in ``jm.fit`` (member =
    single fit, status and iterations included); the member from the second start, which
    did not stall, is the plain Newton's. A log-likelihood that returns only its total has
    no per-observation scores: the same start then stays stalled, reported so."""
    from numpyro.distributions import constraints

    p = load_nls("Eckerle4")
    ll = sigma_free_loglik(p.mean)
    inits = [{"b": jnp.asarray(b0), "sigma": jnp.asarray(np.sqrt(p.rss_np(b0) / p.n))}
             for b0 in (p.start1, p.start2)]
    cons = {"sigma": constraints.positive}
    data = _data(p)
    singles = [jm.fit(ll, data, init, constraints=cons, method="newton") for init in inits]
    batch = jm.fit_batch(ll, jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), data),
                         jax.tree_util.tree_map(lambda *x: jnp.stack(x), *inits),
                         constraints=cons, method="newton", batched_init=True)
    for k, single in enumerate(singles):
        member = batch[k]
        assert bool(member.converged) and bool(single.converged)
        assert int(member.status) == int(single.status) == 0
        assert int(member.n_iter) == int(single.n_iter)
        np.testing.assert_allclose(np.asarray(member.params["b"]), np.asarray(single.params["b"]),
                                   rtol=1e-12)
        np.testing.assert_allclose(np.asarray(member.stderr["b"]), np.asarray(single.stderr["b"]),
                                   rtol=1e-9)
        b = canonical("Eckerle4", single.params["b"])
        assert_lre_at_least(b, p.certified_params, LRE_BAR, f"Eckerle4 start{k + 1}")
    assert int(singles[0].n_iter) > 52   # the stalled path's iterations are counted too
    # multi-start: the start that stalled (the user's init) is rescued from there too
    multi = jm.fit(ll, data, inits[0], constraints=cons, method="newton", n_starts=2)
    assert bool(multi.converged) and bool(np.asarray(multi.starts.converged)[0])
    assert_lre_at_least(canonical("Eckerle4", multi.params["b"]), p.certified_params, LRE_BAR,
                        "Eckerle4 start1, n_starts=2")

    def total(params, data):
        return jnp.sum(ll(params, data))

    with pytest.warns(jm.ConvergenceWarning):
        res = jm.fit(total, data, inits[0], constraints=cons, method="newton")
    assert not bool(res.converged)

"""``DistributionFit``: a fitted NumPyro distribution, its inference and its diagnostics.

A view over the :class:`~jaxmle.results.result.FitResult` of the parameters the optimiser
estimated: ℓ̂, nobs, convergence and their covariance come from that result; this class
adds only what a distribution fit has beyond it (the parameters held fixed and those set
in closed form before the optimiser ran).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import numpy as np

import jaxmle.distributions.export as _export
from jaxmle.core.params import element_names
from jaxmle.core.stats import aic, bic, wald_intervals
from jaxmle.core.typing import Status
from jaxmle.distributions.registry import DistSpec
from jaxmle.fitting.kernel import float_dtype
from jaxmle.results.result import FitResult, FitStats


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionFit:
    """The maximum-likelihood fit of a NumPyro distribution to one sample.

    A view: what the optimiser's :attr:`result` already holds (ℓ̂, nobs, convergence,
    the covariance of its parameters) is read from it, not copied. The one place where
    a distribution fit counts differently is its closed-form estimates (Pareto scale,
    Laplace location): set before the optimiser runs, they are estimated parameters
    (in :attr:`params`, :attr:`param_names`, :attr:`n_free` and so in AIC/BIC) with
    their own standard error (NaN on the boundary), which :attr:`result` does not know.

    Attributes
    ----------
    spec : DistSpec
        The registry entry fitted (name, class, parameter order, closed forms).
    name : str
        The distribution's name (``"Gamma"``, ``"Binomial"``).
    distribution : type
        The NumPyro class whose parameters were fitted (``dist.BinomialProbs`` for
        ``dist.Binomial``); ``distribution(**params)`` is the fitted distribution,
        also available as :attr:`dist`.
    params : dict
        Every parameter of the fitted distribution: the estimates, and the values
        held fixed (so the dict describes the whole distribution).
    stderr : dict
        Standard errors, same keys; NaN for fixed parameters (no sampling
        uncertainty) and for boundary estimates (Pareto scale).
    fixed : dict
        The parameters held fixed and their values (not estimated, not counted in
        AIC/BIC).
    closed_form, closed_form_stderr : dict
        The estimates set in closed form before the optimiser ran (Pareto scale =
        sample minimum, Laplace location = median) and their standard errors (NaN
        for a boundary estimate); empty for most distributions.
    estimated : tuple of str
        The estimated parameters, in the distribution's order.
    param_names, cov
        Flat names (``"probs[0]"``) of the estimated elements and their (k, k)
        covariance (observed information, delta method through the constraints):
        :attr:`result`'s covariance for the optimiser's parameters, the closed-form
        variances on the diagonal (zero covariance with the others).
    loglik, nobs, n_free, aic, bic
        ℓ(θ̂), the number of observations, the number of free estimated
        coordinates m (the optimiser's ``result.n_free`` plus the closed-form
        elements), AIC = 2m − 2ℓ̂ and BIC = m·log n − 2ℓ̂.
    converged, n_iter
        Convergence report of the optimiser.
    result : FitResult
        The :func:`jaxmle.fit` result for the parameters estimated by the optimiser
        (fixed and closed-form values are held in its data). When none are left to it
        (every parameter fixed or set in closed form) there is nothing to optimise, and
        ``result`` is the result of that empty fit, built without compiling anything:
        ℓ evaluated at the held values, no parameters (``params == {}``, 0×0 ``cov``,
        ``n_free == 0``), converged in 0 iterations, ``method == "none"``, as
        ``jm.fit`` reports a fit with every parameter fixed; it has no refit context
        (there is nothing to profile or bootstrap). So ``result`` is always a
        ``FitResult`` and every derived quantity has one definition.
    data : numpy array
        The data fitted (used by :meth:`gof` and the plots).
    notes : tuple of str
        How special parameters were handled (closed-form or boundary estimates).
    """

    plot_role = "distribution_fit"   # what jaxmle.plots draws it as (a class attribute)

    spec: DistSpec = dataclasses.field(repr=False)
    result: FitResult
    fixed: dict
    closed_form: dict
    closed_form_stderr: dict
    data: np.ndarray = dataclasses.field(repr=False)

    # ---------- the distribution's own parts

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def distribution(self) -> Any:
        return self.spec.cls

    @property
    def notes(self) -> tuple:
        note = self.spec.closed_form_note
        return (note,) if self.closed_form and note else ()

    @property
    def estimated(self) -> tuple:
        return tuple(p for p in self.spec.params if p not in self.fixed)

    # ---------- the whole distribution: the optimiser's result, fixed values, closed forms
    # (the only place where the closed-form estimates count beside the FitResult's)

    @property
    def n_free(self) -> int:
        """Free estimated coordinates: the optimiser's plus the closed-form elements."""
        return self.result.n_free + sum(int(np.size(v)) for v in self.closed_form.values())

    @functools.cached_property
    def params(self) -> dict:
        return {p: _pick(p, self.fixed, self.closed_form, self.result.params)
                for p in self.spec.params}

    @functools.cached_property
    def stderr(self) -> dict:
        nan = {k: _nan_like(v) for k, v in self.fixed.items()}
        return {p: _pick(p, nan, self.closed_form_stderr, self.result.stderr)
                for p in self.spec.params}

    @functools.cached_property
    def param_names(self) -> tuple:
        return tuple(n for p in self.estimated for n in element_names(p, np.shape(self.params[p])))

    @functools.cached_property
    def cov(self) -> np.ndarray:
        """The optimiser's covariance for its parameters; closed-form ones on the diagonal."""
        free = {n: i for i, n in enumerate(self.result.param_names)}
        free_cov = np.asarray(jax.device_get(self.result.cov))
        closed = {n: v for p in self.closed_form
                  for n, v in zip(element_names(p, np.shape(self.params[p])),
                                  np.ravel(self.closed_form_stderr[p]) ** 2)}
        k = len(self.param_names)
        cov = np.zeros((k, k))
        for i, a in enumerate(self.param_names):
            for j, b in enumerate(self.param_names):
                if a in free and b in free:
                    cov[i, j] = free_cov[free[a], free[b]]
                elif i == j:
                    cov[i, j] = closed[a]
        return cov

    # ---------- read from the FitResult

    @property
    def _optimised(self) -> bool:
        """Whether the optimiser estimated any parameter (else :attr:`result` is the empty fit)."""
        return bool(self.result.params)

    @property
    def loglik(self) -> float:
        return float(self.result.loglik)

    @property
    def nobs(self) -> float:
        return float(self.result.nobs)

    @property
    def converged(self) -> bool:
        return bool(self.result.converged)

    @property
    def n_iter(self) -> int:
        return int(self.result.n_iter)

    @property
    def aic(self) -> float:
        """Akaike information criterion 2m − 2ℓ̂ (m = :attr:`n_free`)."""
        return float(aic(self.loglik, self.n_free))

    @property
    def bic(self) -> float:
        """Bayesian information criterion m·log n − 2ℓ̂."""
        return float(bic(self.loglik, self.n_free, self.nobs))

    @property
    def n_params(self) -> int:
        """Alias of :attr:`n_free` (the name ``FitResult`` uses for the same count)."""
        return self.n_free

    @property
    def dist(self) -> Any:
        """The fitted distribution as a NumPyro distribution object."""
        import jax.numpy as jnp

        return self.distribution(**{k: jnp.asarray(v) for k, v in self.params.items()})

    @property
    def is_discrete(self) -> bool:
        return bool(getattr(self.distribution.support, "is_discrete", False))

    def log_prob(self, x: Any) -> np.ndarray:
        """Log-density (log-pmf) of the fitted distribution at ``x``."""
        return self.evaluate("log_prob", x)

    def evaluate(self, method: str, x: Any) -> np.ndarray:
        """``dist.<method>(x)`` (log_prob, cdf, icdf) as one compiled call per class and shape:
        evaluated op by op, JAX would compile every operation of e.g. a Gamma CDF separately."""
        params = {k: np.asarray(v) for k, v in self.params.items()}
        return np.asarray(compiled_method(self.distribution, method)(params, np.asarray(x)))

    def cdf(self, x: Any) -> np.ndarray:
        """The fitted CDF at ``x`` (univariate distributions)."""
        from jaxmle.distributions.gof import cdf

        return cdf(self, np.asarray(x))

    def quantile(self, q: Any) -> np.ndarray:
        """The fitted quantile function at probabilities ``q`` (univariate distributions)."""
        from jaxmle.distributions.gof import quantile

        return quantile(self, np.asarray(q, dtype=float))

    def gof(self):
        """Goodness of fit: Kolmogorov–Smirnov (continuous) or chi-square (discrete).

        See :func:`jaxmle.distributions.gof.goodness_of_fit`.
        """
        from jaxmle.distributions.gof import goodness_of_fit

        return goodness_of_fit(self)

    def confint(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Wald intervals θ̂ ± z·SE for the estimated elements, keyed by flat name: for the
        optimiser's parameters those of :meth:`FitResult.confint` (here from :attr:`cov`,
        in float64 also for a float32 fit), and NaN ends where the SE is NaN (a boundary
        estimate)."""
        se = np.sqrt(np.diag(self.cov))
        return wald_intervals(self.param_names, self._flat_estimates(), se, level)

    def _flat_estimates(self) -> np.ndarray:
        parts = [np.ravel(self.params[p]) for p in self.estimated]
        return np.concatenate(parts).astype(float) if parts else np.zeros(0)

    def summary(self, level: float = 0.95):
        """A printable statsmodels-like table; fixed parameters are listed as ``(fixed)``."""
        from jaxmle.distributions.summary import distribution_summary

        return distribution_summary(self, level)

    def plot(self, path: str | None = None, **kwargs: Any):
        """The four-panel diagnostic plot (see :func:`jaxmle.plots.plot_fit`)."""
        from jaxmle.plots import plot_fit

        return plot_fit(self, path=path, **kwargs)

    def to_dict(self, level: float = 0.95) -> dict[str, Any]:
        """Plain Python (NaN/±inf as None, so ``json.dumps`` works): ``distribution``,
        ``numpyro_class``, ``kind``, ``method``, ``params``, ``stderr``, ``fixed``,
        ``estimated``, ``param_names``, ``level``, ``estimates`` ({flat name: {estimate,
        stderr, z, pvalue, ci_lower, ci_upper, fixed}}), ``cov``, ``loglik``, ``aic``,
        ``bic``, ``nobs``, ``n_free`` (also as ``n_params``), ``converged``, ``n_iter``, ``status``,
        ``status_label``, ``grad_norm``, ``notes``, ``versions``."""
        return _export.distfit_to_dict(self, level)

    def to_dataframe(self, level: float = 0.95) -> Any:
        """One row per flat parameter, as :meth:`FitResult.to_dataframe` (needs pandas)."""
        return _export.distfit_to_dataframe(self, level)

    def __repr__(self) -> str:
        est = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return (f"DistributionFit({self.name}: {est}; loglik={self.loglik:.6g}, aic={self.aic:.6g}, "
                f"converged={self.converged})")


@functools.lru_cache(maxsize=None)
def compiled_method(cls: Any, method: str):
    """``jit(lambda params, x: cls(**params).<method>(x))``, one per class and method (the
    exact log-pmf of :mod:`jaxmle.distributions.logpmf` where NumPyro's ``log_prob`` is inexact)."""
    from jaxmle.distributions.logpmf import exact_log_prob

    exact = exact_log_prob(cls) if method == "log_prob" else None

    def call(params, x):
        if exact is not None:
            return exact(params, x)
        return getattr(cls(**params), method)(x)

    return jax.jit(call)


def _short(v: Any) -> str:
    v = np.asarray(v)
    if v.ndim == 0:
        return f"{v.item():.6g}"
    return "[" + ", ".join(f"{e:.4g}" for e in v.ravel()[:4]) + (", …]" if v.size > 4 else "]")


def build_fit(spec: DistSpec, x: np.ndarray, fixed: dict, closed: dict,
              res: FitResult | None) -> DistributionFit:
    """A :class:`DistributionFit` over the optimiser's result (None: nothing was left to it,
    see :func:`evaluated_result`), with the closed-form estimates' standard errors."""
    if res is None:
        res = evaluated_result(spec, x, {**fixed, **closed})
    closed_se = {}
    if closed:
        values = {**{k: np.asarray(v) for k, v in jax.device_get(res.params).items()},
                  **fixed, **closed}
        var = spec.closed_form_var(values, float(x.shape[0]))
        closed_se = {k: np.sqrt(np.broadcast_to(np.asarray(var[k], float), np.shape(v)))
                     for k, v in closed.items()}
    return DistributionFit(
        spec=spec, result=res, fixed={k: _plain(v) for k, v in fixed.items()},
        closed_form={k: _plain(v) for k, v in closed.items()},
        closed_form_stderr={k: _plain(v) for k, v in closed_se.items()}, data=x)


def evaluated_result(spec: DistSpec, x: np.ndarray, held: dict) -> FitResult:
    """The :class:`FitResult` of a fit with no parameter left to optimise: ℓ at the held
    values; no parameters, converged in 0 iterations, method "none" (what ``jm.fit`` reports
    with every parameter fixed). Built here rather than by ``jm.fit(..., fixed=every
    parameter)``, which would compile a fit program to evaluate ℓ once (and sum it in
    another order, changing its last digits); ℓ is the one compiled log-pmf/density call
    the fitted distribution's :meth:`DistributionFit.log_prob` also uses."""
    dtype = np.dtype(float_dtype())
    loglik = float(np.sum(np.asarray(compiled_method(spec.cls, "log_prob")(held, x))))
    empty, none = np.zeros((0, 0), dtype), np.zeros(0, dtype)
    return FitResult(
        params={}, stderr={}, score={}, cov=empty, fisher_info=empty,
        loglik=np.asarray(loglik, dtype), logpost=np.asarray(loglik, dtype),
        converged=np.asarray(True), status=np.asarray(int(Status.SUCCESS), np.int32),
        n_iter=np.asarray(0, np.int32), grad_norm=np.asarray(0.0, dtype),
        nobs=np.asarray(x.shape[0], dtype),
        stats=FitStats(np.asarray(0, np.int32), none, np.zeros(0, bool), none, none),
        param_names=(), method="none", n_free=0, dtype=dtype.name)


def _pick(name: str, fixed: dict, closed: dict, optimised: Any) -> Any:
    """``name``'s entry: from ``fixed``, ``closed`` (closed form) or the optimiser's result."""
    for source in (fixed, closed):
        if name in source:
            return _plain(source[name])
    return _plain(jax.device_get(optimised[name]))


def _plain(v: Any) -> Any:
    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v


def _nan_like(v: Any) -> Any:
    v = np.asarray(v, dtype=float)
    return math.nan if v.ndim == 0 else np.full(v.shape, np.nan)

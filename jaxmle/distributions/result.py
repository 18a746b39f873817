"""``DistributionFit``: a fitted NumPyro distribution, its inference and its diagnostics."""

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
from jaxmle.distributions.registry import DistSpec
from jaxmle.results.result import FitResult


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionFit:
    """The maximum-likelihood fit of a NumPyro distribution to one sample.

    Attributes
    ----------
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
    estimated : tuple of str
        The estimated parameters, in the distribution's order.
    param_names, cov
        Flat names (``"probs[0]"``) of the estimated elements and their (k, k)
        covariance (observed information, delta method through the constraints).
    loglik, nobs, n_free, aic, bic
        ℓ(θ̂), the number of observations, the number of free estimated
        coordinates m, AIC = 2m − 2ℓ̂ and BIC = m·log n − 2ℓ̂.
    converged, n_iter
        Convergence report of the optimiser.
    result : FitResult or None
        The :func:`jaxmle.fit` result for the parameters estimated by the
        optimiser (None when none are: everything fixed or in closed form).
    data : numpy array
        The data fitted (used by :meth:`gof` and the plots).
    notes : tuple of str
        How special parameters were handled (closed-form or boundary estimates).
    """

    plot_role = "distribution_fit"   # what jaxmle.plots draws it as (a class attribute)

    name: str
    distribution: Any
    params: dict
    stderr: dict
    fixed: dict
    estimated: tuple
    param_names: tuple
    cov: np.ndarray
    loglik: float
    nobs: float
    n_free: int
    converged: bool
    n_iter: int
    result: FitResult | None
    data: np.ndarray = dataclasses.field(repr=False)
    notes: tuple = ()

    @property
    def aic(self) -> float:
        """Akaike information criterion 2m − 2ℓ̂ (m = estimated free coordinates)."""
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
        """Wald intervals θ̂ ± z·SE for the estimated elements, keyed by flat name."""
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
    """Assemble a :class:`DistributionFit` from the optimiser's result and the closed forms."""
    nobs = float(x.shape[0])
    free = {}
    if res is not None:
        p, se, cov, names, loglik, conv, n_iter = jax.device_get(
            (res.params, res.stderr, res.cov, res.param_names, res.loglik, res.converged, res.n_iter))
        free = {k: (np.asarray(p[k]), np.asarray(se[k])) for k in p}
        free_cov = dict(zip(names, range(len(names))))
        n_free, loglik, conv, n_iter = res.n_free, float(loglik), bool(conv), int(n_iter)
    else:
        cov, free_cov, n_free, conv, n_iter = np.zeros((0, 0)), {}, 0, True, 0
        loglik = float(np.sum(np.asarray(compiled_method(spec.cls, "log_prob")({**fixed, **closed}, x))))
    cf_var = spec.closed_form_var({**{k: v for k, (v, _) in free.items()}, **fixed, **closed},
                                  nobs) if closed else {}
    params, stderr, estimated, flat, variances = {}, {}, [], [], []
    for name in spec.params:
        if name in fixed:
            params[name], stderr[name] = _plain(fixed[name]), _nan_like(fixed[name])
            continue
        estimated.append(name)
        if name in closed:
            value = np.asarray(closed[name])
            sd = np.sqrt(np.broadcast_to(np.asarray(cf_var[name], float), value.shape))
        else:
            value, sd = free[name]
        params[name], stderr[name] = _plain(value), _plain(sd)
        for n in element_names(name, np.shape(value)):
            flat.append(n)
        variances.extend(np.ravel(sd) ** 2)
    full_cov = _assemble_cov(flat, free_cov, np.asarray(cov), variances)
    notes = (spec.closed_form_note,) if closed and spec.closed_form_note else ()
    return DistributionFit(
        name=spec.name, distribution=spec.cls, params=params, stderr=stderr,
        fixed={k: _plain(v) for k, v in fixed.items()}, estimated=tuple(estimated),
        param_names=tuple(flat), cov=full_cov, loglik=loglik, nobs=nobs,
        n_free=n_free + sum(int(np.size(closed[k])) for k in closed), converged=conv,
        n_iter=n_iter, result=res, data=x, notes=notes)


def _assemble_cov(flat: list[str], free_index: dict, free_cov: np.ndarray,
                  variances: list[float]) -> np.ndarray:
    """The optimiser's covariance for its parameters; closed-form ones on the diagonal only."""
    k = len(flat)
    cov = np.zeros((k, k))
    for i, a in enumerate(flat):
        for j, b in enumerate(flat):
            if a in free_index and b in free_index:
                cov[i, j] = free_cov[free_index[a], free_index[b]]
            elif i == j:
                cov[i, j] = variances[i]
    return cov


def _plain(v: Any) -> Any:
    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v


def _nan_like(v: Any) -> Any:
    v = np.asarray(v, dtype=float)
    return math.nan if v.ndim == 0 else np.full(v.shape, np.nan)

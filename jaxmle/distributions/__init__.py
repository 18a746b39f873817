"""Fit NumPyro distributions to data, compare candidates, check the fit.

``fit_distribution(dist.Gamma, x)`` does for any NumPyro distribution what
``scipy.stats.gamma.fit`` and R's ``fitdistrplus::fitdist`` do, with
exact-Hessian standard errors; ``compare_distributions(x, [...])`` ranks
candidates by AIC with BIC and a goodness-of-fit statistic.

Parameterisations: a NumPyro class is fitted in its own parameters
(``dist.Gamma`` → concentration, rate). NumPyro's factory functions, which
choose a class from the keyword given, are fitted as ``Binomial`` →
``BinomialProbs`` (probs; ``total_count`` must be fixed), ``Geometric`` →
``GeometricProbs``, ``Categorical`` → ``CategoricalProbs``, ``Bernoulli`` →
``BernoulliProbs``, and ``NegativeBinomial`` → ``NegativeBinomial2`` (mean,
concentration: variance = mean + mean²/concentration). ``MultivariateNormal``
is fitted in ``loc`` and ``covariance_matrix``. Pass the ``*Logits`` class to
estimate logits instead. Any other NumPyro distribution with
``arg_constraints`` is fitted in the constructor's parameters (of several
alternatives defaulting to None, the first), each constrained by its
``arg_constraints`` entry.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from jaxmle.distributions.compare import DistributionComparison, compare
from jaxmle.distributions.fit import fit_distribution as _fit_distribution
from jaxmle.distributions.gof import GoodnessOfFit
from jaxmle.distributions.registry import ALIASES, resolve_name
from jaxmle.distributions.result import DistributionFit

__all__ = ["ALIASES", "DistributionComparison", "DistributionFit", "GoodnessOfFit",
           "compare_distributions", "fit_distribution", "resolve_name"]


def fit_distribution(
    distribution: Any,
    data: Any,
    *,
    fixed: Mapping[str, Any] | None = None,
    init: Mapping[str, Any] | None = None,
    method: Any = "auto",
    tol: float | None = None,
    max_iter: int | None = None,
    n_starts: int = 1,
) -> DistributionFit:
    r"""Maximum-likelihood fit of a NumPyro distribution's parameters to a sample.

    Maximises ℓ(θ) = Σᵢ log p(xᵢ | θ) with :func:`jaxmle.fit`, each parameter
    constrained by the class's ``arg_constraints``, from moment or quantile
    starting values (the closed-form MLE where there is one); standard errors
    come from the exact observed information.

    Parameters
    ----------
    distribution : NumPyro distribution class, factory function, or str
        E.g. ``dist.Gamma``, ``dist.Binomial``, or a name: a NumPyro class name
        case-insensitively (``"gamma"``, ``"studentt"``) or a common alias
        (``"norm"``, ``"lognorm"``, ``"expon"``, ``"t"``, ``"nbinom"``, …;
        see :data:`ALIASES`). Parameterisations are listed in the module docstring.
    data : array_like
        A 1-D sample; for vector-valued distributions (Dirichlet,
        MultivariateNormal) a 2-D array with one row per observation. Must be
        finite and inside the distribution's support.
    fixed : dict, optional
        ``{name: value}`` held fixed, e.g. ``{"total_count": 20}`` for a Binomial
        (integer-valued parameters must be fixed) or ``{"loc": 0.0}``. Values may
        be per-observation arrays (e.g. a Binomial's trials per row).
    init : dict, optional
        Starting values for (some of) the estimated parameters, overriding the
        automatic ones.
    method, tol, max_iter
        Passed to :func:`jaxmle.fit`.
    n_starts : int
        If > 1, the first attempt is a multi-start fit (:func:`jaxmle.fit` with
        ``n_starts``) around the automatic start.

    Returns
    -------
    DistributionFit
        ``params`` holds every parameter of the fitted distribution (estimates
        and fixed values, so ``res.distribution(**res.params)`` is the fit);
        ``stderr`` is NaN for fixed parameters; ``cov``/``param_names`` cover
        the estimated ones; ``aic``/``bic`` count only estimated parameters.

    Raises
    ------
    ValueError
        Data outside the support (naming how many and the first indices), NaN
        data, wrong shape, a degenerate sample with no finite MLE (constant data,
        an unobserved category, under-dispersed counts for the negative
        binomial), unknown or invalid fixed values.
    TypeError
        Non-numeric data, or ``distribution`` is not a NumPyro distribution.

    Warns
    -----
    ConvergenceWarning, SingularInformationWarning
        As :func:`jaxmle.fit`, prefixed with the distribution's name. A fit that
        fails or does not converge from the automatic start is retried from
        generic starting values (derived from the constraints), then by a
        multi-start fit of 8 starts around the automatic one, before warning;
        the best attempt is returned.

    Notes
    -----
    Two distributions have a non-regular MLE, set in closed form before the
    smooth part is maximised: the Pareto scale is the sample minimum (no
    standard error: it is not asymptotically normal), and the Laplace location
    is the sample median (standard error b̂/√n from the expected information,
    since the log-likelihood is piecewise linear in it). Both count in AIC/BIC.

    Examples
    --------
    >>> import numpy as np, numpyro.distributions as dist, jaxmle as jm
    >>> x = np.random.default_rng(0).gamma(2.0, 3.0, size=500)
    >>> res = jm.fit_distribution(dist.Gamma, x)
    >>> sorted(res.params), bool(res.converged)
    (['concentration', 'rate'], True)
    >>> k = np.random.default_rng(1).binomial(20, 0.3, size=200)
    >>> res = jm.fit_distribution(dist.Binomial, k, fixed={"total_count": 20})
    >>> round(res.params["probs"], 6) == round(k.mean() / 20, 6)
    True
    """
    return _fit_distribution(distribution, data, fixed=fixed, init=init, method=method, tol=tol,
                             max_iter=max_iter, n_starts=n_starts)


def compare_distributions(
    data: Any,
    candidates: Sequence[Any],
    *,
    fixed: Mapping[str, Any] | None = None,
    criterion: str = "aic",
    method: Any = "auto",
) -> DistributionComparison:
    """Fit several candidate distributions to one sample and rank them.

    Parameters
    ----------
    data : array_like
        The sample (as for :func:`fit_distribution`).
    candidates : sequence
        NumPyro classes, factory functions or names (``[dist.Gamma, "weibull"]``).
    fixed : dict, optional
        ``{name: value}`` applied to every candidate that has a parameter of that
        name (e.g. ``{"total_count": 20}`` reaches only the Binomial).
    criterion : {"aic", "bic"}
        What the table is sorted by (ascending; non-converged fits last).
    method : str
        Passed to :func:`jaxmle.fit`.

    Returns
    -------
    DistributionComparison
        Prints as a ranking table (log-likelihood, AIC, ΔAIC, Akaike weight, BIC,
        Kolmogorov–Smirnov D for continuous / chi-square for discrete
        candidates); ``.fits`` holds each :class:`DistributionFit`, ``.skipped``
        the candidates that could not be fitted and why (e.g. data outside their
        support); ``.to_dict()``, ``.to_dataframe()``, ``.best``.

    Raises
    ------
    ValueError
        If no candidate could be fitted (the reasons are listed), for an unknown
        criterion, or a candidate listed twice.

    Examples
    --------
    >>> import numpy as np, numpyro.distributions as dist, jaxmle as jm
    >>> x = np.random.default_rng(0).gamma(2.0, 3.0, size=500)
    >>> table = jm.compare_distributions(x, [dist.Gamma, dist.Weibull, dist.LogNormal])
    >>> table.best
    'Gamma'
    """
    return compare(data, candidates, fixed=fixed, criterion=criterion, method=method)

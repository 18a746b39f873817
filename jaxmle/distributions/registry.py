"""Which NumPyro distribution a name or class means, and how to fit it.

A :class:`DistSpec` says which parameters a fit estimates (a subset of the
class's ``arg_constraints``: one of several equivalent parameterisations),
how to start, and which parameters have a closed-form, non-regular MLE
(Pareto scale = sample minimum, Laplace location = sample median) that is set
before the smooth part of the likelihood is maximised.

Parameterisations chosen for NumPyro's factory functions (which pick a class
from the keyword given):

* ``Binomial``, ``Geometric``, ``Categorical``, ``Bernoulli``: ``probs`` (the
  ``*Probs`` class), the scale a statistician reports; pass ``dist.BinomialLogits``
  etc. to estimate ``logits`` instead.
* ``NegativeBinomial``: the mean–dispersion form ``NegativeBinomial2(mean,
  concentration)``, variance mean + mean²/concentration (R's ``MASS::glm.nb``
  θ = concentration); pass ``dist.NegativeBinomialProbs`` for (total_count, probs).
* ``MultivariateNormal``: ``loc`` and ``covariance_matrix`` (not the precision
  or Cholesky factor).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from typing import Any, Callable

import jaxmle.distributions.start as start


@dataclasses.dataclass(frozen=True)
class DistSpec:
    """How to fit one NumPyro distribution class."""

    name: str                               # display name ("Gamma", "Binomial")
    cls: Any                                # the NumPyro class whose log_prob is used
    params: tuple[str, ...]                 # the parameters a fit sets (estimated or fixed)
    start: Callable | None = None           # (x, fixed) -> {name: start}; None: from constraints
    closed_form: Callable | None = None     # (x, fixed) -> non-regular MLEs set before the fit
    closed_form_var: Callable | None = None  # (params, n) -> {name: variance} for those
    closed_form_note: str = ""
    support: Callable | None = None         # (fixed) -> constraint the data must satisfy

    @property
    def arg_constraints(self) -> dict[str, Any]:
        return {p: self.cls.arg_constraints[p] for p in self.params}

    @property
    def data_event_dim(self) -> int:
        """0 for scalar observations, 1 for vector observations (Dirichlet, MVN)."""
        support = self.cls.support
        return int(getattr(support, "event_dim", 0))


def _pareto_support(fixed):
    from numpyro.distributions import constraints as c

    return c.greater_than_eq(fixed["scale"]) if "scale" in fixed else c.positive


def _laplace_var(params, n):
    """Var(median) = 1/(4 n f(μ)²) = b²/n, equal to the inverse expected information."""
    return {"loc": params["scale"] ** 2 / n}


def _pareto_var(params, n):
    return {"scale": float("nan")}


_LAPLACE_NOTE = (
    "loc is the sample median, its MLE; the log-likelihood is piecewise linear in loc, so its "
    "standard error is from the expected information, b/sqrt(n)")
_PARETO_NOTE = (
    "scale is the sample minimum (one ulp below, inside NumPyro's open support), its MLE on the "
    "boundary of the support: not asymptotically normal, so no standard error; it counts as an "
    "estimated parameter in AIC/BIC")


@functools.lru_cache(maxsize=None)
def _known() -> dict[str, DistSpec]:
    """The distributions with a tailored start (and closed forms), keyed by NumPyro class name."""
    import numpyro.distributions as d

    S = DistSpec
    specs = [
        S("Normal", d.Normal, ("loc", "scale"), start.normal),
        S("LogNormal", d.LogNormal, ("loc", "scale"), start.lognormal),
        S("Gamma", d.Gamma, ("concentration", "rate"), start.gamma),
        S("InverseGamma", d.InverseGamma, ("concentration", "rate"), start.inverse_gamma),
        S("Exponential", d.Exponential, ("rate",), start.exponential),
        S("Weibull", d.Weibull, ("scale", "concentration"), start.weibull),
        S("Beta", d.Beta, ("concentration1", "concentration0"), start.beta),
        S("StudentT", d.StudentT, ("df", "loc", "scale"), start.student_t),
        S("Cauchy", d.Cauchy, ("loc", "scale"), start.cauchy),
        S("Laplace", d.Laplace, ("loc", "scale"), start.laplace, start.laplace_loc, _laplace_var,
          _LAPLACE_NOTE),
        S("Gumbel", d.Gumbel, ("loc", "scale"), start.gumbel),
        S("Pareto", d.Pareto, ("scale", "alpha"), start.pareto, start.pareto_scale, _pareto_var,
          _PARETO_NOTE, _pareto_support),
        S("HalfNormal", d.HalfNormal, ("scale",), start.half_normal),
        S("Logistic", d.Logistic, ("loc", "scale"), start.logistic),
        S("Poisson", d.Poisson, ("rate",), start.poisson),
        S("Geometric", d.GeometricProbs, ("probs",), start.geometric),
        S("Binomial", d.BinomialProbs, ("probs", "total_count"), start.binomial),
        S("Bernoulli", d.BernoulliProbs, ("probs",), start.bernoulli),
        S("NegativeBinomial", d.NegativeBinomial2, ("mean", "concentration"),
          start.negative_binomial2),
        S("Categorical", d.CategoricalProbs, ("probs",), start.categorical),
        S("Dirichlet", d.Dirichlet, ("concentration",), start.dirichlet),
        S("MultivariateNormal", d.MultivariateNormal, ("loc", "covariance_matrix"),
          start.multivariate_normal),
    ]
    return {s.cls.__name__: s for s in specs}


# common names (scipy.stats, R) -> NumPyro class name
ALIASES = {
    "norm": "Normal", "gaussian": "Normal", "gauss": "Normal",
    "lognorm": "LogNormal", "lnorm": "LogNormal",
    "gamma": "Gamma", "invgamma": "InverseGamma", "inversegamma": "InverseGamma",
    "expon": "Exponential", "exp": "Exponential",
    "weibullmin": "Weibull",
    "t": "StudentT", "student": "StudentT", "studentt": "StudentT",
    "gumbelr": "Gumbel", "halfnorm": "HalfNormal", "halfnormal": "HalfNormal",
    "pois": "Poisson", "geom": "GeometricProbs", "geometric": "GeometricProbs",
    "binom": "BinomialProbs", "binomial": "BinomialProbs",
    "bernoulli": "BernoulliProbs",
    "nbinom": "NegativeBinomial2", "negbin": "NegativeBinomial2", "nb": "NegativeBinomial2",
    "negativebinomial": "NegativeBinomial2", "nb2": "NegativeBinomial2",
    "categorical": "CategoricalProbs", "cat": "CategoricalProbs",
    "mvn": "MultivariateNormal", "mvnorm": "MultivariateNormal",
    "multivariatenormal": "MultivariateNormal",
}


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@functools.lru_cache(maxsize=None)
def _classes_by_norm_name() -> dict[str, Any]:
    import numpyro.distributions as d

    out = {}
    for attr in dir(d):
        obj = getattr(d, attr)
        if inspect.isclass(obj) and issubclass(obj, d.Distribution) and obj.arg_constraints:
            out[_norm(attr)] = obj
    return out


def _factories() -> dict[Any, Any]:
    """NumPyro factory functions -> the class used for them (probs, mean–dispersion)."""
    import numpyro.distributions as d

    return {d.Binomial: d.BinomialProbs, d.Geometric: d.GeometricProbs,
            d.Categorical: d.CategoricalProbs, d.Bernoulli: d.BernoulliProbs,
            d.NegativeBinomial: d.NegativeBinomial2, d.Multinomial: d.MultinomialProbs}


def resolve_name(name: str) -> Any:
    """A NumPyro distribution class from a name (class name case-insensitively, or an alias)."""
    key = _norm(name)
    classes = _classes_by_norm_name()
    target = ALIASES.get(key)
    if target is not None:
        return classes[_norm(target)]
    if key in classes:
        return classes[key]
    choices = sorted(set(ALIASES) | set(classes))
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown distribution {name!r}{hint} (use a NumPyro class name such as 'gamma', "
        f"'lognormal', 'studentt', or an alias: {', '.join(sorted(ALIASES))})")


def spec_for(distribution: Any) -> DistSpec:
    """The :class:`DistSpec` for a NumPyro class, factory function or name."""
    import numpyro.distributions as d

    if isinstance(distribution, DistSpec):
        return distribution
    if isinstance(distribution, str):
        distribution = resolve_name(distribution)
    distribution = _factories().get(distribution, distribution)
    if not (inspect.isclass(distribution) and issubclass(distribution, d.Distribution)):
        raise TypeError(
            f"distribution must be a NumPyro distribution class (e.g. dist.Gamma) or its name, "
            f"got {distribution!r}")
    known = _known().get(distribution.__name__)
    if known is not None and known.cls is distribution:
        return known
    return generic_spec(distribution)


def generic_spec(cls: Any) -> DistSpec:
    """Parameters from ``arg_constraints`` in constructor order; of several alternatives that
    default to None (covariance_matrix / precision_matrix / scale_tril), the first."""
    if not cls.arg_constraints:
        raise ValueError(f"{cls.__name__} declares no arg_constraints, so its parameters are unknown")
    try:
        sig = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        sig = {}
    names = [p for p in sig if p in cls.arg_constraints] or list(cls.arg_constraints)
    chosen, alternative_taken = [], False
    for p in names:
        if p in sig and sig[p].default is None:
            if alternative_taken:
                continue
            alternative_taken = True
        chosen.append(p)
    return DistSpec(cls.__name__, cls, tuple(chosen))

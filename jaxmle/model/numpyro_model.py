"""``jm.fit_model``: maximum likelihood or MAP of an ordinary NumPyro model function.

The model is traced with NumPyro's own handlers (``seed``, ``substitute``,
``trace``). Its sites map onto :func:`jaxmle.fit` as follows:

* latent (unobserved) ``numpyro.sample`` sites and ``numpyro.param`` sites are the
  parameters, constrained to their distribution's support (``param``: its
  ``constraint=``); a discrete latent site is an error;
* observed sample sites (``obs=...``; ``numpyro.factor`` terms, ``handlers.mask``,
  ``handlers.scale``, plates and ``to_event`` included) form the log-likelihood,
  counted exactly as ``numpyro.infer.util.log_density`` counts them;
* ``method="mle"`` drops the latent sites' distributions; ``method="map"`` keeps them
  as a joint prior (``priors=`` callable of ``jm.fit``: hierarchical priors work),
  so ``res.loglik`` stays the likelihood and ``res.logpost`` adds the prior; the MAP is
  the mode of the natural parameters' density with no Jacobian term (NumPyro's
  ``AutoDelta`` point);
* ``numpyro.deterministic`` sites are reported at the optimum
  (``res.deterministic``) with delta-method standard errors
  (``res.deterministic_stderr``);
* the missing entries of ``obs_mask=`` (NumPyro's ``<name>_unobserved`` site) are
  held at a value and left out of every term: missing responses drop out of the
  likelihood.

Array arguments of the model are traced data (new data of the same shapes reuses
the compiled program) unless the model needs their values on the host (``np.unique``,
``np.isnan``, NaN entries it imputes): those are constants of the compiled program
(:mod:`jaxmle.model.args`). Other arguments are static and must be hashable. Starts
follow ``init=`` and ``init_strategy=`` and are checked term by term
(:mod:`jaxmle.model.start`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.distribution import validation_enabled

from jaxmle._api import fit
from jaxmle.core.priors import _elementwise_support, describe
from jaxmle.core.typing import JaxmleWarning, user_stacklevel
from jaxmle.model.args import constant_arrays, split_args
from jaxmle.model.outputs import _constrained_predictions, _with_deterministic
from jaxmle.model.sites import (
    _to_unconstrained,
    _check_dependent,
    _check_priors_free_of,
    _count,  # noqa: F401  (tests import it from here)
    _is_imputation,
)
from jaxmle.model.start import (
    as_start,
    feasible_start,
    gradient_check,
    start_error,
    strategy_function,
)
from jaxmle.model.trace import ModelCall, ModelLogLik, ModelLogPrior, ModelSites
from jaxmle.results.result import FitResult


@dataclasses.dataclass
class Sites:
    """What the discovery trace found (host side, concrete values)."""

    params: dict            # name -> initial value (latent sample sites and param sites)
    constraints: dict       # name -> numpyro constraint
    latent: list            # latent sample sites (they have a distribution: a prior)
    observed: list          # observed sample sites (the likelihood)
    held: dict              # obs_mask imputation sites -> value held fixed
    deterministic: dict     # deterministic sites -> (shape, real-valued?)
    nobs: float             # observations in the observed (non-factor) sites
    labels: dict            # latent name -> "name ~ Normal(loc=0, scale=1)"


def fit_model(model: Callable, *args: Any, method: str | None = None,
              init: Mapping | None = None, init_strategy: Any = "mean",
              solver: Any = "auto", fixed: Mapping | None = None,
              random: Sequence[str] | None = None, tol: float | None = None,
              max_iter: int | None = None, n_starts: int = 1, start_scale: float = 1.0,
              **kwargs: Any) -> FitResult:
    r"""MLE or MAP of a NumPyro model function ``model(*args, **kwargs)``.

    Parameters
    ----------
    model : callable
        An ordinary NumPyro model, called with ``*args, **kwargs`` (the data must be
        given: ``obs=y`` with ``y`` an array).
    method : {"mle", "map"}
        ``"mle"`` (the default): maximise the likelihood of the observed sites, the
        latent sites' distributions dropped (their supports kept as constraints); left
        unset on a model with priors, a ``JaxmleWarning`` says they are dropped.
        ``"map"``: the posterior mode of the natural parameters (no Jacobian term:
        NumPyro's ``AutoDelta`` point), the latent distributions kept as a (joint) prior.
    init : dict, optional
        Starting values by site name (``numpyro.param`` sites: their ``init_value``).
        A scalar is broadcast to the site's shape.
    init_strategy : {"mean", "median", "uniform", "sample"} or a NumPyro init strategy
        The start of the other latent sites (:mod:`jaxmle.model.start`): ``"mean"``
        (default: the distribution's mean where finite and inside the support, else
        biject_to(support)(0)), NumPyro's ``init_to_median`` / ``init_to_uniform`` /
        ``init_to_sample`` seeded with 0, or e.g. ``init_to_uniform(radius=1)``. A start
        where a log-density term is not finite is moved (one site at a time) until all
        are; else the error names the sites.
    solver : str or optax.GradientTransformation
        ``jm.fit``'s ``method``: "auto" (Newton up to 200 parameters, else L-BFGS),
        "newton", "lbfgs", "adam", or an optax optimiser.
    fixed, tol, max_iter, n_starts, start_scale
        As in :func:`jaxmle.fit` (names are site names).
    random : list of str, or dict of roles, optional
        Latent sites to integrate out by Laplace (``jm.fit(random=)``); their
        distribution stays inside the likelihood in both modes. As in ``jm.fit``,
        ``{"u": "random", "beta": "flat"}`` integrates ``beta`` out under a flat prior
        (REML): its own distribution in the model is then left out.
    **kwargs
        The model's keyword arguments (``y=y``).

    Returns
    -------
    FitResult
        ``params`` keyed by site name; ``deterministic`` / ``deterministic_stderr``:
        the model's ``numpyro.deterministic`` sites at the optimum and their
        delta-method standard errors.
    """
    explicit = method is not None
    method = "mle" if method is None else method
    if method not in ("mle", "map"):
        raise ValueError(f"method must be 'mle' or 'map', got {method!r} (the optimiser is "
                         "chosen with solver=)")
    init = dict(init or {})
    arguments = split_args(model, args, kwargs)
    # the host runs see concrete values: NumPyro's argument validation would raise on a
    # start outside a distribution's domain, which the start check reports (naming the
    # site) or repairs instead
    with validation_enabled(False):
        sites, call, data, counted, prior_sites = _prepare(model, arguments, method, explicit,
                                                           init, init_strategy, random)
    random, roles = _check_random(random, sites)
    unconstrained = _to_unconstrained(sites, random)
    loglik = ModelLogLik(call, tuple(sites.observed) + counted, tuple(unconstrained))
    nan_args = [n for n, k in zip(arguments.names, arguments.nonfinite) if k]
    priors = None
    if method == "map" and prior_sites:
        fill = tuple((n, np.shape(sites.params[n])) for n in random)
        priors = ModelLogPrior(call, prior_sites, tuple(sites.labels[n] for n in prior_sites),
                               fill)
    if nan_args and not gradient_check(loglik, priors, sites.params, data):
        raise ValueError(
            f"model argument(s) {', '.join(nan_args)} contain NaN/inf values, and the "
            "log-density's gradient is not finite at the start: a NaN masked by jnp.where or "
            "handlers.mask still reaches the derivative. Replace the missing entries by any "
            "finite value before they enter a distribution (x.at[np.isnan(x)].set(...)), or "
            "fill them and pass obs_mask= to numpyro.sample")
    res = fit(loglik, data, sites.params, constraints=sites.constraints, priors=priors,
              method=solver, fixed=fixed, random=(roles or random) or None, tol=tol,
              max_iter=max_iter,
              n_starts=n_starts, start_scale=start_scale)
    if sites.nobs > 0:
        res = dataclasses.replace(res, nobs=np.asarray(sites.nobs, np.asarray(res.nobs).dtype))
    if unconstrained:
        res = _constrained_predictions(res, unconstrained)
    if sites.deterministic:
        res = _with_deterministic(res, ModelSites(call, tuple(sites.deterministic)),
                                  tuple(sites.deterministic.values()), data)
    return res


def _prepare(model, arguments, method, explicit, init, init_strategy, random):
    """The host side of fit_model: the sites, a start where every term is finite, which
    arrays are constants; returns (sites, the model call, the fit's data, the random
    sites counted in the likelihood, the sites whose prior is dropped or kept)."""
    sites, counted, prior_sites = _host_side(model, arguments, method, explicit, init,
                                             init_strategy, random)
    constant = constant_arrays(model, arguments, sites.params, sites.held,
                               tuple(sites.observed) + tuple(sites.latent))
    call = arguments.call(model, constant)
    data = {"args": arguments.traced(constant), "held": sites.held}
    if not data["args"]:              # jm.fit refuses an empty list as data
        del data["args"]
        if not sites.held:            # and needs a data leaf: the model closes over its data
            data = {"none": np.zeros(())}
    return sites, call, data, counted, prior_sites


_HOST_SIDE: dict = {}


def _host_side(model, arguments, method, explicit, init, init_strategy, random):
    """:func:`_discovered`, cached by the model call, the arguments' values and the
    options (a warm call of a ``scan`` model ran the model on the host, where NumPyro's
    ``scan`` compiles its body: ~30 ms per call). Returns fresh copies of the sites'
    dicts (the caller converts constrained random sites in place)."""
    try:
        key = (arguments.fingerprint(model), method, explicit, init_strategy,
               tuple(random) if random is not None else None,
               tuple(sorted((k, np.shape(v), np.asarray(v).dtype.str,
                             np.asarray(v).tobytes()) for k, v in init.items())))
        hash(key)
    except TypeError:
        return _discovered(model, arguments, method, explicit, init, init_strategy, random)
    if key not in _HOST_SIDE:
        if len(_HOST_SIDE) > 128:
            _HOST_SIDE.clear()
        _HOST_SIDE[key] = _discovered(model, arguments, method, explicit, init, init_strategy,
                                      random)
    sites, counted, prior_sites = _HOST_SIDE[key]
    copy = {f.name: dict(getattr(sites, f.name)) for f in dataclasses.fields(sites)
            if isinstance(getattr(sites, f.name), dict)}
    return dataclasses.replace(sites, **copy), counted, prior_sites


def _discovered(model, arguments, method, explicit, init, init_strategy, random):
    """The model's concrete runs: its sites, a start where every term is finite.

    The arrays reach the model as NumPy arrays (``np.unique``, in-place edits, anything
    NumPy does); a model that indexes one with a traced value (a ``scan`` body, NumPyro's
    ``condition`` inside ``scan``: ``y[i]``) cannot take NumPy there, and runs again with
    its arrays as concrete JAX arrays, which take both."""
    try:
        return _discovered_with(model, arguments, method, explicit, init, init_strategy,
                                random)
    except jax.errors.JAXTypeError:
        if all(isinstance(a, jax.Array) for a in arguments.arrays):
            raise
    as_jax = dataclasses.replace(arguments, arrays=[jnp.asarray(a) for a in arguments.arrays])
    return _discovered_with(model, as_jax, method, explicit, init, init_strategy, random)


def _discovered_with(model, arguments, method, explicit, init, init_strategy, random):
    host = arguments.call(model)          # every array as the model's data, concrete here
    strategy = strategy_function(init_strategy)
    sites, tr = discover(host, arguments.arrays, init, strategy)
    random, roles = _check_random(random, sites)
    prior_sites = tuple(n for n in sites.latent if n not in random)
    if not explicit and prior_sites:
        _warn_priors_dropped(model, prior_sites)
    # a "flat" site (REML's fixed effects) is integrated out under a flat prior: its own
    # density in the model is left out of the likelihood
    counted = tuple(n for n in random if roles.get(n, "random") != "flat")
    terms = tuple(sites.observed) + counted + (prior_sites if method == "map" else ())
    nan_args = [n for n, k in zip(arguments.names, arguments.nonfinite) if k]
    movable = [n for n in sites.latent if n not in init]
    start, bad = feasible_start(host, {"args": arguments.arrays, "held": sites.held},
                                sites.params, sites.constraints, movable, terms, tr)
    if bad:
        raise start_error(bad, tr, nan_args)
    if start is not sites.params:        # the held (obs_mask) values at the new start
        sites, tr = discover(host, arguments.arrays, start, strategy)
    if random and prior_sites:
        _check_priors_free_of(random, host, arguments.arrays, sites, prior_sites, tr)
    return sites, counted, prior_sites


_WARNED: set = set()


def _warn_priors_dropped(model: Callable, prior_sites: tuple[str, ...]) -> None:
    """method= left at its default on a model with priors: say once per model that the
    MLE drops them."""
    key = getattr(model, "__qualname__", None), getattr(model, "__code__", None)
    if key in _WARNED:
        return
    if len(_WARNED) > 1024:
        _WARNED.clear()
    _WARNED.add(key)
    warnings.warn(
        f"fit_model's default method='mle' drops the priors of the latent site(s) "
        f"{list(prior_sites)} (their supports are kept as constraints): pass method='map' for "
        "the posterior mode, or method='mle' to say that the MLE is meant (this warning is "
        "shown once per model)", JaxmleWarning, stacklevel=user_stacklevel())


def discover(call: ModelCall, arrays: list, init: Mapping | None,
             start: Callable | None = None) -> tuple[Sites, Any]:
    """Run the model once (seeded, concrete) at the starting values (``init``, else
    ``start(site)``: the init strategy) and sort its sites; returns them and the trace."""
    init = dict(init or {})
    start = start or strategy_function("mean")

    def strategy(site):
        name = site["name"]
        if site["type"] == "sample" and name in init and not site["is_observed"]:
            return _init_value(name, init[name], site["fn"].shape(site["kwargs"]["sample_shape"]))
        if site["type"] == "param" and name in init:
            default = site["args"][0] if site["args"] else None
            shape = np.shape(init[name]) if callable(default) else np.shape(default)
            return _init_value(name, init[name], shape)
        if site["type"] == "sample" and not site["is_observed"]:
            return start(site)
        return None

    args, kwargs = call.rebuild(arrays)
    seeded = handlers.seed(call.model, rng_seed=0)
    try:
        tr = handlers.trace(handlers.substitute(seeded, substitute_fn=strategy)).get_trace(
            *args, **kwargs)
    except _InitError as err:
        raise ValueError(str(err)) from None
    except Exception as err:
        try:
            wrapped = type(err)(f"running the model with its arguments failed: {err}")
        except Exception:
            raise err from None
        raise wrapped from err
    params, supports, latent, observed, held, det = {}, {}, [], [], {}, {}
    nobs, labels = 0.0, {}
    names = set(tr)
    for name, site in tr.items():
        kind = site["type"]
        if kind == "param":
            params[name] = as_start(site["value"])
            supports[name] = site["kwargs"].get("constraint") or constraints.real
        elif kind == "deterministic":
            value = np.asarray(site["value"])
            if value.dtype.kind in "biuf":
                det[name] = (value.shape, value.dtype.kind == "f")
            else:
                warnings.warn(f"deterministic site '{name}' has dtype {value.dtype}: fit_model "
                              "reports real (or integer, boolean) values only; it is left out",
                              JaxmleWarning, stacklevel=user_stacklevel())
        elif kind == "plate":
            size, sub = site["args"]
            if sub is not None and sub != size:
                warnings.warn(
                    f"plate '{name}' subsamples {sub} of {size}: fit_model fits one fixed "
                    f"subsample (seed 0) with its log-density scaled by {size}/{sub}, as "
                    "NumPyro's log_density counts it; drop subsample_size to fit all the data",
                    JaxmleWarning, stacklevel=user_stacklevel())
        elif kind != "sample":
            continue
        elif site["is_observed"]:
            observed.append(name)
            nobs += _count(site)
        elif _is_imputation(name, tr, names):
            held[name] = np.asarray(site["value"])
        else:
            fn = site["fn"]
            if fn.support.is_discrete:
                raise ValueError(
                    f"latent site '{name}' has a discrete distribution ({type(fn).__name__}): "
                    "fit_model fits continuous parameters only. Marginalise it out (e.g. "
                    "dist.MixtureSameFamily), or, if it is your response, pass the data as "
                    f"obs= (was the model called with {name}=None?)")
            params[name] = as_start(site["value"])
            supports[name] = _elementwise_support(fn.support)
            latent.append(name)
            labels[name] = f"{name} ~ {describe(fn)}"
    det = {n: shape for n, shape in det.items() if f"{n}_unobserved" not in held}
    unknown = sorted(set(init) - set(params))
    if unknown:
        raise ValueError(f"init given for unknown site(s) {unknown}; the model's parameters "
                         f"(latent sample and param sites) are {sorted(params)}")
    if not params:
        raise ValueError("the model has no latent sample site or numpyro.param site: there is "
                         "nothing to estimate")
    if not observed:
        raise ValueError(
            "the model has no observed site (numpyro.sample(..., obs=data) or numpyro.factor): "
            "there is no likelihood to maximise. Pass the data to the model (e.g. y=y, not "
            f"y=None); its latent sites are {latent}")
    _check_dependent(call, arrays, (params, supports), held, latent, labels, tr)
    return Sites(params, supports, latent, observed, held, det, nobs, labels), tr


class _InitError(ValueError):
    pass


def _init_value(name: str, given: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A user's start for a site, a scalar broadcast to the site's shape."""
    given = np.asarray(given, dtype=float)
    try:
        return np.array(np.broadcast_to(given, shape))
    except ValueError:
        raise _InitError(f"init for site '{name}' has shape {given.shape}, but the site has "
                         f"shape {tuple(shape)}") from None


def _check_random(random: Any, sites: Sites) -> tuple[tuple[str, ...], dict[str, str]]:
    """The latent sites to integrate out, and their roles when given as a dict
    (``{"u": "random", "beta": "flat"}``: REML, as in ``jm.fit``)."""
    if not random:
        return (), {}
    roles = dict(random) if isinstance(random, Mapping) else {}
    random = (random,) if isinstance(random, str) else tuple(random)
    bad = sorted(set(random) - set(sites.latent))
    if bad:
        raise ValueError(f"random= names {bad} are not latent sample sites of the model; "
                         f"those are {sites.latent}")
    return random, roles

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
  so ``res.loglik`` stays the likelihood and ``res.logpost`` adds the prior;
* ``numpyro.deterministic`` sites are reported at the optimum
  (``res.deterministic``) with delta-method standard errors
  (``res.deterministic_stderr``);
* the missing entries of ``obs_mask=`` (NumPyro's ``<name>_unobserved`` site) are
  held at a value and left out of every term: missing responses drop out of the
  likelihood.

Array arguments of the model are traced data (new data of the same shapes reuses
the compiled program); other arguments are static and must be hashable.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from jaxmle._api import fit
from jaxmle.core.params import free_positions
from jaxmle.core.priors import _elementwise_support, describe
from jaxmle.core.typing import JaxmleWarning, user_stacklevel
from jaxmle.model.trace import ModelCall, ModelLogLik, ModelLogPrior, ModelSites, split_args
from jaxmle.results.result import FitResult


@dataclasses.dataclass
class Sites:
    """What the discovery trace found (host side, concrete values)."""

    params: dict            # name -> initial value (latent sample sites and param sites)
    constraints: dict       # name -> numpyro constraint
    latent: list            # latent sample sites (they have a distribution: a prior)
    observed: list          # observed sample sites (the likelihood)
    held: dict              # obs_mask imputation sites -> value held fixed
    deterministic: dict     # float deterministic sites -> shape
    nobs: float             # observations in the observed (non-factor) sites
    labels: dict            # latent name -> "name ~ Normal(loc=0, scale=1)"


def fit_model(model: Callable, *args: Any, method: str = "mle", init: Mapping | None = None,
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
        ``"mle"``: maximise the likelihood of the observed sites, the latent sites'
        distributions dropped (their supports kept as constraints). ``"map"``: the
        posterior mode, the latent distributions kept as a (joint) prior.
    init : dict, optional
        Starting values by site name (others: the mean of the site's distribution
        where finite, else the centre of its support, biject_to(support)(0);
        ``numpyro.param`` sites: their ``init_value``). A scalar
        is broadcast to the site's shape.
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
    if method not in ("mle", "map"):
        raise ValueError(f"method must be 'mle' or 'map', got {method!r} (the optimiser is "
                         "chosen with solver=)")
    treedef, static, arrays = split_args(args, kwargs)
    call = ModelCall(model, treedef, static)
    sites = discover(call, arrays, init)
    random, roles = _check_random(random, sites)
    data = {"args": arrays, "held": sites.held}
    if not arrays and not sites.held:
        data["none"] = np.zeros(())   # jm.fit needs a data leaf; the model closes over its data
    # a "flat" site (REML's fixed effects) is integrated out under a flat prior: its own
    # density in the model is left out of the likelihood
    counted = tuple(n for n in random if roles.get(n, "random") != "flat")
    loglik = ModelLogLik(call, tuple(sites.observed) + counted)
    priors = None
    prior_sites = tuple(n for n in sites.latent if n not in random)
    if method == "map" and prior_sites:
        priors = ModelLogPrior(call, prior_sites, tuple(sites.labels[n] for n in prior_sites))
    res = fit(loglik, data, sites.params, constraints=sites.constraints, priors=priors,
              method=solver, fixed=fixed, random=(roles or random) or None, tol=tol,
              max_iter=max_iter,
              n_starts=n_starts, start_scale=start_scale)
    if sites.nobs > 0:
        res = dataclasses.replace(res, nobs=np.asarray(sites.nobs, np.asarray(res.nobs).dtype))
    if sites.deterministic:
        res = _with_deterministic(res, ModelSites(call, tuple(sites.deterministic)),
                                  tuple(sites.deterministic.values()), data)
    return res


def discover(call: ModelCall, arrays: list, init: Mapping | None) -> Sites:
    """Run the model once (seeded, concrete) at the starting values and sort its sites."""
    init = dict(init or {})

    def strategy(site):
        name = site["name"]
        if site["type"] == "sample" and name in init and not site["is_observed"]:
            return _init_value(name, init[name], site["fn"].shape(site["kwargs"]["sample_shape"]))
        if site["type"] == "param" and name in init:
            default = site["args"][0] if site["args"] else None
            shape = np.shape(init[name]) if callable(default) else np.shape(default)
            return _init_value(name, init[name], shape)
        return _default_init(site)

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
            params[name] = np.asarray(site["value"])
            supports[name] = site["kwargs"].get("constraint") or constraints.real
        elif kind == "deterministic":
            value = np.asarray(site["value"])
            if value.dtype.kind == "f" and value.size:
                det[name] = value.shape
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
            params[name] = np.asarray(site["value"])
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
    return Sites(params, supports, latent, observed, held, det, nobs, labels)


def _default_init(site: dict) -> Any:
    """The start of a latent site: its distribution's mean where that is finite and inside
    the support, else the centre of the unconstrained space (biject_to(support)(0): 0, 1,
    0.5, the uniform simplex, ...). No sampling: nothing random to compile."""
    if site["type"] != "sample" or site["is_observed"] or site["fn"].support.is_discrete:
        return None
    fn = site["fn"]
    shape = tuple(fn.shape(site["kwargs"]["sample_shape"]))
    transform = biject_to(fn.support)
    try:
        mean = np.broadcast_to(np.asarray(fn.mean), shape)
        if (np.all(np.isfinite(mean)) and np.all(np.asarray(fn.support.check(mean)))
                and np.all(np.isfinite(np.asarray(transform.inv(mean))))):
            return np.array(mean)
    except Exception:  # no mean implemented, or an odd shape: use the centre
        pass
    return np.asarray(transform(np.zeros(transform.inverse_shape(shape))))


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


def _is_imputation(name: str, tr: Any, names: set) -> bool:
    """NumPyro's ``obs_mask`` splits site ``y`` into ``y_observed`` and ``y_unobserved``."""
    if not name.endswith("_unobserved"):
        return False
    base = name[: -len("_unobserved")]
    partner = f"{base}_observed"
    return partner in names and tr[partner]["is_observed"] and base in names


def _count(site: dict) -> float:
    """Observations at an observed site: its log-density terms (batch elements, the value
    broadcast) not masked out; a site whose whole value is one event (``to_event``)
    counts the value's leading axis. A factor counts none."""
    from numpyro.distributions.distribution import MaskedDistribution, Unit

    fn, mask = site["fn"], None
    while isinstance(fn, MaskedDistribution):
        mask = fn._mask if mask is None or isinstance(mask, bool) else mask
        fn = fn.base_dist
    if isinstance(fn, Unit) or mask is False:
        return 0.0
    value_shape = np.shape(site["value"])
    batch = np.broadcast_shapes(tuple(fn.batch_shape),
                                value_shape[:len(value_shape) - len(fn.event_shape)])
    if mask is not None and mask is not True:
        return float(np.sum(np.broadcast_to(np.asarray(mask), batch)))
    if batch == () and value_shape:
        return float(value_shape[0])
    return float(np.prod(batch, dtype=int))


def _check_dependent(call: ModelCall, arrays: list, sites: tuple, held: dict, latent: list,
                     labels: dict, tr: Any) -> None:
    """Run the model again with every parameter moved: a support that moves with them
    (Uniform(0, θ)) cannot be a fixed constraint; a prior that does (θⱼ ~ N(μ, τ)) gets a
    label without the start values."""
    params, supports = sites
    moved = {}
    for name, value in params.items():
        t = biject_to(supports[name])
        moved[name] = np.asarray(t(np.asarray(t.inv(value)) + 0.37))
    tr2 = call.trace(moved, {"args": arrays, "held": held})
    for name in latent:
        before, after = tr[name]["fn"], tr2[name]["fn"]
        if _differ(_constraint_leaves(before.support), _constraint_leaves(after.support)):
            raise ValueError(
                f"the support of latent site '{name}' ({type(before).__name__}) depends on "
                "other parameters, so it cannot be a fixed constraint; reparameterise (e.g. "
                "u ~ Uniform(0, 1) and x = u * upper)")
        if _differ(_dist_leaves(before), _dist_leaves(after)):
            labels[name] = f"{name} ~ {_dist_name(before)}(depends on parameters)"


def _constraint_leaves(c: Any) -> list:
    """The array attributes of a constraint (recursing into ``independent`` etc.)."""
    if isinstance(c, constraints.Constraint):
        return [x for v in vars(c).values() for x in _constraint_leaves(v)]
    if isinstance(c, (list, tuple)):
        return [x for v in c for x in _constraint_leaves(v)]
    if isinstance(c, (np.ndarray, np.generic, jax.Array, float, int)):
        return [c]
    return []


def _dist_leaves(fn: Any) -> list | None:
    try:
        return jax.tree_util.tree_leaves(fn)
    except Exception:  # a distribution that is no pytree: assume it depends on them
        return None


def _differ(a: list | None, b: list | None) -> bool:
    if a is None or b is None or len(a) != len(b):
        return True
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return True
    return False


def _dist_name(fn: Any) -> str:
    text = describe(fn)
    return text.split("(", 1)[0]


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


def _with_deterministic(res: FitResult, sites: ModelSites, shapes: tuple, data: dict
                        ) -> FitResult:
    """The deterministic sites g(θ̂) with delta-method SEs, sqrt(diag(G cov Gᵀ)) with
    G = ∂g/∂θ over the estimated parameters: ``res.delta`` of the same function, with the
    value and Jacobian from one compiled program (a refit costs no eager tracing)."""
    value, jac = _compiled_sites(sites)(res.params, data)
    k_all = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(res.params))
    jac = np.concatenate([np.asarray(j).reshape(value.shape[0], -1)
                          for j in jax.tree_util.tree_leaves(jac)], axis=1).reshape(-1, k_all)
    jac = jac[:, free_positions(res.params, res.fixed_names)]
    cov = np.asarray(res.cov, dtype=float)
    bad = np.isnan(cov)
    cov_g = jac @ np.where(bad, 0.0, cov) @ jac.T
    tainted = (np.abs(jac) > 0) @ bad.any(axis=1)       # depends on a NaN-SE parameter
    var = np.where(tainted, np.nan, np.diag(cov_g))
    est, se = np.asarray(value, dtype=float), np.sqrt(np.maximum(var, 0.0))
    values, errors, start = {}, {}, 0
    for name, shape in zip(sites.names, shapes):
        size = int(np.prod(shape, dtype=int))
        values[name] = est[start:start + size].reshape(shape)
        errors[name] = se[start:start + size].reshape(shape)
        start += size
    return dataclasses.replace(res, deterministic=values, deterministic_stderr=errors)


@functools.lru_cache(maxsize=64)
def _compiled_sites(sites: ModelSites) -> Callable:
    """g(θ) and ∂g/∂θ in one jitted program per model and set of sites (data traced):
    refits, and the MLE and MAP fits of one model, share it."""
    def value_and_jacobian(params, data):
        return sites(params, data), jax.jacfwd(sites)(params, data)

    return jax.jit(value_and_jacobian)

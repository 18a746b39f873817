"""Host-side checks of a NumPyro model's sites (concrete traces, nothing compiled):
which sites are ``obs_mask`` imputations, how many observations a site counts, which
supports and priors move with the parameters, and whether a MAP prior depends on a
random site."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from jaxmle.core.priors import describe
from jaxmle.core.space import is_real_line
from jaxmle.model.start import as_start
from jaxmle.model.trace import ModelCall


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
    key = _dependence_key(call, arrays, params, held)
    if key is not None and key in _DEPENDENT:    # which priors depend on the parameters is
        for name in _DEPENDENT[key]:             # the model's structure: once per shapes
            labels[name] = f"{name} ~ {_dist_name(tr[name]['fn'])}(depends on parameters)"
        return
    moved = {}
    for name, value in params.items():
        t = biject_to(supports[name])
        moved[name] = np.asarray(t(np.asarray(t.inv(value)) + 0.37))
    tr2 = call.trace(moved, {"args": arrays, "held": held})
    dependent = []
    for name in latent:
        before, after = tr[name]["fn"], tr2[name]["fn"]
        if _differ(_constraint_leaves(before.support), _constraint_leaves(after.support)):
            raise ValueError(
                f"the support of latent site '{name}' ({type(before).__name__}) depends on "
                "other parameters, so it cannot be a fixed constraint; reparameterise (e.g. "
                "u ~ Uniform(0, 1) and x = u * upper)")
        if _differ(_dist_leaves(before), _dist_leaves(after)):
            labels[name] = f"{name} ~ {_dist_name(before)}(depends on parameters)"
            dependent.append(name)
    if key is not None:
        if len(_DEPENDENT) > 256:
            _DEPENDENT.clear()
        _DEPENDENT[key] = tuple(dependent)


_DEPENDENT: dict = {}


def _dependence_key(call: ModelCall, arrays: list, params: dict, held: dict) -> Any:
    """The model, its static arguments and every shape: what decides which supports and
    priors move with the parameters (None if unhashable)."""
    from jaxmle.core.params import shape_signature

    key = (call, shape_signature(arrays),
           tuple((k, np.shape(v)) for k, v in sorted(params.items())),
           tuple((k, np.shape(v)) for k, v in sorted(held.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


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


def _check_priors_free_of(random: tuple, call: ModelCall, arrays: list, sites: Any,
                          prior_sites: tuple, tr: Any) -> None:
    """A MAP fit with ``random=``: the prior (the other latent sites' densities) is
    evaluated without the random sites, so none of those densities may depend on them."""
    moved = dict(sites.params, **{n: sites.params[n] + 0.37 for n in random})
    tr2 = call.trace(moved, {"args": arrays, "held": sites.held})
    for name in prior_sites:
        if _differ(_dist_leaves(tr[name]["fn"]), _dist_leaves(tr2[name]["fn"])):
            raise ValueError(
                f"the distribution of latent site '{name}' depends on the random site(s) "
                f"{list(random)}: a site downstream of a random effect is part of what is "
                f"integrated out; add '{name}' to random= (or fit by method='mle')")


def _to_unconstrained(sites: Any, random: tuple) -> dict:
    """The random sites with a constrained support (a positive or (0, 1) effect): they are
    integrated out in their unconstrained coordinate z = t⁻¹(u), whose density carries
    the log-Jacobian (as NumPyro's AutoLaplaceApproximation): their start and constraint
    become z's. Returns {name: support}."""
    supports = {}
    for name in random:
        support = sites.constraints[name]
        if is_real_line(support):
            continue
        t = biject_to(support)
        if t.domain.event_dim != 0:
            raise ValueError(
                f"random site '{name}' has support {support}, whose transform is not "
                "elementwise: fit_model integrates out real, or elementwise constrained "
                "(positive, interval), latent sites only")
        sites.params[name] = as_start(t.inv(sites.params[name]))
        sites.constraints[name] = constraints.real
        supports[name] = support
    return supports

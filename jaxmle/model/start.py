"""Starting values of a NumPyro model's parameters.

``init_strategy`` picks a start for every latent site without an ``init=`` value:

* ``"mean"`` (default): the distribution's mean where it is finite and inside the
  support, else the centre of the unconstrained space (``biject_to(support)(0)``);
  nothing is sampled;
* ``"median"``, ``"uniform"``, ``"sample"``: NumPyro's ``init_to_median``,
  ``init_to_uniform`` (radius 2 in the unconstrained space) and ``init_to_sample``,
  seeded (``rng_seed=0``: the start is reproducible); or any NumPyro init strategy
  (``init_to_uniform(radius=1)``, ``init_to_value(values=...)``, a function of the
  site). Exchangeable components (a mixture's means with one prior) start at one
  symmetric point under ``"mean"``: give them ``init=`` or a random strategy.

Every start is checked: each term of the objective (the observed sites' and, for MAP,
the priors' log-densities) must be finite there. Where the chosen start fails (a
``Normal(0, 1)`` prior on a value used as a scale starts at 0), sites are moved one at a
time to a few fixed points of their unconstrained space (0, ±1, ±2; a site whose first
move leaves the non-finite terms as they were is passed over) and then to seeded
``init_to_uniform`` draws, keeping a move that leaves fewer non-finite terms; if no start
makes every term finite, the error names the sites whose log-density is not finite.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import biject_to

from jaxmle.fitting.data import float_dtype
from jaxmle.model.trace import ModelCall

STRATEGIES = ("mean", "median", "uniform", "sample")
MOVES = (0.0, 1.0, -1.0, 2.0, -2.0)     # unconstrained values tried for a site
DRAWS = 20                               # then seeded init_to_uniform draws of every site


def strategy_function(init_strategy: Any) -> Callable:
    """The site -> start function of ``init_strategy``."""
    from numpyro.infer import initialization as _init

    if callable(init_strategy):
        return init_strategy
    named = {"mean": default_init, "median": _init.init_to_median(num_samples=15),
             "uniform": _init.init_to_uniform(radius=2), "sample": _init.init_to_sample}
    if init_strategy not in named:
        raise ValueError(f"init_strategy must be one of {list(STRATEGIES)} or a NumPyro init "
                         f"strategy (e.g. numpyro.infer.init_to_uniform(radius=1)), got "
                         f"{init_strategy!r}")
    return named[init_strategy]


def default_init(site: dict) -> Any:
    """The start of a latent site: its distribution's mean where that is finite and inside
    the support, else the centre of the unconstrained space (biject_to(support)(0): 0, 1,
    0.5, the uniform simplex, ...). No sampling: nothing random to compile. Written in
    jax.numpy: inside NumPyro's ``scan`` the site's parameters are tracers."""
    if site["type"] != "sample" or site["is_observed"] or site["fn"].support.is_discrete:
        return None
    fn = site["fn"]
    dtype = float_dtype()
    shape = tuple(fn.shape(site["kwargs"]["sample_shape"]))
    transform = biject_to(fn.support)
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(fn))
    xp = jnp if traced else np
    centre = xp.asarray(transform(xp.zeros(transform.inverse_shape(shape), dtype)), dtype)
    try:
        with np.errstate(all="ignore"):
            mean = xp.broadcast_to(xp.asarray(fn.mean, dtype), shape)
            ok = (xp.all(xp.isfinite(mean)) & xp.all(xp.asarray(fn.support.check(mean)))
                  & xp.all(xp.isfinite(xp.asarray(transform.inv(mean)))))
    except Exception:  # no mean implemented, or an odd shape: use the centre
        return centre
    return xp.where(ok, mean, centre)


def as_start(value: Any) -> np.ndarray:
    """A start in the fit's float dtype (a Normal(0, 1)'s integer mean is no integer start)."""
    return np.asarray(value, dtype=float_dtype())


# --------------------------------------------------------------------------- the check


def nonfinite_terms(tr: Any, terms: tuple[str, ...]) -> dict[str, int]:
    """{site: how many of its log-density terms are not finite} for the sites in ``terms``
    (computed on the host, on the concrete trace)."""
    bad = {}
    for name in terms:
        site = tr[name]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")     # NumPyro's out-of-support notes: counted here
            if site["intermediates"]:
                lp = site["fn"].log_prob(site["value"], site["intermediates"])
            else:
                lp = _log_prob(site["fn"], site["value"])
            if site["scale"] is not None:
                lp = site["scale"] * lp
            count = int(np.sum(~np.isfinite(np.asarray(lp))))
        if count:
            bad[name] = count
    return bad


@jax.jit
def _jitted_log_prob(fn, value):
    return fn.log_prob(value)


def _log_prob(fn, value):
    """``fn.log_prob(value)`` as one small compiled program per distribution and shapes:
    run op by op, a new model's start check compiled every primitive on its own (1.2–1.3 s
    of a first fit); a distribution that is no pytree runs as it is."""
    try:
        return _jitted_log_prob(fn, value)
    except Exception:
        return fn.log_prob(value)


def feasible_start(call: ModelCall, data: dict, params: dict, supports: dict,
                   movable: list[str], terms: tuple[str, ...], tr: Any
                   ) -> tuple[dict, dict[str, int]]:
    """A start where every term is finite, from ``params`` (whose trace is ``tr``): sites
    in ``movable`` moved one at a time to the fixed unconstrained points, then seeded
    uniform draws of all of them. Returns the best start and its non-finite terms."""
    bad = nonfinite_terms(tr, terms)
    if not bad:
        return params, bad
    best, best_bad = dict(params), bad

    def score(candidate):
        try:
            found = nonfinite_terms(call.trace(candidate, data), terms)
        except Exception:   # the model itself refuses the values
            return None
        return found

    for name in movable:
        t = biject_to(supports[name])
        shape = np.shape(t.inv(params[name]))
        for move in MOVES:
            value = as_start(t(np.full(shape, move)))
            if np.array_equal(value, best[name]):
                continue
            candidate = dict(best, **{name: value})
            found = score(candidate)
            if found == best_bad:     # the site does not touch the failing terms: next site
                break
            if found is not None and sum(found.values()) < sum(best_bad.values()):
                best, best_bad = candidate, found
                if not best_bad:
                    return best, best_bad
    rng = np.random.default_rng(0)
    for _ in range(DRAWS):
        candidate = dict(best)
        for name in movable:
            t = biject_to(supports[name])
            shape = np.shape(t.inv(params[name]))
            candidate[name] = as_start(t(rng.uniform(-2.0, 2.0, shape)))
        found = score(candidate)
        if found is not None and not found:
            return candidate, found
    return best, best_bad


def start_error(bad: dict[str, int], tr: Any, nan_args: list[str]) -> ValueError:
    """The error for a start where some log-density terms are not finite."""
    where = ", ".join(f"'{n}' ({type(tr[n]['fn']).__name__}: {k} term{'s' if k > 1 else ''})"
                      for n, k in bad.items())
    if nan_args:
        return ValueError(
            f"model argument(s) {', '.join(nan_args)} contain NaN/inf values that reach the "
            f"log-density of site(s) {where}: a model may take NaN in its data only where it "
            "replaces them itself (imputation: x.at[np.isnan(x)].set(...)); for missing "
            "responses fill them with any finite value and pass obs_mask= to numpyro.sample "
            "(or wrap the site in numpyro.handlers.mask(mask=...))")
    return ValueError(
        f"no start was found where every log-density term is finite: site(s) {where} are not "
        "finite at the start (tried the default start, each parameter site moved to "
        f"{list(MOVES)} in its unconstrained space, and {DRAWS} uniform draws). A "
        "parameter that the model uses where only some values are valid (a scale with a "
        "Normal prior, say) needs a start there: give init={site: value}, or a prior "
        "whose support matches the use (dist.HalfNormal for a scale)")


def gradient_check(loglik: Callable, prior: Callable | None, params: dict, data: dict
                   ) -> bool:
    """Are the objective and its gradient finite at the start? (One compiled program per
    model, run only for models whose arguments hold NaN: a NaN masked by ``jnp.where`` or
    ``handlers.mask`` still makes the gradient NaN.)"""
    value, grad = _objective_gradient(loglik, prior)(
        jax.tree_util.tree_map(jnp.asarray, params), data)
    leaves = [np.asarray(value)] + [np.asarray(g) for g in jax.tree_util.tree_leaves(grad)]
    return all(np.all(np.isfinite(x)) for x in leaves)


@functools.lru_cache(maxsize=32)
def _objective_gradient(loglik: Callable, prior: Callable | None) -> Callable:
    def objective(p, data):
        total = loglik(p, data)
        if prior is not None:
            total = total + prior(p, data)
        return total

    return jax.jit(jax.value_and_grad(objective))

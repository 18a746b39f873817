"""The traced side of ``fit_model``: a NumPyro model as a log-likelihood and a log-prior.

Both are frozen dataclasses (equal and hashable for the same model, the same
static arguments and the same site roles), so ``jm.fit``'s compiled-program
cache finds them again: a second fit with new data of the same shapes does not
recompile. The model's array arguments travel in ``data`` (traced); everything
else (Python ints, strings, None, ...) is part of the static :class:`ModelCall`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from jaxmle.core.params import is_number_list


@dataclasses.dataclass(frozen=True)
class ModelCall:
    """The model and its arguments with the arrays taken out (they are ``data["args"]``).

    ``treedef`` is the structure of ``(args, kwargs)``; ``static`` holds, per leaf,
    either the static (hashable) value or ``ARRAY`` for a leaf that is traced data.
    """

    model: Callable
    treedef: Any
    static: tuple

    def rebuild(self, arrays: list[Any]) -> tuple[tuple, dict]:
        it = iter(arrays)
        leaves = [next(it) if s is ARRAY else s for s in self.static]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def trace(self, values: dict, data: dict) -> Any:
        """The model's trace with the parameter (and held) sites substituted by ``values``."""
        args, kwargs = self.rebuild(data["args"])
        values = {**values, **data["held"]}
        model = handlers.substitute(handlers.seed(self.model, rng_seed=0), data=values)
        return handlers.trace(model).get_trace(*args, **kwargs)


class _Array:
    """Marker of a traced (array) argument leaf."""

    def __repr__(self) -> str:
        return "ARRAY"

    def __reduce__(self):
        return "ARRAY"


ARRAY = _Array()


def site_log_prob(site: dict) -> jax.Array:
    """Σ log p of one sample site, exactly as ``numpyro.infer.util.log_density`` counts it
    (the distribution's own mask, the ``scale`` handler, intermediates)."""
    value, intermediates, scale = site["value"], site["intermediates"], site["scale"]
    if intermediates:
        lp = site["fn"].log_prob(value, intermediates)
    else:
        lp = site["fn"].log_prob(value)
    if scale is not None:
        lp = scale * lp
    return jnp.sum(lp)


def _total(tr: Any, names: tuple[str, ...]) -> jax.Array:
    total = jnp.zeros(())
    for name in names:
        total = total + site_log_prob(tr[name]).astype(total.dtype)
    return total


@dataclasses.dataclass(frozen=True)
class ModelLogLik:
    """ℓ(θ) = Σ log p over the observed sites (``numpyro.factor`` included), plus the
    densities of the latent sites integrated out by Laplace (``random=``)."""

    call: ModelCall
    terms: tuple[str, ...]      # observed sample sites (and random= latents)

    def __call__(self, params: dict, data: dict) -> jax.Array:
        return _total(self.call.trace(params, data), self.terms)


@dataclasses.dataclass(frozen=True)
class ModelLogPrior:
    """log π(θ) = Σ log p over the latent sites' own distributions (MAP); a joint prior,
    so a hierarchical prior (θⱼ ~ N(μ, τ)) is one function of all the parameters."""

    call: ModelCall
    terms: tuple[str, ...]      # latent sample sites whose prior enters (not random=)
    labels: tuple[str, ...]     # "beta ~ Normal(loc=0, scale=1).to_event(1)", for the summary

    def __call__(self, params: dict, data: dict) -> jax.Array:
        return _total(self.call.trace(params, data), self.terms)


@dataclasses.dataclass(frozen=True)
class ModelSites:
    """The values of the model's ``numpyro.deterministic`` (float) sites, flattened and
    concatenated (the function ``res.delta`` differentiates)."""

    call: ModelCall
    names: tuple[str, ...]

    def __call__(self, params: dict, data: dict) -> jax.Array:
        tr = self.call.trace(params, data)
        return jnp.concatenate([jnp.ravel(jnp.asarray(tr[n]["value"], float))
                                for n in self.names])


def split_args(args: tuple, kwargs: dict) -> tuple[Any, tuple, list[np.ndarray]]:
    """(treedef, static leaves with ``ARRAY`` markers, array leaves) of the model's arguments;
    raises for NaN/inf in an array (naming the argument).

    Arrays (numpy, JAX, numpy scalars, anything with ``__array__`` such as a pandas
    Series) are traced data; the rest must be hashable (they select the program)."""
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x) if is_number_list(x) else x,
                                  (tuple(args), dict(kwargs)),
                                  is_leaf=is_number_list)   # [1., 2.] is data, not a tuple
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    static, arrays = [], []
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    for path, leaf in zip(paths, leaves):
        if isinstance(leaf, (bool, int, float, complex, str, bytes)) or leaf is None:
            static.append(leaf)
        elif isinstance(leaf, (np.ndarray, np.generic, jax.Array)) or hasattr(leaf, "__array__"):
            static.append(ARRAY)
            arrays.append(leaf if isinstance(leaf, jax.Array) else np.asarray(leaf))
            _check_finite(path, arrays[-1])
        else:
            try:
                hash(leaf)
            except TypeError as err:
                raise TypeError(
                    f"model argument {_arg_label(path)} of type {type(leaf).__name__} is neither "
                    "an array nor hashable: fit_model passes arrays as traced data and every "
                    "other argument as a static (hashable) value; pass it as an array, a tuple, "
                    "or close over it in the model") from err
            static.append(leaf)
    return treedef, tuple(static), arrays


def _check_finite(path: str, arr: Any) -> None:
    if isinstance(arr, jax.core.Tracer) or not jnp.issubdtype(arr.dtype, jnp.inexact):
        return
    bad = ~np.isfinite(np.asarray(arr))
    if bad.any():
        raise ValueError(
            f"model argument {_arg_label(path)} contains {int(bad.sum())} NaN/inf value(s): "
            "fit_model needs finite data. For missing responses, fill them with any finite "
            "value and pass obs_mask= to numpyro.sample (or wrap the site in "
            "numpyro.handlers.mask(mask=...)); the masked entries drop out of the likelihood")


def _arg_label(path: str) -> str:
    """'[0][1]' -> 'args[1]', "[1]['opts'][0]" -> 'opts[0]'."""
    if path.startswith("[0]"):
        return "args" + path[3:]
    rest = path[3:]
    if rest.startswith("['") and "']" in rest:
        end = rest.index("']")
        return rest[2:end] + rest[end + 2:]
    return "kwargs" + rest

"""The traced side of ``fit_model``: a NumPyro model as a log-likelihood and a log-prior.

Both are frozen dataclasses (equal and hashable for the same model, the same
static arguments and the same site roles), so ``jm.fit``'s compiled-program
cache finds them again: a second fit with new data of the same shapes does not
recompile. The model's array arguments travel in ``data`` (traced); everything
else (Python ints, strings, None, ...) is part of the static :class:`ModelCall`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to



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
        leaves = [next(it) if s is ARRAY else s.value if isinstance(s, Concrete) else s
                  for s in self.static]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def trace(self, values: dict, data: dict, unconstrained: tuple[str, ...] = ()) -> Any:
        """The model's trace with the parameter (and held) sites substituted by ``values``;
        the sites named in ``unconstrained`` get ``biject_to(support)(values[name])``."""
        # (a model without array arguments or held sites has neither key in its data)
        args, kwargs = self.rebuild(data.get("args", []))
        # JAX arrays: NumPyro's scan indexes a substituted series with a traced step
        values = {k: jnp.asarray(v) for k, v in {**values, **data.get("held", {})}.items()}
        model = handlers.seed(self.model, rng_seed=0)
        if unconstrained:
            raw = {n: values.pop(n) for n in unconstrained if n in values}

            def constrain(site):
                if site["name"] in raw:
                    return biject_to(site["fn"].support)(raw[site["name"]])
                return None

            model = handlers.substitute(model, substitute_fn=constrain)
        model = handlers.substitute(model, data=values)
        return handlers.trace(model).get_trace(*args, **kwargs)


class _Array:
    """Marker of a traced (array) argument leaf."""

    def __repr__(self) -> str:
        return "ARRAY"

    def __reduce__(self):
        return "ARRAY"


ARRAY = _Array()


class Concrete:
    """An array argument the model needs as a value (``np.unique``, ``np.isnan``, boolean
    indexing, NaN entries it imputes): a constant of the compiled program, compared and
    hashed by content, so new data that differ in it compile a new program."""

    __slots__ = ("value", "_hash")

    def __init__(self, value: Any):
        value = np.array(value)          # a private, read-only copy
        value.flags.writeable = False
        self.value = value
        digest = hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
        self._hash = hash((value.shape, value.dtype.str, digest))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Concrete):
            return NotImplemented
        a, b = self.value, other.value
        return (self._hash == other._hash and a.shape == b.shape and a.dtype == b.dtype
                and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")))

    def __hash__(self) -> int:
        return self._hash

    def __getstate__(self):
        return self.value

    def __setstate__(self, value):
        self.__init__(value)

    def __repr__(self) -> str:
        return f"Concrete(shape={self.value.shape}, dtype={self.value.dtype})"


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


GROUP_MIN = 8     # sites of one distribution and shape evaluated as one batch from here


def _total(tr: Any, names: tuple[str, ...]) -> jax.Array:
    """Σ over the sites' log-densities. Many sites of one distribution and shape (a
    Python loop's ``y_t``) are evaluated as one vmapped log-density of their stacked
    parameters: the compiled program holds one log-density, not one per site."""
    total = jnp.zeros(())
    groups: dict = {}
    for name in names:
        key, member = _group_key(tr[name])
        if key is None:
            total = total + site_log_prob(tr[name]).astype(total.dtype)
        else:
            groups.setdefault(key, []).append((name, member))
    for (treedef, *_), members in groups.items():
        if len(members) < GROUP_MIN:
            for name, _ in members:
                total = total + site_log_prob(tr[name]).astype(total.dtype)
            continue
        leaves = [jnp.stack([m[0][i] for _, m in members]) for i in range(len(members[0][1][0]))]
        values = jnp.stack([m[1] for _, m in members])
        lp = jax.vmap(lambda ls, v: jnp.sum(jax.tree_util.tree_unflatten(treedef, ls)
                                            .log_prob(v)))(leaves, values)
        total = total + jnp.sum(lp).astype(total.dtype)
    return total


def _group_key(site: dict) -> tuple[Any, Any]:
    """(what makes sites batchable together, (the distribution's leaves, the value)), or
    (None, None) for a site evaluated on its own (intermediates, a scale, no pytree)."""
    if site["intermediates"] or site["scale"] is not None:
        return None, None
    try:
        leaves, treedef = jax.tree_util.tree_flatten(site["fn"])
    except Exception:
        return None, None
    if not leaves or any(isinstance(x, bool) or not (hasattr(x, "shape")
                                                     or isinstance(x, (int, float)))
                         for x in leaves):      # (a Python bool: mask(False), kept exact)
        return None, None
    value = jnp.asarray(site["value"])
    sig = tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves)
    try:
        key = (treedef, sig, value.shape, value.dtype)
        hash(key)
    except TypeError:
        return None, None
    return key, (leaves, value)


_ONCE: dict = {}


def _once(fn: Any) -> Callable:
    """``fn.evaluate`` under ``jax.jit``: the model (a Python function, with NumPyro's
    handlers: a 140-step Python loop takes ~0.35 s to run) is traced once per parameter
    and data signature, and every program, derivative and ``vmap`` that contains it reuses
    that trace (a fit's programs traced the model 13 times). Keyed by the (frozen,
    hashable) function object."""
    out = _ONCE.get(fn)
    if out is None:
        if len(_ONCE) > 256:
            _ONCE.clear()
        out = _ONCE[fn] = jax.jit(fn.evaluate)
    return out


@dataclasses.dataclass(frozen=True)
class ModelLogLik:
    """ℓ(θ) = Σ log p over the observed sites (``numpyro.factor`` included), plus the
    densities of the latent sites integrated out by Laplace (``random=``)."""

    call: ModelCall
    terms: tuple[str, ...]      # observed sample sites (and random= latents)
    unconstrained: tuple[str, ...] = ()   # constrained random sites, integrated out in z

    def __call__(self, params: dict, data: dict) -> jax.Array:
        return _once(self)(params, data)

    def evaluate(self, params: dict, data: dict) -> jax.Array:
        tr = self.call.trace(params, data, self.unconstrained)
        total = _total(tr, self.terms)
        for name in self.unconstrained:   # the density of z = t⁻¹(u): + log|t'(z)|
            t = biject_to(tr[name]["fn"].support)
            ladj = t.log_abs_det_jacobian(params[name], tr[name]["value"])
            total = total + jnp.sum(ladj).astype(total.dtype)
        return total


@dataclasses.dataclass(frozen=True)
class ModelLogPrior:
    """log π(θ) = Σ log p over the latent sites' own distributions (MAP); a joint prior,
    so a hierarchical prior (θⱼ ~ N(μ, τ)) is one function of all the parameters."""

    call: ModelCall
    terms: tuple[str, ...]      # latent sample sites whose prior enters (not random=)
    labels: tuple[str, ...]     # "beta ~ Normal(loc=0, scale=1).to_event(1)", for the summary
    fill: tuple = ()            # (name, shape) of the random= sites: absent from params

    def __call__(self, params: dict, data: dict) -> jax.Array:
        return _once(self)(params, data)

    def evaluate(self, params: dict, data: dict) -> jax.Array:
        # a random-effects fit passes θ only: the random sites are set to the centre of
        # their support, biject_to(support)(0) (no prior term depends on them, checked
        # by fit_model), so nothing is sampled
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
        fill = tuple(n for n, _ in self.fill if n not in params)
        values = {**{n: jnp.zeros(s, dtype) for n, s in self.fill}, **params}
        return _total(self.call.trace(values, data, fill), self.terms)


@dataclasses.dataclass(frozen=True)
class ModelSites:
    """The values of the model's ``numpyro.deterministic`` sites, flattened and
    concatenated in the parameters' float dtype (the function ``res.delta``
    differentiates; an integer or boolean site's derivative is zero)."""

    call: ModelCall
    names: tuple[str, ...]

    def __call__(self, params: dict, data: dict) -> jax.Array:
        tr = self.call.trace(params, data)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
        return jnp.concatenate([jnp.ravel(jnp.asarray(tr[n]["value"]).astype(dtype))
                                for n in self.names])

"""Priors: ``fit(..., priors={name: numpyro distribution})`` turns the MLE into a MAP fit.

The optimiser maximises the log posterior density of the *natural* parameters,

    log p(θ | x) = ℓ(θ) + Σ_j log π_j(θ_j) + const,

with no Jacobian term: the mode NumPyro's ``AutoDelta`` and Stan's optimizer
report. ``cov``/``stderr`` then come from the Hessian of the log posterior (a
Gaussian approximation of the posterior at its mode). A Gaussian prior
N(0, s²) is the L2 penalty θ²/(2s²); a Laplace prior with scale b is the L1
penalty |θ|/b, whose kink the proximal Newton solver (:mod:`jaxmle.core.solvers.proximal`)
handles exactly.

What is static: which leaves have priors and each distribution's pytree
structure (class, batch/event shape). The distributions' parameters are traced
inputs, so a new prior scale reuses the compiled program.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.core.space import _freeze, _numpyro_constraints, is_real_line


@dataclasses.dataclass(frozen=True)
class PriorSpec:
    """Static description of the priors (their parameters travel as traced values)."""

    names: tuple[str, ...]          # leaf names with a prior
    leaves: tuple[int, ...]         # their positions among the parameter leaves
    treedefs: tuple[Any, ...]       # each distribution's pytree structure
    labels: tuple[str, ...] = dataclasses.field(compare=False)  # "mu ~ Normal(loc=0, scale=10)"
    l1: tuple[bool, ...]            # a Laplace prior on a real leaf: an L1 penalty
    function: Any = None            # priors=callable: log π(params, data), a joint prior

    @property
    def has_l1(self) -> bool:
        return any(self.l1)

    def distributions(self, values: Any) -> list[Any]:
        return [jax.tree_util.tree_unflatten(t, v) for t, v in zip(self.treedefs, values)]


def log_prior(spec: PriorSpec, values: Any, params: Any, data: Any,
              smooth_only: bool = False) -> jax.Array:
    """Σ_j log π_j(θ_j) (or the user's joint log π(θ, data)). With ``smooth_only``, an L1
    prior contributes only its constant −log(2b) (its |θ − m|/b term is the proximal
    solver's)."""
    natural_leaves = jax.tree_util.tree_leaves(params)
    total = jnp.zeros((), natural_leaves[0].dtype if natural_leaves else jnp.float32)
    if spec.function is not None:
        out = jnp.asarray(spec.function(params, data))
        if out.ndim != 0:
            raise ValueError(f"the log prior function must return a scalar, got shape {out.shape}")
        return out.astype(total.dtype)
    for d, i, l1 in zip(spec.distributions(values), spec.leaves, spec.l1):
        x = natural_leaves[i]
        if smooth_only and l1:
            x = jnp.broadcast_to(d.mean, x.shape).astype(x.dtype)  # log π at the mode: −log 2b
        total = total + jnp.sum(d.log_prob(x)).astype(total.dtype)
    return total


def l1_penalty(spec: PriorSpec, values: Any, leaf_shapes: list[tuple[int, ...]],
               dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Per natural element: the L1 weight λ = 1/b and the centre m of the Laplace priors
    (λ = 0 for elements without one), so that −log π = Σ λ_j |θ_j − m_j| + const."""
    sizes = [int(np.prod(s, dtype=int)) for s in leaf_shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    lam = jnp.zeros(offsets[-1], dtype)
    loc = jnp.zeros(offsets[-1], dtype)
    for d, i, l1 in zip(spec.distributions(values), spec.leaves, spec.l1):
        if not l1:
            continue
        shape, sl = leaf_shapes[i], slice(offsets[i], offsets[i + 1])
        scale = jnp.sqrt(jnp.broadcast_to(d.variance, shape) / 2.0).astype(dtype)
        lam = lam.at[sl].set(1.0 / scale.reshape(-1))
        loc = loc.at[sl].set(jnp.broadcast_to(d.mean, shape).astype(dtype).reshape(-1))
    return lam, loc


# --------------------------------------------------------------------------- host side


def prepare_priors(priors: Mapping[str, Any] | None, names: tuple[str, ...],
                   init_leaves: list[np.ndarray], constraints: Mapping[str, Any] | None,
                   dtype: Any) -> tuple[dict, PriorSpec | None, Any]:
    """Validate the priors; return the constraints (a prior's support where the user gave
    none), the static :class:`PriorSpec` and the traced prior parameters."""
    constraints = dict(constraints or {})
    if priors is None or (isinstance(priors, Mapping) and not priors):
        return constraints, None, None
    if callable(priors) and not isinstance(priors, Mapping):
        labels = tuple(getattr(priors, "labels", None) or
                       (f"log prior: {getattr(priors, '__name__', type(priors).__name__)}",))
        return constraints, PriorSpec((), (), (), labels, (), priors), None
    if not isinstance(priors, Mapping):
        raise TypeError(f"priors must be a dict {{name: numpyro distribution}} or a function "
                        f"log_prior(params, data), got {priors!r}")
    unknown = sorted(set(priors) - set(names))
    if unknown:
        raise ValueError(f"priors given for unknown parameter(s) {unknown}; the parameters in "
                         f"init are {list(names)}")
    chosen, treedefs, values, labels, l1 = [], [], [], [], []
    for i, name in enumerate(names):
        if name not in priors:
            continue
        d = priors[name]
        _check_prior(name, d, np.shape(init_leaves[i]))
        constraints[name] = _constraint_for(name, d, constraints.get(name))
        leaves, treedef = jax.tree_util.tree_flatten(d)
        chosen.append(i)
        treedefs.append(treedef)
        values.append([_as_traced(x, dtype) for x in leaves])
        labels.append(f"{name} ~ {describe(d)}")
        l1.append(_is_laplace(d) and _is_real(constraints[name]))
    spec = PriorSpec(tuple(names[i] for i in chosen), tuple(chosen), tuple(treedefs),
                     tuple(labels), tuple(l1))
    return constraints, spec, values


def _as_traced(x: Any, dtype: Any) -> np.ndarray:
    arr = np.asarray(x)
    return arr.astype(dtype) if arr.dtype.kind in "iuf" else arr


def _check_prior(name: str, d: Any, shape: tuple[int, ...]) -> None:
    dist = sys.modules.get("numpyro.distributions")   # a NumPyro prior has imported it
    if dist is None or not isinstance(d, dist.Distribution):
        raise TypeError(f"prior for '{name}' must be a numpyro distribution (e.g. "
                        f"dist.Normal(0, 10)), got {d!r}")
    if d.support.is_discrete:
        raise ValueError(f"prior for '{name}' is discrete ({describe(d)}); a parameter's prior "
                         "must be a continuous distribution")
    dshape = tuple(d.batch_shape) + tuple(d.event_shape)
    ev = len(d.event_shape)
    ok = ev <= len(shape) and tuple(shape[len(shape) - ev:]) == tuple(d.event_shape)
    try:
        ok = ok and np.broadcast_shapes(dshape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"prior for '{name}' has batch shape {tuple(d.batch_shape)} and event shape "
            f"{tuple(d.event_shape)}, which does not fit the parameter's shape {tuple(shape)}; "
            "use .expand([...]) / .to_event(...) or a scalar prior applied to every element")


def _constraint_for(name: str, d: Any, given: Any) -> Any:
    """The prior's support, unless the user gave a constraint; a conflict is an error.

    A constraint that equals the support is fine, and so is any constraint with a
    prior on the whole real line (it truncates the prior to the constraint)."""
    support = _elementwise_support(d.support)
    if given is None:
        return support
    if _freeze(_elementwise_support(given)) == _freeze(support) or _is_real(support):
        return given
    raise ValueError(
        f"the prior for '{name}' ({describe(d)}) has support {support} but the parameter is "
        f"constrained to {given}; drop the constraint (the prior's support is used) or use a "
        "prior on that set")


def _elementwise_support(c: Any) -> Any:
    """An ``independent(base, n)`` support of an expanded prior acts like its base."""
    npc = _numpyro_constraints()   # None: c is no NumPyro constraint
    while npc is not None and isinstance(c, npc.independent):
        c = c.base_constraint
    return c


def _is_real(c: Any) -> bool:
    return is_real_line(_elementwise_support(c))


def _is_laplace(d: Any) -> bool:
    import numpyro.distributions as dist

    while isinstance(d, (dist.Independent, dist.ExpandedDistribution)):
        d = d.base_dist
    return isinstance(d, dist.Laplace)


def describe(d: Any) -> str:
    """A short description of a distribution, e.g. ``Normal(loc=0, scale=10)``."""
    import numpyro.distributions as dist

    if isinstance(d, dist.Independent):
        return f"{describe(d.base_dist)}.to_event({d.reinterpreted_batch_ndims})"
    if isinstance(d, dist.ExpandedDistribution):
        return f"{describe(d.base_dist)}.expand({list(d.batch_shape)})"
    args = []
    for key in getattr(d, "arg_constraints", {}):
        if key in ("logits",) and "probs" in d.arg_constraints:
            continue
        value = getattr(d, key, None)
        if value is None:
            continue
        arr = np.asarray(value)
        args.append(f"{key}={arr.item():.4g}" if arr.size == 1 else f"{key}=<{arr.shape}>")
    return f"{type(d).__name__}({', '.join(args)})"

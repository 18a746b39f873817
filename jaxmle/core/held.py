"""Held coordinates: fixed parameters (``fit(..., fixed=...)``) and profile points.

*Which* coordinates are held is traced data (:class:`Held`, masks over z and θ),
not part of the compiled program: a fit, a fit with any ``fixed=``, the points of
every profile and every start of a multi-start run the same program.

    z (m)  ──held z coordinates do not move (zero gradient, unit Hessian rows)──▶
    θ      = θ(z) with the held natural elements set to their values.

A fixed natural element holds its unconstrained coordinate too (an elementwise
leaf: the element's own; a simplex or matrix leaf can only be fixed whole, and then
all of its coordinates). A profile point holds one unconstrained coordinate at
its start value (so every value is admissible). The optimiser works on full-size
vectors; the host takes the free rows of the result (:func:`Layout`).

A fixed natural element is ``where(held, value, θ(z))``: no derivative reaches z
through it. Its tangent is a *computed* zero, though, and a log-likelihood whose
derivative is infinite at the value (log p at p = 0) turns 0·∞ into NaN in the
Hessian. Such values lie on the boundary of their constraint (z = ±∞: they have no
unconstrained coordinate), and a leaf wholly fixed there is a constant of the
program instead (static :func:`constant_leaves`, built from the values alone, with
no tangent at all); every other hold is data.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.params as _params
from jaxmle.core.host_space import host_transform
from jaxmle.core.space import ParamSpace, _is_identity
from jaxmle.core.typing import LogLikFn


class Held(NamedTuple):
    """What is held, as data (a pytree of arrays; a batch may give each member its own)."""

    z: Any          # (m,) bool: unconstrained coordinates the optimiser does not move
    nat: Any        # (k,) bool: natural elements set to ``values``
    values: Any     # (k,) their values (ignored elsewhere)


def nothing_held(space: ParamSpace, dtype: Any) -> Held:
    return Held(np.zeros(space.m, bool), np.zeros(space.k, bool), np.zeros(space.k, dtype))


def hold_fixed(space: ParamSpace, fixed: Mapping[int, float], dtype: Any) -> Held:
    """The :class:`Held` of fixed natural elements {flat index: value}."""
    held = nothing_held(space, dtype)
    for i, v in fixed.items():
        held.nat[i], held.values[i] = True, v
    n0 = u0 = 0
    for leaf in space.leaves:
        nat = held.nat[n0:n0 + leaf.size]
        if elementwise(leaf):
            held.z[u0:u0 + leaf.unc_size] = nat
        elif nat.any():
            held.z[u0:u0 + leaf.unc_size] = True
        n0, u0 = n0 + leaf.size, u0 + leaf.unc_size
    return held


def hold_coordinates(held: Held, js: Any) -> Held:
    """A batch of :class:`Held`: ``held`` with unconstrained coordinate ``js[b]`` held too
    (profile points)."""
    js = np.asarray(js)
    n = js.shape[0]
    z = np.repeat(np.asarray(held.z)[None], n, axis=0)
    z[np.arange(n), js] = True
    return Held(z, np.repeat(np.asarray(held.nat)[None], n, axis=0),
                np.repeat(np.asarray(held.values)[None], n, axis=0))


def spread(held: Held, n: int) -> Held:
    """``held`` for each of ``n`` batch members (read-only broadcast views)."""
    return Held(*(np.broadcast_to(np.asarray(x), (n,) + np.shape(x)) for x in held))


class Inputs(NamedTuple):
    """The kernel's data argument: the user's data and what else is traced."""

    data: Any
    held: Any               # :class:`Held`
    groups: Any = None      # (n,) int32 cluster codes (cluster-robust sandwich)
    prior: Any = None       # the priors' parameters (see :mod:`jaxmle.core.priors`)


class Layout(NamedTuple):
    """Host-side index bookkeeping of a :class:`Held` (numpy) on a :class:`ParamSpace`."""

    fixed_nat: np.ndarray       # (n_fixed,) natural flat indices held fixed
    free_nat: np.ndarray        # (k_free,) natural flat indices estimated
    act_unc: np.ndarray         # (m_free,) unconstrained coordinates the optimiser moves
    act_nat: np.ndarray         # (m_free,) natural index of each (elementwise leaf), else -1
    m: int                      # all unconstrained coordinates

    @property
    def plain(self) -> bool:
        """Nothing held."""
        return not len(self.fixed_nat) and len(self.act_unc) == self.m

    @property
    def m_free(self) -> int:
        return len(self.act_unc)


def layout(space: ParamSpace, held: Held) -> Layout:
    return _layout(space, np.asarray(held.nat, bool).tobytes(), np.asarray(held.z, bool).tobytes())


@functools.lru_cache(maxsize=256)
def _layout(space: ParamSpace, nat_bytes: bytes, z_bytes: bytes) -> Layout:
    nat = np.frombuffer(nat_bytes, bool)
    zh = np.frombuffer(z_bytes, bool)
    unc_nat = natural_index(space)
    act_unc = np.nonzero(~zh)[0]
    return Layout(np.nonzero(nat)[0], np.nonzero(~nat)[0], act_unc, unc_nat[act_unc], space.m)


def constant_leaves(space: ParamSpace, held: Held) -> tuple[int, ...]:
    """The leaves wholly fixed with a value on the boundary of their constraint (its
    inverse transform is not finite there: pi = 0 of a unit interval): the compiled
    program treats them as constants (see the module docstring)."""
    out, n0 = [], 0
    nat, values = np.asarray(held.nat), np.asarray(held.values)
    for i, leaf in enumerate(space.leaves):
        if nat[n0:n0 + leaf.size].all():
            value = values[n0:n0 + leaf.size].reshape(leaf.shape)
            z = host_transform(leaf.transform, value, inverse=True)
            if not np.all(np.isfinite(z)):
                out.append(i)
        n0 += leaf.size
    return tuple(out)


@functools.lru_cache(maxsize=256)
def natural_index(space: ParamSpace) -> np.ndarray:
    """(m,) the natural flat index of each unconstrained coordinate of an elementwise
    leaf (the same element), −1 for the coordinates of other leaves."""
    out = np.full(space.m, -1, np.int64)
    n0 = u0 = 0
    for leaf in space.leaves:
        if elementwise(leaf):
            out[u0:u0 + leaf.size] = np.arange(n0, n0 + leaf.size)
        n0, u0 = n0 + leaf.size, u0 + leaf.unc_size
    out.setflags(write=False)
    return out


def elementwise(leaf) -> bool:
    """The leaf's transform maps each element on its own (so single elements can be held)."""
    return getattr(leaf.constraint, "event_dim", 0) == 0 and leaf.unc_shape == leaf.shape


def is_identity_transform(leaf) -> bool:
    return _is_identity(leaf.transform)


class View:
    """The parameter space with the held coordinates bound (inside the trace).

    Duck-types the parts of :class:`ParamSpace` that the objective and
    :func:`~jaxmle.core.covariance.observed_inference` use; sizes are the full k and m
    (the held rows are taken out on the host)."""

    def __init__(self, space: ParamSpace, held: Held | None = None, constant: tuple = ()):
        self.space, self.held, self.constant = space, held, constant
        self.k, self.m, self.names = space.k, space.m, space.names
        self.is_identity = space.is_identity
        self.is_elementwise = space.is_elementwise
        self.is_bijective = space.is_bijective

    def moving(self, z: jax.Array) -> jax.Array:
        """z with no derivative through the held coordinates (same values)."""
        if self.held is None:
            return z
        return jnp.where(self.held.z, jax.lax.stop_gradient(z), z)

    def natural_leaves(self, z: jax.Array) -> list[jax.Array]:
        """The natural leaves, the held elements set to their values."""
        leaves = self.space.natural_leaves(self.moving(z))
        if self.held is None:
            return leaves
        shapes = [l.shape for l in self.space.leaves]
        nat = _params.unravel(self.held.nat, shapes)
        values = _params.unravel(self.held.values.astype(z.dtype), shapes)
        return [v if i in self.constant else jnp.where(h, v, x)
                for i, (h, v, x) in enumerate(zip(nat, values, leaves))]

    def to_natural(self, z: jax.Array) -> Any:
        return jax.tree_util.tree_unflatten(self.space.treedef, self.natural_leaves(z))

    def to_natural_flat(self, z: jax.Array) -> jax.Array:
        """All k natural elements (the held ones at their values)."""
        return _params.ravel(self.natural_leaves(z))

    def unravel_natural(self, theta: jax.Array) -> Any:
        return self.space.unravel_natural(theta)


# --------------------------------------------------------------------------- host side


def check_per_observation(loglik: LogLikFn, params: Any, data: Any, cov_type: str) -> int | None:
    """The number of per-observation terms, which OPG and sandwich covariances need."""
    if cov_type == "observed":
        return None
    shape = jax.eval_shape(loglik, params, data).shape
    if len(shape) != 1:
        raise ValueError(
            f"cov_type={cov_type!r} needs the per-observation scores, but loglik returned a "
            f"{'scalar' if not shape else f'shape {shape}'}: return the 1-D vector of "
            "per-observation log-likelihood terms instead of their sum")
    return int(shape[0])


def prepare_held(loglik: LogLikFn, data: Any, space: ParamSpace,
                 init_leaves: list[np.ndarray], fixed, cov_type: str, groups, dtype):
    """Host-side checks shared by ``fit`` and ``fit_batch`` (``data`` is one dataset):
    the :class:`Held` of ``fixed``, the cluster codes and their number."""
    held = prepare_fixed(fixed, space, init_leaves, dtype)
    params = jax.tree_util.tree_unflatten(space.treedef, list(init_leaves))
    n_obs = check_per_observation(loglik, params, data, cov_type)
    codes, n_groups = prepare_groups(groups, cov_type, n_obs)
    return held, codes, n_groups


def valid_names(space: ParamSpace) -> list[str]:
    leaf_names = [l.name for l in space.leaves]
    return leaf_names + [n for n in space.names if n not in leaf_names]


def _element_slots(space: ParamSpace) -> dict[str, tuple[int, Any, int]]:
    """Name (leaf or element) -> (first flat index, leaf, number of elements)."""
    slots, n0 = {}, 0
    for leaf in space.leaves:
        slots[leaf.name] = (n0, leaf, leaf.size)
        if leaf.shape:
            for i, name in enumerate(_params.element_names(leaf.name, leaf.shape)):
                slots[name] = (n0 + i, leaf, 1)
        n0 += leaf.size
    return slots


def prepare_fixed(fixed: Mapping[str, Any] | None, space: ParamSpace,
                  init_leaves: list[np.ndarray], dtype: Any) -> Held:
    """Validate ``fixed=`` and return its :class:`Held`.

    Names are leaf names (``"sigma"``, ``"beta"``: every element, a scalar value is
    broadcast) or element names (``"beta[1]"``); values must satisfy the constraint.
    """
    if not fixed:
        return nothing_held(space, dtype)
    if not isinstance(fixed, Mapping):
        raise TypeError(f"fixed must be a dict {{name: value}}, got {type(fixed).__name__}")
    slots = _element_slots(space)
    unknown = sorted(set(fixed) - set(slots))
    if unknown:
        raise ValueError(f"fixed names unknown parameter(s) {unknown}; the parameters are "
                         f"{valid_names(space)}")
    values: dict[int, float] = {}
    leaf_index = {l.name: i for i, l in enumerate(space.leaves)}
    for name, value in fixed.items():
        start, leaf, size = slots[name]
        if size == 1 and leaf.size > 1 and not elementwise(leaf):
            raise ValueError(
                f"fixed element '{name}': the constraint {leaf.constraint!r} of '{leaf.name}' ties "
                f"its elements together; fix the whole parameter, e.g. fixed={{'{leaf.name}': ...}}")
        arr = _fixed_value(name, value, (leaf.shape if size == leaf.size else ()), dtype)
        current = np.array(init_leaves[leaf_index[leaf.name]], dtype=dtype).reshape(-1)
        idx = list(range(start, start + size))
        for i, v in zip(idx, arr.reshape(-1)):
            if i in values:
                raise ValueError(f"fixed gives parameter element {space.names[i]!r} twice "
                                 f"(through '{name}' and another name)")
            values[i] = float(v)
        first = start - sum(l.size for l in space.leaves[:leaf_index[leaf.name]])
        current[first:first + size] = arr.reshape(-1)
        _check_fixed_value(name, leaf, current.reshape(leaf.shape), first, size)
    return hold_fixed(space, values, dtype)


def _fixed_value(name: str, value: Any, shape: tuple, dtype: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"fixed value of '{name}' must be real numbers, got {value!r}") from err
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"fixed value of '{name}' is not finite: {value!r}")
    try:
        return np.broadcast_to(arr, shape).astype(dtype)
    except ValueError as err:
        raise ValueError(f"fixed value of '{name}' has shape {arr.shape}; the parameter has "
                         f"shape {shape}") from err


def _check_fixed_value(name: str, leaf, full: np.ndarray, first: int, size: int) -> None:
    inside = np.asarray(leaf.constraint.check(full))
    if elementwise(leaf):
        ok = np.broadcast_to(inside, leaf.shape).reshape(-1)[first:first + size].all()
    else:
        ok = inside.all()
    if not ok:
        shown = full.reshape(-1)[first:first + size]
        shown = shown[0] if size == 1 else shown
        raise ValueError(f"fixed value {name}={shown!r} violates the constraint "
                         f"{leaf.constraint!r} of '{leaf.name}'")


def prepare_groups(groups: Any, cov_type: str, n_obs: int | None) -> tuple[np.ndarray | None, int]:
    """Cluster labels -> int32 codes 0..G-1 and G (for the cluster-robust sandwich)."""
    if groups is None:
        return None, 0
    if cov_type != "sandwich":
        raise ValueError(f"groups= gives a cluster-robust sandwich covariance: use it with "
                         f"cov_type='sandwich' (got cov_type={cov_type!r})")
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be a 1-D array of cluster labels, got shape {g.shape}")
    if n_obs is not None and g.shape[0] != n_obs:
        raise ValueError(f"groups has {g.shape[0]} labels but loglik returns {n_obs} "
                         "per-observation terms")
    _, codes = np.unique(g, return_inverse=True)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    if n_groups < 2:
        raise ValueError("groups needs at least 2 distinct clusters")
    return codes.astype(np.int32), n_groups


def unravel_numpy(view: View, flat: np.ndarray) -> Any:
    """:meth:`View.unravel_natural` on the host (numpy; no program)."""
    return jax.tree_util.tree_unflatten(view.space.treedef, [
        np.reshape(flat[a:b], shape) for a, b, shape in _leaf_bounds(view.space)])


@functools.lru_cache(maxsize=256)
def _leaf_bounds(space: Any) -> tuple:
    bounds = np.cumsum([0] + [l.size for l in space.leaves])
    return tuple((int(a), int(b), l.shape) for a, b, l in zip(bounds[:-1], bounds[1:],
                                                               space.leaves))

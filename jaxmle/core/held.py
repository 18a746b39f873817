"""Held coordinates: fixed parameters (``fit(..., fixed=...)``) and profile points.

The optimiser works on the *free* unconstrained coordinates only. Which natural
elements are fixed is static (part of the compiled program's key); their values
are traced inputs, so refitting with new fixed values reuses the program:

    z_free ──insert the profile point (index, value), if any──▶ z_act
    z_act  ──scatter into the non-fixed unconstrained slots──▶ z (m)
    θ      = θ(z) with the fixed natural elements set to their values.

A whole leaf can be fixed whatever its constraint; single elements
(``"beta[1]"``) only of a leaf whose constraint acts elementwise (real, positive,
intervals, ...): a simplex or a matrix constraint ties its elements together.
A profile point holds one more active coordinate, in the unconstrained space (so
every value is admissible); its position and value are traced, so one compiled
program serves the profiles of every parameter.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.params as _params
from jaxmle.core.space import ParamSpace
from jaxmle.core.typing import LogLikFn


@dataclasses.dataclass(frozen=True)
class Holding:
    """Static: the held coordinates (their values are traced inputs, see :class:`Inputs`)."""

    fixed: tuple[int, ...] = ()     # flat natural indices held at ``Inputs.fixed``
    profiled: bool = False          # one more active unconstrained coordinate held


class ProfilePoint(NamedTuple):
    index: Any      # int32: position among the active (non-fixed) unconstrained coordinates
    value: Any      # its value (unconstrained)


class Inputs(NamedTuple):
    """The kernel's data argument when something besides the user's data is traced."""

    data: Any
    fixed: Any = None       # (n_fixed,) natural values of the fixed elements
    groups: Any = None      # (n,) int32 cluster codes (cluster-robust sandwich)
    profile: Any = None     # ProfilePoint
    prior: Any = None       # the priors' parameters (see :mod:`jaxmle.core.priors`)


def unpack(data: Any) -> Inputs:
    return data if isinstance(data, Inputs) else Inputs(data)


def pack(data: Any, fixed: Any = None, groups: Any = None, prior: Any = None) -> Any:
    """``Inputs`` when fixed values, groups or prior parameters travel with the data,
    else the data itself."""
    if fixed is None and groups is None and prior is None:
        return data
    return Inputs(data, fixed, groups, prior=prior)


class Layout(NamedTuple):
    """Host-side index bookkeeping of a :class:`Holding` on a :class:`ParamSpace`."""

    fixed_nat: np.ndarray       # (n_fixed,) natural flat indices held fixed
    free_nat: np.ndarray        # (k_free,) natural flat indices estimated
    act_unc: np.ndarray         # (m_act,) unconstrained coordinates not fixed
    act_nat: np.ndarray         # (m_act,) natural index of each (elementwise leaf), else -1
    free_leaves: tuple          # the leaves with at least one free element
    leaf_fixed: tuple           # per leaf: (fixed positions in the leaf, their index in values)


@functools.lru_cache(maxsize=256)
def layout(space: ParamSpace, fixed: tuple[int, ...]) -> Layout:
    fixed_nat = np.asarray(fixed, dtype=np.int64)
    nat_fixed = np.zeros(space.k, bool)
    nat_fixed[fixed_nat] = True
    act_unc, act_nat, free_leaves, leaf_fixed = [], [], [], []
    n0 = u0 = 0
    for leaf in space.leaves:
        mask = nat_fixed[n0:n0 + leaf.size]
        pos = np.nonzero(mask)[0]
        leaf_fixed.append((pos, np.searchsorted(fixed_nat, n0 + pos)))
        if elementwise(leaf):
            act_unc += [u0 + i for i in range(leaf.size) if not mask[i]]
            act_nat += [n0 + i for i in range(leaf.size) if not mask[i]]
        elif not mask.any():
            act_unc += list(range(u0, u0 + leaf.unc_size))
            act_nat += [-1] * leaf.unc_size
        if not mask.all():
            free_leaves.append(leaf)
        n0, u0 = n0 + leaf.size, u0 + leaf.unc_size
    return Layout(fixed_nat, np.nonzero(~nat_fixed)[0], np.asarray(act_unc, np.int64),
                  np.asarray(act_nat, np.int64), tuple(free_leaves), tuple(leaf_fixed))


def elementwise(leaf) -> bool:
    """The leaf's transform maps each element on its own (so single elements can be held)."""
    return getattr(leaf.constraint, "event_dim", 0) == 0 and leaf.unc_shape == leaf.shape


def is_identity_transform(leaf) -> bool:
    from jaxmle.core.space import _is_identity

    return _is_identity(leaf.transform)


class View:
    """The free coordinates of a parameter space under a :class:`Holding`, with the held
    values bound (inside the trace). Duck-types the parts of :class:`ParamSpace` that
    the solver objective and :func:`~jaxmle.core.covariance.observed_inference` use."""

    def __init__(self, space: ParamSpace, holding: Holding, inputs: Inputs | None = None):
        self.space, self.holding = space, holding
        self.lay = layout(space, holding.fixed)
        self.values = None if inputs is None else inputs.fixed
        self.point = None if inputs is None else inputs.profile
        self.plain = not holding.fixed and not holding.profiled

    # --- sizes and names (static)
    @property
    def m(self) -> int:
        return len(self.lay.act_unc) - int(self.holding.profiled)

    @property
    def k(self) -> int:
        return len(self.lay.free_nat)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.space.names[i] for i in self.lay.free_nat)

    @property
    def fixed_names(self) -> tuple[str, ...]:
        return tuple(self.space.names[i] for i in self.lay.fixed_nat)

    @property
    def unc_names(self) -> tuple[str, ...]:
        return tuple(self.space.unc_names[i] for i in self.lay.act_unc)

    @property
    def is_identity(self) -> bool:
        return all(is_identity_transform(l) for l in self.lay.free_leaves)

    @property
    def is_elementwise(self) -> bool:
        return all(getattr(l.constraint, "event_dim", 0) == 0 for l in self.lay.free_leaves)

    @property
    def is_bijective(self) -> bool:
        return self.k == self.m

    # --- maps (traced)
    def initial(self, init_leaves: list[jax.Array]) -> jax.Array:
        """z_free at the start: from natural init leaves, or given directly (profile)."""
        if self.holding.profiled:
            return init_leaves[0]
        z = self.space.to_unconstrained(init_leaves)
        return z if self.plain else z[self.lay.act_unc]

    def z_active(self, z: jax.Array) -> jax.Array:
        if not self.holding.profiled:
            return z
        m_act = self.m + 1
        j, u = self.point.index, self.point.value.astype(z.dtype)
        if m_act == 1:
            return jnp.reshape(u, (1,))
        pos = jnp.arange(m_act)
        src = jnp.clip(pos - (pos > j).astype(pos.dtype), 0, m_act - 2)
        return jnp.where(pos == j, u, z[src])

    def natural_leaves(self, z: jax.Array) -> list[jax.Array]:
        """The natural leaves, the fixed elements set to their values.

        A wholly fixed leaf is built from the values alone, so it carries no
        derivative at all (not even a zero one: log(p) at a fixed p = 0 must not
        turn 0·∞ into NaN in the Hessian); a partly fixed one is the transform with
        the fixed elements overwritten.
        """
        za = self.z_active(z)
        if not self.holding.fixed:
            return self.space.natural_leaves(za)
        full = jnp.zeros(self.space.m, za.dtype).at[self.lay.act_unc].set(za)
        parts = _params.unravel(full, [l.unc_shape for l in self.space.leaves])
        values = self.values.astype(za.dtype)
        out = []
        for leaf, u, (pos, idx) in zip(self.space.leaves, parts, self.lay.leaf_fixed):
            if len(pos) == leaf.size:
                out.append(values[idx].reshape(leaf.shape))
                continue
            x = leaf.transform(u).reshape(leaf.shape)
            if len(pos):
                x = x.reshape(-1).at[pos].set(values[idx]).reshape(leaf.shape)
            out.append(x)
        return out

    def natural_flat_all(self, z: jax.Array) -> jax.Array:
        """All k natural elements, the fixed ones set to their values."""
        return _params.ravel(self.natural_leaves(z))

    def to_natural(self, z: jax.Array) -> Any:
        if self.plain:
            return self.space.to_natural(z)
        return jax.tree_util.tree_unflatten(self.space.treedef, self.natural_leaves(z))

    def to_natural_flat(self, z: jax.Array) -> jax.Array:
        """The free natural elements (rows of ``cov``)."""
        if self.plain:
            return self.space.to_natural_flat(z)
        return self.natural_flat_all(z)[self.lay.free_nat]

    def fill(self, free: jax.Array, held: Any) -> jax.Array:
        """A flat natural vector from its free entries and ``held`` at the fixed ones."""
        if not self.holding.fixed:
            return free
        out = jnp.zeros(self.space.k, free.dtype).at[self.lay.free_nat].set(free)
        return out.at[self.lay.fixed_nat].set(held)

    def unravel_free(self, theta_free: jax.Array) -> Any:
        """The parameter pytree from the free natural elements (fixed ones filled in)."""
        if self.plain:
            return self.space.unravel_natural(theta_free)
        return self.space.unravel_natural(self.fill(theta_free, self.values.astype(theta_free.dtype)))


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
    the :class:`Holding` and values of ``fixed``, and the cluster codes."""
    holding, fixed_values = prepare_fixed(fixed, space, init_leaves, dtype)
    params = jax.tree_util.tree_unflatten(space.treedef, list(init_leaves))
    n_obs = check_per_observation(loglik, params, data, cov_type)
    codes, n_groups = prepare_groups(groups, cov_type, n_obs)
    return holding, fixed_values, codes, n_groups


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
                  init_leaves: list[np.ndarray], dtype: Any) -> tuple[Holding, np.ndarray | None]:
    """Validate ``fixed=`` and return the static :class:`Holding` and the traced values.

    Names are leaf names (``"sigma"``, ``"beta"``: every element, a scalar value is
    broadcast) or element names (``"beta[1]"``); values must satisfy the constraint.
    """
    if not fixed:
        return Holding(), None
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
    order = tuple(sorted(values))
    return Holding(fixed=order), np.asarray([values[i] for i in order], dtype)


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

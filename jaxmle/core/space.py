"""Parameter space: NumPyro constraints mapped by ``biject_to`` between the
natural parameters θ (a pytree) and one unconstrained vector z ∈ ℝᵐ.

The optimiser works on z; results are reported for θ. For a bijective leaf
(positive, interval, ordered, ...) θ and z have the same size; for a leaf on a
manifold (simplex, positive definite, correlation Cholesky) z has fewer
coordinates than θ has elements, and the covariance of θ is rank-deficient.

A leaf without a constraint (or with NumPyro's ``constraints.real``) is on the real line,
:data:`REAL`, whose transform is the identity :data:`IDENTITY`: both are defined here, so
a fit without constraints never imports NumPyro (a user who passes a NumPyro constraint
has imported it already).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.params as _params


class _RealLine:
    """The real line: NumPyro's ``constraints.real`` (same ``check``, ``event_dim`` and
    repr) without importing NumPyro. One instance, :data:`REAL`."""

    event_dim = 0
    is_discrete = False

    def __call__(self, value: Any) -> Any:
        return self.check(value)

    def check(self, value: Any) -> Any:
        return (value == value) & (value != float("inf")) & (value != float("-inf"))

    def feasible_like(self, prototype: Any) -> Any:
        return jnp.zeros_like(prototype)

    def __repr__(self) -> str:
        return "Real()"

    def __reduce__(self) -> str:
        return "REAL"   # pickles and copies as the module's singleton


class _Identity:
    """The identity map of the real line: NumPyro's ``IdentityTransform`` (the calls the
    package makes: ``t(z)``, ``t.inv(θ)``, shapes, log |det J| = 0). One instance,
    :data:`IDENTITY`."""

    domain = codomain = None   # set below to REAL

    def __call__(self, x: Any) -> Any:
        return x

    @property
    def inv(self) -> "_Identity":
        return self

    def log_abs_det_jacobian(self, x: Any, y: Any, intermediates: Any = None) -> Any:
        return jnp.zeros_like(x)

    def forward_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def __repr__(self) -> str:
        return "IdentityTransform()"

    def __reduce__(self) -> str:
        return "IDENTITY"


REAL = _RealLine()
IDENTITY = _Identity()
_Identity.domain = _Identity.codomain = REAL


def _numpyro_constraints() -> Any:
    """``numpyro.distributions.constraints`` if NumPyro is imported, else None (then no
    object can be a NumPyro constraint)."""
    return sys.modules.get("numpyro.distributions.constraints")


def is_real_line(c: Any) -> bool:
    """True for the real line: :data:`REAL` or NumPyro's ``real``, possibly wrapped in
    ``independent``."""
    while hasattr(c, "base_constraint"):
        c = c.base_constraint
    npc = _numpyro_constraints()
    return c is REAL or (npc is not None and type(c) is type(npc.real))


def _freeze(obj: Any) -> Any:
    """A hashable description of a constraint (its class and attribute values)."""
    if obj is REAL:
        return ("real",)
    npc = _numpyro_constraints()
    if npc is not None and isinstance(obj, npc.Constraint):
        if type(obj) is type(npc.real):
            return ("real",)
        attrs = tuple(sorted((k, _freeze(v)) for k, v in vars(obj).items()))
        return (type(obj).__module__, type(obj).__qualname__, attrs)
    if isinstance(obj, (bool, int, float, str, type(None))):
        return obj
    arr = np.asarray(obj)
    return (arr.dtype.str, arr.shape, arr.tobytes())


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One parameter leaf: its name, natural shape, unconstrained shape and constraint."""

    name: str
    shape: tuple[int, ...]
    unc_shape: tuple[int, ...]
    constraint_key: Any
    constraint: Any = dataclasses.field(compare=False, hash=False, repr=False)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int))

    @property
    def unc_size(self) -> int:
        return int(np.prod(self.unc_shape, dtype=int))

    @property
    def transform(self):
        if self.constraint is REAL:
            return IDENTITY
        from numpyro.distributions.transforms import biject_to

        return biject_to(self.constraint)


@dataclasses.dataclass(frozen=True)
class ParamSpace:
    """Static (hashable) description of the parameter pytree and its constraints."""

    treedef: Any
    leaves: tuple[Leaf, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Flat names of the natural parameters (rows of ``cov``)."""
        return _params.flat_names([l.name for l in self.leaves], [l.shape for l in self.leaves])

    @property
    def unc_names(self) -> tuple[str, ...]:
        """Flat names of the unconstrained coordinates (one leaf name per coordinate)."""
        return tuple(l.name for l in self.leaves for _ in range(l.unc_size))

    @property
    def k(self) -> int:
        return sum(l.size for l in self.leaves)

    @property
    def m(self) -> int:
        return sum(l.unc_size for l in self.leaves)

    @property
    def is_identity(self) -> bool:
        """True when every leaf is unconstrained, so z and θ coincide."""
        return all(_is_identity(l.transform) for l in self.leaves)

    @property
    def is_elementwise(self) -> bool:
        """True when every transform acts elementwise, so ∂θ/∂z is diagonal."""
        return all(getattr(l.constraint, "event_dim", 0) == 0 for l in self.leaves)

    @property
    def is_bijective(self) -> bool:
        """True when z and θ have the same dimension (no manifold-valued leaf)."""
        return self.k == self.m

    def natural_leaves(self, z: jax.Array) -> list[jax.Array]:
        parts = _params.unravel(z, [l.unc_shape for l in self.leaves])
        return [l.transform(u).reshape(l.shape) for l, u in zip(self.leaves, parts)]

    def to_natural(self, z: jax.Array) -> Any:
        """θ(z) as a pytree shaped like ``init``."""
        return jax.tree_util.tree_unflatten(self.treedef, self.natural_leaves(z))

    def to_natural_flat(self, z: jax.Array) -> jax.Array:
        return _params.ravel(self.natural_leaves(z))

    def to_unconstrained(self, leaves: list[jax.Array]) -> jax.Array:
        """z(θ) from the list of natural leaves."""
        return _params.ravel([l.transform.inv(x) for l, x in zip(self.leaves, leaves)])

    def unravel_natural(self, theta: jax.Array) -> Any:
        """A flat natural vector back to the parameter pytree."""
        parts = _params.unravel(theta, [l.shape for l in self.leaves])
        return jax.tree_util.tree_unflatten(self.treedef, parts)

    def ravel_natural(self, tree: Any) -> jax.Array:
        return _params.ravel(jax.tree_util.tree_leaves(tree))


def _is_identity(transform: Any) -> bool:
    if transform is IDENTITY:
        return True
    from numpyro.distributions.transforms import IdentityTransform, IndependentTransform

    if isinstance(transform, IndependentTransform):
        return _is_identity(transform.base_transform)
    return isinstance(transform, IdentityTransform)


def _unconstrained_shape(name: str, constraint: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    if constraint is REAL:
        return shape
    from numpyro.distributions.transforms import biject_to

    try:
        transform = biject_to(constraint)
        unc_shape = tuple(transform.inverse_shape(shape))
    except Exception as err:  # numpyro raises NotImplementedError / ValueError / TypeError
        raise ValueError(
            f"constraint {constraint!r} for parameter '{name}' cannot be used for a value of "
            f"shape {shape}: {err}"
        ) from err
    event_dim = getattr(constraint, "event_dim", 0)
    if len(shape) < event_dim:
        raise ValueError(
            f"parameter '{name}' has shape {shape} but constraint {constraint!r} needs at least "
            f"{event_dim} dimension(s) (e.g. a vector for simplex/ordered_vector, a matrix for "
            "positive_definite)"
        )
    return unc_shape


def build_space(init_leaves: list[np.ndarray], names: tuple[str, ...], treedef: Any,
                constraints: Mapping[str, Any] | None) -> ParamSpace:
    """Build the :class:`ParamSpace`, checking constraint names against parameter names."""
    constraints = dict(constraints or {})
    unknown = sorted(set(constraints) - set(names))
    if unknown:
        raise ValueError(
            f"constraints given for unknown parameter(s) {unknown}; the parameters in init are "
            f"{list(names)}"
        )
    leaves = []
    npc = None
    if constraints:   # the user gave NumPyro constraints, so NumPyro is imported already
        from numpyro.distributions import constraints as npc
    for name, value in zip(names, init_leaves):
        constraint = constraints.get(name, REAL)
        if npc is not None and type(constraint) is type(npc.real):
            constraint = REAL   # the default: one compile key for the real line
        if constraint is not REAL and not isinstance(constraint, npc.Constraint):
            raise TypeError(
                f"constraint for parameter '{name}' must be a numpyro.distributions.constraints "
                f"object (e.g. constraints.positive), got {constraint!r}"
            )
        shape = tuple(np.shape(value))
        unc_shape = _unconstrained_shape(name, constraint, shape)
        leaves.append(Leaf(name, shape, unc_shape, _freeze(constraint), constraint))
    return ParamSpace(treedef, tuple(leaves))


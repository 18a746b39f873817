"""A pytree of arrays as three flat arrays, one per kind (the floating dtype, int32, bool).

The host driver's solver program (:func:`jaxmle.fitting.host_solver._advance`) takes and returns
the Newton's state and proposal this way: a program call costs about a microsecond per
argument and per result leaf, and the state has 27 of them, at every iteration.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Packing(NamedTuple):
    """Where each leaf of a pytree lives in the three flat arrays (static, hashable)."""

    treedef: Any
    leaves: tuple           # (kind, offset, size, shape, dtype) per leaf


def _kind(dtype: np.dtype) -> int:
    return 2 if dtype == np.bool_ else 1 if np.issubdtype(dtype, np.integer) else 0


def layout_of(tree: Any) -> Packing:
    """The :class:`Packing` of ``tree`` (its leaves' shapes and dtypes)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    sizes, out = [0, 0, 0], []
    for x in leaves:
        x = np.asarray(x)
        dt = jax.dtypes.canonicalize_dtype(x.dtype)   # float64 NumPy leaves are float32
        k = _kind(dt)                                 # leaves of the traced twin without x64
        out.append((k, sizes[k], x.size, x.shape, dt))
        sizes[k] += x.size
    return Packing(treedef, tuple(out))


def pack(layout: Packing, tree: Any, dtype: Any) -> tuple:
    """``tree`` as three flat arrays of ``dtype``, int32 and bool (NumPy on the host,
    ``jax.numpy`` when a leaf is a JAX array or a tracer)."""
    leaves = jax.tree_util.tree_leaves(tree)
    xp = jnp if any(isinstance(x, jax.Array) for x in leaves) else np
    kinds = (np.dtype(dtype), np.dtype(np.int32), np.dtype(np.bool_))
    groups: list[list] = [[], [], []]
    for x, (k, _, _, _, _) in zip(leaves, layout.leaves):
        groups[k].append(xp.ravel(xp.asarray(x)).astype(kinds[k]))
    return tuple(xp.concatenate(g) if g else xp.zeros(0, kinds[k])
                 for k, g in enumerate(groups))


def unpack(layout: Packing, packed: tuple) -> Any:
    """:func:`pack`'s inverse (NumPy in, NumPy out; traced in, traced out)."""
    leaves = [packed[k][off:off + size].reshape(shape).astype(dt, copy=False)
              for k, off, size, shape, dt in layout.leaves]
    return jax.tree_util.tree_unflatten(layout.treedef, leaves)

"""Pytree bookkeeping for parameters: leaf names, flat names, ravel and unravel."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _key_str(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    return str(key)


def leaf_names(tree: Any) -> tuple[str, ...]:
    """Dotted names of the leaves, in pytree order: ``{"a": {"b": x}} -> ("a.b",)``."""
    paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return tuple(".".join(_key_str(k) for k in path) or "param" for path, _ in paths)


def element_names(name: str, shape: Sequence[int]) -> list[str]:
    """Flat names of one leaf's elements: ``"beta[0]"``; ``"L[0,1]"``; a scalar keeps its name."""
    if len(shape) == 0:
        return [name]
    indices = itertools.product(*(range(n) for n in shape))
    return [f"{name}[{','.join(map(str, idx))}]" for idx in indices]


def flat_names(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> tuple[str, ...]:
    """Flat element names of all leaves, in the order of the raveled vector."""
    return tuple(n for name, shape in zip(names, shapes) for n in element_names(name, shape))


def ravel(leaves: Sequence[jax.Array]) -> jax.Array:
    """Concatenate leaves into one flat vector."""
    if not leaves:
        return jnp.zeros((0,))
    return jnp.concatenate([jnp.ravel(x) for x in leaves])


def unravel(flat: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
    """Split a flat vector into arrays of the given shapes (inverse of :func:`ravel`)."""
    sizes = [int(np.prod(s, dtype=int)) for s in shapes]
    offsets = np.cumsum([0] + sizes)
    return [flat[offsets[i]:offsets[i + 1]].reshape(s) for i, s in enumerate(shapes)]


def is_number_list(x: Any) -> bool:
    """A (nested) list of numbers, which stands for an array, not a pytree node."""
    return isinstance(x, list) and bool(x) and all(
        isinstance(e, (int, float, np.number)) or is_number_list(e) for e in x)


def shape_signature(leaves: Sequence[Any]) -> tuple:
    """(shape, dtype) of each leaf: what decides whether a traced program is reused."""
    return tuple((x.shape, x.dtype) if hasattr(x, "dtype") and hasattr(x, "shape")
                 else (np.shape(x), type(x)) for x in leaves)


class SeenSet:
    """Keys of host-side checks that already passed (a check runs once per signature);
    bounded: emptied when full."""

    def __init__(self, limit: int = 4096):
        self._keys: set = set()
        self._limit = limit

    def __contains__(self, key: Any) -> bool:
        return key in self._keys

    def add(self, key: Any) -> None:
        if len(self._keys) >= self._limit:
            self._keys.clear()
        self._keys.add(key)


def flat_values(tree: Any) -> np.ndarray:
    """The leaves of a pytree of arrays as one flat numpy vector, in pytree order."""
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.ravel(np.asarray(x)) for x in leaves]) if leaves else np.zeros(0)


def all_flat_names(params: Any, batch_ndim: int = 0) -> tuple[str, ...]:
    """Flat names of every element of a parameter pytree (estimated and fixed)."""
    shapes = [np.shape(x)[batch_ndim:] for x in jax.tree_util.tree_leaves(params)]
    return flat_names(leaf_names(params), shapes)


def free_positions(params: Any, fixed_names: tuple[str, ...], batch_ndim: int = 0) -> np.ndarray:
    """Positions of the estimated elements in the flat vector of all parameters."""
    fixed = set(fixed_names)
    return np.asarray([i for i, n in enumerate(all_flat_names(params, batch_ndim)) if n not in fixed],
                      dtype=np.int64)


def check_names(names: Any, valid: tuple[str, ...]) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown parameter name(s) {unknown}; the estimated parameters are "
                         f"{list(valid)}")
    return names

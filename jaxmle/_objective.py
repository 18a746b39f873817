"""The objective the optimiser minimises, and host-side checks of the data.

For data x, weights w and natural parameters θ(z),

    ℓ(θ) = Σᵢ wᵢ ℓᵢ(θ)        (or the user's scalar total),
    f(z) = −ℓ(θ(z)),

so the optimiser minimises f over the unconstrained z ∈ ℝᵐ.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._params import leaf_names
from ._typing import LogLikFn


def prepare_data(data: Any) -> Any:
    """Turn a plain list of numbers into an array; check every leaf is finite numeric data."""
    if isinstance(data, (list, tuple)) and data and all(
        isinstance(v, numbers.Number) for v in data
    ):
        data = np.asarray(data)
    leaves = jax.tree_util.tree_leaves(data)
    names = leaf_names(data)
    if not leaves:
        raise ValueError("data is empty: pass an array or a pytree of arrays")
    for name, leaf in zip(names, leaves):
        _check_leaf(name, leaf)
    # array-likes that jit does not take (pandas Series, lists inside a pytree) -> numpy
    return jax.tree_util.tree_map(
        lambda x: x if isinstance(x, (jax.Array, np.ndarray, jax.core.Tracer)) else np.asarray(x),
        data)


def _check_leaf(name: str, leaf: Any) -> None:
    label = "data" if name == "param" else f"data leaf '{name}'"
    if isinstance(leaf, jax.core.Tracer):
        return
    if isinstance(leaf, jax.Array):
        _check_device_leaf(label, leaf)
        return
    try:
        arr = np.asarray(leaf)
    except Exception as err:
        raise TypeError(f"{label} is not an array: {type(leaf).__name__}") from err
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{label} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind in "fc":
        _raise_if_not_finite(label, arr)


def _raise_if_not_finite(label: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.argwhere(bad)[:5]
        where = ", ".join(str(tuple(i)) if len(i) > 1 else str(int(i[0])) for i in idx)
        raise ValueError(
            f"{label} contains {int(bad.sum())} NaN/inf value(s) (first at index {where}); "
            "drop or impute them, or give them weight 0 after replacing them by a finite value"
        )


def _check_device_leaf(label: str, leaf: jax.Array) -> None:
    """Check a device array where it lives (sharded or on another host: no transfer)."""
    if not jnp.issubdtype(leaf.dtype, jnp.number):
        raise TypeError(f"{label} must be numeric, got dtype {leaf.dtype}")
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
        if leaf.is_fully_addressable:
            _raise_if_not_finite(label, np.asarray(leaf))
        raise ValueError(f"{label} contains NaN/inf values; drop or impute them")


def prepare_weights(weights: Any, dtype: Any) -> jax.Array | None:
    """Check per-observation weights: a finite, non-negative 1-D array."""
    if weights is None:
        return None
    if isinstance(weights, jax.Array) and not isinstance(weights, jax.core.Tracer):
        return _prepare_device_weights(weights, dtype)
    w = np.asarray(weights)
    if w.ndim != 1:
        raise ValueError(f"weights must be a 1-D array (one weight per observation), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights contain {int((~np.isfinite(w)).sum())} NaN/inf value(s)")
    if np.any(w < 0):
        raise ValueError(f"weights must be non-negative; {int((w < 0).sum())} are negative")
    return np.asarray(w, dtype=dtype)


def _prepare_device_weights(w: jax.Array, dtype: Any) -> jax.Array:
    """The checks of :func:`prepare_weights` done where the (possibly sharded) array lives."""
    if w.ndim != 1:
        raise ValueError(f"weights must be a 1-D array (one weight per observation), got shape {w.shape}")
    if not bool(jnp.all(jnp.isfinite(w))):
        raise ValueError("weights contain NaN/inf values")
    if bool(jnp.any(w < 0)):
        raise ValueError("weights must be non-negative")
    return w.astype(dtype)


def leading_axis(data: Any) -> int:
    """Number of observations implied by the data: the leading axis of its first array leaf."""
    for leaf in jax.tree_util.tree_leaves(data):
        if np.ndim(leaf) >= 1:
            return int(np.shape(leaf)[0])
    return 1


def count_observations(loglik: LogLikFn, params: Any, data: Any, weights: jax.Array | None,
                       dtype: Any) -> jax.Array:
    """nobs: Σ weights, else the length of the per-observation vector, else the data's
    leading axis (found by shape inference only: nothing extra is computed)."""
    if weights is not None:
        return jnp.sum(weights)
    shape = jax.eval_shape(loglik, params, data).shape
    return jnp.asarray(shape[0] if len(shape) == 1 else leading_axis(data), dtype)


def total_loglik(loglik: LogLikFn, params: Any, data: Any, weights: jax.Array | None,
                 dtype: Any) -> tuple[jax.Array, jax.Array]:
    """ℓ(θ) = Σ wᵢ ℓᵢ(θ) and the number of observations; checks the output shape at trace time."""
    out = jnp.asarray(loglik(params, data))
    if out.ndim == 0:
        if weights is not None:
            raise ValueError(
                "weights= needs a per-observation log-likelihood, but loglik returned a scalar; "
                "return the vector of per-observation terms instead of their sum"
            )
        return out.astype(dtype), jnp.asarray(leading_axis(data), dtype)
    if out.ndim != 1:
        raise ValueError(
            f"loglik must return a scalar (the total) or a 1-D vector of per-observation terms; "
            f"it returned shape {out.shape}"
        )
    out = out.astype(dtype)
    if weights is None:
        return jnp.sum(out), jnp.asarray(out.shape[0], dtype)
    if weights.shape != out.shape:
        raise ValueError(
            f"weights have shape {weights.shape} but loglik returned {out.shape[0]} "
            "per-observation terms"
        )
    # where(): a 0 weight masks padding even when that row's term is not finite.
    terms = jnp.where(weights > 0, weights * out, 0.0)
    return jnp.sum(terms), jnp.sum(weights)


def mask_padding(data: Any, weights: jax.Array | None) -> Any:
    """Replace the zero-weight rows of per-observation data by the first positive-weight row.

    A 0 weight removes a row's term from ℓ, but a padding value outside the
    support (say 0 for a Gamma) would still put 0·∞ = NaN into the gradient.
    Every data leaf whose leading axis has one entry per weight is treated as
    per-observation; other leaves are left alone.
    """
    if weights is None:
        return data
    n = weights.shape[0]
    keep = weights > 0
    first = jnp.argmax(keep)

    def fix(leaf):
        leaf = jnp.asarray(leaf)
        if leaf.ndim == 0 or leaf.shape[0] != n:
            return leaf
        mask = keep.reshape((n,) + (1,) * (leaf.ndim - 1))
        return jnp.where(mask, leaf, leaf[first])

    return jax.tree_util.tree_map(fix, data)


def make_objective(loglik: LogLikFn, to_params: Callable[[jax.Array], Any], data: Any,
                   weights: jax.Array | None, dtype: Any) -> Callable[[jax.Array], jax.Array]:
    """f(z) = −ℓ(θ(z)) for the optimiser (data and weights are traced values)."""

    def objective(z: jax.Array) -> jax.Array:
        return -total_loglik(loglik, to_params(z), data, weights, dtype)[0]

    return objective

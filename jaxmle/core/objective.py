"""The objective the optimiser minimises (the data is checked in :mod:`jaxmle.fitting.data`).

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

from jaxmle.core.params import SeenSet, leaf_names, shape_signature
from jaxmle.core.typing import LogLikFn


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


# --------------------------------------------------------------------------- checks at init


class MissingKeyError(KeyError):
    """The log-likelihood read a parameter (or data field) that is not there."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_CHECKED = SeenSet()        # signatures whose log-likelihood passed check_loglik


def check_loglik(loglik: Any, params: Any, data: Any, *, batch: int | None = None) -> None:
    """Trace ``loglik(params, data)`` abstractly (nothing is compiled or computed) and turn
    what goes wrong into an error that names the problem: not callable, a parameter or
    data field that is not there, shapes that do not fit the log-likelihood, an output
    that is not one real scalar or vector. A signature that passed is not traced again.

    ``batch``: the batch size in ``fit_batch`` (for the hint on per-dataset inits).
    """
    if not callable(loglik):
        raise TypeError(f"loglik must be a function loglik(params, data), got "
                        f"{type(loglik).__name__}")
    p_leaves, p_def = jax.tree_util.tree_flatten(params)
    d_leaves, d_def = jax.tree_util.tree_flatten(data)
    try:
        key = (loglik, p_def, d_def, shape_signature(p_leaves), shape_signature(d_leaves))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _CHECKED:
        return

    def call(track, pl, dl):
        p = jax.tree_util.tree_unflatten(p_def, pl)
        d = jax.tree_util.tree_unflatten(d_def, dl)
        if track:
            p, d = _track(p, "parameter", "init", ()), _track(d, "data field", "data", ())
        return _checked_output(loglik(p, d))

    try:
        jax.eval_shape(lambda pl, dl: call(False, pl, dl), p_leaves, d_leaves)
    except _OutputError as err:
        raise err.cls(str(err)) from None
    except Exception as err:  # diagnose with the key-tracking containers
        try:
            jax.eval_shape(lambda pl, dl: call(True, pl, dl), p_leaves, d_leaves)
        except MissingKeyError as missing:
            raise MissingKeyError(str(missing)) from None
        except Exception:
            pass
        raise _explain(err, params, batch) from err
    if key is not None:
        _CHECKED.add(key)


class _OutputError(Exception):
    def __init__(self, message: str, cls: type = TypeError):
        super().__init__(message)
        self.cls = cls


def _checked_output(out: Any) -> jax.Array:
    what = type(out).__name__
    if out is None:
        raise _OutputError("loglik returned None (a missing `return`?): it must return the "
                           "log-likelihood, a real scalar or a 1-D vector of per-observation terms")
    if isinstance(out, (str, bytes, tuple, list, dict)) or not (
            isinstance(out, (jax.Array, np.ndarray, np.generic, numbers.Number))
            or hasattr(out, "__jax_array__")):
        raise _OutputError(f"loglik returned a {what}; it must return the log-likelihood, one "
                           "real scalar (the total) or a 1-D vector of per-observation terms")
    arr = jnp.asarray(out)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise _OutputError(
            f"loglik returned values of dtype {arr.dtype}; the log-likelihood must be real "
            "floating-point numbers (integer or boolean output has no derivatives)")
    if arr.ndim > 1:
        raise _OutputError(
            f"loglik must return a scalar (the total) or a 1-D vector of per-observation terms; "
            f"it returned shape {arr.shape}", ValueError)
    return arr


def _track(tree: Any, what: str, owner: str, path: tuple) -> Any:
    """Dicts that name a missing key and list the present ones (for diagnosis only)."""
    if isinstance(tree, dict):
        return _KeyTracker({k: _track(v, what, owner, path + (k,)) for k, v in tree.items()},
                           what, owner, path)
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(_track(v, what, owner, path + (i,)) for i, v in enumerate(tree))
    return tree


class _KeyTracker(dict):
    def __init__(self, items: dict, what: str, owner: str, path: tuple):
        super().__init__(items)
        self._what, self._owner, self._path = what, owner, path

    def __missing__(self, key: Any):
        where = "".join(f"[{k!r}]" for k in self._path)
        name = ".".join(map(str, self._path + (key,)))
        raise MissingKeyError(
            f"loglik reads {self._what} '{name}', which {self._owner}{where} does not hold; "
            f"{self._owner}{where} holds {sorted(map(str, self.keys()))}")


def _explain(err: Exception, params: Any, batch: int | None) -> Exception:
    """The user's log-likelihood failed on the parameters' shapes: say which ones."""
    names = leaf_names(params)
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(params)]
    text = str(err).split("\n")[0]
    suspects = [n for n, s in zip(names, shapes) if s and _mentions(text, s)]
    listing = ", ".join(f"'{n}' {s}" for n, s in zip(names, shapes))
    msg = (f"loglik(params, data) fails at init with {type(err).__name__}: {text}\n"
           f"The parameters' shapes from init: {listing}.")
    if suspects:
        msg += (f" The shape of {', '.join(repr(n) for n in suspects)} appears in the error: "
                "check that init gives each parameter the shape the log-likelihood expects.")
    if batch is not None and any(s and s[0] != batch for s in shapes):
        msg += (f" In fit_batch, a per-dataset init needs a leading axis of length B = {batch} "
                "on every leaf (batched_init=True); a shared init has one fit's shapes.")
    cls = type(err) if type(err) in (TypeError, ValueError, IndexError) else ValueError
    return cls(msg)


def _mentions(text: str, shape: tuple) -> bool:
    dims = ", ".join(map(str, shape))
    return (f"({dims})" in text or f"({dims},)" in text or f"[{','.join(map(str, shape))}]" in text)

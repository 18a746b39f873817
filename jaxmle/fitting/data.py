"""The user's data, read the same way by ``fit``, ``fit_batch`` and ``stack_datasets``.

Accepted containers (checked on the host, before anything is compiled):

* arrays (NumPy, JAX, anything ``np.asarray`` reads as numbers) and scalars;
* a (nested) Python list of numbers, which is an array, at the top or anywhere inside;
* tuples, lists, dicts, NamedTuples and other registered pytrees of the above;
* a pandas ``DataFrame``: a dict of its columns by name (``d["y"]`` works in the
  log-likelihood); a ``Series`` (or ``Index``): an array. Integer and boolean columns
  keep their type (counts, group codes, masks), nullable columns with missing values
  become NaN (and are refused as such).

Everything else non-numeric (strings, object or categorical columns, dates, None)
is a ``TypeError`` naming the leaf or column; NaN/inf is a ``ValueError`` naming the
leaf and the first indices. pandas is never imported here: its objects are
recognised by their type's module.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.core.params import _key_str, is_number_list, leaf_names


def float_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def prepare_data(data: Any) -> Any:
    """The user's data as a pytree of numeric arrays, checked (see the module docstring)."""
    data = convert(data)
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data is empty: pass an array or a pytree of arrays")
    for name, leaf in zip(leaf_names(data), leaves):
        _check_leaf(name, leaf)
    return data


def stack_datasets(datasets: Sequence[Any]) -> Any:
    """Stack a Python list of separate datasets into one batch for :func:`jaxmle.fit_batch`.

    Each dataset is what :func:`jaxmle.fit` takes (an array, a tuple/dict of arrays,
    a DataFrame, ...); all must have the same structure and shapes. The result has
    that structure, every leaf gaining a leading batch axis B = ``len(datasets)``.
    Ragged datasets must be padded to a common length first (give the padding rows
    weight 0 through ``weights=``).

    >>> batch = jm.stack_datasets([(y1, x1), (y2, x2), (y3, x3)])   # leaves (3, n)
    >>> bres = jm.fit_batch(loglik, batch, init)
    """
    if isinstance(datasets, (str, bytes)) or not isinstance(datasets, Sequence):
        raise TypeError("stack_datasets takes a list (or tuple) of datasets, got "
                        f"{type(datasets).__name__}")
    if len(datasets) == 0:
        raise ValueError("stack_datasets got an empty list: there is nothing to fit")
    prepared = []
    for i, d in enumerate(datasets):
        try:
            prepared.append(prepare_data(d))
        except (TypeError, ValueError) as err:
            raise type(err)(f"dataset {i}: {err}") from None
    treedef = jax.tree_util.tree_structure(prepared[0])
    names = leaf_names(prepared[0])
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(prepared[0])]
    for i, d in enumerate(prepared[1:], start=1):
        other = jax.tree_util.tree_structure(d)
        if other != treedef:
            raise ValueError(f"dataset {i} has a different structure from dataset 0: {other} "
                             f"instead of {treedef}")
        for name, shape, leaf in zip(names, shapes, jax.tree_util.tree_leaves(d)):
            if np.shape(leaf) != shape:
                what = "data" if name == "param" else f"data leaf '{name}'"
                raise ValueError(
                    f"{what} has shape {np.shape(leaf)} in dataset {i} but {shape} in dataset 0: "
                    "stacked datasets need equal shapes; pad the shorter ones to a common "
                    "length and give the padding rows weight 0 (fit_batch(..., weights=(B, n)))")
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *prepared)


# --------------------------------------------------------------------------- conversion


def _label(path: str) -> str:
    return "data" if not path else f"data leaf '{path}'"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def convert(x: Any, path: str = "") -> Any:
    """The containers users pass → a pytree of numeric arrays (not yet checked for NaN)."""
    if x is None:
        raise TypeError(f"{_label(path)} is None: every data leaf must be a numeric array")
    if isinstance(x, jax.core.Tracer):
        return x
    if isinstance(x, (jax.Array, np.ndarray)):
        return x
    kind = pandas_kind(x)
    if kind == "DataFrame":
        return {_column_key(c): _pandas_column(x[c], _join(path, c)) for c in x.columns}
    if kind in ("Series", "Index"):
        return _pandas_column(x, path)
    if isinstance(x, str):
        raise TypeError(f"{_label(path)} is a string ({x[:30]!r}): data must be numeric")
    if isinstance(x, (numbers.Number, np.generic)) or is_number_list(x) or _is_bool_list(x):
        return _as_numeric_array(x, path)
    if isinstance(x, dict):
        return {k: convert(v, _join(path, k)) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):       # NamedTuple
        return type(x)(*(convert(v, _join(path, f)) for f, v in zip(x._fields, x)))
    if isinstance(x, (list, tuple)):
        if not x:
            raise TypeError(f"{_label(path)} is an empty {type(x).__name__}")
        return type(x)(convert(v, _join(path, i)) for i, v in enumerate(x))
    if jax.tree_util.all_leaves([x]):
        return _as_numeric_array(x, path)
    # another registered pytree (a dataclass, ...): convert its leaves, keep its structure
    return jax.tree_util.tree_map_with_path(
        lambda p, v: convert(v, _join(path, ".".join(_key_str(k) for k in p))), x,
        is_leaf=lambda v: v is None)


def _is_bool_list(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(
        isinstance(e, (bool, np.bool_)) or _is_bool_list(e) for e in x)


def _as_numeric_array(x: Any, path: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as err:
        raise TypeError(f"{_label(path)} is not an array: {type(x).__name__}") from err
    if arr.dtype.kind not in "biufc":
        what = "strings" if arr.dtype.kind in "SU" else f"dtype {arr.dtype}"
        raise TypeError(f"{_label(path)} must be numeric, got {type(x).__name__} of {what}")
    return arr


def pandas_kind(x: Any) -> str | None:
    """'DataFrame', 'Series' or 'Index' for pandas objects (without importing pandas)."""
    if not (type(x).__module__ or "").startswith("pandas"):
        return None
    for cls in type(x).__mro__:
        if cls.__name__ in ("DataFrame", "Series", "Index"):
            return cls.__name__
    return None


def _column_key(c: Any) -> Any:
    return c if isinstance(c, str) else str(c)


def _pandas_column(s: Any, path: str) -> np.ndarray:
    """One pandas column as a numpy array (see the module docstring for the rules)."""
    dtype = s.dtype
    kind = getattr(dtype, "kind", "O")
    if kind in "biuf":
        if s.isna().any() and kind in "biu":   # nullable column with missing values
            return s.to_numpy(dtype=float_dtype(), na_value=np.nan)
        if kind == "b":
            return s.to_numpy(dtype=bool)
        if kind in "iu":
            return s.to_numpy(dtype=np.int64)
        return s.to_numpy(dtype=np.float64 if dtype.itemsize >= 8 else np.float32,
                          na_value=np.nan)
    label = f"column '{path}'" if path else "the Series"
    text = str(dtype)
    if kind in "Mm" or "datetime" in text or "timedelta" in text:
        hint = " (dates or durations): convert it to numbers first, e.g. days since a date"
    else:
        hint = (" (strings, objects or categories): encode it as numbers first, e.g. integer "
                f"codes with df[{path!r}].astype('category').cat.codes, or 0/1 indicators")
    raise TypeError(f"data {label} has dtype {text}{hint}; data must be numeric")


# --------------------------------------------------------------------------- checks


def _check_leaf(name: str, leaf: Any) -> None:
    label = "data" if name == "param" else f"data leaf '{name}'"
    if isinstance(leaf, jax.core.Tracer):
        return
    if isinstance(leaf, jax.Array):
        _check_device_leaf(label, leaf)
        return
    arr = np.asarray(leaf)
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
    if not (jnp.issubdtype(leaf.dtype, jnp.number) or leaf.dtype == jnp.bool_):
        raise TypeError(f"{label} must be numeric, got dtype {leaf.dtype}")
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
        if leaf.is_fully_addressable:
            _raise_if_not_finite(label, np.asarray(leaf))
        raise ValueError(f"{label} contains NaN/inf values; drop or impute them")


def prepare_weights(weights: Any, dtype: Any) -> jax.Array | None:
    """Check per-observation weights: a finite, non-negative 1-D array, not all zero."""
    if weights is None:
        return None
    if isinstance(weights, jax.core.Tracer):
        return weights
    if isinstance(weights, jax.Array):
        return _prepare_device_weights(weights, dtype)
    if pandas_kind(weights) in ("Series", "Index"):
        weights = _pandas_column(weights, "weights")
    w = np.asarray(weights)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weights must be numbers, got dtype {w.dtype}")
    if w.ndim != 1:
        raise ValueError(f"weights must be a 1-D array (one weight per observation), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights contain {int((~np.isfinite(w)).sum())} NaN/inf value(s)")
    if np.any(w < 0):
        raise ValueError(f"weights must be non-negative; {int((w < 0).sum())} are negative")
    if not np.any(w > 0):
        raise ValueError(f"weights: no observations with positive weight (all {w.size} weights "
                         "are 0), so there is nothing to fit")
    return np.asarray(w, dtype=dtype)


def _prepare_device_weights(w: jax.Array, dtype: Any) -> jax.Array:
    """The checks of :func:`prepare_weights` done where the (possibly sharded) array lives."""
    if w.ndim != 1:
        raise ValueError(f"weights must be a 1-D array (one weight per observation), got shape {w.shape}")
    if not bool(jnp.all(jnp.isfinite(w))):
        raise ValueError("weights contain NaN/inf values")
    if bool(jnp.any(w < 0)):
        raise ValueError("weights must be non-negative")
    if not bool(jnp.any(w > 0)):
        raise ValueError("weights: no observations with positive weight (all weights are 0), "
                         "so there is nothing to fit")
    return w.astype(dtype)

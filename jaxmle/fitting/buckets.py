"""Shape buckets: a new number of observations within a bucket compiles nothing.

A model's programs are compiled for the data's shapes, so every new n would compile
them again. The host driver pads per-observation data to a bucket size instead —
the next power of two up to 4,096 rows, then multiples of 2^(k−3) (at most 12.5%
extra rows) — with zero weights on the padding rows (``mask_padding`` copies a real
row into them, so nothing outside the support reaches the gradient). ℓ, its
derivatives, ``nobs`` and every result are those of the unpadded data (up to the
order of summation: the same numbers to rounding).

Padding is safe only for a log-likelihood whose i-th term depends on the i-th row
alone. That is checked, not assumed: the first padded fit of a log-likelihood
compares ℓ at the start on the padded and the unpadded data (one small value-only
program); a log-likelihood whose rows interact (a mean over the data, neighbours,
``x.shape[0]``) is never padded again (jaxmle's own log-likelihoods that are row-wise by
construction, the distributions', say so with a ``jaxmle_rowwise`` attribute and skip
the check). Only data whose array leaves all have the observations on their leading
axis, and a log-likelihood returning one term per observation, are padded.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.fitting.ahead as _ahead
from jaxmle.core.held import Inputs, View
from jaxmle.fitting.kernel import KernelConfig, initial_z

_SMALL = 4096
_VERDICT: dict = {}     # (loglik, data treedef) → padding is safe (True) or not (False)


def bucket_size(n: int) -> int:
    """The padded length of ``n`` observations."""
    if n <= _SMALL:
        return max(1 << (n - 1).bit_length(), 8)
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


def _rows(data: Any) -> int | None:
    """The common leading axis of every array leaf of the data, or None."""
    n = None
    for leaf in jax.tree_util.tree_leaves(data):
        if np.ndim(leaf) == 0:
            continue
        if isinstance(leaf, jax.core.Tracer) or not hasattr(leaf, "shape"):
            return None
        if isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1:
            return None   # sharded over devices (or hosts): left as the user laid it out
        if n is None:
            n = leaf.shape[0]
        elif leaf.shape[0] != n:
            return None
    return n


_SHAPES: dict = {}


def _dtype_str(x: Any) -> str:
    dtype = getattr(x, "dtype", None)   # arrays (NumPy or JAX); np.result_type for scalars
    return np.dtype(dtype).str if dtype is not None else np.result_type(x).str


def _output_shape(loglik: Any, params: Any, data: Any) -> tuple | None:
    """The shape of ``loglik(params, data)`` (traced once per function and shapes)."""
    leaves, treedef = jax.tree_util.tree_flatten((params, data))
    key = (loglik, treedef, tuple((np.shape(x), _dtype_str(x)) for x in leaves))
    if key not in _SHAPES:
        try:
            _SHAPES[key] = tuple(jax.eval_shape(loglik, params, data).shape)
        except Exception:   # the fit's own checks report it
            _SHAPES[key] = None
        if len(_SHAPES) > 1024:
            _SHAPES.clear()
    return _SHAPES[key]


def _pad(x: Any, size: int, fill: Any = None) -> np.ndarray:
    x = np.asarray(x)
    extra = np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype) if fill is None else \
        np.repeat(x[:1], size - x.shape[0], axis=0)
    return np.concatenate([x, extra])


def padded(config: KernelConfig, inputs: Inputs, weights: Any, params: Any):
    """``(config, inputs, weights, n)`` padded to the bucket of the data's n (``n`` None:
    left as they are). ``params``: a parameter tree for the output shape check."""
    if config.method != "newton" or config.prior is not None:   # (a prior may read the data)
        return config, inputs, weights, None
    n = _rows(inputs.data)
    if n is None or n < 1 or bucket_size(n) == n:
        return config, inputs, weights, None
    key = (config.loglik, jax.tree_util.tree_structure(inputs.data))
    if _VERDICT.get(key) is False:
        return config, inputs, weights, None
    if _output_shape(config.loglik, params, inputs.data) != (n,):
        return config, inputs, weights, None
    size = bucket_size(n)
    dtype = np.dtype(config.dtype)
    w = np.ones(n, dtype) if weights is None else np.asarray(weights)
    data = jax.tree_util.tree_map(lambda x: _pad(x, size, "row") if np.ndim(x) else x,
                                  inputs.data)
    groups = None if inputs.groups is None else _pad(inputs.groups, size)
    new = dataclasses.replace(config, has_weights=True)
    return new, inputs._replace(data=data, groups=groups), _pad(w, size), n


def safe(config: KernelConfig, inputs: Inputs, weights: Any, init_leaves: list,
         padded_config: KernelConfig, padded_inputs: Inputs, padded_weights: Any,
         speculate: Callable | None = None) -> bool:
    """Whether padding leaves ℓ unchanged for this log-likelihood (checked once per
    log-likelihood and data structure, at its first padded fit). ``speculate(config,
    inputs, weights)`` is called with the padded fit's while the check compiles (on a
    worker thread: :mod:`jaxmle.fitting.ahead`)."""
    if getattr(config.loglik, "jaxmle_rowwise", False):   # row-wise by construction
        return True
    key = (config.loglik, jax.tree_util.tree_structure(inputs.data))
    if key not in _VERDICT:
        program = _verdict_program(config, padded_config)
        args = (inputs, weights, padded_inputs, padded_weights, init_leaves)
        pending = _ahead.compile_ahead(program, *args)
        if speculate is not None:
            speculate(padded_config, padded_inputs, padded_weights)
        _ahead.wait(pending)
        a, b = np.asarray(program(*args))
        if not np.isfinite(a):   # a bad start: no verdict (the fit reports the start)
            return False
        eps = np.finfo(np.dtype(config.dtype)).eps
        _VERDICT[key] = bool(abs(a - b) <= 1e3 * eps * (1.0 + abs(a)))
    return _VERDICT[key]


@functools.lru_cache(maxsize=64)
def _verdict_program(config: KernelConfig, padded_config: KernelConfig):
    """ℓ at the start on the unpadded and on the padded data, in one small value-only
    program (compiled once per log-likelihood and data structure)."""
    dtype = jnp.dtype(config.dtype)

    def total(cfg, inputs, weights, init_leaves):
        view = View(cfg.space, inputs.held, cfg.constant)
        params = view.to_natural(initial_z(cfg, init_leaves))
        data = _objective.mask_padding(inputs.data, weights)
        return _objective.total_loglik(cfg.loglik, params, data, weights, dtype)[0]

    def verdict(inputs, weights, padded_inputs, padded_weights, init_leaves):
        return jnp.stack([total(config, inputs, weights, init_leaves),
                          total(padded_config, padded_inputs, padded_weights, init_leaves)])

    return jax.jit(verdict)


def bucketed(config: KernelConfig, inputs: Inputs, weights: Any, init_leaves: list | None,
             speculate: Callable | None = None):
    """``(config, inputs, weights)`` padded to their bucket where that is safe, else as
    they are (``speculate``: :func:`safe`'s)."""
    dtype = np.dtype(config.dtype)
    params = jax.tree_util.tree_unflatten(
        config.space.treedef, [jax.ShapeDtypeStruct(l.shape, dtype) for l in config.space.leaves])
    new, new_inputs, new_weights, n = padded(config, inputs, weights, params)
    if n is None:
        return config, inputs, weights
    key = (config.loglik, jax.tree_util.tree_structure(inputs.data))
    if init_leaves is None and key not in _VERDICT and \
            not getattr(config.loglik, "jaxmle_rowwise", False):   # nothing to check it with
        return config, inputs, weights
    if not safe(config, inputs, weights, init_leaves, new, new_inputs, new_weights,
                speculate):
        return config, inputs, weights
    return new, new_inputs, new_weights

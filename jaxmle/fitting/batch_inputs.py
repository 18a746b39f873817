"""``jm.fit_batch``'s inputs: the batch axis of the data, weights and start values read
and checked on the host (as ``jm.fit`` reads one dataset), the start checked before the
program compiles, and the chunk size chosen."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import numpy as np

import jaxmle.core.params as _params
import jaxmle.core.space as _space
import jaxmle.fitting.data as _data
import jaxmle.fitting.start as _start
from jaxmle.core.held import Inputs
from jaxmle.core.host_space import check_init
from jaxmle.core.priors import prepare_priors
from jaxmle.fitting.batch_kernel import BatchConfig
from jaxmle.fitting.kernel import prepare_init

_CHUNK_BYTES = 4 * 2**20       # automatic chunk: about this much data per chunk ...
_CHUNK_MIN, _CHUNK_MAX = 64, 1024   # ... within these bounds


def prepare_batch_data(data: Any, *, from_user: bool = True) -> tuple[Any, int, np.ndarray]:
    """Host arrays with a common leading batch axis; which datasets are not finite.

    The data pytree is read exactly as :func:`jaxmle.fit` reads one dataset (see
    :mod:`jaxmle.fitting.data`), every leaf carrying the batch axis first. A top-level
    Python list of arrays is refused as ambiguous (fields of one batch, or separate
    datasets?): a tuple or dict says the first, :func:`jaxmle.stack_datasets` the second.
    """
    if from_user and isinstance(data, list) and data and not _params.is_number_list(data) \
            and not all(isinstance(x, list) for x in data):
        raise TypeError(
            f"fit_batch got a Python list of {len(data)} items: that could be the fields of one "
            "batch (every leaf with a leading batch axis) or separate datasets. Pass the fields "
            "as a tuple or dict, e.g. (y, x) with y and x shaped (B, n), or a list of separate "
            f"datasets as jm.stack_datasets([...]) (which here would give B = {len(data)})")
    if from_user and _data.pandas_kind(data) is not None:
        raise TypeError(
            f"fit_batch got a pandas {_data.pandas_kind(data)}: its columns have one axis, the "
            "rows, which fit_batch would read as the batch axis (one dataset per row). For a "
            "long-format frame with a dataset column, stack its groups: jm.stack_datasets("
            "[g[cols] for _, g in df.groupby('dataset')]) (groups of equal size; pad ragged "
            "ones and give the padding weight 0)")
    data = _data.convert(data)
    leaves, treedef = jax.tree_util.tree_flatten(data)
    if not leaves:
        raise ValueError("data is empty: pass an array or a pytree of arrays with a batch axis")
    names = _params.leaf_names(data)
    arrays = []
    for name, leaf in zip(names, leaves):
        label = "data" if name == "param" else f"data leaf '{name}'"
        arr = np.asarray(leaf)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{label} must be numeric, got dtype {arr.dtype}")
        if arr.ndim == 0:
            raise ValueError(f"{label} is a scalar: fit_batch needs a leading batch axis on every "
                             "data leaf (shape (B, ...))")
        arrays.append(arr)
    sizes = {a.shape[0] for a in arrays}
    if len(sizes) != 1:
        shapes = ", ".join(f"'{n}': {a.shape[0]}" if n != "param" else str(a.shape[0])
                           for n, a in zip(names, arrays))
        raise ValueError(
            "fit_batch reads the leading axis of every data leaf as the batch axis (B datasets), "
            f"but the leaves' leading sizes differ ({shapes}); give every leaf the shape (B, ...), "
            "or stack a list of separate datasets with jm.stack_datasets([...])")
    n_batch = sizes.pop()
    if n_batch == 0:
        raise ValueError("the batch is empty (leading axis of length 0)")
    bad = np.zeros(n_batch, bool)
    for a in arrays:
        if a.dtype.kind == "f":
            bad |= ~np.isfinite(a).reshape(n_batch, -1).all(axis=1)
    if bad.all():
        raise ValueError(f"every one of the {n_batch} datasets contains NaN/inf values")
    return jax.tree_util.tree_unflatten(treedef, arrays), n_batch, bad


def prepare_batch_weights(weights: Any, n_batch: int, dtype) -> tuple[np.ndarray | None, bool]:
    """Shared (n,) or per-dataset (B, n) weights, finite and non-negative."""
    if weights is None:
        return None, False
    w = np.asarray(weights)
    if w.ndim == 1:
        return _data.prepare_weights(w, dtype), False
    if w.ndim != 2 or w.shape[0] != n_batch:
        raise ValueError(
            f"weights must be (n,) shared by all datasets or (B, n) = ({n_batch}, n) per "
            f"dataset, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        rows = np.nonzero(~np.isfinite(w).all(axis=1))[0]
        raise ValueError(f"weights contain NaN/inf values (datasets {rows[:10].tolist()})")
    if np.any(w < 0):
        rows = np.nonzero((w < 0).any(axis=1))[0]
        raise ValueError(f"weights must be non-negative; negative in datasets {rows[:10].tolist()}")
    empty = ~(w > 0).any(axis=1)
    if empty.any():
        raise ValueError(f"weights: no observations with positive weight in dataset(s) "
                         f"{np.nonzero(empty)[0][:10].tolist()}, so there is nothing to fit there")
    return np.asarray(w, dtype), True


def prepare_batch_init(init: Any, n_batch: int, constraints, dtype, batched_init: bool | None,
                       priors: Any = None):
    """Per-member init leaves (B, ...), the parameter space of one fit and its priors."""
    leaves, treedef, names = prepare_init(init, dtype)
    if batched_init is None:
        batched_init = all(x.ndim >= 1 and x.shape[0] == n_batch for x in leaves)
    if batched_init:
        wrong = [n for n, x in zip(names, leaves) if x.ndim == 0 or x.shape[0] != n_batch]
        if wrong:
            raise ValueError(
                f"batched init needs a leading axis of length B = {n_batch} on every leaf; "
                f"not so for {wrong}")
        member = [x[0] for x in leaves]
    else:
        member = leaves
    constraints, prior, prior_values = prepare_priors(priors, names, member, constraints, dtype)
    space = _space.build_space(member, names, treedef, constraints)
    if batched_init:
        check_batched_init(space, leaves)
        return leaves, space, prior, prior_values
    check_init(space, member)
    return [np.broadcast_to(x, (n_batch,) + x.shape) for x in leaves], space, prior, prior_values


def check_batched_init(space: _space.ParamSpace, leaves: list[np.ndarray]) -> None:
    """Every member's init inside its constraint (members named on failure)."""
    for leaf, value in zip(space.leaves, leaves):
        inside = np.asarray(leaf.constraint.check(value)).reshape(value.shape[0], -1).all(axis=1)
        z = np.asarray(leaf.transform.inv(value)).reshape(value.shape[0], -1)
        interior = np.isfinite(z).all(axis=1)
        for ok, what in ((inside, "violates"), (interior, "lies on the boundary of")):
            if not ok.all():
                rows = np.nonzero(~ok)[0]
                raise ValueError(
                    f"init for parameter '{leaf.name}' {what} its constraint {leaf.constraint!r} "
                    f"for dataset(s) {rows[:10].tolist()}")


@functools.lru_cache(maxsize=64)
def batch_start_program(bc: BatchConfig) -> Any:
    """The start values of a chunk of members: :func:`jaxmle.fitting.start.start_program`, vmapped."""
    run = _start.start_program(bc.kernel).__wrapped__
    data_axes = Inputs(0, 0, None, None)
    return jax.jit(jax.vmap(run, in_axes=(data_axes, 0, 0 if bc.weights_batched else None)))


def check_batch_start(bc: BatchConfig, data: Any, init_leaves: list, weights: Any,
                      n_batch: int, chunk: int, bad_data: np.ndarray) -> None:
    """Before the batch program is compiled: raise if the log-likelihood is not finite at
    the start for every dataset (some bad starts are only reported: those fits fail)."""
    program = batch_start_program(bc)
    first = None
    for start in range(0, n_batch, chunk):
        idx = np.minimum(np.arange(start, start + chunk), n_batch - 1)
        d = data._replace(data=_take(data.data, idx), held=_take(data.held, idx))
        w = weights[idx] if bc.weights_batched else weights
        values = jax.device_get(program(d, [x[idx] for x in init_leaves], w))
        finite = np.isfinite(values.total + values.prior) & ~bad_data[idx]
        if finite.any():
            return
        if first is None:
            first = _start.start_message(jax.tree_util.tree_map(lambda x: x[0], values))
    raise ValueError(f"{first} (for every dataset in the batch)")


def replace_datasets(data: Any, bad: np.ndarray) -> Any:
    """Put a finite dataset in place of the non-finite ones (their results are discarded)."""
    good = int(np.argmin(bad))

    def fix(x):
        x = np.array(x)
        x[bad] = x[good]
        return x

    return jax.tree_util.tree_map(fix, data)


class FixedChunk(int):
    """A chunk size used as given, not capped by the size of the batch: a distributed
    share runs the chunk of the whole batch (the same program, the same numbers)."""


def resolve_chunk_size(chunk_size: int | None, data: Any, n_batch: int, n_devices: int,
                       whole: int | None = None) -> int:
    """Members per compiled call: given, or from the bytes of data per dataset.

    Rounded up to a multiple of the device count; never more than the batch (``whole``
    when this is a share of it) rounded up to a power of two (then to the device count).
    """
    if isinstance(chunk_size, FixedChunk):
        return -(-int(chunk_size) // n_devices) * n_devices
    if chunk_size is None:
        per_member = sum(x.nbytes for x in jax.tree_util.tree_leaves(data)) / n_batch
        chunk = 2 ** round(math.log2(max(_CHUNK_BYTES / max(per_member, 1.0), 1.0)))
        chunk = int(np.clip(chunk, _CHUNK_MIN, _CHUNK_MAX))
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
                or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer (datasets per compiled "
                             f"call), got {chunk_size!r}")
        chunk = int(chunk_size)
    # never more than the batch rounded up to a power of two: batches of 5..8 datasets
    # (multi-start, bootstraps, small simulations) share one program, the last chunk
    # padded
    chunk = min(chunk, 1 << max((whole or n_batch) - 1, 0).bit_length())
    return -(-chunk // n_devices) * n_devices


def _take(tree: Any, idx: np.ndarray) -> Any:
    return jax.tree_util.tree_map(lambda x: x[idx], tree)

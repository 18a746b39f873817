"""Placing work on several devices with ``jax.sharding`` (computation follows data).

* ``fit_batch`` shards the batch axis of every chunk over the devices (a 1-D
  ``Mesh`` named ``"batch"``): each device fits its share of the datasets.
* :func:`shard_observations` shards the observation axis of one big dataset (a
  1-D ``Mesh`` named ``"obs"``); under ``jit`` the log-likelihood's sum over
  observations becomes a cross-device reduction, and ``jm.fit`` runs unchanged.

Several hosts: start every process with ``jax.distributed.initialize()``; a
global array built with ``jax.make_array_from_process_local_data`` and a
``NamedSharding`` over ``jax.devices()`` (all hosts' devices) can be passed to
``jm.fit`` as data (see the README).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def batch_devices(devices: Sequence[Any] | None = None) -> list[Any]:
    """The devices a batch is spread over: those given, else this process's devices."""
    return list(devices) if devices is not None else jax.local_devices()


def device_count(devices: Sequence[Any] | None = None) -> int:
    return len(batch_devices(devices))


def placer(devices: Sequence[Any] | None = None) -> Callable[..., Any]:
    """``place(tree, batched=True)``: put a chunk's inputs on the devices.

    With one device (and none named) arrays stay where they are and ``jit``
    transfers them; with several, batched inputs are split along their leading
    axis and shared inputs are replicated.
    """
    devs = batch_devices(devices)
    if len(devs) == 1:
        if devices is None:
            return lambda tree, batched=True: tree
        return lambda tree, batched=True: jax.device_put(tree, devs[0])
    mesh = Mesh(np.asarray(devs), ("batch",))
    split = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    return lambda tree, batched=True: jax.device_put(tree, split if batched else replicated)


def shard_observations(data: Any, weights: Any = None,
                       devices: Sequence[Any] | None = None) -> tuple[Any, Any]:
    """Split the observation axis of ``data`` (and ``weights``) over ``devices``.

    Every data leaf whose leading axis has the number of observations n is
    sharded along it; other leaves are replicated. When n is not a multiple of
    the device count, rows are padded (copies of the last row) and given weight 0,
    so the log-likelihood must return per-observation terms in that case. Use as::

        data, w = jm.shard_observations(data)
        res = jm.fit(loglik, data, init, weights=w)

    Returns ``(data, weights)``; ``weights`` stays ``None`` when none were given and
    no padding was needed.
    """
    devs = list(devices) if devices is not None else jax.devices()
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves or all(np.ndim(x) == 0 for x in leaves):
        raise ValueError("data has no observation axis to shard")
    n = next(int(np.shape(x)[0]) for x in leaves if np.ndim(x) >= 1)
    pad = (-n) % len(devs)
    if weights is not None and np.shape(weights) != (n,):
        raise ValueError(f"weights must have shape ({n},), got {np.shape(weights)}")
    if pad:
        w = np.ones(n) if weights is None else np.asarray(weights)
        weights = np.concatenate([w, np.zeros(pad, w.dtype)])
        data = jax.tree_util.tree_map(lambda x: _pad_rows(x, n, pad), data)
    mesh = Mesh(np.asarray(devs), ("obs",))
    rows = NamedSharding(mesh, PartitionSpec("obs"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(x):
        per_obs = np.ndim(x) >= 1 and np.shape(x)[0] == n + pad
        return jax.device_put(x, rows if per_obs else replicated)

    data = jax.tree_util.tree_map(place, data)
    if weights is not None:
        weights = jax.device_put(jnp.asarray(weights), rows)
    return data, weights


def _pad_rows(x: Any, n: int, pad: int) -> Any:
    if np.ndim(x) == 0 or np.shape(x)[0] != n:
        return x
    x = np.asarray(x)
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])

"""Batched fits across processes on JAX's distributed runtime (``jax.distributed``).

``jm.fit_batch(..., distributed="local")`` (each process passes its own share of the
datasets) or ``distributed="global"`` (global ``jax.Array`` data sharded on the batch
axis, or the whole batch on every process): every process fits its share with the
single-process engine (:func:`jaxmle.fitting.batch.fit_batch` on its local devices, with
its chunks and its straggler schedule: a process's slow fits finish on that process),
then the results are exchanged with ``multihost_utils.process_allgather`` (shares of
different sizes are padded to the largest, then trimmed). Every dataset is fitted once,
on the process that owns it; failures and warnings name global dataset indices.

The global batch: with ``"local"`` shares, process 0's datasets first, then process 1's,
and so on; with global arrays, their own row order (a row held by several processes is
fitted by the lowest process index); with host arrays and ``"global"``, rows split into
``jax.process_count()`` contiguous, nearly equal parts.

An error on one process (bad data in its share, say) is exchanged before any result:
every process raises (the failing one its own error, the others a copy naming the
process), so none waits for a collective that will not come.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Sequence

import jax
import numpy as np

MODES = ("local", "global")
_MESSAGE = 1000            # bytes of an error message carried to the other processes


@dataclasses.dataclass(frozen=True)
class Rows:
    """Which global rows every process fits: ``of[p]`` (sorted), ``n_batch`` in all."""

    n_batch: int
    of: tuple[np.ndarray, ...]

    @property
    def mine(self) -> np.ndarray:
        return self.of[jax.process_index()]


def has_global_leaves(tree: Any) -> bool:
    """Whether a pytree holds a ``jax.Array`` that this process cannot fully address."""
    return any(_is_global(x) for x in jax.tree_util.tree_leaves(tree))


def _is_global(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def resolve_mode(distributed: Any, data: Any) -> str | None:
    """``None`` (one process, as before), ``"local"`` or ``"global"``; global arrays in the
    data mean ``"global"``. Raises when the runtime is not initialised."""
    global_data = has_global_leaves(data)
    if distributed is None and not global_data:
        return None
    if distributed is not None and distributed not in MODES:
        raise ValueError(f"distributed must be None, 'local' (data is this process's share of "
                         f"the datasets) or 'global' (the whole batch: global jax.Arrays "
                         f"sharded on the batch axis), got {distributed!r}")
    check_initialized(f"fit_batch(distributed={distributed!r})")
    if distributed == "local" and global_data:
        raise ValueError("distributed='local' takes this process's share as host arrays, but the "
                         "data holds global jax.Arrays (not fully addressable): pass "
                         "distributed='global' (or leave it out) to fit a global batch")
    return distributed or "global"


def check_initialized(what: str) -> None:
    if not jax.distributed.is_initialized():
        raise ValueError(
            f"{what} runs across processes on JAX's distributed runtime, which is not "
            "initialised in this process: call jax.distributed.initialize() (with "
            "coordinator_address, num_processes and process_id, or under SLURM/Open MPI with "
            "no arguments) on every process before any JAX computation")


def even_rows(n_batch: int) -> Rows:
    """Contiguous, nearly equal parts (the first parts one larger)."""
    return Rows(n_batch, tuple(np.array_split(np.arange(n_batch), jax.process_count())))


def check_devices(devices: Sequence[Any] | None) -> None:
    if devices is None:
        return
    foreign = [d for d in devices if d.process_index != jax.process_index()]
    if foreign:
        raise ValueError(f"devices: in a distributed fit every process fits its share on its own "
                         f"devices (jax.local_devices()); {foreign[:3]} belong to other processes")


# --------------------------------------------------------------------------- global arrays


def _bounds(index: Any, size: int) -> tuple[int, int]:
    start, stop, step = index.indices(size) if isinstance(index, slice) else (0, size, 1)
    return start, stop


def owners(x: jax.Array, label: str) -> np.ndarray:
    """The process that fits each row of a global array: the lowest that holds it."""
    n = x.shape[0] if x.ndim else 0
    if n == 0:
        raise ValueError(f"{label} is a global array without a batch axis (shape {x.shape})")
    owner = np.full(n, np.iinfo(np.int32).max, np.int64)
    held_by = np.zeros((n, jax.process_count()), bool)
    for device, index in x.sharding.devices_indices_map(x.shape).items():
        for axis, (ix, size) in enumerate(zip(index[1:], x.shape[1:]), start=1):
            if _bounds(ix, size) != (0, size):
                raise ValueError(
                    f"{label} is a global array split along axis {axis}; fit_batch needs the "
                    "datasets whole on each process, the array sharded on the batch axis (axis "
                    "0) only, e.g. NamedSharding(Mesh(np.array(jax.devices()), ('batch',)), "
                    "PartitionSpec('batch'))")
        start, stop = _bounds(index[0], n)
        owner[start:stop] = np.minimum(owner[start:stop], device.process_index)
        held_by[start:stop, device.process_index] = True
    if jax.process_count() > 1 and held_by.all():
        raise ValueError(
            f"{label} is a global array that is not sharded on the batch axis (every process "
            "holds every dataset): shard it with PartitionSpec('batch') on axis 0, or pass host "
            "arrays with distributed='global' to split the batch evenly between the processes")
    return owner


def global_rows(data: Any) -> Rows:
    """The rows of global-array data (every global leaf must split the batch alike)."""
    from jaxmle.core.params import leaf_names

    found = None
    for name, x in zip(leaf_names(data), jax.tree_util.tree_leaves(data)):
        if not _is_global(x):
            continue
        label = "data" if name == "param" else f"data leaf '{name}'"
        owner = owners(x, label)
        if found is None:
            found = (label, owner)
        elif found[1].shape != owner.shape or (found[1] != owner).any():
            raise ValueError(f"{label} and {found[0]} are global arrays whose batch axes are "
                             "split differently between the processes; give every data leaf "
                             "the same batch sharding")
    owner = found[1]
    return Rows(len(owner), tuple(np.nonzero(owner == p)[0] for p in range(jax.process_count())))


def local_rows(x: Any, rows: Rows) -> Any:
    """This process's rows of a batched leaf: a global array's from its addressable shards,
    a host array's by index."""
    mine = rows.mine
    if not _is_global(x):
        return np.asarray(x)[mine]
    out = np.empty((len(mine),) + tuple(x.shape[1:]), x.dtype)
    filled = np.zeros(len(mine), bool)
    for shard in x.addressable_shards:
        start, stop = _bounds(shard.index[0], x.shape[0])
        here = np.arange(start, stop)
        keep = np.isin(here, mine)
        if keep.any():
            at = np.searchsorted(mine, here[keep])
            out[at] = np.asarray(shard.data)[keep]
            filled[at] = True
    if not filled.all():
        raise ValueError(f"a global array does not hold rows {mine[~filled][:5].tolist()} on this "
                         "process, which the data's sharding assigns to it; give init and "
                         "weights the same batch sharding as the data")
    return out


# --------------------------------------------------------------------------- collectives


def collective(step: Callable[[], Any], count: Callable[[Any], int] = lambda _: 0
               ) -> tuple[Any, np.ndarray]:
    """Run ``step`` on every process; exchange (failed?, ``count(value)``, message). If any
    process failed, every one raises; else returns (value, the counts of all processes)."""
    from jax.experimental import multihost_utils

    value, error, n = None, None, 0
    try:
        value = step()
        n = int(count(value))
    except Exception as e:   # noqa: BLE001 - re-raised below, after the others know
        error = e
    text = b"" if error is None else f"{type(error).__name__}: {error}".encode()[:_MESSAGE]
    row = np.zeros(3 + _MESSAGE, np.int32)     # int32: the same with or without x64
    row[:3] = (error is not None, n, len(text))
    row[3:3 + len(text)] = np.frombuffer(text, np.uint8)
    table = np.asarray(multihost_utils.process_allgather(row))
    if error is not None:
        raise error
    failed = np.nonzero(table[:, 0])[0]
    if failed.size:
        p = int(failed[0])
        message = bytes(table[p, 3:3 + table[p, 2]].astype(np.uint8)).decode(errors="replace")
        kind = message.split(":", 1)[0]
        cls = {"ValueError": ValueError, "TypeError": TypeError}.get(kind, RuntimeError)
        raise cls(f"the distributed fit failed on process {p} of {len(table)} ({message})")
    return value, table[:, 1]


def allgather_rows(tree: Any, rows: Rows) -> Any:
    """Every process's rows of ``tree`` (leading axis: its own rows), assembled as the
    global batch (leading axis ``rows.n_batch``) on every process.

    One collective: each row's leaves are packed into bytes (shares padded to the largest),
    so a result of twenty arrays costs one exchange and one small compiled program."""
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    leaves = [np.ascontiguousarray(x) for x in leaves]
    n_local = len(rows.mine)
    widths = [x[:1].nbytes for x in leaves]
    packed = np.zeros((max(len(r) for r in rows.of), sum(widths)), np.uint8)
    at = 0
    for x, width in zip(leaves, widths):
        if width:
            packed[:n_local, at:at + width] = x.reshape(n_local, -1).view(np.uint8)
        at += width
    gathered = np.asarray(multihost_utils.process_allgather(packed))
    table = np.empty((rows.n_batch, packed.shape[1]), np.uint8)
    for p, idx in enumerate(rows.of):
        table[idx] = gathered[p, :len(idx)]
    out, at = [], 0
    for x, width in zip(leaves, widths):
        column = np.ascontiguousarray(table[:, at:at + width])
        out.append(column.view(x.dtype).reshape((rows.n_batch,) + x.shape[1:]))
        at += width
    return jax.tree_util.tree_unflatten(treedef, out)


def global_arrays(tree: Any, rows: Rows, sharding: Any) -> Any:
    """Global ``jax.Array``s (leading axis ``rows.n_batch``, sharded by ``sharding`` on it)
    from every process's rows; results move between processes only where the sharding puts
    a row on a process that did not fit it."""
    mine = rows.mine
    needed = set()
    for index in sharding.addressable_devices_indices_map((rows.n_batch,)).values():
        needed.update(range(*_bounds(index[0], rows.n_batch)))
    here = bool(np.isin(np.fromiter(needed, np.int64, len(needed)), mine).all())
    from jax.experimental import multihost_utils

    # every process must take part in a gather that any one of them needs
    everywhere = bool(np.asarray(multihost_utils.process_allgather(np.array([here]))).all())
    full = None if everywhere else allgather_rows(tree, rows)

    def build(i, x):
        x = np.asarray(x)
        shape = (rows.n_batch,) + x.shape[1:]
        def piece(index):
            start, stop = _bounds(index[0], rows.n_batch)
            if full is not None:
                return full[i][start:stop]
            return x[np.searchsorted(mine, np.arange(start, stop))]

        return jax.make_array_from_callback(shape, sharding, piece)

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    full = None if full is None else jax.tree_util.tree_leaves(full)
    return jax.tree_util.tree_unflatten(treedef, [build(i, x) for i, x in enumerate(leaves)])


def batch_sharding(n_batch: int, like: Any = None) -> Any:
    """The sharding of ``gather=False`` results: that of the global data leaf ``like``, else
    the batch axis over every process's devices (B must divide evenly)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if like is not None and isinstance(like.sharding, NamedSharding):
        return NamedSharding(like.sharding.mesh, PartitionSpec(like.sharding.spec[0]
                                                               if like.sharding.spec else None))
    n_dev = jax.device_count()
    if n_batch % n_dev:
        raise ValueError(f"gather=False returns global arrays sharded on the batch axis over "
                         f"all {n_dev} devices, which needs B = {n_batch} divisible by {n_dev}; "
                         "pass gather=True (every process gets the whole result) or pad the batch")
    return NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), PartitionSpec("batch"))


def report_view(status: Any, singular: Any, like: Any) -> Any:
    """What :func:`jaxmle.fitting.batch_report.report_batch` reads, for results not gathered."""
    return types.SimpleNamespace(status=status, stats=types.SimpleNamespace(singular=singular),
                                 param_names=like.param_names, dtype=like.dtype)


# --------------------------------------------------------------------------- fit_batch


def fit_batch_distributed(loglik: Any, data: Any, init: Any, *, distributed: Any, gather: bool,
                          weights: Any = None, batched_init: bool | None = None,
                          devices: Any = None, **options: Any) -> Any:
    """:func:`jaxmle.fit_batch` with ``distributed=`` (see the module docstring)."""
    import jaxmle.fitting.sharding as _sharding
    from jaxmle.fitting.batch import fit_batch
    from jaxmle.fitting.batch_report import report_batch
    from jaxmle.fitting.batch_inputs import FixedChunk, prepare_batch_data, resolve_chunk_size

    mode = resolve_mode(distributed, data)
    check_devices(devices)
    if not isinstance(gather, bool):
        raise TypeError(f"gather must be True (every process gets the whole result) or False "
                        f"(global jax.Arrays sharded on the batch axis), got {gather!r}")
    like = next((x for x in jax.tree_util.tree_leaves(data) if _is_global(x)), None)
    rows = None     # "global": known from the data alike on every process, checked before fitting
    if mode == "global":
        rows = global_rows(data) if like is not None else even_rows(_batch_size(data))
        if not gather:
            batch_sharding(rows.n_batch, like)

    def share():
        if mode == "global":
            return _share_of(rows, data, init, weights, batched_init)
        return data, init, weights, batched_init

    mine, counts = collective(share, lambda v: _batch_size(v[0]))
    if rows is None:                   # "local": the shares in process order
        ends = np.cumsum(counts)
        rows = Rows(int(ends[-1]), tuple(np.arange(e - c, e) for e, c in zip(ends, counts)))
        if not gather:
            batch_sharding(rows.n_batch, like)
    if (counts == 0).any():
        raise ValueError(f"process(es) {np.nonzero(counts == 0)[0].tolist()} have no datasets in "
                         "their share: every process needs at least one (B ≥ the number of "
                         "processes)")

    def fit_share():
        d, i, w, batched = mine
        prepared, n_local, _ = prepare_batch_data(d)
        # the chunk one process would run the whole batch in: the same program, same numbers
        chunk = FixedChunk(resolve_chunk_size(options.pop("chunk_size", None), prepared, n_local,
                                              _sharding.device_count(devices), rows.n_batch))
        res = fit_batch(loglik, d, i, weights=w, batched_init=batched, devices=devices,
                        chunk_size=chunk, report=False, **options)
        return dataclasses.replace(res, context=None)

    local, _ = collective(fit_share)
    if gather:
        res = allgather_rows(local, rows)
        report_batch(res, res.param_names, None)
        return res
    sharding = batch_sharding(rows.n_batch, like)
    res = global_arrays(local, rows, sharding)
    status, singular = allgather_rows((local.status, local.stats.singular), rows)
    report_batch(report_view(status, singular, local), local.param_names, None)
    return res


def _batch_size(data: Any) -> int:
    if isinstance(data, (list, tuple)) and data and not hasattr(data[0], "shape"):
        data = np.asarray(data)    # a share given as nested lists: its length
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves or np.ndim(leaves[0]) == 0:
        raise ValueError("fit_batch needs a leading batch axis on every data leaf (shape (B, ...))")
    return int(np.shape(leaves[0])[0])


def _share_of(rows: Rows, data: Any, init: Any, weights: Any, batched_init: bool | None):
    """This process's rows of the data, and of batched starts and per-dataset weights."""
    from jaxmle.core.params import leaf_names

    for name, x in zip(leaf_names(data), jax.tree_util.tree_leaves(data)):
        if np.ndim(x) == 0 or np.shape(x)[0] != rows.n_batch:
            label = "data" if name == "param" else f"data leaf '{name}'"
            raise ValueError(f"{label} has shape {np.shape(x)}; every data leaf of a global batch "
                             f"needs the leading batch axis B = {rows.n_batch}")
    data = jax.tree_util.tree_map(lambda x: local_rows(x, rows), data)
    leaves = jax.tree_util.tree_leaves(init)
    batched = batched_init if batched_init is not None else bool(leaves) and all(
        np.ndim(x) >= 1 and np.shape(x)[0] == rows.n_batch for x in leaves)
    if batched:
        init = jax.tree_util.tree_map(lambda x: local_rows(x, rows), init)
    if weights is not None and (np.ndim(weights) == 2 or _is_global(weights)):
        weights = local_rows(weights, rows)
    return data, init, weights, bool(batched)

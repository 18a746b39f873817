"""``jm.fit_batch``: many independent fits in compiled chunks, with straggler handling.

Host side of the batch: validation, chunking (one compiled program reused by
every chunk, the last one padded), a progress bar, the continuation of
stragglers in smaller batches, sharding over devices. The compiled programs are in
:mod:`jaxmle.fitting.batch_kernel`, the warnings in :mod:`jaxmle.fitting.batch_report`.

Schedule. The batch is cut into chunks of ``chunk_size`` members; each chunk runs
until at most ``max(1, 2%)`` of its members are still iterating, so a slow
dataset does not hold up its chunk. The unfinished members of all chunks are
then pooled, with their solver states, and continued together (the same program,
see :class:`_ContinuationPlan` for the chunk sizes) until they finish or reach
``max_iter``: each member does exactly the iterations a single fit would, and the
result is the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.core.params as _params
import jaxmle.fitting.sharding as _sharding
import jaxmle.fitting.start as _start
from jaxmle.core.held import Inputs, constant_leaves, layout, prepare_held, spread
from jaxmle.core.solvers import UNLIMITED
from jaxmle.core.typing import LogLikFn
from jaxmle.fitting.batch_inputs import (
    check_batch_start,
    prepare_batch_data,
    prepare_batch_init,
    prepare_batch_weights,
    replace_datasets,
    resolve_chunk_size,
)
from jaxmle.fitting.batch_kernel import BatchConfig, PassOutput, compiled_passes, initial_z_program
from jaxmle.fitting.batch_report import mark_unfitted, report_batch
from jaxmle.fitting.free_rows import free_rows, with_fixed_scores
from jaxmle.fitting.kernel import (
    FitContext,
    KernelConfig,
    _check_options,
    batched_context,
    float_dtype,
    resolve_method,
    resolve_tolerances,
)
from jaxmle.fitting.rescue import rescue_members
from jaxmle.results.batch import BatchFitResult
from jaxmle.results.result import FitResult

STRAGGLER_FRACTION = 0.02      # a chunk's pass stops when ≤ this share of members is active


def fit_batch(
    loglik: LogLikFn,
    data: Any,
    init: Any,
    *,
    constraints: Mapping[str, Any] | None = None,
    priors: Mapping[str, Any] | None = None,
    method: Any = "auto",
    weights: Any = None,
    cov_type: str = "observed",
    fixed: Mapping[str, Any] | None = None,
    groups: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    chunk_size: int | None = None,
    batched_init: bool | None = None,
    progress: bool | None = None,
    devices: Any = None,
    report: bool = True,
) -> BatchFitResult:
    """:func:`jaxmle.fit_batch` without ``random=`` (see its docstring); ``report=False``
    leaves the warnings to the caller (a distributed batch reports global indices)."""
    _check_options(cov_type, priors)
    dtype = float_dtype()
    data, n_batch, bad_data = prepare_batch_data(data)
    w, weights_batched = prepare_batch_weights(weights, n_batch, dtype)
    init_leaves, space, prior, prior_values = prepare_batch_init(init, n_batch, constraints, dtype,
                                                                 batched_init, priors)
    first = jax.tree_util.tree_map(lambda x: x[0], data)
    internal = getattr(loglik, "jaxmle_checked", False)   # e.g. the random effects' marginal
    if not internal:
        _objective.check_loglik(loglik, jax.tree_util.tree_unflatten(
            space.treedef, [x[0] for x in init_leaves]), first, batch=n_batch)
    held, codes, n_groups = prepare_held(
        loglik, first, space, [x[0] for x in init_leaves], fixed, cov_type, groups, dtype)
    lay = layout(space, held)
    method = resolve_method(method, lay.m_free, prior)
    tol, max_iter = resolve_tolerances(tol, max_iter, method, dtype)
    bc = BatchConfig(KernelConfig(loglik, space, method, w is not None, dtype.name, cov_type,
                                  n_groups, prior, constant_leaves(space, held)),
                     data_batched=True, weights_batched=weights_batched)
    context = batched_context(FitContext(bc.kernel, data, w, held, codes, tol, max_iter,
                                         prior_values), n_batch, weights_batched)
    if bad_data.any():
        data = replace_datasets(data, bad_data)
    chunk = resolve_chunk_size(chunk_size, data, n_batch, _sharding.device_count(devices))
    packed = Inputs(data, spread(held, n_batch), codes, prior_values)
    key = ("batch", bc, chunk, _params.shape_signature(jax.tree_util.tree_leaves((first, w))))
    if not internal and key not in _start.COMPILED:
        check_batch_start(bc, packed, init_leaves, w, n_batch, chunk, bad_data)
    fits = run_batch(bc, packed, init_leaves, w, n_batch, tol, max_iter, chunk, progress, devices)
    _start.COMPILED.add(key)
    fits = rescue_members(fits, bc.kernel, Inputs(data, held, codes, prior_values), init_leaves,
                          w, weights_batched, tol, max_iter)
    if bad_data.any():
        fits = mark_unfitted(fits, bad_data)
    fits = with_fixed_scores(fits, bc.kernel, packed, w, lay,
                             (Inputs(0, 0, None, None), 0 if weights_batched else None, 0))
    fits = dataclasses.replace(free_rows(fits, lay, space), context=context,
                               priors=() if prior is None else prior.labels)
    if report:
        report_batch(fits, space.unc_names, bad_data)
    return BatchFitResult.of(fits)


# --------------------------------------------------------------------------- schedule


def run_batch(bc: BatchConfig, data: Inputs, init: Any, weights: Any,
              n_batch: int, tol: np.ndarray, max_iter: np.ndarray, chunk: int,
              progress: bool | None, devices: Any = None) -> FitResult:
    """All B fits (full-size results: see :func:`~jaxmle.fitting.kernel.free_rows`):
    chunked first passes, then the stragglers pooled and continued. ``data`` carries a
    :class:`~jaxmle.core.held.Held` per member; ``init`` is the starts as natural leaves
    (a list, leading axis B) or unconstrained (a (B, m) array)."""
    begin, advance = compiled_passes(bc)
    place = _sharding.placer(devices)
    held = data.held
    shared = place(data._replace(data=None, held=None), batched=False)  # groups, priors
    user = data.data
    shared_data = None if bc.data_batched else place(user, batched=False)
    shared_w = None if weights is None or bc.weights_batched else place(weights, batched=False)
    infer = np.bool_(True)

    def inputs(idx):
        d = shared_data if shared_data is not None else place(_take(user, idx))
        w = shared_w if not bc.weights_batched else place(_take(weights, idx))
        return shared._replace(data=d, held=place(_take(held, idx))), w

    def starts(idx):
        if isinstance(init, list):
            return place(initial_z_program(bc.kernel)([x[idx] for x in init]))
        return place(np.asarray(init)[idx])

    max_active = np.int32(_stop_at(chunk))
    chunks: list[FitResult] = []
    pending: list[tuple[np.ndarray, Any]] = []   # (global indices, their solver states)
    with _Progress(progress, n_batch) as bar:
        previous = None
        for start in range(0, n_batch, chunk):
            idx = _chunk_indices(start, chunk, n_batch)
            d, w = inputs(idx)
            state = begin(d, starts(idx), w, tol)
            out = advance(d, w, state, tol, max_iter, max_active, UNLIMITED, infer)
            bar.compiled()   # the programs are compiled (and cached) once the first call returns
            if previous is not None:
                _collect(previous, chunks, pending, bar)
            previous = (out, idx, min(chunk, n_batch - start))
        _collect(previous, chunks, pending, bar)
        fits = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *chunks)
        plan = _ContinuationPlan(chunk, _small_chunk(chunk, _sharding.device_count(devices)),
                                 max_active, int(np.median(fits.n_iter)))
        while pending:
            index = np.concatenate([i for i, _ in pending])
            states = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *[s for _, s in pending])
            pending = []
            size, stop_at, limit = plan.next_pass(len(index))
            bar.phase(f"continuing {len(index)} slow fit{'s' if len(index) > 1 else ''}")
            for start in range(0, len(index), size):
                idx = _chunk_indices(start, size, len(index))
                n_valid = min(size, len(index) - start)
                d, w = inputs(index[idx])
                out = advance(d, w, place(_padded_states(states, idx, n_valid)), tol, max_iter,
                              stop_at, limit, infer)
                _store(out, index[idx[:n_valid]], n_valid, fits, pending, bar)
    return fits


def _stop_at(size: int) -> int:
    """A pass over ``size`` members stops when at most this many are still iterating:
    2% (at least 1, so one slow fit does not hold up its chunk), and always fewer than
    ``size`` so every pass makes progress."""
    return min(max(1, int(STRAGGLER_FRACTION * size)), size - 1) if STRAGGLER_FRACTION else 0


class _ContinuationPlan:
    """How the pooled unfinished fits continue (same program, a chunk size per pass).

    * A pool that fills chunks runs in full chunks (each may stop early again).
    * A small pool first gets a short pass in a full chunk (a quarter of the median
      iterations): the usual tail of fits that needed a step or two more ends there,
      and no other program is needed.
    * What is still running then is genuinely slow: it continues in chunks of
      ``chunk // 8`` (compiled once, on first need; under 32, ``chunk``), so a few slow
      fits cost their own iterations on a small batch, not on a padded full one.
    """

    def __init__(self, chunk: int, small: int, max_active: np.int32, median_iter: int):
        self.chunk, self.small, self.max_active = chunk, small, max_active
        self.tail_limit = np.int32(max(2, median_iter // 4))
        self.tail_done = False

    def next_pass(self, pool: int) -> tuple[int, np.int32, np.int32]:
        """(chunk size, stop when ≤ this many are active, iteration limit of the pass)."""
        if pool > self.chunk // 2:
            return self.chunk, self.max_active if pool > self.chunk else np.int32(0), UNLIMITED
        if not self.tail_done:
            self.tail_done = True
            return self.chunk, np.int32(0), self.tail_limit
        stop_at = _stop_at(self.small) if pool > self.small else 0
        return self.small, np.int32(stop_at), UNLIMITED


SMALL_CHUNK_FROM = 32   # smaller chunks continue in their own size, with their own program


def _small_chunk(chunk: int, n_devices: int) -> int:
    """``chunk // 8``, or ``chunk`` below 32 (padded members cost less than a compile)."""
    small = chunk // 8 if chunk >= SMALL_CHUNK_FROM else chunk
    return -(-small // n_devices) * n_devices


def _chunk_indices(start: int, chunk: int, n: int) -> np.ndarray:
    """Indices start..start+chunk−1, the ones past n replaced by n−1 (padding)."""
    return np.minimum(np.arange(start, start + chunk), n - 1)


def _take(tree: Any, idx: np.ndarray) -> Any:
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


def _collect(item, chunks: list, pending: list, bar) -> None:
    """Move a finished first pass to the host; keep the states of its unfinished members."""
    out, idx, n_valid = item
    result, active = jax.device_get((out.result, out.active))
    chunks.append(jax.tree_util.tree_map(lambda x: x[:n_valid], result))
    n_left = _keep_unfinished(out, active, idx[:n_valid], n_valid, pending)
    bar.update(n_valid - n_left)


def _keep_unfinished(out: PassOutput, active: np.ndarray, index: np.ndarray, n_valid: int,
                     pending: list) -> int:
    """Host copies of the solver states of the members still iterating (small arrays);
    returns how many there are."""
    local = np.nonzero(active[:n_valid])[0]
    if local.size:
        state = jax.device_get(out.state)
        pending.append((index[local], jax.tree_util.tree_map(lambda x: x[local], state)))
    return int(local.size)


def _store(out: PassOutput, index: np.ndarray, n_valid: int, fits: FitResult,
           pending: list, bar) -> None:
    """Write a continuation pass's results into the batch; keep the still-unfinished."""
    result, active = jax.device_get((out.result, out.active))

    def put(dst, src):
        dst[index] = src[:n_valid]

    jax.tree_util.tree_map(put, fits, result)
    bar.update(n_valid - _keep_unfinished(out, active, index, n_valid, pending))


def _padded_states(states: Any, idx: np.ndarray, n_valid: int) -> Any:
    """Gather states; the padding members (past ``n_valid``) are marked done (frozen)."""
    state = jax.tree_util.tree_map(lambda x: x[idx], states)
    done = np.array(state.done)
    done[n_valid:] = True
    return state._replace(done=done)


class _Progress:
    """The progress bar of a batch: finished fits over B.

    It says "compiling…" until the programs are compiled and only then starts its
    clock (a rate that counted the compile would promise a wrong ETA); a fit counts
    when it has finished, so the bar stands below 100% while the slow fits continue,
    a phase it names. On by default on a terminal (tqdm decides), ``progress=True``
    forces it, ``False`` turns it off.
    """

    DESC = "jaxmle.fit_batch"

    def __init__(self, progress: bool | None, total: int):
        self.bar = None
        if progress is False:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with numpyro
            return
        self.bar = tqdm(total=total, unit="fit", desc=f"{self.DESC} (compiling…)",
                        disable=None if progress is None else False, leave=bool(progress))
        if self.bar.disable:
            self.bar = None
        else:
            self.bar.refresh()
        self.compiling = True

    def compiled(self) -> None:
        if self.bar is not None and self.compiling:
            self.compiling = False
            self.bar.set_description(self.DESC, refresh=False)
            self.bar.reset()          # n is still 0: this starts the clock now

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{self.DESC} ({text})")

    def update(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            if self.bar.n >= self.bar.total:
                self.bar.set_description(self.DESC, refresh=False)
            self.bar.close()
        return False

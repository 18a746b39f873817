"""Parametric bootstrap: ``res.bootstrap(simulate, n, key=key)``.

B datasets are drawn at the estimate, ``simulate(θ̂, key_b)``, as one ``vmap``ped
call, and refitted as one batch (the ``fit_batch`` program, started at θ̂, with the
fit's fixed parameters, weights and settings). Refits that do not converge are
counted and left out of the summaries.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.fitting.distributed as _distributed
import jaxmle.results.export as _export
from jaxmle.core.held import Inputs, layout, spread
from jaxmle.core.params import element_names
from jaxmle.core.stats import check_level
from jaxmle.core.typing import STATUS_LABELS, Status
from jaxmle.fitting.batch import run_batch
from jaxmle.fitting.batch_report import mark_unfitted
from jaxmle.fitting.batch_inputs import prepare_batch_data, replace_datasets, resolve_chunk_size
from jaxmle.fitting.batch_kernel import BatchConfig
from jaxmle.fitting.free_rows import free_rows
from jaxmle.fitting.kernel import context_of
from jaxmle.fitting.sharding import device_count
from jaxmle.results.batch import BatchFitResult
from jaxmle.results.result import FitResult, provides


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """Summaries over the converged bootstrap refits.

    ``estimate`` is θ̂ (the original fit); ``stderr`` the SD of the refits'
    estimates; ``lower``/``upper`` the percentile interval at ``level``; ``bias``
    the mean of the refits minus θ̂. ``draws`` (n_ok, k) are the refits' estimates
    (columns named by ``param_names``); ``params`` the same as a batched pytree, for
    derived quantities (:meth:`derived`). ``n_failed`` refits did not converge
    (``failures``: how many per reason) and are left out.
    """

    param_names: tuple[str, ...]
    estimate: np.ndarray
    stderr: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    bias: np.ndarray
    level: float
    n: int
    n_failed: int
    failures: tuple[tuple[str, int], ...]
    draws: np.ndarray = dataclasses.field(repr=False)
    params: Any = dataclasses.field(repr=False)
    point: Any = dataclasses.field(repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        """Alias of :attr:`param_names`."""
        return self.param_names

    def confint(self) -> dict[str, tuple[float, float]]:
        """Percentile intervals ``{name: (lower, upper)}``."""
        return {n: (float(a), float(b)) for n, a, b in zip(self.param_names, self.lower, self.upper)}

    def to_dict(self, draws: bool = False) -> dict[str, Any]:
        """Plain Python (NaN as None): ``names``, ``level``, ``n``, ``n_failed``,
        ``failures`` ({reason: count}), ``estimates`` ({name: {estimate, bias, stderr,
        ci_lower, ci_upper}}), ``versions``; with ``draws=True`` also the (n_ok, k)
        refit estimates as nested lists."""
        return _export.bootstrap_to_dict(self, draws)

    def to_dataframe(self) -> Any:
        """One row per parameter (index ``name``): ``estimate``, ``bias``, ``stderr``
        (bootstrap SE), ``ci_lower``, ``ci_upper`` (percentile); needs pandas."""
        return _export.bootstrap_to_dataframe(self)

    def derived(self, fn: Any) -> "BootstrapResult":
        """The same summaries for ``fn(params)`` (scalar or array), evaluated on every
        converged refit (``vmap``) and at θ̂."""
        est = np.asarray(fn(self.point), dtype=float)
        values = np.asarray(jax.vmap(fn)(self.params), dtype=float).reshape(len(self.draws), -1)
        names = tuple(element_names("fn", est.shape))
        return _summarise(names, est.reshape(-1), values, self.level, self.n, self.failures,
                          self.params, self.point)

    def __str__(self) -> str:
        lo_h, hi_h = f"[{(1 - self.level) / 2:.3f}", f"{(1 + self.level) / 2:.3f}]"
        width = max([len(n) for n in self.param_names] + [10])
        lines = [f"Parametric bootstrap: {self.n} refits, {self.n - self.n_failed} converged"
                 + ("" if not self.n_failed else
                    " (left out: " + ", ".join(f"{c} {s}" for s, c in self.failures) + ")"),
                 " " * width + "".join(c.rjust(12) for c in ("estimate", "bias", "boot SE",
                                                               lo_h, hi_h))]
        for row in zip(self.param_names, self.estimate, self.bias, self.stderr, self.lower, self.upper):
            lines.append(row[0].ljust(width) + "".join(f" {v:11.6g}" for v in row[1:]))
        return "\n".join(lines)

    __repr__ = __str__


def _summarise(names, estimate, draws, level, n, failures, params, point) -> BootstrapResult:
    n_ok = draws.shape[0]
    if n_ok >= 2:
        se = np.std(draws, axis=0, ddof=1)
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        bias = np.mean(draws, axis=0) - estimate
    else:
        se = lo = hi = bias = np.full(len(names), np.nan)
    n_failed = sum(c for _, c in failures)
    return BootstrapResult(tuple(names), np.asarray(estimate, float), se, lo, hi, bias, level, n,
                           n_failed, failures, draws, params, point)


@functools.lru_cache(maxsize=32)
def _simulator(simulate: Any):
    """``simulate`` vmapped over keys and jitted (cached per function)."""
    return jax.jit(jax.vmap(simulate, in_axes=(None, 0)))


def _check_shapes(sim: Any, data: Any, n: int) -> None:
    ls, ts = jax.tree_util.tree_flatten(sim)
    ld, td = jax.tree_util.tree_flatten(data)
    if ts != td or any(np.shape(a)[1:] != np.shape(b) for a, b in zip(ls, ld)):
        got = jax.tree_util.tree_map(lambda a: np.shape(a)[1:], sim)
        want = jax.tree_util.tree_map(np.shape, data)
        raise ValueError(f"simulate(params, key) must return data shaped like the fitted data "
                         f"{want}; it returned {got}")


@provides("bootstrap")
def bootstrap(res: FitResult, simulate: Any, n: int = 2000, *, key: Any = None,
              level: float = 0.95, chunk_size: int | None = None,
              progress: bool | None = None, distributed: bool = False) -> BootstrapResult:
    """See :meth:`FitResult.bootstrap`. ``distributed=True``: every process of a
    ``jax.distributed`` program draws and refits its part of the replicates (contiguous,
    nearly equal; replicate b always from the b-th of the n keys split from ``key``, so
    the union is the one-process bootstrap), and every process gets the whole result."""
    ctx = context_of(res, "the bootstrap")
    if not bool(res.converged):
        raise ValueError(f"the bootstrap needs a converged fit (this one: {res.status_message})")
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer ≥ 2, got {n}")
    check_level(level)
    n = int(n)
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, n)
    if distributed:
        _distributed.check_initialized("bootstrap(distributed=True)")
        if n < jax.process_count():
            raise ValueError(f"a distributed bootstrap gives each of the {jax.process_count()} "
                             f"processes at least one replicate; n = {n} is fewer")
        rows = _distributed.even_rows(n)
        fits, _ = _distributed.collective(lambda: _refit(ctx, res, simulate, keys[rows.mine],
                                                         chunk_size, progress, n))
        fits = _distributed.allgather_rows(fits, rows)
    else:
        fits = _refit(ctx, res, simulate, keys, chunk_size, progress)
    ok = np.asarray(fits.converged, bool)
    status = np.asarray(fits.status)
    failures = tuple((STATUS_LABELS[Status(s)], int((status == s).sum()))
                     for s in np.unique(status[~ok]))
    batch = BatchFitResult.of(fits)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[ok], fits.params)
    return _summarise(res.param_names, res.flat_params(), batch.flat_params()[ok], level, n,
                      failures, params, res.params)


def _refit(ctx: Any, res: FitResult, simulate: Any, keys: Any, chunk_size: int | None,
           progress: bool | None, whole: int | None = None) -> FitResult:
    """The refits of the datasets simulated from ``keys`` (one per key); ``whole``: the
    replicates of all processes (a share runs the chunk of the whole bootstrap)."""
    n = len(keys)
    sim = _simulator(simulate)(res.params, keys)
    _check_shapes(sim, ctx.data, n)
    data, _, bad = prepare_batch_data(sim, from_user=False)
    if bad.any():
        data = replace_datasets(data, bad)
    config = dataclasses.replace(ctx.config, cov_type="observed", n_groups=0)
    bc = BatchConfig(config, data_batched=True, weights_batched=False)
    z_hat = np.asarray(res.stats.z, np.dtype(config.dtype))   # every refit starts at the estimate
    chunk = resolve_chunk_size(chunk_size, data, n, device_count(), whole)
    fits = run_batch(bc, Inputs(data, spread(ctx.held, n), None, ctx.prior),
                     np.broadcast_to(z_hat, (n,) + z_hat.shape), ctx.weights, n, ctx.tol,
                     ctx.max_iter, chunk, progress)
    fits = free_rows(fits, layout(config.space, ctx.held), config.space)
    if bad.any():
        fits = mark_unfitted(fits, bad)
    return fits

"""The compiled programs of ``fit_batch``: the single-fit kernel's pieces, vmapped.

A batch of fits is ``vmap`` of exactly what :func:`jaxmle.fit` runs
(``kernel_solver(...).init``, ``.step``, ``conclude``); only the loop over
iterations is written for the batch, so that it can stop early:

* ``vmap`` of a ``while_loop`` runs every member until the slowest is done. Here
  the loop stops as soon as at most ``max_active`` members are still iterating;
  their states come back with the finished results and the host continues them,
  together, in a smaller batch (:mod:`jaxmle.fitting.batch`). One slow dataset then
  costs its own iterations, not its chunk's.
* Finished members are frozen (``where(active, new, old)``), as ``vmap`` of a
  ``while_loop`` does.

Two programs per problem structure: :func:`start` (the initial states, cheap)
and :func:`advance` (iterate from given states, then conclude), which serves the
first pass and every continuation. Held coordinates are data with the batch axis
(:class:`~jaxmle.core.held.Held`, one per member), so multi-start, the bootstrap
and the points of every profile (which skip the inference: ``infer=False``) of a
problem with one shared dataset run the same two programs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

import jaxmle.core.objective as _objective
import jaxmle.core.solvers as _solvers
from jaxmle.core.held import Inputs
from jaxmle.fitting.kernel import KernelConfig, conclude, conclude_point, initial_z, kernel_solver
from jaxmle.results.result import FitResult


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Static description of a batch: the kernel and which inputs carry the batch axis."""

    kernel: KernelConfig
    data_batched: bool          # False: one dataset shared by all members (multi-start)
    weights_batched: bool


class PassOutput(NamedTuple):
    result: FitResult           # for every member (final for the finished ones)
    state: _solvers.State       # solver states, to continue the unfinished ones
    active: jax.Array           # (C,) bool: still iterating when the pass stopped


def _axis(batched: bool) -> int | None:
    return 0 if batched else None


def _masked_data(bc: BatchConfig, data: Any, weights: Any) -> tuple[Any, Any]:
    """Inputs with zero-weight rows masked (see ``mask_padding``) and their batch axes (a
    prefix tree: the held coordinates carry the batch axis, cluster codes and the
    priors' parameters are shared)."""
    inner, axis = _masked_rows(bc, data.data, weights)
    return data._replace(data=inner), Inputs(axis, 0, None, None)


def _masked_rows(bc: BatchConfig, data: Any, weights: Any) -> tuple[Any, Any]:
    if weights is None or not (bc.data_batched or bc.weights_batched):
        return _objective.mask_padding(data, weights), _axis(bc.data_batched)
    masked = jax.vmap(_objective.mask_padding, in_axes=(_axis(bc.data_batched),
                                                        _axis(bc.weights_batched)))(data, weights)
    return masked, 0


def _freeze_finished(active: jax.Array, new: Any, old: Any) -> Any:
    def select(n, o):
        return jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree_util.tree_map(select, new, old)


def _iterate_batch(step: Callable, state: Any, max_iter: jax.Array, max_active: jax.Array,
                   limit: jax.Array) -> Any:
    """Batched iterations until at most ``max_active`` members are still active, or
    ``limit`` iterations of this pass."""

    def keep_going(carry):
        s, it = carry
        return (jnp.sum(_solvers.is_active(s, max_iter)) > max_active) & (it < limit)

    def body(carry):
        s, it = carry
        return _freeze_finished(_solvers.is_active(s, max_iter), step(s), s), it + 1

    return lax.while_loop(keep_going, body, (state, jnp.zeros((), jnp.int32)))[0]


def _finish(bc: BatchConfig, data: Any, data_axis, weights: Any, state: Any,
            max_iter: jax.Array, infer: jax.Array, tol: jax.Array) -> PassOutput:
    """Every member's result: with the inference, or (``infer`` False: profile points)
    only the maximum."""
    axes = (data_axis, _axis(bc.weights_batched), 0)
    active = _solvers.is_active(state, max_iter)

    def run(how):
        return lambda: jax.vmap(how, in_axes=axes)(data, weights, state)

    def concluded(d, w, s, unfinished):
        return conclude(bc.kernel, d, w, s, tol=tol, max_iter=max_iter, unfinished=unfinished)

    result = lax.cond(
        infer, lambda: jax.vmap(concluded, in_axes=axes + (0,))(data, weights, state, active),
        run(functools.partial(conclude_point, bc.kernel)))
    return PassOutput(result, state, active)


def _batched_step(bc: BatchConfig, data: Any, data_axis, weights: Any, tol: jax.Array):
    """One iteration for every member: the single fit's ``step``, vmapped (a Newton
    step factorises the batch's Hessians in one call, ``eigh`` only when some member
    needs it: :func:`jaxmle.core.solvers.dense.factorize_one`)."""
    def member_step(d, w, s):
        return kernel_solver(bc.kernel, d, w, tol).step(s)

    step = jax.vmap(member_step, in_axes=(data_axis, _axis(bc.weights_batched), 0))
    return lambda s: step(data, weights, s)


def start(bc: BatchConfig, data: Any, z0: jax.Array, weights: Any,
          tol: jax.Array) -> _solvers.State:
    """Every member's solver state at its start ``z0`` (unconstrained; for Newton: no
    evaluation yet)."""
    data, data_axis = _masked_data(bc, data, weights)

    def member_init(d, w, z):
        return kernel_solver(bc.kernel, d, w, tol).init(z.astype(bc.kernel.dtype))

    return jax.vmap(member_init, in_axes=(data_axis, _axis(bc.weights_batched), 0))(
        data, weights, z0)


def advance(bc: BatchConfig, data: Any, weights: Any, state: Any, tol: jax.Array,
            max_iter: jax.Array, max_active: jax.Array, limit: jax.Array,
            infer: jax.Array) -> PassOutput:
    """Iterate members from their states until ≤ ``max_active`` are active (or for
    ``limit`` iterations), then conclude (the host discards the results of members
    still active); ``infer`` (traced): with the inference, else the maxima only."""
    data, data_axis = _masked_data(bc, data, weights)
    step = _batched_step(bc, data, data_axis, weights, tol)
    state = _iterate_batch(step, state, max_iter, max_active, limit)
    return _finish(bc, data, data_axis, weights, state, max_iter, jnp.asarray(infer), tol)


@functools.lru_cache(maxsize=64)
def compiled_passes(bc: BatchConfig) -> tuple[Callable[..., Any], Callable[..., PassOutput]]:
    """The jitted (start, advance) programs for one static configuration; the first
    pass and every continuation of stragglers share ``advance`` (one compilation)."""
    return (jax.jit(functools.partial(start, bc)), jax.jit(functools.partial(advance, bc)))


@functools.lru_cache(maxsize=64)
def initial_z_program(config: KernelConfig) -> Any:
    """Natural init leaves (leading batch axis) → unconstrained starts (B, m)."""
    return jax.jit(jax.vmap(functools.partial(initial_z, config)))

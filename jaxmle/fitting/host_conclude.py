"""The end of a host-driven Newton fit: the inference and the end-of-fit checks.

:func:`~jaxmle.fitting.kernel.conclude` on the host: the same functions as the fused
program, the model's parts (θ̂, ℓ, log π, the observation count and the transform's
Jacobian; the scores' outer product for ``cov_type`` opg/sandwich) from the model's
programs, the linear algebra in NumPy. The end-of-fit probes
(:mod:`jaxmle.core.verdict`: f a few standard errors away along the weakest and the
Newton directions, and one unit further towards a constrained parameter's edge) are
values of the model's own f/∇f/∇²f program, one call per probe, so the only programs a
model compiles are that one and ``point`` (whose compilation would otherwise grow with a
batch of probe evaluations: for a Laplace marginal, each is an inner Newton solve).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import numpy as np

import jaxmle.core.refine as _refine
import jaxmle.core.solvers as _solvers
from jaxmle.core.covariance import space_kind
from jaxmle.core.held import View
from jaxmle.core.typing import Status
from jaxmle.core.verdict import constrained_z, edge_step
from jaxmle.core.held import unravel_numpy
from jaxmle.fitting.kernel import (
    KernelConfig,
    Point,
    assemble,
    infer,
    probe_eigen,
)
from jaxmle.results.result import FitResult


@functools.lru_cache(maxsize=64)
def _identity(m: int, dtype: str) -> np.ndarray:
    out = np.eye(m, dtype=np.dtype(dtype))
    out.flags.writeable = False
    return out


def identity(m: int, dtype: Any) -> np.ndarray:
    """I (m × m): the basis of the f/∇f/∇²f program in the solver's iterations."""
    return _identity(int(m), np.dtype(dtype).str)


def host_arrays(tree: Any) -> Any:
    """A program's outputs as NumPy arrays."""
    return jax.tree_util.tree_map(np.asarray, tree)


def final_values(s: Any) -> tuple[float, int, np.ndarray]:
    """(−f, status, ẑ) of a final state (profile points)."""
    status = int(s.status) if bool(s.done) else int(Status.MAX_ITER)
    return -float(s.f), status, np.asarray(s.z)


VALUE_PROGRAM_AFTER_S = 0.1
"""A costly model's probes switch from its f/∇f/∇²f program to one of f alone (compiled
then, once per model and shapes) when an f/∇f/∇²f call takes longer than this: there
f alone costs a third to a fifth, and compiling it a few calls' worth; below, the probes
cost milliseconds and a compile would only delay a first fit."""


def probe_values(config: KernelConfig, programs: Any, inputs: Any, weights: Any,
                 z: np.ndarray, steps: np.ndarray, held_z: np.ndarray) -> np.ndarray:
    """f at ẑ + each row of ``steps`` and one unit further towards the edge (+inf when no
    coordinate is near one), as :func:`~jaxmle.fitting.kernel.model_point` computes them
    in the fused program, here from the model's programs (a costly f: each evaluation is
    an inner optimisation; :data:`VALUE_PROGRAM_AFTER_S`)."""
    edge = edge_step(z, _constrained(config.space), held_z)
    rows = list(steps) + ([edge] if np.any(edge != 0) else [])
    values = []
    eye = identity(z.shape[0], z.dtype)
    alone = programs.value._cache_size() > 0    # compiled for this model (any shapes)
    for r in rows:
        if alone:
            values.append(programs.value(inputs, weights, z + r))   # dispatched at once
            continue
        began = time.perf_counter()
        values.append(float(programs.fgh(inputs, weights, z + r, eye)[0]))
        alone = time.perf_counter() - began > VALUE_PROGRAM_AFTER_S
    return np.asarray([float(v) for v in values] + [np.inf] * (steps.shape[0] + 1 - len(rows)),
                      z.dtype)


def polish(programs: Any, inputs: Any, weights: Any, sol: Any, held_z: np.ndarray,
           tol: Any, max_iter: Any) -> tuple[Any, np.ndarray, Any]:
    """The solution after :mod:`jaxmle.core.refine`'s polish, H_z there, and the
    eigen-decomposition of the information computed in a well-conditioned basis."""
    held_w = _refine.held_columns(held_z)
    p = _refine.start(sol, sol.hess, held_z, max_iter)
    tol = np.asarray(tol, sol.z.dtype)
    while not bool(p.done):
        f, g, hw = host_arrays(programs.fgh(inputs, weights, p.trial, p.t))
        p = _refine.tell(p, f, g, hw, held_w, tol)
    return _refine.finish(sol, p, held_w)


def conclude(config: KernelConfig, programs: Any, inputs: Any, weights: Any, final: Any,
             held: Any, tol: Any, max_iter: Any) -> FitResult:
    """The :class:`FitResult` of a final Newton state (``held``: the host's copy of
    ``inputs.held``); the result's arrays are NumPy arrays."""
    held_z = np.asarray(inputs.held.z)
    with np.errstate(all="ignore"):
        sol, hess, eig = polish(programs, inputs, weights, _solvers.solution(final), held_z,
                                tol, max_iter)
        regular, steps = probe_eigen(sol, eig, held_z)
        values, transform = host_arrays(programs.point(inputs, weights, sol.z, steps))
        if programs.probes:   # f at ẑ + each step and at the edge step, last
            n_probe = np.shape(steps)[0] + 1
            values, f_probe = values[:-n_probe], values[-n_probe:]
        else:
            f_probe = probe_values(config, programs, inputs, weights, np.asarray(sol.z),
                                   np.asarray(steps), held_z)
        meat = None if config.cov_type == "observed" else host_arrays(
            programs.meat(inputs, weights, sol.z))
        view = _view(config.space)
        inf, status = infer(_kind(config.space), config.cov_type, sol, hess, eig, regular,
                            transform, f_probe, held_z, meat)
        params = unravel_numpy(view, values[:view.k])
        loglik, logpost, nobs = values[view.k:]   # (log π's parts: see assemble)
        point = Point(params, loglik, logpost, nobs, transform, None)
        return assemble(config, view, held, sol, point, inf, status, xp=np)


@functools.lru_cache(maxsize=256)
def _view(space: Any) -> View:
    """The space as :func:`assemble` on the host reads it (names, sizes, unravel)."""
    return View(space)


@functools.lru_cache(maxsize=256)
def _kind(space: Any) -> str:
    return space_kind(space)


@functools.lru_cache(maxsize=256)
def _constrained(space: Any) -> np.ndarray:
    out = constrained_z(space)
    out.flags.writeable = False
    return out

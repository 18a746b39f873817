"""Variance components on the boundary: after a random-effects fit, probe each constrained
parameter far toward its edge (σ → 0); if the marginal likelihood is as high there, the
estimate is on the boundary: report it at the edge, with NaN SE and a
:class:`BoundaryWarning` (the χ²₁ likelihood-ratio reference halves there)."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.core.held import Inputs, View, layout
from jaxmle.core.params import all_flat_names, flat_values
from jaxmle.core.priors import log_prior
from jaxmle.core.typing import BoundaryWarning, Status, user_stacklevel
from jaxmle.results.result import FitResult

BOUNDARY_STEP = 20.0        # unconstrained distance of the boundary probe
BOUNDARY_DROP = 1e-4        # L lower by at most this there: the maximum is on the boundary


@functools.lru_cache(maxsize=64)
def _values_kernel(config) -> Callable:
    """(z's, inputs) ↦ the fit's objective L(θ(z)) (+ log π(θ(z)) for a MAP fit) for each
    row of z's (unconstrained coordinates)."""

    def objective(z, view, inputs):
        theta = view.to_natural(z)
        value = config.loglik(theta, inputs.data)
        if config.prior is not None:    # a MAP fit: the prior can hold it off the edge
            value = value + log_prior(config.prior, inputs.prior, theta, inputs.data)
        return value

    def run(zs, inputs):
        view = View(config.space, inputs.held, config.constant)
        return jax.vmap(lambda z: objective(z, view, inputs))(zs)

    return jax.jit(run)


def _candidates(space: Any, held: Any) -> list[tuple[int, int, Any]]:
    """(unconstrained coordinate, natural index, leaf) of each free elementwise constrained
    element."""
    from jaxmle.core.held import elementwise, is_identity_transform

    lay = layout(space, held)
    starts = np.cumsum([0] + [l.size for l in space.leaves])
    out = []
    for j, nat in zip(lay.act_unc, lay.act_nat):
        if nat < 0:
            continue
        leaf = space.leaves[int(np.searchsorted(starts, nat, side="right")) - 1]
        if elementwise(leaf) and not is_identity_transform(leaf):
            out.append((int(j), int(nat), leaf))
    return out


def _boundary(res: FitResult) -> tuple[FitResult, tuple[str, ...], dict]:
    r"""Detect constrained parameters whose maximum is on the boundary of their space.

    For each elementwise constrained free element (σ > 0, ρ ∈ (−1, 1), ...), L is
    evaluated 20 units further along its unconstrained coordinate in both
    directions; if it is lower there by at most 10⁻⁴ the likelihood is flat all
    the way to the edge (σ → 0: no group effect in the data), and the estimate is
    reported as the edge value with NaN SE (its Wald interval and z-test would be
    meaningless), with a :class:`BoundaryWarning`. Returns the result, the boundary
    parameters' names and where to hold each for the others' inference
    (:func:`_hold_value`; :mod:`jaxmle.random.conditional`).
    """
    cfg = res.context.config
    cands = [c for c in _candidates(cfg.space, res.context.held) if _near_edge(res, c)]
    # (DIVERGED: the end-of-fit check found ℓ not falling towards an edge: a marginal
    # likelihood flat up to it is the boundary case this function decides)
    if not cands or not (bool(res.converged) or _stalled_at_stationary_point(res)
                         or int(res.status) == Status.DIVERGED):
        return res, (), {}
    z = np.asarray(res.stats.z)
    steps = np.repeat([[-BOUNDARY_STEP], [BOUNDARY_STEP]], len(cands), axis=1).T.reshape(-1)
    zs = np.repeat(z[None], 2 * len(cands), axis=0)
    for r, (j, _, _) in enumerate(np.repeat(cands, 2, axis=0)):
        zs[r, j] += steps[r]
    packed = Inputs(res.context.data, res.context.held, None, res.context.prior)
    values = np.asarray(_values_kernel(cfg)(jnp.asarray(zs), packed)).reshape(len(cands), 2)
    flat_all = res.flat_params_all()
    cov = np.array(res.cov)
    stderr_all = np.array(flat_values(res.stderr))
    names = []
    free_names = list(res.param_names)
    all_names = all_flat_names(res.params)
    hold = {}
    run = functools.partial(_values, _values_kernel(cfg), packed, z, 2 * len(cands))
    level = float(res.loglik if cfg.prior is None else res.logpost)     # the fit's objective
    for (j, nat, leaf), vals in zip(cands, values):
        side = np.nonzero(vals >= level - BOUNDARY_DROP)[0]
        if not len(side):
            continue
        edge = -math.inf if side[0] == 0 else math.inf
        hold[all_names[nat]] = _hold_value(run, leaf, j, edge, z, level)
        flat_all[nat] = _edge_value(leaf, edge, flat_all[nat])
        stderr_all[nat] = np.nan
        i = free_names.index(all_names[nat])
        cov[i, :] = cov[:, i] = np.nan
        names.append(all_names[nat])
    if not names:
        return res, (), {}
    warnings.warn(
        f"{', '.join(names)} estimated on the boundary of the parameter space (the marginal "
        "likelihood is flat up to the edge: e.g. a variance component of 0, no group effect "
        "in the data): reported at the edge with NaN standard error. A likelihood-ratio test of "
        "it against the model without it is a boundary test: use the ½χ²₀ + ½χ²₁ reference "
        "(half the χ²₁ p-value)", BoundaryWarning, stacklevel=user_stacklevel())
    space = cfg.space
    params = space.unravel_natural(jnp.asarray(flat_all))
    stderr = space.unravel_natural(jnp.asarray(stderr_all))
    # a Newton fit that ran toward the edge stalls there (the curvature vanishes with the
    # variance, so its step test cannot pass) with a vanishing gradient: the boundary is
    # the answer, the fit converged to it
    status = np.asarray(Status.SUCCESS, np.asarray(res.status).dtype)
    return (dataclasses.replace(res, params=params, stderr=stderr, cov=cov, status=status,
                                converged=np.asarray(True)), tuple(names), hold)


HOLD_LADDER = 64            # unit steps back from where the Newton stopped, at most
HOLD_LEVEL = 1e-9           # L within this share of (1 + |L|) of its value there


def _values(kernel, packed, z, rows, zs):
    """L at each row of ``zs``, through the probe's own program (``rows`` rows a call)."""
    out = []
    for i in range(0, len(zs), rows):
        chunk = zs[i:i + rows]
        padded = np.concatenate([chunk, np.repeat(z[None], rows - len(chunk), axis=0)])
        out.append(np.asarray(kernel(jnp.asarray(padded), packed))[:len(chunk)])
    return np.concatenate(out)


def _hold_value(run, leaf, j: int, edge: float, z: np.ndarray, loglik: float) -> float:
    """Where to hold a boundary parameter for the other parameters' inference: the point
    farthest back from the edge (unit steps of its unconstrained coordinate from where
    the Newton stopped) at which L is still level with its value there to ``HOLD_LEVEL``.
    That is the edge to every digit L has, while the marginal is computed there without
    the cancellation it suffers right at the edge (σ ~ 1e-15 next to data scales ~10)."""
    back = 1.0 if edge < 0 else -1.0
    zs = np.repeat(z[None], HOLD_LADDER, axis=0)
    zs[:, j] = z[j] + back * np.arange(HOLD_LADDER)
    level = run(zs) >= loglik - HOLD_LEVEL * (1.0 + abs(loglik))
    k = HOLD_LADDER - 1 if level.all() else max(int(np.argmin(level)) - 1, 0)
    with np.errstate(all="ignore"):
        return float(np.asarray(leaf.transform(jnp.asarray(zs[k, j]))).reshape(-1)[0])


def _stalled_at_stationary_point(res: FitResult) -> bool:
    """A stalled fit whose gradient is within √tol (the solver's own acceptance on a stall):
    worth the boundary probe, which decides whether the stall is an edge."""
    tol = getattr(res.context, "tol", None)
    if int(res.status) != Status.STALLED or tol is None:
        return False
    grad = np.asarray(res.stats.grad_z, dtype=float)
    return bool(np.all(np.isfinite(grad)) and np.max(np.abs(grad), initial=0.0)
                <= math.sqrt(float(tol)))


def _near_edge(res: FitResult, cand) -> bool:
    """Worth checking (the check compiles L): singular information, or an edge of the
    parameter space within 2 standard errors of the estimate."""
    _, nat, leaf = cand
    value, se = res.flat_params_all()[nat], flat_values(res.stderr)[nat]
    singular = np.asarray(res.stats.singular)
    if singular.any() or not np.isfinite(se):
        return True
    edges = [_edge_value(leaf, e, np.nan) for e in (-math.inf, math.inf)]
    return any(np.isfinite(e) and abs(value - e) < 2 * se for e in edges)


def _edge_value(leaf, edge: float, current: float) -> float:
    """The natural value at z = ±∞ (e.g. σ = 0), or the current one if not finite there."""
    with np.errstate(all="ignore"):
        v = float(np.asarray(leaf.transform(jnp.asarray(edge))).reshape(-1)[0])
    return v if math.isfinite(v) else current



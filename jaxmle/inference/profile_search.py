"""The profile search (see :mod:`jaxmle.inference.profile`): every side of every profiled
parameter is a target; all advance together, one batched call of the fit's point
program per step, bracketing then Illinois on the signed root √D − √c."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

import jaxmle.core.solvers as _solvers
import jaxmle.fitting.host as _host
from jaxmle.core.held import (
    Inputs,
    elementwise,
    hold_coordinates,
    is_identity_transform,
    layout,
)
from jaxmle.core.host_space import host_transform
from jaxmle.core.stats import chi2_1_quantile
from jaxmle.core.typing import Status
from jaxmle.fitting.batch_kernel import BatchConfig, compiled_passes
from jaxmle.fitting.kernel import context_of
from jaxmle.results.result import FitResult

_GTOL = 1e-7            # |√D − √c| at which a crossing is accepted (standard-error units)
_REACH = 64.0           # give up bracketing (an open side) beyond this many SEs of u
_PLATEAU = 1e-4         # ... or when √D rises by less than this while x grows ≥ 2×
_MAX_ROUNDS = 60


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass
class _Side:
    """Search state of one side of one parameter (host only)."""

    name: str
    side: int               # +1: u above û, −1: below
    j: int                  # the unconstrained coordinate held
    s_u: float              # Wald SE of u
    inside: list            # [(x, g, z)] with D < c; x = side·(u − û) ≥ 0
    outside: tuple | None = None
    memory: int = 0         # Illinois: +k (−k) after k replacements in a row of the outer (inner) end
    status: str | None = None
    root: float = math.nan  # x of the end
    points: list = dataclasses.field(default_factory=list)   # (x, loglik, converged)
    better: float | None = None


class _Problem:
    """The fit being profiled: its compiled point program, data and coordinates.

    The points run the batch program that multi-start and the bootstrap of this
    problem run (one shared dataset): the profiled coordinate is one more held
    coordinate (data), and ``infer=False`` skips the inference at each point."""

    def __init__(self, res: FitResult, n_slots: int):
        ctx = context_of(res, "the profile likelihood")
        if not bool(res.converged):
            raise ValueError("profiles need a converged fit (this one stopped with: "
                             f"{res.status_message})")
        config = ctx.config
        if config.method == "prox-newton":
            raise ValueError("profiles are not available for fits with Laplace (L1) priors: the "
                             "log posterior has kinks; use the Wald intervals of the non-zero "
                             "coefficients or res.bootstrap")
        self.res, self.ctx, self.space = res, ctx, config.space
        self.lay = layout(config.space, ctx.held)
        self.config = config
        self.host = _host.eligible(config)   # the model's and the solver's programs
        if not self.host:
            self.begin, self.advance = compiled_passes(BatchConfig(config, False, False))
        self.data = jax.device_put(ctx.data)
        self.weights = ctx.weights
        self.n_slots = n_slots
        self.z_hat = np.asarray(res.stats.z, dtype=float)
        self.loglik = float(res.logpost)   # the objective (ℓ, or ℓ + log π for MAP)
        self.se = dict(zip(res.param_names, np.sqrt(np.diag(np.asarray(res.cov)))))
        self.dtype = np.dtype(config.dtype)

    def locate(self, name: str) -> tuple[int, Any, int]:
        """(active coordinate, leaf, element) of a flat parameter name."""
        full = self.space.names
        if name not in full:
            raise ValueError(f"unknown parameter {name!r}; the estimated parameters are "
                             f"{list(self.res.param_names)}")
        if name in self.res.fixed_names:
            raise ValueError(f"parameter {name!r} is fixed: there is nothing to profile")
        nat = full.index(name)
        n0 = 0
        for leaf in self.space.leaves:
            if n0 <= nat < n0 + leaf.size:
                break
            n0 += leaf.size
        if not elementwise(leaf):
            raise ValueError(f"cannot profile {name!r}: the constraint {leaf.constraint!r} of "
                             f"'{leaf.name}' ties its elements together (profiles are for "
                             "parameters with elementwise constraints)")
        return int(self.lay.act_unc[np.nonzero(self.lay.act_nat == nat)[0][0]]), leaf, nat - n0

    def natural(self, leaf, elem: int, u: np.ndarray) -> np.ndarray:
        """θ of one element at unconstrained values u (elementwise transform)."""
        u = np.asarray(u, dtype=self.dtype)
        if is_identity_transform(leaf):
            return u.astype(float)
        z = np.zeros((u.shape[0], leaf.size), self.dtype)
        z[:, elem] = u
        out = host_transform(leaf.transform, z.reshape((u.shape[0],) + leaf.shape))
        return np.asarray(out, dtype=float).reshape(u.shape[0], -1)[:, elem]

    def slope(self, leaf, elem: int, u: float) -> float:
        """dθ/du at u (a central difference: it only sets the first step's size)."""
        h = 1e-5 * (1.0 + abs(u))
        lo, hi = self.natural(leaf, elem, np.asarray([u - h, u + h]))
        return float((hi - lo) / (2 * h))

    def start(self, j: int) -> np.ndarray:
        return self.z_hat

    def evaluate(self, js: list[int], us: list[float], zs: list[np.ndarray]):
        """Re-fits at the points (padded to the program's batch size): ℓ_p, status, z."""
        n = len(js)
        if self.host:
            z0 = np.stack(zs).astype(self.dtype)
            z0[np.arange(n), js] = us
            inputs = Inputs(self.ctx.data, self.ctx.held, self.ctx.groups, self.ctx.prior)
            return _host.solve_points(self.config, inputs, self.weights, z0,
                                      hold_coordinates(self.ctx.held, js), self.ctx.tol,
                                      self.ctx.max_iter)
        pad = self.n_slots - n
        js = np.asarray(js + [js[0]] * pad, np.int64)
        us = np.asarray(us + [us[0]] * pad, self.dtype)
        z0 = np.stack(zs + [zs[0]] * pad).astype(self.dtype)
        z0[np.arange(len(js)), js] = us
        inputs = Inputs(self.data, hold_coordinates(self.ctx.held, js), self.ctx.groups,
                        self.ctx.prior)
        tol, max_iter = self.ctx.tol, self.ctx.max_iter
        state = self.begin(inputs, z0, self.weights, tol)
        out = self.advance(inputs, self.weights, state, tol, max_iter, np.int32(0),
                           _solvers.UNLIMITED, np.bool_(False))
        ll, status, z = jax.device_get((out.result.logpost, out.result.status,
                                        out.result.stats.z))
        return np.asarray(ll, float)[:n], np.asarray(status)[:n], np.asarray(z)[:n]


def _make_sides(prob: _Problem, name: str) -> list[_Side]:
    j, leaf, elem = prob.locate(name)
    u_hat = prob.z_hat[j]
    se = prob.se.get(name, math.nan)
    d = abs(prob.slope(leaf, elem, u_hat))
    s_u = se / d if d > 0 and math.isfinite(se) and se > 0 else 0.1 * (1.0 + abs(u_hat))
    z0 = prob.start(j)
    return [_Side(name, side, j, s_u, [(0.0, 0.0, z0)]) for side in (-1, 1)]


# --------------------------------------------------------------------------- search


def _propose(t: _Side, r: float) -> float:
    """The next x to evaluate on this side."""
    if t.outside is None:
        if len(t.inside) == 1:
            return r * t.s_u
        (x1, g1, _), (x2, g2, _) = t.inside[-2], t.inside[-1]
        slope = (g2 - g1) / (x2 - x1)
        x = x2 + (r - g2) / slope if slope > 0 else 4.0 * x2
        return float(np.clip(x, 1.2 * x2, 4.0 * x2))
    x_in, g_in, _ = t.inside[-1]
    x_out, g_out, _ = t.outside
    if not math.isfinite(g_out):
        return 0.5 * (x_in + x_out)
    fa, fb = g_in - r, g_out - r
    if t.memory <= -2:      # the outer end went stale: shrink its value (Illinois)
        fb *= 0.5 ** (-t.memory - 1)
    elif t.memory >= 2:
        fa *= 0.5 ** (t.memory - 1)
    x = x_in - fa * (x_out - x_in) / (fb - fa)
    width = x_out - x_in
    return float(np.clip(x, x_in + 1e-3 * width, x_out - 1e-3 * width))


def _warm(t: _Side, x: float) -> np.ndarray:
    """Start from the solution of the evaluated point nearest to x."""
    cands = list(t.inside) + ([t.outside] if t.outside is not None and t.outside[2] is not None
                              else [])
    return min(cands, key=lambda p: abs(p[0] - x))[2]


def _record(t: _Side, x: float, ll: float, status: int, z: np.ndarray, loglik_hat: float,
            r: float) -> None:
    converged = status == Status.SUCCESS
    t.points.append((x, ll, converged))
    if not math.isfinite(ll):
        g = math.inf                    # the likelihood is 0 there: outside
        z = None
    elif not converged:
        t.status = "failed"
        return
    else:
        dev = 2.0 * (loglik_hat - ll)
        if dev < -1e-6 * max(1.0, abs(loglik_hat)):
            t.better, t.status = ll, "failed"
            return
        g = math.sqrt(max(dev, 0.0))
    if t.outside is None:
        if g < r:
            t.inside.append((x, g, z))
            x1, g1, _ = t.inside[-2]
            if x >= _REACH * t.s_u or (x >= 2.0 * x1 and g - g1 < _PLATEAU and x1 > 0):
                t.status, t.root = "open", math.inf
        else:
            t.outside = (x, g, z)
            if abs(g - r) <= _GTOL:
                t.status, t.root = "crossed", x
        return
    if abs(g - r) <= _GTOL:
        t.status, t.root = "crossed", x
        return
    if g < r:
        t.inside.append((x, g, z))
        t.memory = t.memory - 1 if t.memory < 0 else -1
    else:
        t.outside = (x, g, z)
        t.memory = t.memory + 1 if t.memory > 0 else 1
    x_in, x_out = t.inside[-1][0], t.outside[0]
    if x_out - x_in <= 1e-12 * (1.0 + x_out):
        # the bracket closed without |g − √c| small: D jumps past c here
        t.status = "edge" if not math.isfinite(t.outside[1]) else "crossed"
        t.root = x_in if t.status == "edge" else 0.5 * (x_in + x_out)


def _search(prob: _Problem, sides: list[_Side], level: float) -> None:
    """Advance every side, one batched evaluation per round, until each has ended."""
    r = math.sqrt(chi2_1_quantile(level))
    for _ in range(_MAX_ROUNDS):
        active = [t for t in sides if t.status is None]
        if not active:
            return
        xs = [_propose(t, r) for t in active]
        us = [float(prob.z_hat[t.j] + t.side * x) for t, x in zip(active, xs)]
        ll, status, z = prob.evaluate([t.j for t in active], us,
                                      [_warm(t, x) for t, x in zip(active, xs)])
        for i, (t, x) in enumerate(zip(active, xs)):
            _record(t, x, float(ll[i]), int(status[i]), z[i], prob.loglik, r)
    for t in sides:
        if t.status is None:
            t.status = "failed"



"""Profile likelihood: intervals and curves from constrained re-fits.

For a parameter θⱼ the profile log-likelihood is ℓ_p(t) = max ℓ(θ) over the other
parameters with θⱼ = t, and the profile interval at ``level`` is

    {t : D(t) = 2(ℓ̂ − ℓ_p(t)) ≤ c},    c = χ²₁(level) = z²_{(1+level)/2}.

Each profile point is a re-fit with θⱼ held (:class:`~jaxmle.core.held.Holding`
with ``profiled=True``): the held coordinate's position and value are traced
inputs, so one compiled program (the ``fit_batch`` kernel, vmapped over points)
serves every point of every parameter, and each point starts from the solution
at its neighbour. The search runs in the unconstrained coordinate u of θⱼ (so
every trial value is admissible and a boundary such as σ = 0 lies at u = −∞),
on the signed root g(u) = √D(u), which is close to linear in u:

1. bracket: from û step to the Wald guess û ± √c·SE(u), then extrapolate g
   linearly (steps growing at most fourfold) until D ≥ c;
2. root: Illinois (modified regula falsi) on g − √c inside the bracket, bisection
   where D is not finite, until |g − √c| ≤ 1e-7 (the end is then within ~1e-7
   standard errors).

Every side ends in one of four ways, reported as is: ``"crossed"`` (D = c found);
``"edge"`` (D jumps from below c to a non-finite log-likelihood: the interval ends
where the likelihood stops being finite); ``"open"`` (the profile stays below c as
far as 64 standard errors of u, or levels off below c: that end is the edge of
the parameter space, ±inf or e.g. 0 for a positive parameter); ``"failed"`` (a re-fit did
not converge: the end is NaN). All sides of all parameters advance together, one
batched call per step.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from statistics import NormalDist
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.solvers as _solvers
import jaxmle.results.export as _export
from jaxmle.core.held import (
    Holding,
    Inputs,
    ProfilePoint,
    View,
    elementwise,
    is_identity_transform,
    layout,
)
from jaxmle.core.typing import ConvergenceWarning, Status, user_stacklevel
from jaxmle.fitting.batch_kernel import BatchConfig, compiled_passes
from jaxmle.fitting.kernel import context_of, resolve_method
from jaxmle.results.result import FitResult, provides

_GTOL = 1e-7            # |√D − √c| at which a crossing is accepted (standard-error units)
_REACH = 64.0           # give up bracketing (an open side) beyond this many SEs of u
_PLATEAU = 1e-4         # ... or when √D rises by less than this while x grows ≥ 2×
_MAX_ROUNDS = 60


def threshold(level: float) -> float:
    """c = χ²₁(level), the square of the normal quantile z_{(1+level)/2}."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2.0) ** 2


@dataclasses.dataclass(frozen=True)
class Interval:
    """A profile-likelihood interval and how each end was found."""

    name: str
    estimate: float
    lower: float
    upper: float
    lower_status: str        # "crossed" | "edge" | "open" | "failed"
    upper_status: str
    level: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Profile:
    """The profile log-likelihood of one parameter (see :meth:`FitResult.profile`).

    ``values`` (sorted) and ``loglik`` are the profile points, ``deviance`` is
    2(ℓ̂ − ℓ_p); ``lower``/``upper`` are where the deviance crosses ``threshold``
    = χ²₁(level) (see :class:`Interval` for ``lower_status``/``upper_status``), and
    ``wald`` the Wald interval, for comparison.
    """

    plot_role = "profile"   # what jaxmle.plots draws it as (a class attribute)

    name: str
    estimate: float
    stderr: float
    level: float
    threshold: float
    max_loglik: float
    values: np.ndarray
    loglik: np.ndarray
    converged: np.ndarray
    interval: Interval

    @property
    def deviance(self) -> np.ndarray:
        return 2.0 * (self.max_loglik - self.loglik)

    @property
    def lower(self) -> float:
        return self.interval.lower

    @property
    def upper(self) -> float:
        return self.interval.upper

    @property
    def wald(self) -> tuple[float, float]:
        half = math.sqrt(self.threshold) * self.stderr
        return self.estimate - half, self.estimate + half

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (NaN/±inf as None: an open end is None, see ``lower_status``):
        ``name``, ``estimate``, ``stderr``, ``level``, ``threshold``, ``max_loglik``,
        ``lower``, ``upper``, ``lower_status``, ``upper_status``, ``wald``, ``note``, the
        grid ``values`` and ``loglik``, ``deviance``, ``converged`` there, ``versions``."""
        return _export.profile_to_dict(self)

    def to_dataframe(self) -> Any:
        """One row per grid point: ``value``, ``loglik``, ``deviance``, ``converged``
        (needs pandas)."""
        return _export.profile_to_dataframe(self)

    def plot(self, path: str | None = None, **kwargs: Any):
        """Draw the profile (needs matplotlib); see :func:`jaxmle.plots.plot_profile`."""
        from jaxmle.plots import plot_profile

        return plot_profile(self, path=path, **kwargs)

    def __str__(self) -> str:
        lo, hi = self.wald
        lines = [f"Profile likelihood of {self.name}: estimate {self.estimate:.6g}, "
                 f"{self.level:.0%} interval",
                 f"  profile  [{self.lower:.6g}, {self.upper:.6g}]  "
                 f"({self.interval.lower_status}, {self.interval.upper_status})",
                 f"  Wald     [{lo:.6g}, {hi:.6g}]",
                 f"  {len(self.values)} points, deviance threshold {self.threshold:.4f}"]
        if self.interval.note:
            lines.append("  Note: " + self.interval.note)
        return "\n".join(lines)

    __repr__ = __str__


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass
class _Side:
    """Search state of one side of one parameter (host only)."""

    name: str
    side: int               # +1: u above û, −1: below
    j: int                  # position among the active unconstrained coordinates
    s_u: float              # Wald SE of u
    inside: list            # [(x, g, z)] with D < c; x = side·(u − û) ≥ 0
    outside: tuple | None = None
    memory: int = 0         # Illinois: +k (−k) after k replacements in a row of the outer (inner) end
    status: str | None = None
    root: float = math.nan  # x of the end
    points: list = dataclasses.field(default_factory=list)   # (x, loglik, converged)
    better: float | None = None


class _Problem:
    """The fit being profiled: its compiled point program, data and coordinates."""

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
        self.lay = layout(config.space, config.holding.fixed)
        holding = Holding(config.holding.fixed, profiled=True)
        method = resolve_method(config.method, View(config.space, holding).m)
        self.config = dataclasses.replace(config, holding=holding, method=method,
                                          cov_type="observed", n_groups=0)
        self.begin, self.advance = compiled_passes(BatchConfig(self.config, False, False))
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
        return int(np.nonzero(self.lay.act_nat == nat)[0][0]), leaf, nat - n0

    def natural(self, leaf, elem: int, u: np.ndarray) -> np.ndarray:
        """θ of one element at unconstrained values u (elementwise transform)."""
        u = np.asarray(u, dtype=self.dtype)
        if is_identity_transform(leaf):
            return u.astype(float)
        z = np.zeros((u.shape[0], leaf.size), self.dtype)
        z[:, elem] = u
        with np.errstate(all="ignore"):
            out = leaf.transform(jnp.asarray(z.reshape((u.shape[0],) + leaf.shape)))
        return np.asarray(out, dtype=float).reshape(u.shape[0], -1)[:, elem]

    def slope(self, leaf, elem: int, u: float) -> float:
        """dθ/du at u (a central difference: it only sets the first step's size)."""
        h = 1e-5 * (1.0 + abs(u))
        lo, hi = self.natural(leaf, elem, np.asarray([u - h, u + h]))
        return float((hi - lo) / (2 * h))

    def start(self, j: int) -> np.ndarray:
        return np.delete(self.z_hat, j)

    def evaluate(self, js: list[int], us: list[float], zs: list[np.ndarray]):
        """Re-fits at the points (padded to the program's batch size): ℓ_p, status, z."""
        n = len(js)
        pad = self.n_slots - n
        js = np.asarray(js + [js[0]] * pad, np.int32)
        us = np.asarray(us + [us[0]] * pad, self.dtype)
        z0 = np.stack(zs + [zs[0]] * pad).astype(self.dtype)
        inputs = Inputs(self.data, self.ctx.fixed, None, ProfilePoint(js, us), self.ctx.prior)
        tol, max_iter = self.ctx.tol, self.ctx.max_iter
        state = self.begin(inputs, [z0], self.weights, tol)
        out = self.advance(inputs, self.weights, state, tol, max_iter, np.int32(0),
                           _solvers.UNLIMITED)
        ll, status, z = jax.device_get((out.result.loglik, out.result.status,
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
    r = math.sqrt(threshold(level))
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


# --------------------------------------------------------------------------- results


def _interval(prob: _Problem, name: str, sides: list[_Side], level: float) -> Interval:
    j, leaf, elem = prob.locate(name)
    u_hat = prob.z_hat[j]
    us = [u_hat]
    for t in sides:
        us.append(u_hat + t.side * t.root if t.status in ("crossed", "edge") else
                  t.side * math.inf if t.status == "open" else u_hat)
        us.append(u_hat + t.side * t.inside[-1][0])
    theta = prob.natural(leaf, elem, np.asarray(us))        # one call: eager ops are slow
    ends, notes = {}, []
    for i, t in enumerate(sides):
        value = float(theta[1 + 2 * i]) if t.status != "failed" else math.nan
        reach = float(theta[2 + 2 * i])
        ends[t.side] = (value, t.status)
        if t.better is not None:
            warnings.warn(
                f"the profile of {name} reached a higher log-likelihood ({t.better:.10g} > "
                f"{prob.loglik:.10g}) than the fit: the fit is not the maximum; refit from "
                "a better start (e.g. n_starts)", ConvergenceWarning, stacklevel=user_stacklevel())
        if t.status == "open":
            notes.append(f"{name}: the profile stays below the threshold as far as searched "
                         f"({reach:.6g}); that end is the edge of the parameter space ({value:g})")
        elif t.status == "edge":
            notes.append(f"{name}: the log-likelihood stops being finite at {value:.6g}; the "
                         "interval ends there")
        elif t.status == "failed":
            notes.append(f"{name}: a re-fit of the profile failed near {reach:.6g}; that end "
                         "is unknown (NaN)")
    (a, sa), (b, sb) = ends[-1], ends[1]
    if not (a <= b):          # a decreasing transform (e.g. less_than): u and θ run opposite
        (a, sa), (b, sb) = (b, sb), (a, sa)
    estimate = float(theta[0])
    return Interval(name, estimate, a, b, sa, sb, level, "; ".join(notes))


def _targets(res: FitResult, names: Any) -> list[str]:
    if names is None:
        return list(res.param_names)
    names = [names] if isinstance(names, str) else list(names)
    return names


@provides("profile_intervals")
def profile_intervals(res: FitResult, level: float = 0.95, names: Any = None) -> dict[str, Interval]:
    """Profile intervals of several parameters, all searched together (batch 2·P)."""
    threshold(level)
    names = _targets(res, names)
    prob = _Problem(res, 2 * len(names))
    sides, skipped = {}, {}
    for name in names:
        try:
            sides[name] = _make_sides(prob, name)
        except ValueError as err:
            if name not in res.param_names or name in res.fixed_names:
                raise
            skipped[name] = str(err)
    if sides:
        _search(prob, [t for s in sides.values() for t in s], level)
    out = {}
    for name in names:
        if name in skipped:
            out[name] = Interval(name, math.nan, math.nan, math.nan, "failed", "failed", level,
                                 skipped[name])
        else:
            out[name] = _interval(prob, name, sides[name], level)
    return out


@provides("profile")
def profile(res: FitResult, name: str, level: float = 0.95, n_points: int = 21) -> Profile:
    """The profile curve of one parameter, with its interval (see the module docstring)."""
    threshold(level)
    if int(n_points) != n_points or n_points < 3:
        raise ValueError(f"n_points must be an integer ≥ 3, got {n_points}")
    prob = _Problem(res, 2)
    sides = _make_sides(prob, name)
    _search(prob, sides, level)
    interval = _interval(prob, name, sides, level)
    ends = _grid(prob, sides, (int(n_points) - 1) // 2)
    j, leaf, elem = prob.locate(name)
    u_hat = prob.z_hat[j]
    xs = [(u_hat, prob.loglik, True)] + [(u_hat + t.side * x, ll, c) for t, end in zip(sides, ends)
                                          for x, ll, c in t.points if x <= end * (1 + 1e-9)]
    u, ll, conv = (np.asarray(v) for v in zip(*xs))
    values = prob.natural(leaf, elem, u)
    order = np.argsort(values)
    se = prob.se.get(name, math.nan)
    return Profile(name, interval.estimate, float(se), level, threshold(level), prob.loglik,
                   values[order], np.asarray(ll, float)[order], np.asarray(conv, bool)[order],
                   interval)


def _grid(prob: _Problem, sides: list[_Side], n_side: int) -> list[float]:
    """Evenly spaced points (in u) out to 1.2× each end, both sides together, each
    started from the previous point of its side. An open or failed side is drawn as
    far as the other side's (or 3 SEs), within where it was searched. Returns the
    ends (x)."""
    found = [1.2 * t.root for t in sides if t.status in ("crossed", "edge")]
    default = max(found + [3.0 * sides[0].s_u])
    spans, ends = [], []
    for t in sides:
        end = 1.2 * t.root if t.status in ("crossed", "edge") else min(t.inside[-1][0], default)
        ends.append(end)
        spans.append(np.linspace(0.0, end, n_side + 1)[1:] if end > 0 else np.zeros(0))
    zs = [t.inside[0][2] for t in sides]
    for i in range(max(len(s) for s in spans)):
        live = [k for k, s in enumerate(spans) if i < len(s)]
        xs = [spans[k][i] for k in live]
        us = [float(prob.z_hat[sides[k].j] + sides[k].side * x) for k, x in zip(live, xs)]
        ll, status, z = prob.evaluate([sides[k].j for k in live], us, [zs[k] for k in live])
        for n, k in enumerate(live):
            ok = status[n] == Status.SUCCESS
            sides[k].points.append((xs[n], float(ll[n]) if ok or not np.isfinite(ll[n])
                                    else math.nan, bool(ok)))
            if ok:
                zs[k] = z[n]
    return ends

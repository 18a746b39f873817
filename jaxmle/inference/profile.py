"""Profile likelihood: intervals and curves from constrained re-fits.

For a parameter θⱼ the profile log-likelihood is ℓ_p(t) = max ℓ(θ) over the other
parameters with θⱼ = t, and the profile interval at ``level`` is

    {t : D(t) = 2(ℓ̂ − ℓ_p(t)) ≤ c},    c = χ²₁(level) = z²_{(1+level)/2}.

Each profile point is a re-fit with θⱼ held (one more held coordinate in the
:class:`~jaxmle.core.held.Held` mask): which coordinate and its value are traced
inputs, so one compiled program (the batch program that multi-start of the same
problem runs, without the inference at each point) serves every point of every
parameter, and each point starts from the solution at its neighbour. The search runs in the unconstrained coordinate u of θⱼ (so
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
from typing import Any

import numpy as np

import jaxmle.results.export as _export
from jaxmle.core.stats import chi2_1_quantile
from jaxmle.core.typing import ConvergenceWarning, Status, user_stacklevel
from jaxmle.inference.profile_search import _make_sides, _Problem, _search, _Side
from jaxmle.results.result import FitResult, provides


def threshold(level: float) -> float:
    """c = χ²₁(level), the square of the normal quantile z_{(1+level)/2}."""
    return chi2_1_quantile(level)


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
    prob = _Problem(res, 1 << (2 * len(names) - 1).bit_length())   # slots: a power of two
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

"""The one damped Newton: a pure ``init`` / ``step`` / ``terminate`` state machine.

Every Newton-type solve in the package runs this loop; they differ only in a
:class:`Rules` value (numbers) and a *step model* (how a step is computed from
the state, and how far from stationary the state is):

* plain Newton (:class:`jaxmle.core.solvers.dense.DenseModel`): dense Cholesky / eigen
  step with Levenberg–Marquardt damping, a line search, and indefinite-Hessian
  handling;
* proximal Newton for L1 penalties (:class:`jaxmle.core.solvers.proximal.ProxModel`): the
  minimiser of the penalised quadratic model, by coordinate descent;
* the random-effects inner mode (:class:`jaxmle.random.inner.BlockModel`):
  block-diagonal Cholesky steps, one block per group.

One iteration (:meth:`DampedNewton.step`) is written once here:

1. *trial*: the model proposes a step from the state; f, ∇f and ∇²f are
   evaluated at the trial point in one pass; the trial is **accepted** on
   sufficient decrease (``actual ≥ c·predicted``, ``actual > 0``), or when both
   changes are below the **noise floor** of f (``noise·ε·(1 + |f|)``); the first
   iteration is a zero step (it evaluates the start). The **damping** μ shrinks
   after an accepted trial (to 0 below a threshold) and grows after a rejected
   one (with a line search: only once the step length α has given up);
2. *refresh*: the model prepares the next step at the (new) state (e.g. factorises
   the Hessian); under ``vmap`` a model may do this for the whole batch at once;
3. *finish*: the **status**. Converged when the model's squared distance to the
   optimum λ² (in standard-error units) is ≤ τ² — where λ² is exact (undamped) —
   or, at the precision limit of f, when an accepted step changed f by ≤ (τ² +
   16ε)(1 + |f|) while λ² ≤ τ; never where the model reports a plateau. Stopped
   (STALLED, or SUCCESS when within √τ) when μ exceeds ``collapse``; a non-finite
   start stops at once (NONFINITE_START).

The state is a pytree (:class:`NewtonState`), so the same functions run under
``lax.while_loop`` (:func:`run`) or from a Python loop of jitted ``step`` calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmle.core.typing import Status
from jaxmle.core.xp import eps as _xp_eps
from jaxmle.core.xp import namespace


def _eps(dtype: Any, xp: Any = jnp) -> jax.Array:
    return _xp_eps(xp, dtype)


def small_change(f_old, f_new, tol) -> jax.Array:
    """f changed by at most (τ² + 16ε)(1 + |f|): the precision limit of f."""
    xp = namespace(f_old, f_new, tol)
    return xp.abs(f_old - f_new) <= (tol**2 + 16 * _eps(f_new.dtype, xp)) * (1.0 + xp.abs(f_new))


def all_finite(f: jax.Array, *arrays: jax.Array) -> jax.Array:
    xp = namespace(f, *arrays)
    out = xp.isfinite(f)
    for a in arrays:
        out = out & xp.all(xp.isfinite(a))
    return out


@dataclasses.dataclass(frozen=True)
class Rules:
    """The numbers of one damped Newton (static, hashable)."""

    decrease: float = 1e-4      # accept when actual ≥ decrease · predicted (and actual > 0)
    noise: float = 16.0         # noise floor of f, in units of ε(1 + |f|)
    shrink: float = 4.0         # μ ← μ/shrink after an accepted trial ...
    zero_below: float = 1e-6    # ... and 0 once below this
    floor: float = 1e-3         # μ ← max(μ, floor)·growth when a trial is given up
    grow: float = 2.0           # growth after an accepted trial
    accelerate: float = 2.0     # growth ← growth·accelerate after every give-up
    line_search: bool = True    # backtrack α before raising μ
    precision_test: bool = True  # the objective-change (precision-limit) convergence test
    collapse: float = 1e12      # stop once μ exceeds this
    probe_rise: float = 1e-9    # an escape probe may raise f by this share of (1 + |f|)
    crawl: int = 30             # stop (STALLED) after this many iterations at a numerically
    #                             singular H (the model's ``null``) whose step was rejected,
    #                             gained only rounding, or gained at least half the last
    #                             gain (no geometric convergence; a step that converges
    #                             geometrically resets the count):
    #                             steps along the floored direction are rounding noise, and
    #                             the end-of-fit polish (:mod:`jaxmle.core.refine`), in a
    #                             basis where H is accurate, finishes such fits


# Escape probes from a stationary point whose information is singular: positions along
# the (oriented) null direction, in units of the size of the coordinates it involves,
# tried in this order from the point where the probes began (the last one returns there).
PROBES = (0.25, -0.25, 0.5, -0.5, 0.75, -0.75, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 0.0)


class NewtonState(NamedTuple):
    z: jax.Array
    f: jax.Array            # the objective (for L1: smooth part + penalty)
    g: jax.Array            # ∇f (smooth part)
    hess: jax.Array         # ∇²f (smooth part; for blocks: (G, K, K))
    model: Any              # the step model's data at z (factorisation, next step, ...)
    alpha: jax.Array        # step length along the model's step (line search)
    damping: jax.Array      # Levenberg–Marquardt μ
    growth: jax.Array       # factor by which μ grows when a trial is given up
    reach: jax.Array        # step cap in indefinite regions, relative to the coordinates' size
    n_iter: jax.Array
    n_rejected: jax.Array
    done: jax.Array
    status: jax.Array
    anchor: jax.Array       # where the escape probes began (valid once probes > 0)
    probes: jax.Array       # escape probes taken
    probe_next: jax.Array   # the next trial is an escape probe
    crawl: jax.Array        # iterations at a numerically singular H without geometric
    #                         progress since the last step that made some (``Rules.crawl``)
    gain: jax.Array         # the decrease of f at the last accepted iteration
    lam2: jax.Array         # the model's λ² at z (its ``measure``; +inf before the first)


class Proposal(NamedTuple):
    step: jax.Array         # the trial step (α applied)
    predicted: jax.Array    # decrease of f the model predicts for it
    slope: jax.Array        # gᵀd of the unit step (for the line search)
    used: jax.Array         # the damping the step was computed with
    capped: jax.Array       # the step was shortened to ``reach``


class Measure(NamedTuple):
    lam2: jax.Array         # squared distance to the model's optimum, in SE units
    exact: jax.Array        # λ² is of the undamped model (may certify convergence alone)


class Trial(NamedTuple):
    """What :meth:`DampedNewton.finish` needs to know about the iteration's trial point."""

    first: jax.Array
    finite: jax.Array
    accept: jax.Array
    f_trial: jax.Array
    g_trial: jax.Array
    h_diag_trial: jax.Array
    f_before: jax.Array


class StepModel(Protocol):
    """How a damped Newton computes its steps (the strategy of :class:`DampedNewton`)."""

    def initial(self, z0: jax.Array) -> tuple[jax.Array, Any]: ...    # (hess, model) at init
    def evaluate(self, fun: Callable, z: jax.Array) -> tuple: ...     # f, g, hess at z
    def propose(self, s: NewtonState) -> Proposal: ...
    def refresh(self, s: NewtonState) -> Any: ...                      # the model at s
    def measure(self, s: NewtonState, model: Any) -> Measure: ...
    def valid(self, s: NewtonState) -> jax.Array: ...                  # False on a plateau
    # optional: ``singular(s, model)``: the information at s is numerically singular and
    # escape probes remain (a converged point is then probed along its null direction
    # first; ``propose`` gives the probe's step when ``s.probe_next``)


def acceptable(f, f_t, predicted, finite, first, rules: Rules) -> jax.Array:
    """Sufficient decrease, or both changes below the noise floor of f (or the start)."""
    xp = namespace(f, f_t, predicted)
    actual = f - f_t
    noise = rules.noise * _eps(f.dtype, xp) * (1 + xp.abs(f))
    at_noise_level = (xp.abs(actual) <= noise) & (xp.abs(predicted) <= noise)
    sufficient = (actual > 0) & (actual >= rules.decrease * predicted)
    return finite & (sufficient | at_noise_level | first)


def _backtrack_factor(f, f_t, slope, alpha, finite):
    """Shrink factor for α from the quadratic through f, the slope gᵀd and f(z + αd),
    safeguarded to [0.1, 0.5] (0.1 when the trial was not finite)."""
    xp = namespace(f, f_t, slope, alpha)
    curvature = (f_t - f - alpha * slope) / alpha**2
    t_star = -slope / (2.0 * xp.where(curvature > 0, curvature, xp.inf))
    factor = xp.clip(t_star / alpha, 0.1, 0.5)
    return xp.where(finite & xp.isfinite(factor), factor, 0.1)


@dataclasses.dataclass(frozen=True)
class DampedNewton:
    """The damped Newton of the module docstring, for one step model and its rules."""

    model: Any              # a StepModel
    rules: Rules = Rules()

    def init(self, fun: Callable, z0: jax.Array, tol: Any = None) -> NewtonState:
        """A state whose first iteration evaluates f, g, H at z0 (a zero step that is
        always accepted when finite), so f, g and H are traced only once, in the step."""
        del fun, tol
        xp = namespace(z0)
        dtype = z0.dtype
        zero = xp.zeros((), np.int32)
        one = xp.ones((), dtype)
        hess, model = self.model.initial(z0)
        return NewtonState(
            z=z0, f=xp.asarray(np.inf, dtype), g=xp.zeros_like(z0), hess=hess, model=model,
            alpha=one, damping=xp.zeros((), dtype), growth=self.rules.grow * one,
            reach=0.5 * one, n_iter=zero - 1, n_rejected=zero, done=xp.asarray(False),
            status=xp.asarray(Status.SUCCESS, np.int32), anchor=z0, probes=zero,
            probe_next=xp.asarray(False), crawl=zero, gain=xp.zeros((), dtype),
            lam2=xp.asarray(np.inf, dtype))

    def step(self, fun: Callable, s: NewtonState, tol: Any) -> NewtonState:
        """One iteration: trial, refresh of the model, convergence tests (``ask``, an
        evaluation of f, ∇f, ∇²f at the trial point, ``tell``)."""
        p = self.ask(s)
        return self.tell(s, p, self.model.evaluate(fun, s.z + p.step), tol)

    def ask(self, s: NewtonState) -> Proposal:
        """The iteration's trial step (zero at the first iteration: it evaluates the start).
        The trial point is ``s.z + p.step``; whoever evaluates it there calls :meth:`tell`."""
        p = self.model.propose(s)
        return p._replace(step=namespace(s.z).where(s.n_iter < 0, 0.0, p.step))

    def tell(self, s: NewtonState, p: Proposal, evaluated: tuple, tol: Any) -> NewtonState:
        """The rest of the iteration, given f, ∇f, ∇²f at the trial point (as the step
        model's ``evaluate`` returns them): accept or reject, refresh, convergence tests.
        A host driver calls :meth:`ask`, a compiled program of the model and this: the
        solver's part never sees the log-likelihood."""
        s, t = self.judge(s, p, evaluated)
        return self.finish(s, t, self.model.refresh(s), tol)

    def terminate(self, s: NewtonState, max_iter: Any) -> jax.Array:
        """Done, or out of iterations."""
        return s.done | (s.n_iter >= max_iter)

    def judge(self, s: NewtonState, p: Proposal, evaluated: tuple) -> tuple[NewtonState, Trial]:
        """Accept or reject the trial point ``s.z + p.step`` (f, ∇f, ∇²f there:
        ``evaluated``), adapt α, μ and the reach. The returned state's ``model`` is stale
        until :meth:`finish`."""
        r = self.rules
        xp = namespace(s.z, *evaluated)
        _where = xp.where
        first = s.n_iter < 0
        step = p.step
        f_t, g_t, h_t = evaluated
        finite = all_finite(f_t, g_t, *jax.tree_util.tree_leaves(h_t))   # (H: a pytree of
        # pieces for a structured model, :mod:`jaxmle.random.arrow`)
        accept = acceptable(s.f, f_t, p.predicted, finite, first, r)
        # near the optimum f may be too noisy to confirm a decrease the gradient still
        # shows (f's rounding above 16ε(1+|f|): cancellation inside the model): accept a
        # trial that brings the gradient much closer to 0 in the current model's metric
        # and does not raise f beyond a hair (the model's ``closer``, optional)
        closer = getattr(self.model, "closer", None)
        if closer is not None:
            level = f_t <= s.f + r.probe_rise * (1 + xp.abs(s.f))
            accept = accept | (closer(s, g_t) & finite & level & ~first)
        # an escape probe moves along a (numerically) flat direction: kept unless f rises
        probing = s.probe_next & ~first
        kept = finite & (f_t <= s.f + r.probe_rise * (1 + xp.abs(s.f)))
        accept = xp.where(probing, kept, accept)

        if r.line_search:
            alpha_shrunk = s.alpha * _backtrack_factor(s.f, f_t, p.slope, s.alpha, finite)
            give_up = ~accept & (alpha_shrunk < 1e-3)
            alpha = _where(accept, xp.minimum(1.0, 3.0 * s.alpha),
                           _where(give_up, 1.0, alpha_shrunk))
        else:
            give_up, alpha = ~accept, s.alpha
        shrunk = p.used / r.shrink
        damping_ok = _where(shrunk < r.zero_below, 0.0, shrunk)
        damping_bad = xp.maximum(p.used, r.floor) * s.growth
        damping = _where(accept, damping_ok, _where(give_up, damping_bad, s.damping))
        growth = _where(accept, r.grow, _where(give_up, r.accelerate * s.growth, s.growth))
        reach = _where(accept & p.capped & ~first, xp.minimum(4.0 * s.reach, 1e6), s.reach)
        # a probe leaves the step length and the damping as they were
        alpha = _where(probing, s.alpha, alpha)
        damping = _where(probing, s.damping, damping)
        growth = _where(probing, s.growth, growth)

        state = s._replace(
            z=_where(accept, s.z + step, s.z), f=_where(accept, f_t, s.f),
            g=_where(accept, g_t, s.g),
            hess=jax.tree_util.tree_map(lambda a, b: _where(accept, a, b), h_t, s.hess),
            alpha=alpha,
            damping=damping.astype(s.damping.dtype), growth=growth.astype(s.growth.dtype),
            reach=reach, probes=s.probes + probing.astype(np.int32),
            probe_next=xp.asarray(False))
        diagonal = getattr(self.model, "diagonal", None)   # (a model's own block layout)
        h_diag = diagonal(h_t) if diagonal is not None else xp.diagonal(h_t, axis1=-2, axis2=-1)
        return state, Trial(first, finite, accept, f_t, g_t, h_diag, s.f)

    def finish(self, s: NewtonState, t: Trial, model: Any, tol: Any) -> NewtonState:
        """Convergence tests with the refreshed model; the iteration's status."""
        xp = namespace(s.z, s.f, t.f_trial)
        m = self.model.measure(s, model)
        near = m.lam2 <= tol
        valid = self.model.valid(s)
        converged = m.exact & (m.lam2 <= tol**2)
        if self.rules.precision_test:
            converged = converged | (t.accept & ~t.first & small_change(t.f_before, s.f, tol)
                                     & near)
        converged = valid & converged
        # a converged point whose information is singular may be a saddle on a flat
        # manifold (e.g. two merged exponential terms): probe along the null direction
        # (:data:`PROBES`) before believing it; the probes end where they began
        singular = getattr(self.model, "singular", None)
        escape = xp.asarray(False)
        if singular is not None:
            escape = converged & singular(s, model)
        converged = converged & ~escape
        # accepted steps at a numerically singular H, one after another (not while the
        # escape probes run): the Newton crawls along a direction its H cannot resolve
        # while the decrease of f does not even halve from one step to the next (a path
        # converging geometrically towards a degenerate point is no crawl)
        null = getattr(self.model, "null", None)
        crawl = s.crawl
        stuck = xp.asarray(False)
        moved = t.accept & ~t.first
        gain = t.f_before - s.f
        if null is not None:
            # (a rejected trial counts too, and so does a step whose gain is at the noise
            # level of f: at the precision floor of a singular H the Newton's steps along
            # the floored direction are rejected or gain rounding of either sign)
            noise = self.rules.noise * _eps(s.f.dtype, xp) * (1 + xp.abs(s.f))
            stuck_here = ~t.first & (~t.accept | (xp.abs(gain) <= noise))
            crawling = (~converged & (s.probes == 0) & null(model)
                        & ((moved & (gain >= 0.5 * s.gain)) | stuck_here))
            crawl = xp.where(crawling, s.crawl + 1, xp.where(moved, 0, s.crawl))
            crawl = crawl.astype(np.int32)
            stuck = crawl >= self.rules.crawl
        collapsed = s.damping > self.rules.collapse
        bad_start = t.first & ~t.finite
        done = converged | collapsed | bad_start | stuck
        status = xp.where(converged | (collapsed & m.exact & near & valid), Status.SUCCESS,
                          Status.STALLED)
        status = xp.where(bad_start, Status.NONFINITE_START, status)
        # at a bad start, report which coordinates have a non-finite gradient or Hessian row
        g_start = xp.where(xp.isfinite(t.h_diag_trial), t.g_trial, np.nan)
        return s._replace(
            f=xp.where(bad_start, t.f_trial, s.f), g=xp.where(bad_start, g_start, s.g),
            model=model, n_iter=s.n_iter + 1,
            n_rejected=s.n_rejected + (~t.accept & ~t.first).astype(np.int32),
            done=done, status=xp.where(done, status, s.status).astype(np.int32),
            anchor=xp.where(escape & (s.probes == 0), s.z, s.anchor), probe_next=escape,
            crawl=crawl, gain=xp.where(moved, gain, s.gain).astype(s.gain.dtype),
            lam2=xp.asarray(m.lam2, s.lam2.dtype))


def run(solver: Any, fun: Callable, z0: jax.Array, tol: Any, max_iter: Any) -> Any:
    """``init`` then ``step`` until ``terminate``, in one ``lax.while_loop``."""
    return lax.while_loop(lambda s: ~solver.terminate(s, max_iter),
                          lambda s: solver.step(fun, s, tol), solver.init(fun, z0, tol))

"""What a finished fit tells the user: errors for a bad start, warnings for a fit that
did not converge, a singular information matrix or float32 precision."""

from __future__ import annotations

import warnings

import jax
import numpy as np

from jaxmle.core.params import leaf_names
from jaxmle.core.typing import (
    STATUS_MESSAGES,
    ConvergenceWarning,
    PrecisionWarning,
    SingularInformationWarning,
    Status,
    user_stacklevel,
)
from jaxmle.core.verdict import FAR, RUNAWAY_Z
from jaxmle.results.result import FitResult


def report(res: FitResult, unc_names: tuple[str, ...],
           constrained: frozenset = frozenset()) -> None:
    """Raise for a non-finite start; warn for non-convergence (naming the parameters that
    run away to the edge of their constraints), and singular information."""
    status_code, singular, eig = jax.device_get(
        (res.status, res.stats.singular, res.stats.info_eigvals))
    status = Status(int(status_code))
    if status == Status.NONFINITE_START:
        raise ValueError(nonfinite_start_message(res, unc_names))
    level = user_stacklevel()
    if status != Status.SUCCESS:
        warnings.warn(
            f"fit did not converge after {int(res.n_iter)} iterations: {STATUS_MESSAGES[status]} "
            f"(|gradient| = {float(res.grad_norm):.3g}); the estimates are not a maximum"
            + unbounded_message(res, unc_names, constrained),
            ConvergenceWarning, stacklevel=level)
    if singular.any() and status == Status.SUCCESS:  # else implied by the warning above
        names = [n for n, s in zip(res.param_names, singular) if s]
        what = ("not positive definite (the point is not a maximum in those directions)"
                if np.nanmin(eig) < -1e-8 * np.nanmax(np.abs(eig)) else "singular")
        warnings.warn(
            f"the information matrix is {what} for parameter(s) {names}: they are not identified "
            "by the data (e.g. collinear covariates, or a redundant parameter); their standard "
            "errors are NaN", SingularInformationWarning, stacklevel=level)
    if res.dtype == "float32":
        warnings.warn(
            "fit ran in float32: standard errors are float32-accurate only; enable float64 with "
            "jax.config.update('jax_enable_x64', True) at the start of the program",
            PrecisionWarning, stacklevel=level)


def nonfinite_start_message(res: FitResult, unc_names: tuple[str, ...]) -> str:
    f0 = float(res.loglik)  # the kernel reports the values at init for a bad start
    if not np.isfinite(f0):
        return (f"the log-likelihood is {f0} at init; check that init is plausible for the data "
                "(e.g. data outside the support of the distribution at these parameters)")
    bad = np.asarray(~np.isfinite(res.stats.grad_z))
    names = sorted({n for n, b in zip(unc_names, bad) if b})
    return (f"the gradient (or second derivative) of the log-likelihood is not finite at init "
            f"for parameter(s) {names}: the log-likelihood is not twice differentiable there "
            "(e.g. x**k at x = 0, sqrt or abs at 0); start elsewhere or rewrite that term")


def running_away(res: FitResult, unc_names: tuple[str, ...], constrained: frozenset) -> list[str]:
    """Constrained parameters whose unconstrained coordinate has gone far out (|z| ≥ 25:
    e.g. a scale below 1e-11) while the log-likelihood still rises outward (or, for a
    DIVERGED fit, does not fall: a transform saturated at the edge has no gradient)."""
    z, g = np.asarray(res.stats.z), np.asarray(res.stats.grad_z)
    if z.shape != g.shape or z.ndim != 1 or z.size != len(unc_names):
        return []
    outward = g * z <= 0 if int(res.status) == Status.DIVERGED else g * z < 0
    out = (np.abs(z) >= RUNAWAY_Z) & outward   # g = ∇(−ℓ): −g points further out
    names = {n for n, o in zip(unc_names, out) if o and n in constrained}
    if int(res.status) == Status.DIVERGED:   # real-line parameters running to ±∞
        names |= {n for n, zi in zip(unc_names, z) if abs(zi) >= FAR and n not in constrained}
    return sorted(names)


HEADING_Z = 10.0    # |z| past which a constrained coordinate still moving out is named


def at_the_edge(res: FitResult, unc_names: tuple[str, ...], constrained: frozenset) -> list[str]:
    """Constrained parameters whose unconstrained coordinate is far out (|z| ≥ 25) when the
    iterations ran out, whichever way the last gradient points (a funnel: the objective
    rises towards the edge in exact arithmetic; at ~1e-17 its gradient is rounding)."""
    z, g = np.asarray(res.stats.z), np.asarray(res.stats.grad_z)
    if int(res.status) != Status.MAX_ITER or z.ndim != 1 or z.size != len(unc_names):
        return []
    # or still heading out, well on the way (|z| ≥ 10: a scale below 5e-5 of its unit): a
    # first-order solver crawls down a funnel and runs out of iterations before |z| = 25
    heading = (np.abs(z) >= HEADING_Z) & (g * z < 0) if g.shape == z.shape else False
    far = (np.abs(z) >= RUNAWAY_Z) | heading
    return sorted({n for n, f in zip(unc_names, far) if f and n in constrained})


def unbounded_message(res: FitResult, unc_names: tuple[str, ...], constrained: frozenset) -> str:
    names = running_away(res, unc_names, constrained)
    edge = [] if names else at_the_edge(res, unc_names, constrained)
    if not names and not edge:
        return ""
    leaves = dict(zip(leaf_names(res.params), jax.tree_util.tree_leaves(res.params)))
    z = dict(zip(unc_names, np.asarray(res.stats.z)))

    def side(n):
        return "upper" if z[n] > 0 else "lower"

    if edge:
        where = ", ".join(f"{n} = {_value(leaves.get(n))}, "
                          f"{'at' if abs(z[n]) >= RUNAWAY_Z else 'heading to'} its {side(n)} edge"
                          for n in edge)
        return (f". {edge} ran to the edge of their support ({where}): the log-likelihood "
                "is probably unbounded there (no maximum), e.g. a scale of random effects "
                "maximised jointly with them (integrate them out with random=[...]) or a "
                "density unbounded at a boundary")
    now = ", ".join(f"{n} = {_value(leaves.get(n))}" for n in names)
    edges = ", ".join(f"{n} towards its {side(n)} edge" if n in constrained
                      else f"{n} towards ±infinity" for n in names)
    return (f". The log-likelihood is unbounded: it still grows as {names} run to the edge of "
            f"their support ({edges}; now {now}; log-likelihood {float(res.loglik):.6g}), "
            "so there is no maximum. Usual causes: a joint density of data and random effects maximised "
            "over the random effects (integrate them out with random=[...]), a scale that can "
            "shrink to 0 on coinciding observations (all values equal, a mixture component on "
            "a single point, a model that fits exactly), or a missing normalising term")


def _value(v) -> str:
    v = np.asarray(v)
    return f"{float(v):.3g}" if v.ndim == 0 else f"array of shape {v.shape}"

"""What a finished fit tells the user: errors for a bad start, warnings for a fit that
did not converge, a singular information matrix or float32 precision."""

from __future__ import annotations

import warnings

import jax
import numpy as np

from ._result import FitResult
from ._typing import (
    STATUS_MESSAGES,
    ConvergenceWarning,
    PrecisionWarning,
    SingularInformationWarning,
    Status,
    user_stacklevel,
)


def report(res: FitResult, unc_names: tuple[str, ...]) -> None:
    """Raise for a non-finite start; warn for non-convergence and singular information."""
    status_code, singular, eig = jax.device_get(
        (res.status, res.stats.singular, res.stats.info_eigvals))
    status = Status(int(status_code))
    if status == Status.NONFINITE_START:
        raise ValueError(nonfinite_start_message(res, unc_names))
    level = user_stacklevel()
    if status != Status.SUCCESS:
        warnings.warn(
            f"fit did not converge after {int(res.n_iter)} iterations: {STATUS_MESSAGES[status]} "
            f"(|gradient| = {float(res.grad_norm):.3g}); the estimates are not a maximum",
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

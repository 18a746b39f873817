"""``fit_batch``'s report: the datasets that were not fitted marked as such, and the
warnings (counts and first indices) of fits that failed or have singular information."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np

from jaxmle.core.typing import (
    STATUS_LABELS,
    STATUS_MESSAGES,
    ConvergenceWarning,
    PrecisionWarning,
    SingularInformationWarning,
    Status,
    user_stacklevel,
)
from jaxmle.fitting.report import nonfinite_start_message
from jaxmle.results.result import FitResult


def mark_unfitted(fits: FitResult, bad: np.ndarray) -> FitResult:
    """NaN results and status NONFINITE_DATA for the datasets that were not fitted."""

    def blank(x):
        x = np.array(x)
        if x.dtype.kind == "f":
            x[bad] = np.nan
        elif x.dtype.kind == "b":
            x[bad] = False
        else:
            x[bad] = 0
        return x

    fits = jax.tree_util.tree_map(blank, fits)
    status = np.where(bad, np.int32(Status.NONFINITE_DATA), fits.status)
    return _replace(fits, status=status)


def _replace(fits: FitResult, **changes) -> FitResult:
    return dataclasses.replace(fits, **changes)


def report_batch(fits: FitResult, unc_names: tuple[str, ...], bad_data: np.ndarray) -> None:
    """Warn with counts (and first indices) of failed and singular fits."""
    status = np.asarray(fits.status)
    n = status.shape[0]
    start_failed = status == Status.NONFINITE_START
    if start_failed.all():
        raise ValueError(nonfinite_start_message(_member(fits, 0), unc_names)
                         + " (for every dataset in the batch)")
    level = user_stacklevel()
    failed = status != Status.SUCCESS
    if failed.any():
        counts = ", ".join(f"{int((status == s).sum())} {STATUS_LABELS[Status(s)]}"
                           for s in np.unique(status[failed]))
        reasons = "; ".join(f"{STATUS_LABELS[Status(s)]}: {STATUS_MESSAGES[Status(s)]}"
                            for s in np.unique(status[failed]))
        warnings.warn(
            f"{int(failed.sum())} of {n} fits did not converge ({counts}; first at dataset(s) "
            f"{np.nonzero(failed)[0][:10].tolist()}); their estimates are not maxima and "
            f"bres.converged is False for them. {reasons}", ConvergenceWarning, stacklevel=level)
    singular = np.asarray(fits.stats.singular).any(axis=1) & ~failed
    if singular.any():
        names = [nm for nm, s in zip(fits.param_names,
                                     np.asarray(fits.stats.singular)[singular].any(axis=0)) if s]
        warnings.warn(
            f"{int(singular.sum())} of {n} converged fits have a singular or indefinite information "
            f"matrix (first at dataset(s) {np.nonzero(singular)[0][:10].tolist()}), involving "
            f"parameter(s) {names}: those standard errors are NaN",
            SingularInformationWarning, stacklevel=level)
    if fits.dtype == "float32":
        warnings.warn(
            "fit_batch ran in float32: standard errors are float32-accurate only; enable float64 "
            "with jax.config.update('jax_enable_x64', True)", PrecisionWarning, stacklevel=level)


def _member(fits: FitResult, i: int) -> FitResult:
    return jax.tree_util.tree_map(lambda x: x[i], fits)

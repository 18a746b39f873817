"""Host-side rendering of a fit as a statsmodels-like table (no JAX tracing here)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

import jaxmle.results.export as _export
from jaxmle.core.params import all_flat_names, leaf_names
from jaxmle.core.stats import check_level, pvalue, wald_quantile
from jaxmle.results.result import FitResult, provides

_WIDTH = 78
_COLUMNS = ("estimate", "std err", "z", "P>|z|")


def _num(x: float, width: int = 10) -> str:
    """A number in ``width`` characters with as many significant digits as fit."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan".rjust(width)
    if x == 0 or 1e-4 <= abs(x) < 1e6:
        digits = max(1, min(6, width - 2 - len(str(int(abs(x))))))
        return f"{x:.{digits}f}".rjust(width)
    return f"{x:.3e}".rjust(width)


@dataclasses.dataclass(frozen=True)
class Summary:
    """The rows and header of a fit summary; ``str()`` renders the table.

    ``rows`` hold numbers (floats); ``header`` the printed (rounded) strings, and
    ``stats`` the same fit statistics as numbers (``loglik``, ``aic``, ``bic``, ``nobs``,
    ``converged``, ``n_iter``, ``grad_norm``, ...).
    """

    title: str
    header: tuple[tuple[str, str], ...]
    rows: tuple[dict[str, Any], ...]
    level: float
    notes: tuple[str, ...]
    stats: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_result(cls, res: FitResult, level: float = 0.95, ci: str = "wald") -> "Summary":
        if ci not in ("wald", "profile"):
            raise ValueError(f"unknown ci {ci!r}; use 'wald' or 'profile'")
        check_level(level)
        se = dict(zip(res.param_names, np.sqrt(np.diag(np.asarray(res.cov)))))
        q = wald_quantile(level)
        intervals, notes = {}, []
        if ci == "profile" and res.param_names:
            from jaxmle.inference.profile import profile_intervals

            intervals = profile_intervals(res, level)
            notes = [iv.note for iv in intervals.values() if iv.note]
        rows = []
        for name, e in zip(all_flat_names(res.params), res.flat_params_all()):
            if name not in se:
                rows.append(dict(name=f"{name} (fixed)", estimate=float(e), stderr=math.nan,
                                 z=math.nan, pvalue=math.nan, lower=math.nan, upper=math.nan))
                continue
            s = se[name]
            z = e / s if s > 0 else math.nan
            lo, hi = ((intervals[name].lower, intervals[name].upper) if name in intervals
                      else (float(e - q * s), float(e + q * s)))
            rows.append(dict(name=name, estimate=float(e), stderr=float(s), z=float(z),
                             pvalue=pvalue(z), lower=lo, upper=hi))
        rows[:0] = _flat_rows(res, q)
        rows.extend(_deterministic_rows(res, q))
        kind = "maximum likelihood" if res.kind == "mle" else "MAP"
        if res.random_info is not None and res.random_info.reml:
            kind = "REML"
        estimation = f"{kind} ({res.method})" if res.method != "none" else "none: all fixed"
        converged = bool(res.converged)
        covariance = res.cov_type + (f", {res.n_groups} clusters" if res.n_groups else "")
        header = (
            ("Estimation", estimation),
            ("Log-likelihood", f"{float(res.loglik):.6g}"),
            *((("Log-posterior", f"{float(res.logpost):.6g}"),) if res.kind == "map" else ()),
            ("AIC", f"{float(res.aic):.6g}"),
            ("BIC", f"{float(res.bic):.6g}"),
            ("No. observations", f"{float(res.nobs):g}"),
            ("Free parameters", f"{res.n_free}"),
            ("Converged", "yes" if converged else f"NO: {res.status_message}"),
            ("Iterations", f"{int(res.n_iter)}"),
            ("|gradient|", f"{float(res.grad_norm):.2e}"),
            ("Covariance", covariance),
            ("Intervals", "profile likelihood" if ci == "profile" else "Wald"),
        )
        stats = (("kind", res.kind), ("method", res.method), ("loglik", float(res.loglik)),
                 ("logpost", float(res.logpost)), ("aic", float(res.aic)),
                 ("bic", float(res.bic)), ("nobs", float(res.nobs)), ("n_free", res.n_free),
                 ("converged", converged), ("status", int(res.status)),
                 ("n_iter", int(res.n_iter)), ("grad_norm", float(res.grad_norm)),
                 ("cov_type", res.cov_type), ("n_groups", res.n_groups), ("intervals", ci))
        return cls("jaxmle fit results", header, tuple(rows), level, _notes(res) + tuple(notes),
                   stats)

    def as_dict(self) -> dict[str, Any]:
        """Rows keyed by parameter name (numbers), the header fields (printed strings) and
        ``stats`` (the header's numbers)."""
        return {"header": dict(self.header), "stats": dict(self.stats),
                "params": {r["name"]: r for r in self.rows}}

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (NaN as None): ``title``, ``level``, ``stats`` (numbers),
        ``params`` (``{row name: {estimate, stderr, z, pvalue, ci_lower, ci_upper}}``, with
        the ``(fixed)``/``(deterministic)`` rows as printed), ``notes``, ``header``
        (strings) and ``versions``."""
        return _export.summary_to_dict(self)

    def to_dataframe(self) -> Any:
        """The table's rows as numbers (index: row name as printed; needs pandas)."""
        return _export.summary_to_dataframe(self)

    def __str__(self) -> str:
        lines = [self.title.center(_WIDTH), "=" * _WIDTH]
        pairs = [f"{k + ':':<18}{v:>20}" for k, v in self.header]
        for i in range(0, len(pairs), 2):
            lines.append("  ".join(pairs[i:i + 2]))
        lo = f"[{(1 - self.level) / 2:.3f}"
        hi = f"{(1 + self.level) / 2:.3f}]"
        name_w = max([len(r["name"]) for r in self.rows] + [10])
        lines.append("-" * _WIDTH)
        lines.append(" " * name_w + "".join(c.rjust(11) for c in _COLUMNS) + lo.rjust(11) + hi.rjust(11))
        lines.append("-" * _WIDTH)
        for r in self.rows:
            p = "nan" if math.isnan(r["pvalue"]) else f"{r['pvalue']:.3f}"
            lines.append(
                r["name"].ljust(name_w) + " " + _num(r["estimate"]) + " " + _num(r["stderr"])
                + " " + _num(r["z"]) + p.rjust(11) + " " + _num(r["lower"]) + " " + _num(r["upper"])
            )
        lines.append("=" * _WIDTH)
        lines.extend(f"Note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return "<pre>" + str(self) + "</pre>"


def _deterministic_rows(res: FitResult, q: float) -> list[dict[str, Any]]:
    """``fit_model``: the model's deterministic sites (delta-method SEs)."""
    if not res.deterministic:
        return []
    rows = []
    for name, value in res.deterministic.items():
        se_all = np.ravel(np.asarray(res.deterministic_stderr[name], dtype=float))
        values = np.ravel(np.asarray(value, dtype=float))
        labels = all_flat_names({name: np.asarray(value)})
        for label, e, s in zip(labels, values, se_all):
            z = e / s if s > 0 else math.nan
            rows.append(dict(name=f"{label} (deterministic)", estimate=float(e), stderr=float(s),
                             z=float(z), pvalue=pvalue(z), lower=float(e - q * s),
                             upper=float(e + q * s)))
    return rows


def _flat_rows(res: FitResult, q: float) -> list[dict[str, Any]]:
    """REML: the fixed effects integrated out under a flat prior, at their conditional
    mode given θ̂ (the GLS estimate in a linear mixed model) with the conditional SE
    (what lme4 and statsmodels MixedLM report), marked ``(GLS)``."""
    info = res.random_info
    if info is None or not info.reml or res.random is None:
        return []
    rows = []
    for leaf in info.flat:
        est = np.ravel(np.asarray(res.random[leaf], dtype=float))
        se = np.ravel(np.asarray(res.random_cond_stderr[leaf], dtype=float))
        for label, e, s in zip(all_flat_names({leaf: np.asarray(res.random[leaf])}), est, se):
            z = e / s if s > 0 else math.nan
            rows.append(dict(name=f"{label} (GLS)", estimate=float(e), stderr=float(s),
                             z=float(z), pvalue=pvalue(z), lower=float(e - q * s),
                             upper=float(e + q * s)))
    return rows


def _random_notes(res: FitResult) -> list[str]:
    info = res.random_info
    notes = [info.describe() + "; Log-likelihood is the Laplace marginal"
             + (" (the REML log-likelihood: compare it only between fits with the same fixed "
                "effects)" if info.reml else "")]
    if info.reml:
        flat = ", ".join(info.flat)
        if res.random is None:
            notes.append(f"REML: the fixed effects ({flat}) are not estimated in a batch; refit "
                         "a member with jm.fit for them")
        else:
            notes.append(f"REML: rows marked (GLS) are the fixed effects ({flat}) at their mode "
                         "given the variance parameters (the GLS estimate for a linear mixed "
                         "model) with its conditional standard error, as lme4 and statsmodels "
                         "MixedLM report (res.random, res.random_cond_stderr; res.random_stderr "
                         "adds the variance parameters' uncertainty, as TMB's sdreport)")
        n_theta = res.n_free - info.n_flat
        notes.append(f"AIC/BIC count the {info.n_flat} fixed effects as parameters, as lme4 "
                     f"does for REML fits: {res.n_free} = {n_theta} estimated + {info.n_flat} "
                     "integrated out (statsmodels reports no AIC for REML)")
    notes.append(f"standard errors of {', '.join(leaf_names(res.params))} from the exact "
                 "observed information of the Laplace marginal (autodiff Hessian); lme4's glmer "
                 "uses a finite-difference Hessian, so standard errors of ported models can "
                 "differ by ~1%")
    if info.boundary:
        notes.append(f"{', '.join(info.boundary)} on the boundary (flat likelihood "
                     "up to the edge): a likelihood-ratio test of it is a boundary test "
                     "(½χ²₀ + ½χ²₁ reference)")
    return notes


def _notes(res: FitResult) -> tuple[str, ...]:
    notes = []
    if res.random_info is not None:
        notes.extend(_random_notes(res))
    if res.kind == "map":
        notes.append("MAP: the mode of the posterior density of the parameters as given (no "
                     "Jacobian term); standard errors from the Hessian of the log posterior. "
                     "Priors: " + "; ".join(res.priors))
        kinks = [n for n, s, e in zip(res.param_names, np.sqrt(np.diag(np.asarray(res.cov))),
                                      res.flat_params()) if np.isnan(s) and e == 0]
        if res.method == "prox-newton" and kinks:
            notes.append(f"exactly 0 under their Laplace (L1) prior: {', '.join(kinks)} (no "
                         "standard error at the kink of the prior)")
    if res.starts is not None:
        k = len(np.asarray(res.starts.loglik))
        n_conv = int(np.sum(np.asarray(res.starts.converged)))
        notes.append(f"multi-start: {res.n_at_best} of {k} starts reached this optimum "
                     f"({n_conv} converged; the others stopped at lower local maxima or failed)"
                     if res.n_at_best < n_conv or n_conv < k else
                     f"multi-start: all {k} starts reached this optimum")
    singular = np.asarray(res.stats.singular)
    if singular.any():
        names = [n for n, s in zip(res.param_names, singular) if s]
        notes.append(
            "the information matrix is singular or not positive definite in the direction of "
            f"{', '.join(names)}: their standard errors are NaN (not identified from the data)"
        )
    if res.dtype == "float32":
        notes.append(
            "computed in float32: estimates and standard errors are float32-accurate only; run "
            "jax.config.update('jax_enable_x64', True) before creating arrays for float64"
        )
    if res.fixed_names:
        notes.append(f"held fixed (not estimated, not counted in AIC/BIC): "
                     f"{', '.join(res.fixed_names)}")
    if res.cov_type != "observed":
        what = {"opg": "the outer product of the per-observation scores (OPG/BHHH)",
                "sandwich": "the sandwich H⁻¹BH⁻¹ (Huber–White, robust to misspecification)"}
        notes.append(f"standard errors from {what[res.cov_type]}"
                     + (f", clustered over {res.n_groups} groups" if res.n_groups else ""))
    n_flat = res.random_info.n_flat if res.random_info is not None else 0
    if res.n_free - n_flat < len(res.param_names):
        notes.append(
            "some parameters live on a manifold (simplex, ...): their covariance is "
            "rank-deficient and z-tests against 0 are not meaningful for them"
        )
    return tuple(notes)


@provides("summary")
def summary(res: FitResult, level: float = 0.95, method: str = "wald") -> Summary:
    """``res.summary()``: the table of one fit."""
    return Summary.from_result(res, level, method)

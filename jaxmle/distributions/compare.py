"""``compare_distributions``: fit candidates to one sample and rank them (host-side table)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

import jaxmle.distributions.export as _export
from jaxmle.distributions.fit import fit_distribution
from jaxmle.distributions.registry import spec_for
from jaxmle.distributions.result import DistributionFit

_WIDTH = 86


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionComparison:
    """Candidate distributions fitted to one sample, ranked by AIC (or BIC).

    Attributes
    ----------
    rows : tuple of dict
        One row per fitted candidate, best first: ``distribution``, ``n_params``,
        ``loglik``, ``aic``, ``delta_aic``, ``aic_weight`` (Akaike weight
        exp(−ΔAIC/2)/Σ), ``bic``, ``delta_bic``, ``gof_test`` (``"KS"`` or
        ``"chi-square"``), ``gof_statistic``, ``gof_df``, ``gof_pvalue``,
        ``converged``. Non-converged fits are ranked after the converged ones.
    fits : dict
        ``{name: DistributionFit}``.
    skipped : dict
        ``{name: reason}`` for candidates that could not be fitted (e.g. data
        outside their support).
    criterion : str
        ``"aic"`` or ``"bic"``.
    """

    plot_role = "distribution_comparison"   # what jaxmle.plots draws it as (a class attribute)

    rows: tuple
    fits: dict
    skipped: dict
    criterion: str
    nobs: float

    @property
    def best(self) -> str:
        """Name of the top-ranked distribution."""
        return self.rows[0]["distribution"]

    @property
    def names(self) -> list[str]:
        """Fitted candidates in rank order."""
        return [r["distribution"] for r in self.rows]

    def __getitem__(self, name: str) -> DistributionFit:
        return self.fits[name]

    def to_dict(self) -> dict[str, Any]:
        """``{"criterion", "nobs", "ranking": [rows], "skipped": {name: reason},
        "fits": {name: DistributionFit.to_dict()}, "versions"}`` as plain Python (NaN,
        e.g. the KS p-value, as None)."""
        return _export.comparison_to_dict(self)

    def to_dataframe(self):
        """The ranking as a pandas DataFrame indexed by distribution (needs pandas)."""
        return _export.comparison_to_dataframe(self)

    def plot(self, path: str | None = None, **kwargs: Any):
        """Four-panel diagnostic of every fitted candidate (see :func:`jaxmle.plots.plot_fit`)."""
        from jaxmle.plots import plot_fit

        return plot_fit(self, path=path, **kwargs)

    def __str__(self) -> str:
        crit = self.criterion.upper()
        lines = [f"Distribution comparison (ranked by {crit}), n = {self.nobs:g}".center(_WIDTH),
                 "=" * _WIDTH,
                 f"{'distribution':<18}{'k':>3}{'log-lik':>12}{'AIC':>12}{'ΔAIC':>9}{'weight':>8}"
                 f"{'BIC':>12}  goodness of fit",
                 "-" * _WIDTH]
        for r in self.rows:
            flag = "" if r["converged"] else "  NOT CONVERGED"
            lines.append(
                f"{r['distribution']:<18}{r['n_params']:>3}{r['loglik']:>12.4f}{r['aic']:>12.4f}"
                f"{r['delta_aic']:>9.3f}{r['aic_weight']:>8.3f}{r['bic']:>12.4f}  {_gof_text(r)}{flag}")
        lines.append("=" * _WIDTH)
        for name, reason in self.skipped.items():
            lines.append(f"Skipped {name}: {reason}")
        if any(r["gof_test"] == "KS" for r in self.rows):
            lines.append("Note: KS D = sup|F_n − F|, no p-value (parameters estimated from these data)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return "<pre>" + str(self) + "</pre>"


def _gof_text(r: dict) -> str:
    if r["gof_test"] == "KS":
        return f"KS D = {r['gof_statistic']:.4f}"
    if r["gof_test"] == "chi-square":
        p = "" if math.isnan(r["gof_pvalue"]) else f", p = {r['gof_pvalue']:.3g}"
        return f"chi2 = {r['gof_statistic']:.3f} (df {r['gof_df']}{p})"
    return "-"


def _row(fit: DistributionFit) -> dict[str, Any]:
    g = fit.gof()
    return {"distribution": fit.name, "n_params": fit.n_free, "loglik": fit.loglik,
            "aic": fit.aic, "bic": fit.bic, "gof_test": g.test, "gof_statistic": g.statistic,
            "gof_df": g.df, "gof_pvalue": g.pvalue, "converged": fit.converged}


def rank(fits: Mapping[str, DistributionFit], criterion: str) -> tuple[dict, ...]:
    """Rows sorted by the criterion (converged first), with Δ and Akaike weights."""
    rows = [_row(f) for f in fits.values()]
    for key in ("aic", "bic"):
        best = min((r[key] for r in rows if r["converged"]), default=min(r[key] for r in rows))
        for r in rows:
            r[f"delta_{key}"] = r[key] - best
    ok = np.array([r["converged"] for r in rows]) if any(r["converged"] for r in rows) else \
        np.ones(len(rows), bool)
    weights = np.where(ok, np.exp(-0.5 * np.array([r["delta_aic"] for r in rows])), 0.0)
    weights = weights / weights.sum()
    for r, w, good in zip(rows, weights, ok):
        r["aic_weight"] = float(w) if good else math.nan
    rows.sort(key=lambda r: (not r["converged"], r[criterion]))
    return tuple(rows)


def _reason(name: str, err: Exception) -> str:
    """The error message without a leading repetition of the candidate's name."""
    text = str(err)
    for prefix in (f"{name}: ", f"{name} "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def compare(data: Any, candidates: Sequence[Any], *, fixed: Mapping[str, Any] | None = None,
            criterion: str = "aic", method: Any = "auto") -> DistributionComparison:
    """See :func:`jaxmle.distributions.compare_distributions`."""
    criterion = criterion.lower()
    if criterion not in ("aic", "bic"):
        raise ValueError(f"criterion must be 'aic' or 'bic', got {criterion!r}")
    if isinstance(candidates, (str, type)) or not len(candidates):
        raise ValueError("candidates must be a non-empty list of distributions")
    fits, skipped, nobs = {}, {}, math.nan
    for candidate in candidates:
        spec = spec_for(candidate)
        if spec.name in fits or spec.name in skipped:
            raise ValueError(f"candidate {spec.name} is listed twice")
        own = {k: v for k, v in (fixed or {}).items() if k in spec.params}
        try:
            fits[spec.name] = fit_distribution(spec, data, fixed=own, method=method)
            nobs = fits[spec.name].nobs
        except ValueError as err:
            skipped[spec.name] = _reason(spec.name, err)
    if not fits:
        raise ValueError("no candidate could be fitted: " +
                         "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return DistributionComparison(rank(fits, criterion), fits, skipped, criterion, nobs)

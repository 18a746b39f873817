"""Performance of an estimator over a simulation study: :meth:`BatchFitResult.simulation_summary`
(bias, empirical SD, mean SE, SE/SD, RMSE and Wald coverage, with Monte Carlo SEs)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jaxmle.core.params import all_flat_names, is_number_list
from jaxmle.core.stats import wald_quantile
from jaxmle.results.export import _by_name, _flat, frame, jsonable, pandas, versions

# --------------------------------------------------------------------------- simulation study

_SIM_COLUMNS = ("n", "true", "mean", "bias", "bias_mcse", "sd", "mean_se", "se_sd_ratio",
                "rmse", "n_se", "coverage", "coverage_mcse")


@dataclasses.dataclass(frozen=True)
class SimulationSummary:
    """Performance of an estimator over the converged fits of a simulation study.

    One row per estimated parameter given a true value: ``n`` fits used (converged,
    finite estimate), ``true``, ``mean`` estimate, ``bias`` = mean − true and its
    Monte-Carlo SE ``bias_mcse`` = sd/√n, ``sd`` the empirical SD of the estimates
    (ddof=1), ``mean_se`` the mean reported SE, ``se_sd_ratio`` = mean_se/sd (≈ 1 when
    the SEs are calibrated), ``rmse`` = √mean((θ̂ − θ)²), and ``coverage``: the share of
    Wald intervals θ̂ ± z·SE at ``level`` that contain the true value, with its
    Monte-Carlo SE √(c(1 − c)/n_se). Fits with a NaN SE are left out of ``mean_se``
    and ``coverage`` (``n_se`` counts the others).
    """

    level: float
    n_fits: int
    n_converged: int
    rows: tuple[dict[str, Any], ...]

    def __getitem__(self, name: str) -> dict[str, Any]:
        for r in self.rows:
            if r["name"] == name:
                return dict(r)
        raise KeyError(f"{name!r}: the parameters are {[r['name'] for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        """``{"level", "n_fits", "n_converged", "params": {name: row}, "versions"}``
        (NaN as None)."""
        return jsonable({"level": self.level, "n_fits": self.n_fits,
                         "n_converged": self.n_converged, "params": _by_name(list(self.rows)),
                         "versions": versions()})

    def to_dataframe(self) -> Any:
        """One row per parameter (index: flat name), the columns of ``rows`` (needs pandas)."""
        pandas()
        return frame([dict(r) for r in self.rows], "name")

    def __str__(self) -> str:
        width = max([len(r["name"]) for r in self.rows] + [9])
        heads = ("true", "mean", "bias", "(MCSE)", "SD", "mean SE", "SE/SD", "RMSE",
                 "coverage", "(MCSE)")
        keys = ("true", "mean", "bias", "bias_mcse", "sd", "mean_se", "se_sd_ratio", "rmse",
                "coverage", "coverage_mcse")
        lines = [f"Simulation study: {self.n_fits} fits, {self.n_converged} converged (used); "
                 f"{self.level:.0%} Wald coverage of the true value",
                 "parameter".ljust(width) + "".join(h.rjust(10) for h in heads)]
        for r in self.rows:
            lines.append(r["name"].ljust(width) + "".join(f"{r[k]:10.4g}" for k in keys))
        if any(r["n_se"] < r["n"] for r in self.rows):
            lines.append("Note: fits with a NaN standard error are left out of mean SE and "
                         "coverage: " + ", ".join(f"{r['name']} {r['n_se']} of {r['n']}"
                                                  for r in self.rows if r["n_se"] < r["n"]))
        return "\n".join(lines)

    __repr__ = __str__


def _truth(true_params: Any, names: tuple[str, ...], all_names: set[str]) -> dict[str, float]:
    """``{flat name: value}`` from a params-like pytree or a dict of flat names."""
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype=float), true_params,
                                  is_leaf=is_number_list)
    flat = dict(zip(all_flat_names(tree), _flat(tree)))
    unknown = [n for n in flat if n not in all_names]
    if unknown:
        raise ValueError(f"true_params has names {unknown} that are not parameters of the fits "
                         f"(flat names: {sorted(all_names)}); give a pytree like params or a "
                         "dict of flat names such as 'beta[0]'")
    truth = {n: flat[n] for n in names if n in flat}
    if not truth:
        raise ValueError(f"true_params gives no estimated parameter; they are {list(names)}")
    return truth


def simulation_summary(bres: Any, true_params: Any, level: float = 0.95) -> SimulationSummary:
    """See :meth:`BatchFitResult.simulation_summary`."""
    q = wald_quantile(level)
    names = tuple(bres.fits.param_names)
    truth = _truth(true_params, names, set(names) | set(bres.fits.fixed_names))
    ok = np.asarray(bres.fits.converged, bool).reshape(-1)
    est, se = bres.flat_params()[ok], bres.flat_stderr()[ok]
    rows = []
    for j, name in enumerate(names):
        if name not in truth:
            continue
        t = truth[name]
        good = np.isfinite(est[:, j])
        e, s = est[good, j], se[good, j]
        n = int(e.size)
        mean = float(np.mean(e)) if n else math.nan
        sd = float(np.std(e, ddof=1)) if n > 1 else math.nan
        has_se = np.isfinite(s)
        n_se = int(has_se.sum())
        mean_se = float(np.mean(s[has_se])) if n_se else math.nan
        cover = float(np.mean(np.abs(e[has_se] - t) <= q * s[has_se])) if n_se else math.nan
        rows.append(dict(
            name=name, n=n, true=float(t), mean=mean, bias=mean - t,
            bias_mcse=sd / math.sqrt(n) if n > 1 else math.nan, sd=sd, mean_se=mean_se,
            se_sd_ratio=mean_se / sd if sd > 0 else math.nan,
            rmse=float(np.sqrt(np.mean((e - t) ** 2))) if n else math.nan, n_se=n_se,
            coverage=cover,
            coverage_mcse=math.sqrt(cover * (1 - cover) / n_se) if n_se else math.nan))
    return SimulationSummary(level, len(bres), int(ok.sum()), tuple(rows))

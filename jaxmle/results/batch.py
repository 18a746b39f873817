"""``BatchFitResult``: B fits as one pytree, with per-fit access and a batch summary."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

import jaxmle.results.export as _export
import jaxmle.results.simulation as _simulation
from jaxmle.core.params import check_names, free_positions
from jaxmle.core.stats import check_level, wald_intervals
from jaxmle.core.typing import STATUS_LABELS, Status
from jaxmle.results.result import FitResult


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False)
class BatchFitResult(FitResult):
    """The result of :func:`jaxmle.fit_batch`: a :class:`FitResult` whose arrays carry a
    leading batch axis B (the same fields, the same pytree structure).

    ``bres.params["mu"]`` is (B,), ``bres.cov`` (B, k, k), ``bres.converged`` (B,),
    ``bres.aic``, ``bres.zvalues`` ... likewise; ``bres[i]`` is the i-th fit as an
    ordinary :class:`FitResult` (``summary()``, ``profile()``, ``bootstrap()`` work: each
    member carries its own data), ``bres[mask]`` or ``bres[a:b]`` a smaller batch,
    ``len(bres)`` is B. The methods that summarise over the batch (``summary``,
    ``confint``, ``flat_params``, ``to_dict``, ...) return batch-shaped answers; those
    that refit one fit ask for a member (``bres[i].profile(...)``).
    """

    @classmethod
    def of(cls, fits: FitResult) -> "BatchFitResult":
        """The batch view of a FitResult whose arrays have a leading batch axis."""
        return cls(**_fields(fits))

    @property
    def fits(self) -> FitResult:
        """The same arrays as a plain :class:`FitResult` (batched: for ``jax.tree_util``)."""
        return FitResult(**_fields(self))

    def __len__(self) -> int:
        return int(np.shape(self.loglik)[0])

    def __getitem__(self, index: Any) -> FitResult | "BatchFitResult":
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"fit {index} is out of range for a batch of {n}")
            return jax.tree_util.tree_map(lambda x: x[index], self.fits)
        return jax.tree_util.tree_map(lambda x: x[index], self)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def n_converged(self) -> int:
        return int(np.sum(np.asarray(self.converged)))

    @property
    def failed(self) -> np.ndarray:
        """Indices of the fits that did not converge."""
        return np.nonzero(~np.asarray(self.converged))[0]

    @property
    def status_message(self) -> str:
        return "; ".join(f"{label}: {count}" for label, count in _status_counts(self.status))

    def flat_params(self) -> np.ndarray:
        """(B, k) estimates in the order of ``param_names`` (fixed parameters left out)."""
        return self._free(_flat(self.params, len(self)))

    def flat_params_all(self) -> np.ndarray:
        """(B, k + fixed) all parameters, in pytree order."""
        return _flat(self.params, len(self))

    def flat_stderr(self) -> np.ndarray:
        """(B, k) standard errors in the order of ``param_names``."""
        return self._free(_flat(self.stderr, len(self)))

    def _free(self, flat: np.ndarray) -> np.ndarray:
        if not self.fixed_names:
            return flat
        return flat[:, free_positions(self.params, self.fixed_names, batch_ndim=1)]

    def confint(self, level: float = 0.95, method: str = "wald", *,
                names: Any = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Wald intervals ``{name: (lower (B,), upper (B,))}`` (profile intervals: per
        member, ``bres[i].confint(method="profile")``)."""
        if method != "wald":
            raise ValueError(f"confint(method={method!r}) of a batch: only 'wald'; take a "
                             "member for profile intervals (bres[i].confint(method='profile'))")
        out = wald_intervals(self.param_names, self.flat_params(), self.flat_stderr(), level)
        return out if names is None else {n: out[n] for n in check_names(names, self.param_names)}

    def profile(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("the profile likelihood works on one fit: take a member of the batch "
                         "first (bres[i].profile(...))")

    def bootstrap(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("the bootstrap works on one fit: take a member of the batch first "
                         "(bres[i].bootstrap(...))")

    def delta(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("the delta method works on one fit: take a member of the batch first "
                         "(bres[i].delta(...))")

    def laplace(self) -> Any:
        raise ValueError("laplace() works on one fit: take a member of the batch first "
                         "(bres[i].laplace())")

    def summary(self, level: float = 0.95, method: str = "wald", *,
                ci: str | None = None) -> "BatchSummary":
        """Batch-level summary: convergence counts, and the distribution of the
        estimates and standard errors over the converged fits. It has no per-fit
        intervals: ``level`` is checked and ``method`` must be ``"wald"`` (the signature
        is :meth:`FitResult.summary`'s); for one fit's intervals take ``bres[i].summary(...)``."""
        check_level(level)
        method = ci if ci is not None else method
        if method != "wald":
            raise ValueError(f"a batch summary has no per-fit intervals (method={method!r}): take "
                             "a member first, e.g. bres[0].summary(method=...), or use "
                             "bres.confint(level) for every fit's Wald intervals")
        return BatchSummary.from_batch(self)

    def to_dict(self, level: float = 0.95) -> dict[str, Any]:
        """The batch as plain Python (NaN/±inf as None; ``json.dumps`` works): the keys
        of :meth:`FitResult.to_dict` with a leading batch axis on every per-fit value
        (``params``, ``stderr``, ``cov``, ``loglik``, ``converged``, ``status``,
        ``status_label``, ``n_iter``, ``grad_norm``, ...), plus ``n_fits`` and
        ``n_converged``; no ``estimates`` table (see :meth:`to_dataframe`)."""
        return _export.batch_to_dict(self)

    def to_dataframe(self, level: float = 0.95, include_fixed: bool = True) -> Any:
        """One row per dataset (index ``fit``; needs pandas): a column per estimated flat
        parameter (its estimate), ``se_<name>`` (its SE), then ``converged``, ``status``,
        ``status_label``, ``loglik``, ``n_iter``, ``grad_norm``."""
        return _export.batch_to_dataframe(self)

    def simulation_summary(self, true_params: Any, level: float = 0.95) -> Any:
        """Bias, empirical SD, mean SE, SE/SD, RMSE and Wald coverage of the true values,
        per estimated parameter over the converged fits (a
        :class:`~jaxmle.results.simulation.SimulationSummary`: ``print`` it, ``to_dict()``,
        ``to_dataframe()``). ``true_params`` is a pytree like ``params`` or a dict of flat
        names (``{"beta[0]": 1.0}``); parameters it leaves out are left out."""
        return _simulation.simulation_summary(self, true_params, level)

    def __repr__(self) -> str:
        try:
            return (f"BatchFitResult({len(self)} fits, {self.n_converged} converged, "
                    f"{self.method}; params {list(self.param_names)})")
        except TypeError:  # traced
            return "BatchFitResult(traced)"


def with_members(batch: Any, members: dict) -> Any:
    """``batch`` (a pytree whose leaves carry the batch axis first) as NumPy arrays, with
    row ``i`` of every leaf replaced by ``members[i]`` (a pytree of the same structure,
    one member's values: a structure that does not match raises)."""
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    leaves = [np.array(x) for x in leaves]
    for i, member in members.items():
        for dst, src in zip(leaves, treedef.flatten_up_to(member)):
            dst[i] = np.asarray(src)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _fields(res: FitResult) -> dict[str, Any]:
    return {f.name: getattr(res, f.name) for f in dataclasses.fields(FitResult)}


def _status_counts(status: Any) -> tuple[tuple[str, int], ...]:
    status = np.asarray(status)
    return tuple((STATUS_LABELS[Status(s)], int((status == s).sum())) for s in np.unique(status))


def _flat(tree: Any, n: int) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.asarray(x).reshape(n, -1) for x in leaves], axis=1)


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    """Rows per parameter over the converged fits: mean, SD and quantiles of the
    estimates, mean SE, and SE/SD (≈ 1 when the SEs are calibrated, as the MLE's
    asymptotic normality predicts for a simulation study)."""

    n: int
    counts: tuple[tuple[str, int], ...]
    rows: tuple[dict[str, Any], ...]
    method: str

    @classmethod
    def from_batch(cls, bres: BatchFitResult) -> "BatchSummary":
        counts = _status_counts(bres.status)
        ok = np.asarray(bres.converged, bool)
        est, se = bres.flat_params()[ok], bres.flat_stderr()[ok]
        rows = []
        for j, name in enumerate(bres.param_names):
            e, s = est[:, j], se[:, j]
            sd = float(np.std(e, ddof=1)) if e.size > 1 else np.nan
            mean_se = float(np.nanmean(s)) if np.isfinite(s).any() else np.nan
            q = np.quantile(e, [0.025, 0.5, 0.975]) if e.size else [np.nan] * 3
            rows.append(dict(name=name, mean=float(np.mean(e)) if e.size else np.nan, sd=sd,
                             q025=float(q[0]), median=float(q[1]), q975=float(q[2]),
                             mean_se=mean_se, se_over_sd=mean_se / sd if sd > 0 else np.nan))
        return cls(len(bres), counts, tuple(rows), bres.method)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "status": dict(self.counts), "params": {r["name"]: r for r in self.rows}}

    def to_dict(self) -> dict[str, Any]:
        """``{"n", "method", "status": {label: count}, "params": {name: row}, "versions"}``
        as plain Python (NaN as None)."""
        return _export.batch_summary_to_dict(self)

    def to_dataframe(self) -> Any:
        """The rows (index ``name``; columns ``mean``, ``sd``, ``q025``, ``median``,
        ``q975``, ``mean_se``, ``se_over_sd``); needs pandas."""
        return _export.batch_summary_to_dataframe(self)

    def __str__(self) -> str:
        width = 78
        lines = ["jaxmle batch of fits".center(width), "=" * width,
                 f"{'Fits:':<18}{self.n:>12}      {'Method:':<10}{self.method:>20}"]
        lines += [f"  {label:<40}{count:>10}" for label, count in self.counts]
        name_w = max([len(r["name"]) for r in self.rows] + [10])
        cols = ("mean", "sd", "2.5%", "median", "97.5%", "mean SE", "SE/SD")
        keys = ("mean", "sd", "q025", "median", "q975", "mean_se", "se_over_sd")
        lines += ["-" * width, "estimates over converged fits".ljust(width),
                  " " * name_w + "".join(c.rjust(10) for c in cols), "-" * width]
        for r in self.rows:
            lines.append(r["name"].ljust(name_w) + "".join(f"{r[k]:10.4g}" for k in keys))
        lines.append("=" * width)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

"""Likelihood-ratio test between nested fits (``jm.lrt``)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import numpy as np

import jaxmle.results.export as _export
from jaxmle.core.held import layout
from jaxmle.core.stats import chi2_sf
from jaxmle.core.typing import ConvergenceWarning, user_stacklevel
from jaxmle.results.result import FitResult


@dataclasses.dataclass(frozen=True)
class LRTResult:
    """Likelihood-ratio test of a restricted model against the full model.

    Attributes
    ----------
    statistic : float
        2(ℓ̂_full − ℓ̂_restricted) (negative values within rounding are set to 0).
    df : int
        Difference in the number of free parameters.
    pvalue : float
        P(χ²_df > statistic), the asymptotic p-value under the restricted model.
    nested : str
        ``"checked"`` (same log-likelihood function and data; the restricted fit
        holds fixed a superset of the full fit's fixed parameters, at the same
        values) or ``"assumed"`` (different functions or data: jaxmle cannot check).
    boundary : tuple of str
        Restricted values on the boundary of the full model's parameter space
        (e.g. a variance or mixing weight fixed at 0). There the χ²_df reference is
        wrong (Self & Liang 1987): for one such parameter the null distribution is
        the 50:50 mixture ½χ²_{df−1} + ½χ²_df, whose p-value is ``pvalue_boundary``
        (``pvalue`` is then conservative, about twice too large for df = 1).
    """

    statistic: float
    df: int
    pvalue: float
    loglik_restricted: float
    loglik_full: float
    nested: str
    boundary: tuple[str, ...] = ()
    pvalue_boundary: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields above as plain Python (``boundary`` a list, None where undefined)
        and ``versions``."""
        return _export.lrt_to_dict(self)

    def to_dataframe(self) -> Any:
        """A one-row DataFrame of the fields (``boundary`` joined by commas; needs pandas)."""
        return _export.lrt_to_dataframe(self)

    def __str__(self) -> str:
        lines = ["Likelihood-ratio test",
                 f"  restricted loglik {self.loglik_restricted:.6g}, full loglik "
                 f"{self.loglik_full:.6g}",
                 f"  LR statistic {self.statistic:.6g} on {self.df} df, p-value {self.pvalue:.4g}"
                 f"  (nesting {self.nested})"]
        if self.boundary:
            extra = ("" if self.pvalue_boundary is None else
                     f"; mixture ½χ²_{self.df - 1} + ½χ²_{self.df} p-value {self.pvalue_boundary:.4g}")
            lines.append(f"  on the boundary: {', '.join(self.boundary)} (the χ² p-value is "
                         f"conservative{extra})")
        return "\n".join(lines)

    __repr__ = __str__


def _same_data(a: Any, b: Any) -> bool:
    if a is b:
        return True
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb or any(np.shape(x) != np.shape(y) for x, y in zip(la, lb)):
        return False
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _fixed_values(res: FitResult) -> dict[str, float]:
    ctx = res.context
    idx = layout(ctx.config.space, ctx.held).fixed_nat
    values = np.asarray(ctx.held.values)[idx].tolist()
    return {ctx.config.space.names[i]: v for i, v in zip(idx, values)}


def _check_nesting(restricted: FitResult, full: FitResult) -> tuple[str, tuple[str, ...]]:
    """``"checked"`` with the boundary names, or ``"assumed"``; raises if not nested."""
    cr, cf = restricted.context, full.context
    if cr is None or cf is None or cr.config.loglik is not cf.config.loglik \
            or cr.config.space.treedef != cf.config.space.treedef \
            or cr.config.space.names != cf.config.space.names \
            or not _same_data(cr.data, cf.data) or not _same_data(cr.weights, cf.weights):
        return "assumed", ()
    fr, ff = _fixed_values(restricted), _fixed_values(full)
    missing = [n for n in ff if n not in fr]
    if missing:
        raise ValueError(f"the fits are not nested: {missing} are fixed in the full fit but "
                         "estimated in the restricted one (are the arguments swapped?)")
    differ = [n for n in ff if not np.isclose(fr[n], ff[n], rtol=1e-12, atol=0.0)]
    if differ:
        raise ValueError(f"the fits are not nested: {differ} are fixed at different values")
    space = cf.config.space
    flat = {n: (leaf, i) for leaf in space.leaves
            for i, n in enumerate(_leaf_names(leaf))}
    boundary = []
    for name in fr:
        if name in ff:
            continue
        leaf, i = flat[name]
        if _on_boundary(leaf, i, fr[name]):
            boundary.append(name)
    return "checked", tuple(boundary)


def _reml_leaves(res: FitResult) -> tuple[tuple[str, int], ...]:
    """The fixed effects a REML fit integrates out (``random={..: "flat"}``), with sizes."""
    info = res.random_info
    if info is None or not info.reml:
        return ()
    return tuple((n, s) for n, s in zip(info.names, info.sizes) if n in info.flat)


def _describe_reml(leaves: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{n} ({s})" for n, s in leaves) if leaves else "none (not REML)"


def _leaf_names(leaf) -> list[str]:
    from jaxmle.core.params import element_names

    return element_names(leaf.name, leaf.shape)


def _on_boundary(leaf, i: int, value: float) -> bool:
    """The value lies where the unconstrained coordinate is ±inf (e.g. σ = 0, p = 1)."""
    from jaxmle.core.held import elementwise

    if elementwise(leaf):
        full = np.full(leaf.shape, value, dtype=float) if leaf.shape else np.asarray(value)
        with np.errstate(all="ignore"):
            z = np.asarray(leaf.transform.inv(full)).reshape(-1)
        return not np.isfinite(z[i if leaf.shape else 0])
    return False


def lrt(restricted: FitResult, full: FitResult) -> LRTResult:
    r"""Likelihood-ratio test of ``restricted`` (H₀) against ``full`` (nested fits).

    statistic = 2(ℓ̂_full − ℓ̂_restricted), compared with χ²_df, df = the difference
    in free parameters. Nesting is checked where jaxmle can: fits of the same
    log-likelihood function to the same data, the restricted one holding fixed
    (``fixed=``) a superset of the full one's fixed parameters at the same values;
    otherwise (e.g. two different functions) it is assumed, and the result says so.

    Boundary caveat: when H₀ puts a parameter on the edge of its space (a variance
    or a mixing proportion of 0), the χ² reference is wrong: for one such
    parameter the null distribution is ½χ²_{df−1} + ½χ²_df, and the χ²_df
    p-value is conservative. Such cases are detected for fixed values where the
    constraint's unconstrained coordinate is infinite and the mixture p-value is
    given as ``pvalue_boundary``.

    Raises
    ------
    ValueError
        The full fit has no more free parameters than the restricted one (swapped
        arguments?), the fits are demonstrably not nested, they use different
        numbers of observations, or the restricted fit's log-likelihood exceeds the
        full fit's by more than rounding (the full fit missed its maximum).

    Warns
    -----
    ConvergenceWarning
        One of the fits did not converge (the statistic is then unreliable).
    """
    for label, res in (("restricted", restricted), ("full", full)):
        if not isinstance(res, FitResult):
            raise TypeError(f"lrt needs two FitResults; {label} is {type(res).__name__}")
        if np.ndim(res.loglik) != 0:
            raise TypeError(f"lrt needs single fits; {label} is batched (index it first)")
        if res.kind != "mle":
            raise ValueError(f"lrt needs maximum-likelihood fits; {label} is a {res.kind.upper()} "
                             "fit (compare MAP models with res.laplace().log_evidence)")
        if not bool(res.converged):
            warnings.warn(f"lrt: the {label} fit did not converge; the test is not reliable",
                          ConvergenceWarning, stacklevel=user_stacklevel())
    reml_r, reml_f = _reml_leaves(restricted), _reml_leaves(full)
    if reml_r != reml_f:
        raise ValueError(
            "REML log-likelihoods are comparable only between fits that integrate out the same "
            f"fixed effects (restricted: {_describe_reml(reml_r)}; full: {_describe_reml(reml_f)}):"
            " compare models with different fixed effects by maximum likelihood")
    df = int(full.n_free) - int(restricted.n_free)
    if df <= 0:
        raise ValueError(
            f"the full fit has {full.n_free} free parameters and the restricted one "
            f"{restricted.n_free}: call lrt(restricted, full) with the smaller model first")
    if not np.isclose(float(restricted.nobs), float(full.nobs), rtol=1e-12):
        raise ValueError(f"the fits use different numbers of observations ({float(restricted.nobs):g}"
                         f" and {float(full.nobs):g}): a likelihood-ratio test needs the same data")
    nested, boundary = _check_nesting(restricted, full)
    l0, l1 = float(restricted.loglik), float(full.loglik)
    stat = 2.0 * (l1 - l0)
    if stat < -1e-6 * max(1.0, abs(l1)):
        raise ValueError(
            f"the restricted fit has the higher log-likelihood ({l0:.10g} > {l1:.10g}): the full "
            "fit did not reach its maximum (refit it, e.g. starting from the restricted "
            "estimates or with n_starts), or the models are not nested")
    stat = max(stat, 0.0)
    p_mix = None
    if len(boundary) == 1:
        p_mix = 0.5 * chi2_sf(stat, df - 1) + 0.5 * chi2_sf(stat, df)
    return LRTResult(stat, df, chi2_sf(stat, df), l0, l1, nested, boundary, p_mix)

"""Delta method for derived quantities: ``res.delta(fn)``."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.results.export as _export
from jaxmle.core.params import element_names, free_positions
from jaxmle.core.stats import check_level, pvalue, wald_quantile
from jaxmle.results.result import FitResult, provides


@dataclasses.dataclass(frozen=True)
class DeltaResult:
    """A derived quantity g(θ̂) with its delta-method inference.

    ``estimate``, ``stderr``, ``lower``, ``upper`` have the shape of ``fn``'s output;
    ``cov`` is G·cov·Gᵀ over the flattened output, with G = ∂g/∂θ (exact, by
    autodiff) at θ̂ over the estimated parameters; ``jacobian`` is G.
    """

    estimate: np.ndarray
    stderr: np.ndarray
    cov: np.ndarray
    jacobian: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    names: tuple[str, ...]

    def confint(self) -> dict[str, tuple[float, float]]:
        lo, hi = np.ravel(self.lower), np.ravel(self.upper)
        return {n: (float(a), float(b)) for n, a, b in zip(self.names, lo, hi)}

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (NaN as None): ``names`` (flat, ``fn[0]``...), ``shape``, ``level``,
        ``estimates`` ({name: {estimate, stderr, z, pvalue, ci_lower, ci_upper}}), ``cov``,
        ``jacobian``, ``versions``."""
        return _export.delta_to_dict(self)

    def to_dataframe(self) -> Any:
        """One row per output element (index ``name``): ``estimate``, ``stderr``, ``z``,
        ``pvalue``, ``ci_lower``, ``ci_upper``; needs pandas."""
        return _export.delta_to_dataframe(self)

    def __str__(self) -> str:
        lo_h, hi_h = f"[{(1 - self.level) / 2:.3f}", f"{(1 + self.level) / 2:.3f}]"
        width = max([len(n) for n in self.names] + [8])
        lines = ["Delta method".ljust(width) + "".join(c.rjust(12) for c in
                 ("estimate", "std err", "z", "P>|z|", lo_h, hi_h))]
        for n, e, s, a, b in zip(self.names, np.ravel(self.estimate), np.ravel(self.stderr),
                                 np.ravel(self.lower), np.ravel(self.upper)):
            z = e / s if s > 0 else math.nan
            lines.append(n.ljust(width) + "".join(f" {v:11.6g}" for v in (e, s, z))
                         + f"{pvalue(z):12.3f}" + f" {a:11.6g} {b:11.6g}")
        return "\n".join(lines)

    __repr__ = __str__


@provides("delta")
def delta(res: FitResult, fn: Any, level: float = 0.95) -> DeltaResult:
    r"""Delta method: Var g(θ̂) ≈ G Cov(θ̂) Gᵀ with G = ∂g/∂θ at θ̂ (jacfwd, exact).

    ``fn(params)`` takes the parameter pytree (fixed parameters included, as
    constants) and returns a scalar or an array. The covariance is the fit's
    ``cov`` (so it follows ``cov_type``); a derived quantity that depends on a
    parameter with NaN SE (singular information) gets NaN.
    """
    check_level(level)
    if np.ndim(res.loglik) != 0:
        raise TypeError("delta needs a single fit (index the batch first)")
    flat_all = np.asarray(res.flat_params_all())
    free = free_positions(res.params, res.fixed_names)
    treedef = jax.tree_util.tree_structure(res.params)
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(res.params)]

    def g(theta_free):
        flat = jnp.asarray(flat_all).at[free].set(theta_free)
        sizes = np.cumsum([0] + [int(np.prod(s, dtype=int)) for s in shapes])
        leaves = [flat[sizes[i]:sizes[i + 1]].reshape(s) for i, s in enumerate(shapes)]
        return jnp.asarray(fn(jax.tree_util.tree_unflatten(treedef, leaves)))

    theta = flat_all[free]
    shape = jax.eval_shape(g, theta)   # traced only: no program for a wrong output type
    if not jnp.issubdtype(shape.dtype, jnp.floating):
        raise TypeError(f"fn must return floating-point values, got dtype {shape.dtype}")
    # g and its Jacobian in one small program (not op by op: each eager operation
    # would compile on its own the first time)
    value, jac = jax.device_get(jax.jit(lambda t: (g(t), jax.jacfwd(g)(t)))(theta))
    jac = np.asarray(jac).reshape(value.size, theta.shape[0])
    cov = np.asarray(res.cov, dtype=float)
    bad = np.isnan(cov)
    cov_g = jac @ np.where(bad, 0.0, cov) @ jac.T
    tainted = (np.abs(jac) > 0) @ bad.any(axis=1)         # depends on a NaN-SE parameter
    cov_g = np.where(tainted[:, None] | tainted[None, :], np.nan, cov_g)
    se = np.sqrt(np.maximum(np.diag(cov_g), 0.0)).reshape(value.shape)
    est = np.asarray(value, dtype=float)
    q = wald_quantile(level)
    names = tuple(element_names("fn", value.shape))
    return DeltaResult(est, se, cov_g, jac, est - q * se, est + q * se, level, names)

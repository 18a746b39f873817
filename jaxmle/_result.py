"""``FitResult``: an immutable pytree of the estimates and their inference.

Arrays are pytree data, so ``jit`` can return a ``FitResult`` and ``vmap``
batches it; names, method and kind are static metadata.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np

from ._typing import STATUS_MESSAGES, Status

if TYPE_CHECKING:
    from ._summary import Summary


class FitStats(NamedTuple):
    """Diagnostics of the optimiser and the information matrix (not needed to use the fit)."""

    n_rejected: Any        # rejected trial steps (Newton) / non-finite trials (optax)
    info_eigvals: Any      # eigenvalues of the unit-diagonal-scaled information in z
    singular: Any          # (k,) bool: parameter in a singular or indefinite direction
    z: Any                 # the estimate in the unconstrained coordinates
    grad_z: Any            # gradient of −ℓ in z at the estimate (at init for a bad start)


class StartsReport(NamedTuple):
    """Multi-start (``jm.fit(..., n_starts=K)``): what each of the K starts reached."""

    loglik: Any            # (K,) log-likelihood each start converged to (or stopped at)
    converged: Any         # (K,) bool
    at_best: Any           # (K,) bool: converged to the reported (best) optimum
    z0: Any                # (K, m) the starts, in the unconstrained coordinates


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FitResult:
    """The result of :func:`jaxmle.fit`.

    Attributes
    ----------
    params, stderr, score : pytrees shaped like ``init``
        Estimates θ̂ (natural space), standard errors, and ∇θ ℓ(θ̂).
    cov, fisher_info : (k, k) arrays
        Covariance of the flattened natural parameters (rows named by
        ``param_names``) and the observed information −∇²ℓ(θ̂) (for a simplex or
        other manifold leaf, the pseudo-inverse of ``cov``).
    loglik, logpost : scalars
        ℓ(θ̂); ``logpost`` equals ``loglik`` for maximum likelihood.
    converged, status, n_iter, grad_norm
        Convergence report; ``grad_norm`` is ‖∇f‖∞ in the unconstrained
        coordinates the optimiser works in.
    nobs : scalar
        Number of observations (sum of the weights when ``weights`` are given).
    starts : StartsReport or None
        With ``n_starts=K``: the outcome of every start (``n_at_best`` of them
        reached the reported optimum).
    """

    params: Any
    stderr: Any
    score: Any
    cov: Any
    fisher_info: Any
    loglik: Any
    logpost: Any
    converged: Any
    status: Any
    n_iter: Any
    grad_norm: Any
    nobs: Any
    stats: FitStats
    param_names: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))
    method: str = dataclasses.field(metadata=dict(static=True))
    kind: str = dataclasses.field(default="mle", metadata=dict(static=True))
    cov_type: str = dataclasses.field(default="observed", metadata=dict(static=True))
    n_free: int = dataclasses.field(default=0, metadata=dict(static=True))
    dtype: str = dataclasses.field(default="float64", metadata=dict(static=True))
    starts: StartsReport | None = None

    @property
    def aic(self) -> Any:
        """Akaike information criterion, 2m − 2ℓ̂ (m = free parameters)."""
        return 2.0 * self.n_free - 2.0 * self.loglik

    @property
    def bic(self) -> Any:
        """Bayesian information criterion, m·log(nobs) − 2ℓ̂."""
        return self.n_free * np.log(self.nobs) - 2.0 * self.loglik

    @property
    def n_at_best(self) -> int | None:
        """Multi-start: how many starts converged to the reported optimum."""
        return None if self.starts is None else int(np.sum(np.asarray(self.starts.at_best)))

    @property
    def status_message(self) -> str:
        return STATUS_MESSAGES[Status(int(self.status))]

    def confint(self, level: float = 0.95, method: str = "wald") -> dict[str, tuple[float, float]]:
        """Confidence intervals ``{name: (lower, upper)}`` for the flat parameters.

        ``method="wald"``: θ̂ ± z_{(1+level)/2}·SE. Profile-likelihood intervals
        (``method="profile"``) are not available yet.
        """
        if method != "wald":
            if method == "profile":
                raise NotImplementedError(
                    "profile-likelihood intervals are not implemented yet; use method='wald'"
                )
            raise ValueError(f"unknown confint method {method!r}; use 'wald'")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        q = NormalDist().inv_cdf(0.5 + level / 2.0)
        est = self.flat_params()
        se = np.sqrt(np.diag(np.asarray(self.cov)))
        return {n: (float(e - q * s), float(e + q * s)) for n, e, s in zip(self.param_names, est, se)}

    def flat_params(self) -> np.ndarray:
        """Estimates as one flat vector, in the order of ``param_names``."""
        leaves = jax.tree_util.tree_leaves(self.params)
        return np.concatenate([np.ravel(np.asarray(x)) for x in leaves]) if leaves else np.zeros(0)

    def summary(self, level: float = 0.95) -> "Summary":
        """A printable table like statsmodels': estimate, std err, z, P>|z|, CI."""
        from ._summary import Summary

        return Summary.from_result(self, level)

    def __repr__(self) -> str:
        try:
            est = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.param_names, self.flat_params()))
            return (f"FitResult({self.kind}, {self.method}: {est}; loglik={float(self.loglik):.6g}, "
                    f"converged={bool(self.converged)})")
        except TypeError:  # batched or traced arrays
            return f"FitResult({self.kind}, {self.method}, params={self.params!r})"


def pvalue(z: float) -> float:
    """Two-sided normal p-value P(|Z| > |z|)."""
    return math.erfc(abs(z) / math.sqrt(2.0)) if math.isfinite(z) else math.nan

"""``FitResult``: an immutable pytree of the estimates and their inference.

Arrays are pytree data, so ``jit`` can return a ``FitResult`` and ``vmap``
batches it; names, method and kind are static metadata.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxmle.core.params import check_names, flat_values, free_positions
from jaxmle.core.stats import aic, bic, check_level, wald_intervals
from jaxmle.core.typing import STATUS_MESSAGES, Status

# The methods below that refit or tabulate (profile, bootstrap, delta, laplace, summary)
# are implemented by the inference modules, which sit above this one (they import
# FitResult; this module imports none of them). Each registers its implementation here
# when it is imported (``@provides("profile")``), and the method delegates to it: a
# result stays plain data and the module graph stays acyclic. The package's __init__
# names the module behind each method (:func:`provided_by`), which is imported on the
# method's first use, so ``import jaxmle`` does not load them all.
_FEATURES: dict[str, Callable[..., Any]] = {}
_PROVIDERS: dict[str, str] = {}


def provides(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the implementation behind ``FitResult.<name>`` (a decorator)."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _FEATURES[name] = fn
        return fn
    return register


def provided_by(module: str, *names: str) -> None:
    """Declare that importing ``module`` registers the methods ``names`` (with
    :func:`provides`); :func:`feature` imports it when one is first needed."""
    for name in names:
        _PROVIDERS[name] = module


def feature(name: str) -> Callable[..., Any]:
    """The registered implementation of a result method (see :func:`provides`)."""
    if name not in _FEATURES and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])
    try:
        return _FEATURES[name]
    except KeyError:
        raise RuntimeError(f"FitResult.{name} is not available: its module was not loaded "
                           "(import jaxmle, not a private module alone)") from None


def _export() -> Any:
    """:mod:`jaxmle.results.export` (to_dict, to_dataframe, z and p-values), imported on
    first use."""
    import jaxmle.results.export as export

    return export


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
        Estimates θ̂ (natural space), standard errors, and ∇θ ℓ(θ̂). Fixed
        parameters (``fit(..., fixed=)``) keep their value, with NaN ``stderr``.
    cov, fisher_info : (k, k) arrays
        Covariance of the flattened natural parameters (rows named by
        ``param_names``: the estimated elements only, fixed ones excluded) and
        the observed information −∇²ℓ(θ̂) (for a simplex or other manifold leaf,
        the pseudo-inverse of ``cov``). ``cov`` follows ``cov_type``
        (``"observed"``, ``"opg"`` or ``"sandwich"``).
    fixed_names : tuple of str
        Flat names of the parameters held fixed (not in ``param_names``).
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
    random, random_stderr, random_cond_stderr : dicts or None
        With ``fit(..., random=[...])``: the random effects' predictions û(θ̂)
        (the mode given θ̂) by leaf name, their standard errors including θ̂'s
        uncertainty (as TMB's sdreport) and conditional on θ̂. ``params`` then
        holds θ only and ``loglik`` is the Laplace marginal log-likelihood;
        ``random_info`` says what was integrated out and how.
    """

    plot_role = "fit"   # what jaxmle.plots draws it as (a class attribute)

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
    fixed_names: tuple[str, ...] = dataclasses.field(default=(), metadata=dict(static=True))
    n_groups: int = dataclasses.field(default=0, metadata=dict(static=True))
    priors: tuple[str, ...] = dataclasses.field(default=(), metadata=dict(static=True))
    # what re-running the fit needs (data, weights, settings; a pytree whose configuration
    # is static, see _kernel.FitContext): set by jm.fit and jm.fit_batch
    context: Any = dataclasses.field(default=None, repr=False, compare=False)
    starts: StartsReport | None = None
    # fit_model: the model's ``numpyro.deterministic`` sites at θ̂ and their delta-method SEs
    deterministic: Any = None
    deterministic_stderr: Any = None
    # random effects (``fit(..., random=[...])``): predictions û(θ̂) and their SEs, by leaf
    random: Any = None
    random_stderr: Any = None           # sdreport: (−Hᵤᵤ)⁻¹ + J·cov·Jᵀ, J = dû/dθ
    random_cond_stderr: Any = None      # conditional on θ̂: (−Hᵤᵤ)⁻¹ only
    random_info: Any = dataclasses.field(default=None, metadata=dict(static=True))

    @property
    def aic(self) -> Any:
        """Akaike information criterion, 2m − 2ℓ̂ (m = free parameters)."""
        return aic(self.loglik, self.n_free)

    @property
    def bic(self) -> Any:
        """Bayesian information criterion, m·log(nobs) − 2ℓ̂."""
        return bic(self.loglik, self.n_free, self.nobs)

    @property
    def n_at_best(self) -> int | None:
        """Multi-start: how many starts converged to the reported optimum."""
        return None if self.starts is None else int(np.sum(np.asarray(self.starts.at_best)))

    @property
    def status_message(self) -> str:
        return STATUS_MESSAGES[Status(int(self.status))]

    def confint(self, level: float = 0.95, method: str = "wald", *,
                names: Any = None) -> dict[str, tuple[float, float]]:
        """Confidence intervals ``{name: (lower, upper)}`` for the estimated parameters.

        ``method="wald"``: θ̂ ± z_{(1+level)/2}·SE (by ``cov_type``).
        ``method="profile"``: {t : 2(ℓ̂ − ℓ_p(t)) ≤ χ²₁(level)}, where ℓ_p(t) is
        the log-likelihood maximised over the other parameters with this one held
        at t (see :meth:`profile`); asymmetric where the likelihood is. Where the
        profile does not cross the threshold before the edge of the parameter
        space, that end is the edge (±inf, or 0 for a positive parameter, ...); an
        end that could not be computed (failed refits) is NaN. ``names`` limits
        the parameters (default: all of ``param_names``); all are profiled
        together, in one batched program.
        """
        if method not in ("wald", "profile"):
            raise ValueError(f"unknown confint method {method!r}; use 'wald' or 'profile'")
        check_level(level)
        if method == "profile":
            intervals = feature("profile_intervals")(self, level, names)
            return {n: (iv.lower, iv.upper) for n, iv in intervals.items()}
        se = np.sqrt(np.diag(np.asarray(self.cov)))
        out = wald_intervals(self.param_names, self.flat_params(), se, level)
        return out if names is None else {n: out[n] for n in check_names(names, self.param_names)}

    def profile(self, name: str, level: float = 0.95, n_points: int = 21) -> Any:
        """The profile log-likelihood of one parameter: a :class:`~jaxmle.inference.profile.Profile`
        with the grid (``values``), ``loglik``/``deviance`` there, and the crossings of
        the χ²₁(level) threshold (``lower``, ``upper``; ``wald`` for comparison).

        Each point is a re-fit with ``name`` held (all points share one compiled
        program; each starts from its neighbour's solution). ``name`` is a flat name
        (``"sigma"``, ``"beta[1]"``) of a parameter with an elementwise constraint.
        """
        return feature("profile")(self, name, level, n_points)

    def delta(self, fn: Any, level: float = 0.95) -> Any:
        """Delta method for ``fn(params)`` (any JAX function, scalar or array output):
        estimate, SE, covariance ``G cov Gᵀ`` with the exact Jacobian G (autodiff),
        and Wald intervals; see :class:`~jaxmle.inference.delta.DeltaResult`."""
        return feature("delta")(self, fn, level)

    def bootstrap(self, simulate: Any, n: int = 2000, *, key: Any = None, level: float = 0.95,
                  chunk_size: int | None = None, progress: bool | None = None,
                  distributed: bool = False) -> Any:
        """Parametric bootstrap: ``n`` datasets ``simulate(params, key)`` drawn at θ̂,
        refitted in one batched call (``fit_batch``'s program). Returns a
        :class:`~jaxmle.inference.bootstrap.BootstrapResult`: bootstrap SEs, percentile
        intervals, bias, and the number of refits that failed (left out).
        ``distributed=True`` (every process of a ``jax.distributed`` program calls it):
        each process draws and refits its part of the replicates, each replicate from
        its own key of ``jax.random.split(key, n)`` (the union is the one-process
        bootstrap), and every process gets the whole result."""
        return feature("bootstrap")(self, simulate, n, key=key, level=level, chunk_size=chunk_size,
                         progress=progress, distributed=distributed)

    def laplace(self) -> Any:
        """The Laplace approximation of the posterior of a MAP fit: a Gaussian in the
        unconstrained coordinates at the mode of their posterior (Jacobian included),
        with ``sample(key, n)`` (draws in the natural space) and ``log_evidence`` (the
        Laplace estimate of the log marginal likelihood); see
        :class:`~jaxmle.inference.laplace.LaplaceApproximation`."""
        return feature("laplace")(self)

    def flat_params(self) -> np.ndarray:
        """Estimates as one flat vector, in the order of ``param_names`` (fixed ones left out)."""
        flat = self.flat_params_all()
        if not self.fixed_names:
            return flat
        return flat[free_positions(self.params, self.fixed_names)]

    def flat_params_all(self) -> np.ndarray:
        """All parameters (estimated and fixed) as one flat vector, in pytree order."""
        return flat_values(self.params)

    def summary(self, level: float = 0.95, method: str = "wald", *, ci: str | None = None) -> Any:
        """A printable table like statsmodels': estimate, std err, z, P>|z|, CI.

        ``method`` chooses the intervals as in :meth:`confint`: ``"wald"`` or ``"profile"``
        (profile-likelihood intervals). ``ci`` is an older name of ``method``.
        """
        return feature("summary")(self, level, method if ci is None else ci)

    @property
    def zvalues(self) -> Any:
        """Wald z = estimate / SE as a pytree shaped like ``params`` (numpy; NaN where the
        SE is NaN or 0: fixed parameters, singular directions). Batched fits: leading axis."""
        return _export().zvalues(self.params, self.stderr)

    @property
    def tvalues(self) -> Any:
        """Alias of :attr:`zvalues` (statsmodels' name; the reference is the normal)."""
        return self.zvalues

    @property
    def pvalues(self) -> Any:
        """Two-sided Wald p-values 2(1 − Φ(|z|)), a pytree shaped like ``params`` (NaN
        where ``zvalues`` is NaN)."""
        return _export().pvalues(self.params, self.stderr)

    def to_dict(self, level: float = 0.95) -> dict[str, Any]:
        """The fit as plain Python (str, int, float, bool, None, lists, dicts), so that
        ``json.dumps(res.to_dict(), allow_nan=False)`` works; NaN and ±inf become None.

        Keys: ``kind``, ``method``, ``cov_type``, ``dtype``, ``param_names`` (estimated),
        ``fixed_names``, ``params`` and ``stderr`` (shaped like ``params``: dicts of
        numbers and nested lists), ``level``, ``estimates`` (``{flat name: {estimate,
        stderr, z, pvalue, ci_lower, ci_upper, fixed}}``, Wald at ``level``, fixed
        parameters included), ``cov`` (nested lists, rows and columns ``param_names``),
        ``loglik``, ``logpost``, ``aic``, ``bic``, ``nobs``, ``n_free``, ``n_groups``,
        ``converged``, ``status`` (code), ``status_label``, ``n_iter``, ``grad_norm``,
        ``singular`` (names), ``priors`` (labels), ``versions``; and where present
        ``starts``, ``deterministic``/``deterministic_stderr``, ``random``/
        ``random_stderr``/``random_cond_stderr``/``random_info``."""
        return _export().fit_to_dict(self, level)

    def to_dataframe(self, level: float = 0.95, include_fixed: bool = True) -> Any:
        """One row per flat parameter (index ``name``; needs pandas): ``estimate``,
        ``stderr``, ``z``, ``pvalue``, ``ci_lower``, ``ci_upper`` (Wald at ``level``) and
        ``fixed`` (fixed parameters have NaN inference; ``include_fixed=False`` drops them)."""
        return _export().fit_to_dataframe(self, level, include_fixed)

    def __repr__(self) -> str:
        try:
            est = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.param_names, self.flat_params()))
            return (f"FitResult({self.kind}, {self.method}: {est}; loglik={float(self.loglik):.6g}, "
                    f"converged={bool(self.converged)})")
        except TypeError:  # batched or traced arrays
            return f"FitResult({self.kind}, {self.method}, params={self.params!r})"

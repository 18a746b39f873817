"""``jm.fit``: host-side validation, one compiled kernel per problem structure, reporting.

The kernel (objective → solver → inference → :class:`FitResult`) is a pure
function of the traced arguments ``(data, init, weights, tol, max_iter)``; the
log-likelihood, the parameter space (pytree structure, shapes, constraints),
the method and the dtype are static. A second fit with the same log-likelihood
and same-shaped inputs therefore reuses the compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _objective, _params, _solvers, _transforms
from ._inference import flat_direction, observed_inference
from ._result import FitResult, FitStats
from ._typing import (
    STATUS_MESSAGES,
    ConvergenceWarning,
    LogLikFn,
    PrecisionWarning,
    SingularInformationWarning,
    Status,
    user_stacklevel,
)

AUTO_NEWTON_MAX_PARAMS = 200
_DEFAULT_MAX_ITER = {"newton": 2000, "lbfgs": 10000}


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Everything static about a fit: the key of the compiled-program cache."""

    loglik: Callable
    space: _transforms.ParamSpace
    method: Any
    has_weights: bool
    dtype: str


def initial_z(config: KernelConfig, init_leaves: list[jax.Array]) -> jax.Array:
    """The start in the unconstrained coordinates."""
    dtype = jnp.dtype(config.dtype)
    return config.space.to_unconstrained([jnp.asarray(x, dtype) for x in init_leaves])


def kernel_solver(config: KernelConfig, data: Any, weights: jax.Array | None,
                  tol: jax.Array) -> _solvers.Solver:
    """The solver's init/step pair for f(z) = −ℓ(θ(z)) on (padding-masked) data."""
    objective = _objective.make_objective(config.loglik, config.space.to_natural, data, weights,
                                          jnp.dtype(config.dtype))
    return _solvers.make_solver(config.method, objective, tol)


def conclude(config: KernelConfig, data: Any, weights: jax.Array | None,
             final: _solvers.State) -> FitResult:
    """The inference at the solver's final state, as a :class:`FitResult`."""
    space, dtype = config.space, jnp.dtype(config.dtype)
    objective = _objective.make_objective(config.loglik, space.to_natural, data, weights, dtype)
    sol = _solvers.solution(final)
    hess = sol.hess if sol.hess is not None else _solvers.value_grad_hessian(objective, sol.z)[2]

    def loglik_flat(theta):
        return _objective.total_loglik(config.loglik, space.unravel_natural(theta), data, weights,
                                       dtype)[0]

    eig = _solvers.eigen(hess)
    inf = observed_inference(space, loglik_flat, sol.z, hess, sol.g, eig)
    # a "converged" point where the likelihood is flat 3 SEs away is no regular maximum
    flat = (sol.status == Status.SUCCESS) & flat_direction(objective, sol.z, sol.f, eig)
    status = jnp.where(flat, Status.FLAT, sol.status).astype(jnp.int32)
    params = space.to_natural(sol.z)
    nobs = _objective.count_observations(config.loglik, params, data, weights, dtype)
    loglik = -sol.f
    return FitResult(
        params=params,
        stderr=space.unravel_natural(inf.stderr),
        score=space.unravel_natural(inf.score),
        cov=inf.cov,
        fisher_info=inf.fisher_info,
        loglik=loglik,
        logpost=loglik,
        converged=status == Status.SUCCESS,
        status=status,
        n_iter=sol.n_iter,
        grad_norm=jnp.max(jnp.abs(sol.g), initial=0.0),
        nobs=nobs,
        stats=FitStats(sol.n_rejected, inf.info_eigvals, inf.singular, sol.z, sol.g),
        param_names=space.names,
        method=method_name(config.method),
        n_free=space.m,
        dtype=config.dtype,
    )


def fit_kernel(config: KernelConfig, data: Any, init_leaves: list[jax.Array],
               weights: jax.Array | None, tol: jax.Array, max_iter: jax.Array) -> FitResult:
    """The pure fit: minimise −ℓ(θ(z)) and compute the inference at the optimum.

    ``fit_batch`` runs the same three pieces (``kernel_solver(...).init``, ``.step``
    and :func:`conclude`), with the loop over iterations written for the batch.
    """
    data = _objective.mask_padding(data, weights)
    solver = kernel_solver(config, data, weights, tol)
    final = _solvers.iterate(solver.step, solver.init(initial_z(config, init_leaves)), max_iter)
    return conclude(config, data, weights, final)


@functools.lru_cache(maxsize=128)
def compiled_kernel(config: KernelConfig) -> Callable[..., FitResult]:
    """The jitted kernel for one static configuration (cached: no recompilation)."""
    return jax.jit(functools.partial(fit_kernel, config))


def method_name(method: Any) -> str:
    if isinstance(method, str):
        return method
    return f"optax:{type(method).__name__}"


def resolve_method(method: Any, n_free: int) -> Any:
    """``"auto"`` → Newton for up to 200 free parameters, else L-BFGS; validate the rest."""
    if method == "auto":
        return "newton" if n_free <= AUTO_NEWTON_MAX_PARAMS else "lbfgs"
    if method in ("newton", "lbfgs", "adam") or isinstance(method, optax.GradientTransformation):
        return method
    raise ValueError(
        f"unknown method {method!r}: use 'auto', 'newton', 'lbfgs', 'adam' or an "
        "optax.GradientTransformation"
    )


def float_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def _is_number_list(x: Any) -> bool:
    """A (nested) list of numbers, which stands for an array, not a pytree node."""
    return isinstance(x, list) and bool(x) and all(
        isinstance(e, (int, float, np.number)) or _is_number_list(e) for e in x)


def prepare_init(init: Any, dtype: np.dtype):
    """Flatten ``init`` into float arrays; names in pytree order."""
    if init is None:
        raise ValueError("init is required: a dict (or pytree) of starting values")
    init = jax.tree_util.tree_map(np.asarray, init, is_leaf=_is_number_list)
    leaves, treedef = jax.tree_util.tree_flatten(init)
    if not leaves:
        raise ValueError("init has no parameters")
    names = _params.leaf_names(init)
    arrays = []
    for name, leaf in zip(names, leaves):
        arr = np.asarray(leaf)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"init for parameter '{name}' must be real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"init for parameter '{name}' is not finite: {arr!r}")
        arrays.append(np.asarray(arr, dtype))  # numpy: one transfer at the kernel call
    return arrays, treedef, names


def _reject_unavailable(priors, fixed, random, cov_type) -> None:
    for name, value in (("priors", priors), ("fixed", fixed), ("random", random)):
        if value:
            raise NotImplementedError(f"{name}= is not available in this version of jaxmle yet")
    if cov_type != "observed":
        if cov_type in ("opg", "sandwich"):
            raise NotImplementedError(f"cov_type={cov_type!r} is not available yet; use 'observed'")
        raise ValueError(f"unknown cov_type {cov_type!r}: use 'observed', 'opg' or 'sandwich'")


def fit(
    loglik: LogLikFn,
    data: Any,
    init: Any,
    *,
    constraints: Mapping[str, Any] | None = None,
    priors: Mapping[str, Any] | None = None,
    method: Any = "auto",
    weights: Any = None,
    cov_type: str = "observed",
    fixed: Mapping[str, Any] | None = None,
    random: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    n_starts: int = 1,
    key: Any = None,
    start_scale: float = 1.0,
) -> FitResult:
    r"""Maximum-likelihood fit of ``loglik(params, data)``.

    Maximises ℓ(θ) = Σᵢ wᵢ ℓᵢ(θ) (or the scalar the function returns) over the
    natural parameters θ, working in unconstrained coordinates z with
    θ = biject_to(constraint)(z), and computes the observed information and
    ``cov = J H_z⁻¹ Jᵀ`` at the optimum, all in one compiled program.

    Parameters
    ----------
    loglik : callable
        ``loglik(params, data)`` written in JAX, returning a scalar total or a 1-D
        vector of per-observation log-likelihoods.
    data : pytree of arrays
        Passed to ``loglik`` unchanged (traced: new data of the same shapes does
        not recompile). Must be finite.
    init : pytree
        Starting values; its structure is the structure of ``params``.
    constraints : dict, optional
        ``{name: numpyro.distributions.constraints.*}``; default ``real``.
    method : {"auto", "newton", "lbfgs", "adam"} or optax.GradientTransformation
        ``"auto"``: Newton (exact Hessian, trust region) for up to 200 free
        parameters, else L-BFGS.
    weights : array, optional
        Per-observation weights multiplying the terms (0 masks padding); ``nobs``
        is their sum.
    tol : float, optional
        Convergence tolerance (default 1e-8 in float64, 1e-5 in float32), see
        :mod:`jaxmle._solvers`.
    max_iter : int, optional
        Iteration limit (default 2000 for Newton, 10000 for L-BFGS, 20000 else); each
        Newton iteration is one evaluation of f, ∇f and ∇²f (a rejected trial counts).
    n_starts : int, optional
        Multi-start for likelihoods with several local maxima: fit from ``init`` and
        ``n_starts − 1`` random starts z₀ + s·(1 + |z₀|)·ε (ε ~ N(0, I) in the
        unconstrained coordinates, s = ``start_scale``) as one batch, and return
        the converged fit with the highest log-likelihood; ``res.starts`` and the
        summary report how many starts reached it.
    key : jax.random.PRNGKey, optional
        Random key for the starts (default ``PRNGKey(0)``: reproducible).
    start_scale : float, optional
        Spread s of the random starts (default 1.0).

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError, TypeError
        For NaN/inf data, bad shapes, unknown constraint names, an init outside its
        constraint, or a log-likelihood that is not finite at ``init``.

    Warns
    -----
    ConvergenceWarning
        The optimiser stopped without converging (``converged`` is False).
    SingularInformationWarning
        The information matrix is singular / not positive definite; the
        parameters involved get NaN standard errors.

    Examples
    --------
    >>> import jaxmle as jm, numpyro.distributions as dist
    >>> from numpyro.distributions import constraints
    >>> x = [160., 162., 165., 167., 170., 172., 175., 177., 180., 182.]
    >>> res = jm.fit(lambda p, x: dist.Normal(p["mu"], p["sigma"]).log_prob(x), x,
    ...              init={"mu": 150.0, "sigma": 5.0},
    ...              constraints={"sigma": constraints.positive})
    >>> round(float(res.params["mu"]), 6), round(float(res.params["sigma"]) ** 2, 6)
    (171.0, 51.0)
    """
    _reject_unavailable(priors, fixed, random, cov_type)
    dtype = float_dtype()
    data = _objective.prepare_data(data)
    init_leaves, treedef, names = prepare_init(init, dtype)
    space = _transforms.build_space(init_leaves, names, treedef, constraints)
    _transforms.check_init(space, init_leaves)
    method = resolve_method(method, space.m)
    w = _objective.prepare_weights(weights, dtype)
    tol, max_iter = resolve_tolerances(tol, max_iter, method, dtype)
    config = KernelConfig(loglik, space, method, w is not None, dtype.name)
    if n_starts != 1:
        if int(n_starts) != n_starts or n_starts < 1:
            raise ValueError(f"n_starts must be a positive integer, got {n_starts}")
        if not start_scale > 0:
            raise ValueError(f"start_scale must be positive, got {start_scale}")
        from ._multistart import fit_multistart

        res = fit_multistart(config, data, init_leaves, w, tol, max_iter, int(n_starts), key,
                             float(start_scale))
    else:
        res = compiled_kernel(config)(data, init_leaves, w, tol, max_iter)
    report(res, space)
    return res


def resolve_tolerances(tol, max_iter, method, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``tol`` (default 1e-8 in float64, 1e-5 in float32) and ``max_iter`` (by method)."""
    tol = (1e-8 if dtype == np.float64 else 1e-5) if tol is None else tol
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    max_iter = _DEFAULT_MAX_ITER.get(method, 20000) if max_iter is None else int(max_iter)
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    return np.asarray(tol, dtype), np.asarray(max_iter, np.int32)


def report(res: FitResult, space: _transforms.ParamSpace) -> None:
    """Raise for a non-finite start; warn for non-convergence and singular information."""
    status_code, singular, eig = jax.device_get(
        (res.status, res.stats.singular, res.stats.info_eigvals))
    status = Status(int(status_code))
    if status == Status.NONFINITE_START:
        raise ValueError(_nonfinite_start_message(res, space))
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


def _nonfinite_start_message(res: FitResult, space: _transforms.ParamSpace) -> str:
    f0 = float(res.loglik)  # the kernel reports the values at init for a bad start
    if not np.isfinite(f0):
        return (f"the log-likelihood is {f0} at init; check that init is plausible for the data "
                "(e.g. data outside the support of the distribution at these parameters)")
    bad = np.asarray(~np.isfinite(res.stats.grad_z))
    names = sorted({n for n, b in zip(space.unc_names, bad) if b})
    return (f"the gradient (or second derivative) of the log-likelihood is not finite at init "
            f"for parameter(s) {names}: the log-likelihood is not twice differentiable there "
            "(e.g. x**k at x = 0, sqrt or abs at 0); start elsewhere or rewrite that term")

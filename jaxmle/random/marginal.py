r"""Random effects by the Laplace approximation: ``jm.fit(..., random=["b"])``.

``loglik(params, data)`` is the *joint* log-density ℓ(θ, u) of the data and the
random effects u (the leaves named in ``random``). The fit maximises the
Laplace approximation of the marginal log-likelihood

    L(θ) = ℓ(θ, û) + (q/2)·log 2π − ½·log det(−∇²ᵤℓ(θ, û)),   û(θ) = argmaxᵤ ℓ(θ, u),

over θ (everything else). The marginal is itself a log-likelihood function of
θ, :class:`MarginalLogLik` (hashable: same problem → same compiled program), so
the ordinary fit machinery runs on it unchanged: ``fixed=``, profiles, ``lrt``,
AIC/BIC, ``fit_batch``. Its gradient and Hessian are exact (autodiff through
the implicit derivative of û, :mod:`jaxmle.random.inner`). Naming the fixed
effects with the role ``"flat"`` (``random={"b": "random", "beta": "flat"}``, no
density term for them in ℓ) integrates them out under a flat prior as well: REML.
Such leaves are recorded in :class:`RandomInfo` (``flat``); the summary says REML
and shows them (their conditional mode given θ̂, the GLS estimate in a linear mixed
model, with its conditional SE), and AIC/BIC count them as parameters, as lme4
does (``n_free`` includes them).

Afterwards û(θ̂) is reported with standard errors as TMB's ``sdreport``:
Var(û) = (−Hᵤᵤ)⁻¹ + J·Cov(θ̂)·Jᵀ, J = dû/dθ (and the conditional part alone).

Sequence of ``fit_random``: small probe programs at (θ₀, u₀) choose the structure
(:mod:`jaxmle.random.structure`: block-diagonal, block-tridiagonal, dense); one compiled
inner program finds û(θ₀) there, the start of every inner solve (u's start travels in
the marginal's data, so it is traced); the ordinary ``jm.fit`` maximises L; the same
inner program at θ̂ gives the predictions and probes the structure again (a coupling
seen only there → a refit with the next structure); finally a variance component flat
up to its edge is reported on it."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxmle.core.objective import check_loglik
from jaxmle.core.params import free_positions, is_number_list
from jaxmle.core.space import is_real_line
from jaxmle.core.typing import ConvergenceWarning, SingularInformationWarning, user_stacklevel
from jaxmle.fitting.ahead import compile_ahead, wait
from jaxmle.fitting.batch import fit_batch
from jaxmle.fitting.data import prepare_data
from jaxmle.fitting.kernel import float_dtype
from jaxmle.fitting.single import fit
from jaxmle.random.boundary import BoundaryWarning, _boundary  # noqa: F401  (re-exported)
from jaxmle.random.conditional import batch_members, conditional, refit_holding
from jaxmle.random.inner import (
    Layout,
    block_inverse_diag,
    chol_solve,
    cholesky,
    grad_and_blocks,
    joint,
    laplace,
    solve_mode,
)
import jaxmle.random.structure as _structure
from jaxmle.random.structure import RandomInfo
from jaxmle.results.result import FitResult


@dataclasses.dataclass(frozen=True)
class MarginalLogLik:
    """L(θ) of a joint log-density ``loglik`` with the ``layout``'s leaves integrated out.

    Called as ``marginal(theta, augment(data, u0))``: u0 (the random leaves'
    starting values) travels with the data, so it is traced, batched by
    ``fit_batch``, and every inner solve starts there.
    """

    jaxmle_checked = True   # fit() checks the user's joint log-density, not this wrapper
    jaxmle_costly = True    # each evaluation is an inner optimisation (see fitting/host.py)

    loglik: Callable
    layout: Layout

    def __call__(self, theta: dict, data: Any) -> jax.Array:
        data, u0 = data["data"], data["u0"]
        return laplace(self.loglik, self.layout, theta, data, self.layout.pack(u0))[0]


@functools.lru_cache(maxsize=256)
def marginal_for(loglik: Callable, layout: Layout) -> MarginalLogLik:
    """One MarginalLogLik object per problem (``jm.lrt`` checks nesting by identity)."""
    return MarginalLogLik(loglik, layout)


@dataclasses.dataclass(frozen=True)
class MarginalPrior:
    """A joint log prior ``log_prior(theta, data)`` (``priors=`` callable) of a random-effects
    fit, called with the user's data: the marginal's data also carries u's start."""

    function: Callable

    @property
    def labels(self) -> tuple[str, ...]:
        name = getattr(self.function, "__name__", type(self.function).__name__)
        return tuple(getattr(self.function, "labels", None) or (f"log prior: {name}",))

    def __call__(self, theta: dict, data: Any) -> jax.Array:
        return self.function(theta, data["data"])


def _user_data_priors(kwargs: dict) -> dict:
    """``priors=`` for the marginal fit: a callable prior gets the user's data."""
    priors = kwargs.get("priors")
    if callable(priors) and not isinstance(priors, (Mapping, MarginalPrior)):
        kwargs = dict(kwargs, priors=MarginalPrior(priors))
    return kwargs


def augment(data: Any, u0: dict) -> dict:
    """The marginal's data: the user's data and u's start (a dict: the fit's data
    checks and ``fit_batch``'s batching see plain pytree leaves)."""
    return {"data": data, "u0": u0}


ROLES = ("random", "flat")


def parse_random(random: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``random=``: a name, a list of names, or ``{name: "random" | "flat"}``. Returns
    every name to integrate out and those with a flat prior (REML's fixed effects)."""
    if isinstance(random, str):
        return (random,), ()
    if isinstance(random, Mapping):
        bad = {n: r for n, r in random.items() if not (isinstance(r, str) and r in ROLES)}
        if bad:
            raise ValueError(f"random= roles must be 'random' (a random effect whose density is "
                             f"in loglik) or 'flat' (a fixed effect integrated out under a flat "
                             f"prior: REML); got {bad}")
        return tuple(random), tuple(n for n, r in random.items() if r == "flat")
    return tuple(random), ()


def with_info(res: Any, info: RandomInfo) -> Any:
    """A FitResult (single or batched) labelled with ``info``; under REML, ``n_free``
    (AIC/BIC) also counts the fixed effects integrated out, as lme4 does."""
    return dataclasses.replace(res, random_info=info, n_free=res.n_free + info.n_flat)


# --------------------------------------------------------------------------- host side


def split_init(init: Any, random: Any,
               constraints: Any) -> tuple[tuple[str, ...], tuple[str, ...], dict, dict]:
    """The random leaves' names, the flat (REML) ones, θ's init, and u's init."""
    names, flat = parse_random(random)
    if not isinstance(init, dict):
        raise TypeError("random= needs init to be a dict whose keys include the random leaves")
    unknown = [n for n in names if n not in init]
    if unknown:
        raise ValueError(f"random names {unknown} are not keys of init ({list(init)})")
    if len(set(names)) != len(names):
        raise ValueError(f"random names repeat: {list(names)}")
    constrained = [n for n in names if constraints and n in constraints
                   and not is_real_line(constraints[n])]
    if constrained:
        raise ValueError(f"random effects {constrained} must be unconstrained (real): integrate "
                         "out an unconstrained parameterisation instead")
    theta = {k: v for k, v in init.items() if k not in names}
    if not theta:
        raise ValueError("random= names every parameter: at least one must be estimated")
    return names, flat, theta, {n: init[n] for n in names}


def _reject(weights, cov_type, groups) -> None:
    if weights is not None:
        raise NotImplementedError("weights= is not available with random= (the marginal "
                                  "likelihood is not a sum of per-observation terms)")
    if cov_type != "observed" or groups is not None:
        raise NotImplementedError("random= supports cov_type='observed' only (the marginal "
                                  "likelihood has no per-observation scores)")


def fit_random(loglik: Callable, data: Any, init: Any, *, random: Any,
               constraints: Any = None, method: Any = "auto", weights: Any = None,
               cov_type: str = "observed", groups: Any = None, **kwargs) -> FitResult:
    """``jm.fit`` with ``random=``: the Laplace marginal fit, then the predictions."""

    _reject(weights, cov_type, groups)
    kwargs = _user_data_priors(kwargs)
    dtype = float_dtype()
    names, flat, theta0, u0 = split_init(init, random, constraints)
    constraints = {k: v for k, v in (constraints or {}).items() if k not in names} or None
    u0 = {n: np.asarray(v, dtype) for n, v in u0.items()}
    data = prepare_data(data)
    check_loglik(loglik, jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), init,
                                                is_leaf=is_number_list), data)
    theta_j = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), theta0)
    shapes = tuple(u0[n].shape for n in names)
    layout, u_start = _start(loglik, names, shapes, theta_j, data, u0, flat)
    while True:   # block-diagonal → block-tridiagonal → dense, as the probe at θ̂ says
        res, caught = _fit_marginal(fit, marginal_for(loglik, layout), data, u_start, theta0,
                                    constraints, method, kwargs)
        pred = _predict_kernel(marginal_for(loglik, layout))(res.params, augment(data, u_start))
        if layout.n_groups == 1 or _structure.holds(pred[3]):
            break
        layout = _structure.next_structure(layout)
        warnings.warn("the random effects' groups are coupled at the estimate beyond what "
                      "the probe saw at the start: refitting with a "
                      f"{_structure.describe(layout)} inner Hessian", UserWarning,
                      stacklevel=user_stacklevel())
    # re-fits (profiles, bootstrap) start from init's u; fits of the same data compare equal
    res = dataclasses.replace(res, context=dataclasses.replace(
        res.context, data=augment(res.context.data["data"], u0)))
    res = _with_predictions(res, pred)
    before = res
    res, boundary, hold = _boundary(res)
    if boundary:
        # the others' estimates and SEs are those of the model with the boundary at its edge
        marginal = marginal_for(loglik, layout)
        predict = lambda r: _with_predictions(  # noqa: E731
            r, _predict_kernel(marginal)(r.params, augment(data, u_start)))
        res = conditional(res, hold, boundary, refit_holding(
            fit, marginal, augment(data, u_start), before, constraints, method, kwargs,
            predict))
    explained = (SingularInformationWarning, ConvergenceWarning) if boundary else ()
    for w in caught:  # the marginal fit's warnings, less those the boundary explains
        if not issubclass(w.category, explained):
            warnings.warn(w.message, w.category, stacklevel=user_stacklevel())
    info = _structure.info(layout, boundary, flat)
    return with_info(res, info)


def _batch_boundary(bres: Any, marginal: Any, constraints: Any, method: Any, kwargs: dict):
    """Members on the boundary reported as ``jm.fit`` reports them (each member carries
    its own data; :func:`jaxmle.random.conditional.batch_members`)."""
    single = {k: v for k, v in kwargs.items()
              if k not in ("chunk_size", "batched_init", "progress", "devices")}

    def conditional_of(res, before, names, hold):
        return conditional(res, hold, names, refit_holding(
            fit, marginal, before.context.data, before, constraints, method, single,
            lambda r: r))

    bres, found = batch_members(bres, _boundary, conditional_of)
    hit = sorted({n for names in found for n in names})
    if hit:
        warnings.warn(
            f"{sum(1 for f in found if f)} of {len(found)} fits have {', '.join(hit)} on the "
            "boundary of the parameter space (the marginal likelihood flat up to the edge): "
            "reported at the edge with NaN standard error, the other parameters as the model "
            "with it there gives them (as jm.fit reports each)", BoundaryWarning,
            stacklevel=user_stacklevel())
    return bres


def _start(loglik: Callable, names: tuple, shapes: tuple, theta: dict, data: Any, u0: dict,
           flat: tuple = ()):
    """The layout the probe at (θ₀, u₀) confirms (:func:`~jaxmle.random.structure.choose_layout`:
    small probe programs, so no inner program is compiled for a structure the probe
    rejects), and the inner solves' start: û(θ₀) when it was found (the same compiled
    program later gives the predictions at θ̂)."""
    likely = _structure.candidate_layout(names, shapes, flat)
    # the likely structure's inner program compiles (on a worker thread) while the probe
    # runs: for independent groups, the common case, the probe costs no time
    pending = compile_ahead(_predict_kernel(marginal_for(loglik, likely)), theta,
                            augment(data, u0)) if likely.n_groups > 1 else None
    layout = _structure.choose_layout(loglik, names, shapes, theta, data, u0, flat)
    if layout == likely:
        wait(pending)
    out = _predict_kernel(marginal_for(loglik, layout))(theta, augment(data, u0))
    U = np.asarray(out[0])
    if not np.all(np.isfinite(U)):
        return layout, u0
    return layout, {n: np.asarray(v) for n, v in layout.unpack(jnp.asarray(U)).items()}


def _fit_marginal(fit, marginal, data, u0, theta0, constraints, method, kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit(marginal, augment(data, u0), theta0, constraints=constraints, method=method,
                  **kwargs)
    return res, caught


# --------------------------------------------------------------------------- predictions


@functools.lru_cache(maxsize=64)
def _predict_kernel(marginal: MarginalLogLik) -> Callable:
    """(θ, augmented data) ↦ û, diag (−Hᵤᵤ)⁻¹, J = dû/dθ (all natural elements), and the
    structure probe's residual at û (one program for the start and the end)."""
    def run(theta, data_aug):
        data, u0 = data_aug["data"], data_aug["u0"]
        flat, unravel = ravel_pytree(theta)

        def ell(V, x=flat):
            return joint(marginal.loglik, marginal.layout, unravel(x), V, data)

        U0 = marginal.layout.pack(u0)
        band = marginal.layout.structure
        U = solve_mode(ell, U0, band)
        _, blocks = grad_and_blocks(ell, U, band)
        chol = cholesky(blocks)
        # J = dû/dθ = (−Hᵤᵤ)⁻¹ ∂θ∇ᵤℓ, one column per natural element of θ
        cross = jax.jacfwd(lambda x: jax.grad(ell)(U, x))(flat)          # (G, K, k)
        J = jax.vmap(lambda c: chol_solve(chol, c), in_axes=-1, out_axes=-1)(cross)
        resid = _structure.probe_residual(ell, U, blocks) if marginal.layout.n_groups > 1 \
            else jnp.zeros((), U.dtype)
        return U, block_inverse_diag(chol), J, resid

    return jax.jit(run)


def _with_predictions(res: FitResult, pred) -> FitResult:
    """û, its conditional SEs and its sdreport SEs, (−Hᵤᵤ)⁻¹ + J·cov·Jᵀ, into the result."""
    layout = res.context.config.loglik.layout
    U, cond_var, J = (np.asarray(x) for x in jax.device_get(pred[:3]))
    J = J.reshape((U.size, -1))[:, free_positions(res.params, res.fixed_names)]
    cov = np.asarray(res.cov)
    total_var = cond_var + np.einsum("ni,ij,nj->n", J, cov, J).reshape(U.shape)

    def leaves(M):
        return {n: np.asarray(v) for n, v in layout.unpack(jnp.asarray(M)).items()}

    return dataclasses.replace(res, random=leaves(U), random_stderr=leaves(np.sqrt(total_var)),
                               random_cond_stderr=leaves(np.sqrt(cond_var)))


# --------------------------------------------------------------------------- fit_batch


def fit_batch_random(loglik: Callable, data: Any, init: Any, *, random: Any,
                     constraints: Any = None, method: Any = "auto", weights: Any = None,
                     cov_type: str = "observed", groups: Any = None,
                     batched_init: bool | None = None, **kwargs):
    """``jm.fit_batch`` with ``random=``: the marginal fits of B datasets (θ only).

    The structure is probed on the first dataset; u's start (from ``init``) is
    shared, or per dataset with ``batched_init``. The random effects' predictions
    are not computed for a batch (refit a member with ``jm.fit`` for them).
    """

    _reject(weights, cov_type, groups)
    kwargs = _user_data_priors(kwargs)
    dtype = float_dtype()
    names, flat, theta0, u0 = split_init(init, random, constraints)
    constraints = {k: v for k, v in (constraints or {}).items() if k not in names} or None
    n_batch = int(np.shape(jax.tree_util.tree_leaves(data)[0])[0])
    if batched_init is None:
        batched_init = all(np.ndim(x) >= 1 and np.shape(x)[0] == n_batch
                           for x in jax.tree_util.tree_leaves(init))
    u0 = {n: np.asarray(v, dtype) for n, v in u0.items()}
    if not batched_init:
        u0 = {n: np.broadcast_to(v, (n_batch,) + v.shape).copy() for n, v in u0.items()}
    first = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], (data, u0, theta0) if batched_init
                                   else (data, u0))
    theta_1 = first[2] if batched_init else theta0
    theta_j = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), theta_1)
    shapes = tuple(first[1][n].shape for n in names)
    layout = _structure.choose_layout(loglik, names, shapes, theta_j, first[0], first[1], flat)
    marginal = marginal_for(loglik, layout)
    bres = fit_batch(marginal, augment(data, u0), theta0,
                     constraints=constraints, method=method, batched_init=batched_init, **kwargs)
    bres = _batch_boundary(bres, marginal, constraints, method, kwargs)
    if not flat:
        return bres
    info = _structure.info(layout, (), flat)
    return with_info(bres, info)

"""The fit kernel: one compiled program per problem structure, and the host-side
checks around it.

The kernel (objective → solver → inference → :class:`FitResult`) is a pure
function of the traced arguments ``(data, init, weights, tol, max_iter)``; the
log-likelihood, the parameter space (pytree structure, shapes, constraints),
the method and the dtype are static (:class:`KernelConfig`). A second fit with the
same log-likelihood and same-shaped inputs therefore reuses the compiled program.
``jm.fit`` (:mod:`jaxmle.fitting.single`), ``fit_batch``, multi-start, profiles and the
bootstrap all run these pieces.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.core.refine as _refine
import jaxmle.core.solvers as _solvers
import jaxmle.core.space as _space
from jaxmle.core.covariance import (
    Transform,
    combine,
    score_outer_product,
    space_kind,
    transform_terms,
)
from jaxmle.core.held import Inputs, View, nothing_held, unravel_numpy
from jaxmle.core.priors import PriorSpec, log_prior
from jaxmle.core.typing import Status
from jaxmle.core.verdict import constrained_z, edge_step, probe_steps, verdict
from jaxmle.core.xp import namespace, rare
from jaxmle.fitting.options import (  # noqa: F401  (the host-side options, re-exported)
    AUTO_NEWTON_MAX_PARAMS,
    _check_options,
    constrained_leaves,
    float_dtype,
    prepare_init,
    resolve_method,
    resolve_tolerances,
)
from jaxmle.results.result import FitResult, FitStats


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Everything static about a fit: the key of the compiled-program cache."""

    loglik: Callable
    space: _space.ParamSpace
    method: Any
    has_weights: bool
    dtype: str
    cov_type: str = "observed"
    n_groups: int = 0               # clusters of the cluster-robust sandwich (0: none)
    prior: PriorSpec | None = None  # MAP: the priors (their parameters are traced)
    constant: tuple[int, ...] = ()  # leaves fixed on their boundary (core.held.constant_leaves)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FitContext:
    """What re-running a fit needs (profiles, bootstrap, nesting checks of ``lrt``).

    A pytree: the configuration is static metadata compared by value (two fits of one
    problem share a treedef, so ``jit`` does not retrace for the second), the rest is
    data. A batch result carries every part with the batch axis (shared parts are
    broadcast, see :func:`batched_context`), so ``bres[i]`` slices its member's own.
    """

    config: KernelConfig = dataclasses.field(metadata=dict(static=True))
    data: Any           # the user's data, as fitted
    weights: Any
    held: Any           # what is held fixed (:class:`~jaxmle.core.held.Held`: masks, values)
    groups: Any         # cluster codes, or None
    tol: Any
    max_iter: Any
    prior: Any = None   # the priors' parameters (``config.prior``), or None


def context_of(res: Any, purpose: str) -> FitContext:
    """The refit context of a result (``purpose``: what needs it, for the message)."""
    ctx = getattr(res, "context", None)
    if ctx is None:
        raise ValueError(f"this result carries no data to refit ({purpose} re-fits the model): "
                         "only results of jm.fit, jm.fit_batch (each member) and the functions "
                         "built on them do")
    if np.ndim(ctx.tol) != 0:
        raise ValueError(f"{purpose} works on one fit: take a member of the batch first "
                         "(bres[i])")
    return ctx


def batched_context(context: FitContext, n_batch: int, weights_batched: bool) -> FitContext:
    """``context`` with a leading axis ``n_batch`` on every array: the shared parts (held
    masks and values, groups, tolerances, priors' parameters; the weights where shared)
    are broadcast as read-only views (no copy)."""
    def spread(tree):
        return jax.tree_util.tree_map(
            lambda x: np.broadcast_to(np.asarray(x), (n_batch,) + np.shape(x)), tree)

    return dataclasses.replace(
        context,
        weights=context.weights if weights_batched else spread(context.weights),
        held=spread(context.held), groups=spread(context.groups), tol=spread(context.tol),
        max_iter=spread(context.max_iter), prior=spread(context.prior))


def initial_z(config: KernelConfig, init_leaves: list[jax.Array]) -> jax.Array:
    """The start in the unconstrained coordinates."""
    dtype = jnp.dtype(config.dtype)
    return config.space.to_unconstrained([jnp.asarray(x, dtype) for x in init_leaves])


def kernel_objective(config: KernelConfig, view: View, inputs: Any,
                     weights: jax.Array | None) -> Callable[[jax.Array], jax.Array]:
    """f(z) = −ℓ(θ(z)), or −ℓ(θ(z)) − log π(θ(z)) with priors (the smooth part of it:
    an L1 prior's |θ − m|/b is left to the proximal solver, see :func:`l1_weights`)."""
    dtype = jnp.dtype(config.dtype)
    neg_loglik = _objective.make_objective(config.loglik, view.to_natural, inputs.data, weights,
                                           dtype)
    if config.prior is None:
        return neg_loglik

    def neg_logpost(z):
        prior = log_prior(config.prior, inputs.prior, view.to_natural(z), inputs.data,
                          smooth_only=True)
        return neg_loglik(z) - prior.astype(dtype)

    return neg_logpost


def kernel_solver(config: KernelConfig, inputs: Any, weights: jax.Array | None,
                  tol: jax.Array) -> _solvers.Solver:
    """The solver's init/step pair for f(z) = −ℓ(θ(z)) (− log π) on (padding-masked) data
    (``inputs``: :class:`~jaxmle.core.held.Inputs`); held coordinates do not move."""
    view = View(config.space, inputs.held, config.constant)
    objective = kernel_objective(config, view, inputs, weights)
    if config.method == "prox-newton":
        from jaxmle.core.solvers.proximal import l1_weights, make_prox_solver

        return make_prox_solver(objective, *l1_weights(config, view, inputs), tol, inputs.held.z)
    return _solvers.make_solver(config.method, objective, tol, inputs.held.z)


class Point(NamedTuple):
    """The model's side of a fit's conclusion at ẑ (everything that needs ℓ)."""

    params: Any             # θ(ẑ), a tree
    loglik: jax.Array
    logpost: jax.Array
    nobs: jax.Array
    transform: Transform    # J at ẑ (:func:`~jaxmle.core.covariance.transform_terms`)
    f_probe: jax.Array      # f at ẑ + the end-of-fit probes (:mod:`jaxmle.core.verdict`)


def probe(sol: _solvers.Solution, hess: jax.Array, held_z: jax.Array):
    """The eigen-decomposition of the free block of H, what the end-of-fit verdict needs
    from the solver's side and its probe steps (:func:`~jaxmle.core.verdict.probe_steps`;
    no log-likelihood)."""
    eig = _solvers.eigen(hess, held_z)
    return (eig, *probe_eigen(sol, eig, held_z))


def probe_eigen(sol: _solvers.Solution, eig: Any, held_z: jax.Array):
    """:func:`probe` from the eigen-decomposition (:mod:`jaxmle.core.refine`'s, computed
    in a well-conditioned basis)."""
    return probe_steps(eig, sol.g, namespace(eig.values, held_z).sum(~held_z))


def model_point(config: KernelConfig, view: View, inputs: Any, weights: jax.Array | None,
                z: jax.Array, step: jax.Array | None, from_solver: bool = False) -> Point:
    """θ̂, ℓ, log π, the observation count and J at ẑ, and f at ẑ + each row of ``step``
    and one unit further towards the edge (:func:`~jaxmle.core.verdict.edge_step`; +inf
    when no coordinate is near one). ``step=None``: no probes (the host driver evaluates
    them with the model's f/∇f/∇²f program instead: nothing more to compile).
    ``from_solver`` (:func:`loglik_from_solver`): no ℓ; the slots hold log π's smooth part
    and log π (0 without priors) for :func:`assemble`."""
    dtype, data = jnp.dtype(config.dtype), inputs.data
    objective = kernel_objective(config, view, inputs, weights)
    params = view.to_natural(z)
    nobs = _objective.count_observations(config.loglik, params, data, weights, dtype)
    if from_solver:
        loglik, logpost = (jnp.zeros((), dtype) if config.prior is None else log_prior(
            config.prior, inputs.prior, params, data, smooth_only=smooth).astype(dtype)
            for smooth in (True, False))
    else:
        loglik = _objective.total_loglik(config.loglik, params, data, weights, dtype)[0]
        logpost = loglik
        if config.prior is not None:
            logpost = loglik + log_prior(config.prior, inputs.prior, params, data)

    def loglik_flat(theta):   # ℓ (+ log π) of all k natural elements
        tree = view.unravel_natural(theta)
        f = _objective.total_loglik(config.loglik, tree, data, weights, dtype)[0]
        if config.prior is None:
            return f
        return f + log_prior(config.prior, inputs.prior, tree, data)

    f_probe = None
    if step is not None:
        edge = edge_step(z, constrained_z(config.space), inputs.held.z)

        def at_edge(z, edge, inputs, weights):
            view = View(config.space, inputs.held, config.constant)
            return kernel_objective(config, view, inputs, weights)(z + edge).astype(dtype)

        # the edge probe only where some coordinate is near an edge (+inf passes): a batch
        # evaluates it only when some member needs it
        f_edge = rare(jnp, jnp.any(edge != 0), at_edge,
                      lambda *_: jnp.asarray(jnp.inf, dtype), z, edge, inputs, weights)
        f_probe = jnp.concatenate([jax.vmap(objective)(z + step).astype(dtype), f_edge[None]])
    return Point(params, loglik, logpost, nobs, transform_terms(view, loglik_flat, z), f_probe)


def model_meat(config: KernelConfig, view: View, inputs: Any, weights: jax.Array | None,
               z: jax.Array) -> jax.Array:
    """The outer product of the per-observation scores (``cov_type`` opg / sandwich)."""
    dtype = jnp.dtype(config.dtype)

    def per_obs(z):
        return jnp.asarray(config.loglik(view.to_natural(z), inputs.data)).astype(dtype)

    return score_outer_product(per_obs, z, weights, inputs.groups, config.n_groups)


def infer(kind: str, cov_type: str, sol: _solvers.Solution, hess: jax.Array, eig: Any,
          regular: Any, transform: Transform, f_probe: jax.Array, held_z: jax.Array,
          meat: jax.Array | None, check_flat: bool = True, tol: Any = None):
    """The inference and the final status from the solver's and the model's parts
    (linear algebra only: one program serves every model of the same size). ``regular``:
    :func:`probe`'s :class:`~jaxmle.core.verdict.ProbeInfo`; a "converged" point that is
    no maximum gets the status that says why (:func:`~jaxmle.core.verdict.verdict`;
    ``tol`` for the optax methods: their exact decrement is checked too)."""
    inf = combine(kind, transform, held_z, hess, sol.g, eig, cov_type, meat)
    status = sol.status
    if check_flat:
        status = verdict(sol.status, regular, f_probe, sol.f, tol)
    return inf, status


def loglik_from_solver(config: KernelConfig) -> bool:
    """ℓ(ẑ) = −f(ẑ) − log π's smooth part, f from the Newton (or its polish) at ẑ: the
    conclusion leaves out that pass over the data (for a Laplace marginal, an inner solve)."""
    return config.method == "newton"


def assemble(config: KernelConfig, view: View, held: Any, sol: _solvers.Solution,
             point: Point, inf: Any, status: Any, xp: Any = jnp) -> FitResult:
    """The full-size :class:`FitResult` (every parameter; :func:`free_rows` takes out the
    held ones on the host, and :func:`with_fixed_scores` adds the fixed ones' scores, NaN
    here). ``xp``: ``jnp`` inside a program, ``numpy`` on the host (the same numbers)."""
    unravel = view.unravel_natural if xp is jnp else functools.partial(unravel_numpy, view)
    # a standard error of exactly 0 is no information (a transform saturated at the edge),
    # unless the constraint itself fixes the element
    void = (inf.stderr == 0) & ~held.nat
    if point.transform is not None and point.transform.constant is not None:
        void = void & ~point.transform.constant
    if loglik_from_solver(config):    # the slots hold log π's smooth part and log π
        loglik = -sol.f - point.loglik
        point = point._replace(loglik=loglik, logpost=loglik + point.logpost)
    return FitResult(
        params=point.params,
        stderr=unravel(xp.where(held.nat | void, xp.nan, inf.stderr)),
        score=unravel(xp.where(held.nat, xp.nan, inf.score)),   # fixed: see with_fixed_scores
        cov=inf.cov,
        fisher_info=inf.fisher_info,
        loglik=point.loglik,
        logpost=point.logpost,
        converged=status == Status.SUCCESS,
        status=status,
        n_iter=sol.n_iter,
        grad_norm=xp.max(xp.abs(sol.g), initial=0.0),
        nobs=point.nobs,
        stats=FitStats(sol.n_rejected, inf.info_eigvals, inf.singular | void, sol.z, sol.g),
        param_names=view.names,
        method=method_name(config.method),
        cov_type=config.cov_type,
        n_free=view.m,
        dtype=config.dtype,
        n_groups=config.n_groups,
        kind="mle" if config.prior is None else "map",
    )


def polish(config: KernelConfig, inputs: Any, weights: jax.Array | None,
           sol: _solvers.Solution, hess: jax.Array, tol: Any, max_iter: Any,
           unfinished: Any = None):
    """:mod:`jaxmle.core.refine`'s polish in the program (:func:`~jaxmle.core.refine.run`;
    :func:`~jaxmle.fitting.host_conclude.polish` on the host): the solution, H_z and the
    eigen-decomposition of the information in a well-conditioned basis."""
    def objective_of(inputs, weights):
        return kernel_objective(config, View(config.space, inputs.held, config.constant),
                                inputs, weights)

    return _refine.run(objective_of, (inputs, weights), sol, hess, inputs.held.z, tol,
                       max_iter, unfinished)


def conclude(config: KernelConfig, inputs: Any, weights: jax.Array | None,
             final: _solvers.State, tol: Any = None, max_iter: Any = None,
             unfinished: Any = None) -> FitResult:
    """The inference at the solver's final state, as a full-size :class:`FitResult`: the
    solver's part (:func:`probe`, :func:`infer`) and the model's (:func:`model_point`,
    :func:`model_meat`) in one program. The host driver (:mod:`jaxmle.fitting.host`) runs
    the same functions as separate programs. ``unfinished``: the state is still
    iterating (a ``fit_batch`` pass; its result is discarded): no polish."""
    held = inputs.held
    view = View(config.space, held, config.constant)
    sol = _solvers.solution(final)
    hess = sol.hess
    if hess is None:
        objective = kernel_objective(config, view, inputs, weights)
        hess = _solvers.value_grad_hessian(objective, sol.z)[2]
    kink = None
    if config.method == "prox-newton":
        from jaxmle.core.solvers.proximal import at_kinks

        sol, hess, kink = at_kinks(config, view, inputs, sol, hess)
    if config.method == "newton":
        sol, hess, eig = polish(config, inputs, weights, sol, hess, tol, max_iter,
                                unfinished)
        regular, step = probe_eigen(sol, eig, held.z)
    else:
        eig, regular, step = probe(sol, hess, held.z)
    point = model_point(config, view, inputs, weights, sol.z, step, loglik_from_solver(config))
    meat = None if config.cov_type == "observed" else model_meat(config, view, inputs,
                                                                 weights, sol.z)
    own_test = config.method in ("newton", "prox-newton")   # the decrement is their test
    inf, status = infer(space_kind(view), config.cov_type, sol, hess, eig, regular,
                        point.transform, point.f_probe, held.z, meat, check_flat=kink is None,
                        tol=None if own_test else tol)
    if kink is not None:
        from jaxmle.core.solvers.proximal import without_kinks

        inf = without_kinks(view, sol.z, inf, kink)
    return assemble(config, view, held, sol, point, inf, status)


def conclude_point(config: KernelConfig, inputs: Any, weights: jax.Array | None,
                   final: _solvers.State) -> FitResult:
    """:func:`conclude` without the inference (profile points need the maximum only): the
    same pytree, NaN where the inference would be."""
    view, dtype = View(config.space, inputs.held, config.constant), jnp.dtype(config.dtype)
    sol = _solvers.solution(final)
    params = view.to_natural(sol.z)
    nobs = _objective.count_observations(config.loglik, params, inputs.data, weights, dtype)
    nan_tree = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), params)
    k, m = view.k, view.m
    return FitResult(
        params=params, stderr=nan_tree, score=nan_tree, cov=jnp.full((k, k), jnp.nan, dtype),
        fisher_info=jnp.full((k, k), jnp.nan, dtype), loglik=-sol.f, logpost=-sol.f,
        converged=sol.status == Status.SUCCESS, status=sol.status, n_iter=sol.n_iter,
        grad_norm=jnp.max(jnp.abs(sol.g), initial=0.0), nobs=nobs,
        stats=FitStats(sol.n_rejected, jnp.full(m, jnp.nan, dtype), jnp.zeros(k, bool), sol.z,
                       sol.g),
        param_names=view.names, method=method_name(config.method), cov_type=config.cov_type,
        n_free=m, dtype=config.dtype, n_groups=config.n_groups,
        kind="mle" if config.prior is None else "map")


def fit_kernel(config: KernelConfig, data: Any, init_leaves: list[jax.Array],
               weights: jax.Array | None, tol: jax.Array, max_iter: jax.Array) -> FitResult:
    """The pure fit: minimise −ℓ(θ(z)) and compute the inference at the optimum.

    ``data``: the user's data, or :class:`~jaxmle.core.held.Inputs` (with what is held,
    cluster codes, the priors' parameters). The result is full-size (see
    :func:`free_rows`). ``fit_batch`` runs the same three pieces (``kernel_solver(...).init``, ``.step``
    and :func:`conclude`), with the loop over iterations written for the batch.
    """
    if not isinstance(data, Inputs):   # the user's data alone: nothing held
        data = Inputs(data, nothing_held(config.space, np.dtype(config.dtype)))
    inputs = data._replace(data=_objective.mask_padding(data.data, weights))
    solver = kernel_solver(config, inputs, weights, tol)
    final = _solvers.iterate(solver.step, solver.init(initial_z(config, init_leaves)), max_iter)
    return conclude(config, inputs, weights, final, tol, max_iter)


@functools.lru_cache(maxsize=128)
def compiled_kernel(config: KernelConfig) -> Callable[..., FitResult]:
    """The jitted kernel for one static configuration (cached: no recompilation)."""
    return jax.jit(functools.partial(fit_kernel, config))


def method_name(method: Any) -> str:
    if isinstance(method, str):
        return method
    return f"optax:{type(method).__name__}"

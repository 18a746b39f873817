"""The host driver of a Newton fit: the model's compiled programs, the solver in NumPy.

A fit is

* **model programs** (:func:`model_programs`), one set per log-likelihood, parameter
  space, priors' form and data shape (the only programs a new model compiles): f, ∇f,
  ∇²f at z (:func:`fgh`, also the end-of-fit probes' values:
  :mod:`~jaxmle.fitting.host_conclude`); θ̂, ℓ, log π, the observation count and the
  transform's Jacobian at the optimum (:func:`~jaxmle.fitting.kernel.model_point`); the
  score outer product for ``cov_type`` opg/sandwich; the start in z;
* **the solver** (:mod:`jaxmle.fitting.host_solver`): one program, ``_advance``, keyed
  by the number of free parameters and the dtype only, compiled once per size, shared by
  every model; what runs once per fit runs on the host in NumPy. All of these are the
  very functions the fused program traces (:mod:`jaxmle.core.solvers.newton`,
  :mod:`~jaxmle.core.solvers.dense`, :mod:`jaxmle.core.covariance`, written once against
  the functions NumPy and ``jax.numpy`` share: :mod:`jaxmle.core.xp`).

A first fit compiles its model's programs side by side on worker threads
(:mod:`jaxmle.fitting.ahead`: the padding check, f/∇f/∇²f and ``point`` at once).

``jm.fit`` runs the Newton's state machine from Python (:func:`solve`): per iteration
one call of the model's f/∇f/∇²f program and one of the solver's ``tell``+``ask``. The
fused driver (:func:`~jaxmle.fitting.kernel.fit_kernel`: everything in one program)
runs the very same functions for everything traced (``fit_batch``, the bootstrap, a
user's ``jit``/``vmap`` around ``jm.fit``) and gives the same numbers (to rounding: LAPACK
through NumPy and through XLA may differ in the last bits).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.fitting.ahead as _ahead
from jaxmle.core.held import Inputs, View, nothing_held
from jaxmle.core.host_space import host_transform_grad, host_unconstrained
from jaxmle.core.refine import value_grad_hessian_in
from jaxmle.fitting.buckets import bucketed
from jaxmle.fitting.kernel import (
    KernelConfig,
    initial_z,
    kernel_objective,
    loglik_from_solver,
    model_meat,
    model_point,
)
from jaxmle.fitting.host_conclude import conclude, final_values, identity
from jaxmle.fitting.host_solver import (  # noqa: F401  (solve: the drivers' loop)
    lower_solver,
    prepare_solver,
    solve,
    wait_solvers,
)
from jaxmle.fitting.start import starts_around
from jaxmle.results.result import FitResult


def eligible(config: KernelConfig) -> bool:
    """Fits the host driver runs: the plain (dense) Newton. The proximal Newton (L1
    priors) and the optax methods run the fused program."""
    return config.method == "newton"


# --------------------------------------------------------------------------- model programs


class ModelPrograms(NamedTuple):
    unconstrain: Callable   # init leaves → z0
    fgh: Callable           # (inputs, weights, z, T) → f, ∇f, Tᵀ∇²f T (before held rows)
    point: Callable         # (inputs, weights, z, steps) → packed values, J
    meat: Callable          # (inputs, weights, z) → B (compiled on first use only)
    probes: bool            # ``point`` returns the probes' f values (else: ``value`` calls)
    value: Callable | None = None   # (inputs, weights, z) → f: the probes of a costly model


@functools.lru_cache(maxsize=256)
def model_key(config: KernelConfig) -> KernelConfig:
    """What a model's programs depend on: not the method, the covariance type or the
    number of clusters (those are the solver's, or the meat program's, business)."""
    return dataclasses.replace(config, method="newton", cov_type="observed", n_groups=0)


def _masked(inputs: Inputs, weights: Any) -> Inputs:
    return inputs._replace(data=_objective.mask_padding(inputs.data, weights))


def model_programs(config: KernelConfig) -> ModelPrograms:
    """The jitted programs of one model (cached by :func:`model_key`: a new method,
    covariance type or cluster count reuses them; JAX caches them by shapes)."""
    return _model_programs(model_key(config))._replace(meat=_meat_program(config))


@functools.lru_cache(maxsize=128)
def _model_programs(key: KernelConfig) -> ModelPrograms:

    def fgh(inputs, weights, z, t):
        """f, ∇f and Tᵀ∇²f T at z (T = I in the solver's iterations; the end-of-fit
        information and polish use a well-conditioned basis: :mod:`jaxmle.core.refine`)."""
        inputs = _masked(inputs, weights)
        view = View(key.space, inputs.held, key.constant)
        return value_grad_hessian_in(kernel_objective(key, view, inputs, weights), z, t)

    # the end-of-fit probes: f at ẑ + 4 steps and the edge step, a ``vmap`` inside ``point``
    # (one call), unless each evaluation of f is an inner optimisation (a Laplace
    # marginal): compiled into ``point`` that doubled its compile time, so those take one
    # call per probe of ``value``, f alone: a third to a fifth of an f/∇f/∇²f call there
    # (:func:`~jaxmle.fitting.host_conclude.probe_values`)
    probes = not getattr(key.loglik, "jaxmle_costly", False)

    def point(inputs, weights, z, steps):
        """θ̂, ℓ, log π, the count (and the probes' f values) packed for the host, and J."""
        inputs = _masked(inputs, weights)
        view = View(key.space, inputs.held, key.constant)
        # ℓ(ẑ) comes from −f(ẑ) of the solver (``loglik_from_solver``): the program leaves
        # out that pass over the data, and ``assemble`` takes ℓ and log π from the two slots
        pt = model_point(key, view, inputs, weights, z, steps if probes else None,
                         loglik_from_solver(key))
        ll = jnp.stack([pt.loglik, pt.logpost]).astype(z.dtype)
        values = [view.space.ravel_natural(pt.params), ll,
                  jnp.asarray(pt.nobs, z.dtype)[None]]
        if probes:
            values.append(pt.f_probe.astype(z.dtype))
        return jnp.concatenate(values), pt.transform

    def value(inputs, weights, z):
        inputs = _masked(inputs, weights)
        return kernel_objective(key, View(key.space, inputs.held, key.constant), inputs,
                                weights)(z)

    return ModelPrograms(jax.jit(functools.partial(initial_z, key)), jax.jit(fgh),
                         jax.jit(point), None, probes, None if probes else jax.jit(value))


@functools.lru_cache(maxsize=64)
def _meat_program(config: KernelConfig) -> Callable:
    def meat(inputs, weights, z):
        inputs = _masked(inputs, weights)
        return model_meat(config, View(config.space, inputs.held, config.constant), inputs,
                          weights, z)

    return jax.jit(meat)


# --------------------------------------------------------------------------- the driver


def start_z(config: KernelConfig, programs: ModelPrograms, init_leaves: list) -> np.ndarray:
    """The start in z: in NumPy for the common elementwise transforms (nothing to
    compile), else the model's ``initial_z`` program."""
    z0 = host_unconstrained(config.space, init_leaves, np.dtype(config.dtype))
    return np.asarray(programs.unconstrain(init_leaves)) if z0 is None else z0


@functools.lru_cache(maxsize=1)
def _pass_below() -> int:
    """Data below this many bytes is passed to every call as it is. On the CPU a NumPy
    argument is read in place, and a ``device_put`` (~0.3 ms for a few dozen kB, more than
    a 6-iteration fit's dozen calls spend on their arguments) only pays from ~1 MB (warm
    logistic fit, n = 1000–4000: 0.1–0.25 ms faster as is; equal at n = 16,000); an
    accelerator copies the arguments at every call."""
    return (1 << 19) if jax.default_backend() == "cpu" else (1 << 16)


def on_device(inputs: Inputs, weights: Any) -> tuple[Inputs, Any]:
    """The data moved once, not at every iteration (small data is passed as it is: a
    transfer per call costs less than a ``device_put``)."""
    leaves = jax.tree_util.tree_leaves((inputs.data, weights))
    if sum(np.asarray(x).nbytes for x in leaves if isinstance(x, np.ndarray)) < _pass_below():
        return inputs, weights
    return jax.device_put((inputs, weights))


def host_fit(config: KernelConfig, inputs: Inputs, init_leaves: list, weights: Any,
             tol: Any, max_iter: Any) -> FitResult:
    """:func:`~jaxmle.fitting.kernel.fit_kernel`'s result, driven from the host."""
    m, dtype = config.space.m, config.dtype
    prepare_solver(m, dtype, later=True)
    ahead: dict = {}

    def speculate(config, inputs, weights):   # while the padding check compiles
        ahead[config] = _programs_ahead(config, *on_device(inputs, weights), init_leaves)

    try:
        config, inputs, weights = bucketed(config, inputs, weights, init_leaves, speculate)
        held = inputs.held
        dev_inputs, dev_weights = on_device(inputs, weights)
        programs, z0, pending = ahead.get(config) or \
            _programs_ahead(config, dev_inputs, dev_weights, init_leaves)
        lower_solver(m, dtype)   # while the model's programs compile: see host_solver
        _ahead.wait(pending[0])
        final = solve(programs, dev_inputs, dev_weights, z0, tol, max_iter)
        _ahead.wait(pending[1])
        return conclude(config, programs, dev_inputs, dev_weights, final, held, tol, max_iter)
    finally:
        prepare_solver(m, dtype)


def _programs_ahead(config: KernelConfig, inputs: Inputs, weights: Any, init_leaves: list):
    """The model's programs, its start in z, and where this model has compiled nothing
    yet, its f/∇f/∇²f and ``point`` programs compiling side by side on worker threads
    (:mod:`jaxmle.fitting.ahead`; the fit waits for each before its first call)."""
    programs = model_programs(config)
    z0 = start_z(config, programs, init_leaves)
    if programs.fgh._cache_size() or programs.point._cache_size():
        return programs, z0, (None, None)
    m, dtype = z0.shape[0], z0.dtype
    return programs, z0, (
        _ahead.compile_ahead(programs.fgh, inputs, weights, z0, identity(m, dtype)),
        _ahead.compile_ahead(programs.point, inputs, weights, z0, np.zeros((4, m), dtype)))


def fixed_scores(config: KernelConfig, inputs: Inputs, weights: Any,
                 params: Any) -> np.ndarray | None:
    """∂(ℓ + log π)/∂θ of every natural element at ``params`` (a fit with ``fixed=``: the
    fixed elements' scores) from the model's own f/∇f/∇²f program with nothing held, so
    no score program is compiled: ∂ℓ/∂θ = −(∂f/∂z)/(dθ/dz) for elementwise transforms
    known on the host. None where that does not apply (a leaf fixed on its boundary, a
    transform that is not elementwise, data large enough that a Hessian costs more than
    compiling the gradient alone): then the caller compiles the score program."""
    space, dtype = config.space, np.dtype(config.dtype)
    if config.constant:
        return None
    leaves = [np.asarray(x, dtype) for x in jax.tree_util.tree_leaves(params)]
    z = host_unconstrained(space, leaves, dtype)
    if z is None:
        return None
    rows = max((np.shape(x)[0] for x in jax.tree_util.tree_leaves(inputs.data)
                if np.ndim(x)), default=1)
    if rows * max(space.m, 1) ** 2 > (1 << 22):
        return None
    dtheta = [host_transform_grad(l.transform, zl) for l, zl in
              zip(space.leaves, np.split(z, np.cumsum([l.unc_size for l in space.leaves])[:-1]))]
    if any(d is None for d in dtheta):
        return None
    config, inputs, weights = bucketed(config, inputs, weights, None)
    inputs = inputs._replace(held=nothing_held(space, dtype))
    _, g, _ = model_programs(config).fgh(inputs, weights, z, identity(z.shape[0], dtype))
    return -np.asarray(g) / np.concatenate([np.ravel(d) for d in dtheta])


def solve_points(config: KernelConfig, inputs: Inputs, weights: Any, zs: np.ndarray,
                 helds: Any, tol: Any, max_iter: Any) -> tuple[np.ndarray, ...]:
    """The maximum (ℓ or log posterior), status and ẑ from each start ``zs[i]`` with
    ``helds[i]`` held (profile points): the model's f/∇f/∇²f program and the solver's,
    one point after another, nothing compiled for the number of points."""
    config, inputs, weights = bucketed(config, inputs, weights, None)
    programs = model_programs(config)
    inputs, weights = on_device(inputs, weights)
    out = []
    for i in range(zs.shape[0]):
        held = jax.tree_util.tree_map(lambda x: x[i], helds)
        final = solve(programs, inputs._replace(held=held), weights, zs[i], tol, max_iter)
        out.append(final_values(final))
    ll, status, z = zip(*out)
    return np.asarray(ll, float), np.asarray(status), np.stack(z)


def fit_starts(config: KernelConfig, inputs: Inputs, init_leaves: list, weights: Any,
               tol: Any, max_iter: Any, n_starts: int, key: Any,
               scale: float) -> tuple[list[FitResult], np.ndarray]:
    """Full fits from ``n_starts`` starts around ``init`` (the first is ``init`` itself),
    one after another: the starts and their fits."""
    config, inputs, weights = bucketed(config, inputs, weights, init_leaves)
    programs = model_programs(config)
    held = inputs.held
    dev_inputs, dev_weights = on_device(inputs, weights)
    z0 = start_z(config, programs, init_leaves)
    zs = starts_around(z0, np.asarray(held.z), n_starts, key, scale)
    fits = [conclude(config, programs, dev_inputs, dev_weights,
                     solve(programs, dev_inputs, dev_weights, z, tol, max_iter), held, tol,
                     max_iter)
            for z in zs]
    return fits, zs

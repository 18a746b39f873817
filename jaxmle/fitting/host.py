"""The host driver of a Newton fit: the model's compiled programs, the solver in NumPy.

A fit is

* **model programs** (:func:`model_programs`), one set per log-likelihood, parameter
  space, priors' form and data shape (the only programs a new model compiles): f, ∇f,
  ∇²f at z (:func:`fgh`, also the end-of-fit probes' values:
  :mod:`~jaxmle.fitting.host_conclude`); θ̂, ℓ, log π, the observation count and the
  transform's Jacobian at the optimum (:func:`~jaxmle.fitting.kernel.model_point`); the
  score outer product for ``cov_type`` opg/sandwich; the start in z;
* **the solver**: one program, ``_advance`` (the damped Newton's ``tell`` then ``ask``:
  step, line search, damping, convergence tests), keyed by the number of free
  parameters and the dtype only, so it is compiled once per size, shared by every model
  and kept by JAX's persistent cache; what runs once per fit (the start, the
  eigen-decomposition, the flat test's step and the inference's linear algebra) runs
  on the host in NumPy. All of these are the very functions the fused program traces
  (:mod:`jaxmle.core.solvers.newton`, :mod:`~jaxmle.core.solvers.dense`,
  :mod:`jaxmle.core.covariance`, written once against the functions NumPy and
  ``jax.numpy`` share: :mod:`jaxmle.core.xp`).

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
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.fitting.ahead as _ahead
import jaxmle.core.solvers as _solvers
from jaxmle.core.held import Inputs, View, nothing_held
from jaxmle.core.host_space import host_transform_grad, host_unconstrained
from jaxmle.core.refine import value_grad_hessian_in
from jaxmle.core.solvers.dense import DenseModel, hold_rows
from jaxmle.core.solvers.newton import DampedNewton, Rules
from jaxmle.fitting.buckets import bucketed
from jaxmle.fitting.kernel import (
    KernelConfig,
    initial_z,
    kernel_objective,
    loglik_from_solver,
    model_meat,
    model_point,
)
from jaxmle.fitting.host_conclude import conclude, final_values, host_arrays, identity
from jaxmle.fitting.packed import Packing, layout_of, pack, unpack
from jaxmle.fitting.start import starts_around
from jaxmle.results.result import FitResult


def eligible(config: KernelConfig) -> bool:
    """Fits the host driver runs: the plain (dense) Newton. The proximal Newton (L1
    priors) and the optax methods run the fused program."""
    return config.method == "newton"


# --------------------------------------------------------------------------- the solver
#
# Per iteration: one call of the model's f/∇f/∇²f program and one of ``_advance`` (the
# solver's one compiled program: its arguments are arrays of the problem's size, so it
# is compiled once per size and dtype, shared by every model, and kept by JAX's
# persistent cache across processes). What runs once per fit (the start, the
# eigen-decomposition, the flat test's step, the inference's linear algebra) runs on
# the host in NumPy: the same functions as in the fused program (:mod:`jaxmle.core.xp`),
# nothing to compile, less time than a program call costs.


def _newton(held_z: np.ndarray) -> DampedNewton:
    return DampedNewton(DenseModel(held_z), Rules())   # as make_solver("newton", ..., held)


def _start(z0: np.ndarray, held_z: np.ndarray):
    """The Newton state at z0 (offset by the kink jitter), its first proposal and trial
    point. Only ``z`` (and the escape probes' ``anchor``) of the initial state depends on
    z0, and the first proposal (a zero step that evaluates the start) not at all, so both
    are built once per size, dtype and held set and the start is put in (a profile runs
    hundreds of starts)."""
    s, p = _initial(z0.shape[0], z0.dtype.str, held_z.tobytes())
    z = z0 + _solvers.kink_jitter(z0, held_z)
    s = s._replace(z=z, anchor=z)
    return s, p, s.z + p.step


@functools.lru_cache(maxsize=256)
def _initial(m: int, dtype: str, held: bytes):
    held_z = np.frombuffer(held, bool).copy()
    newton = _newton(held_z)
    with np.errstate(all="ignore"):
        s = newton.init(None, np.zeros(m, np.dtype(dtype)), None)
        p = newton.ask(s)
    for x in jax.tree_util.tree_leaves((s, p)):   # shared by every start: read-only
        if isinstance(x, np.ndarray):
            x.flags.writeable = False
    return s, p


@functools.lru_cache(maxsize=64)
def packing(m: int, dtype: str) -> Packing:
    """The :class:`~jaxmle.fitting.packed.Packing` of the solver's (state, proposal) for m
    coordinates: they travel as three flat arrays, not 27 leaves (a program call costs
    about a microsecond per argument and result leaf: ~40 µs of the ~125 µs ``_advance``
    call, at every iteration)."""
    return layout_of(_initial(m, dtype, np.zeros(m, bool).tobytes()))


@functools.partial(jax.jit, static_argnames=("layout",))
def _advance(packed, f, g, h, held_z, tol, max_iter, layout):
    """``tell`` (f, ∇f, ∇²f at the trial point) then the next ``ask``; whether to go on.
    The state and proposal travel packed (:class:`Packing`)."""
    newton = _newton(held_z)
    s, p = unpack(layout, packed)
    s = newton.tell(s, p, (f, g, hold_rows(h, held_z)), tol)
    p = newton.ask(s)
    return pack(layout, (s, p), f.dtype), s.z + p.step, _solvers.is_active(s, max_iter)


def _advance_host(packed, f, g, h, held_z, tol, max_iter, layout):
    """:func:`_advance` in NumPy: the same functions, nothing to compile (~1 ms an
    iteration against ~0.15 ms compiled), for the iterations before the compiled step is
    ready."""
    with np.errstate(all="ignore"):
        newton = _newton(held_z)
        s, p = unpack(layout, host_arrays(packed))
        f, g, h = np.asarray(f), np.asarray(g), np.asarray(h)
        s = newton.tell(s, p, (f, g, hold_rows(h, held_z)), tol)
        p = newton.ask(s)
        return (pack(layout, (s, p), f.dtype), s.z + p.step,
                bool(_solvers.is_active(s, max_iter)))


# ``_advance`` is the same program for every model of a size: the first fit of a size in a
# process compiles it on a worker thread (:mod:`jaxmle.fitting.ahead`; only jaxmle's code
# runs there, never the user's log-likelihood), and until it is ready the iterations take
# the NumPy step (:func:`_advance_host`), so no fit waits for the solver's compilation.
_PREPARED: dict = {}


def _solver_key(m: int, dtype: Any) -> tuple[int, str, bool]:
    return int(m), np.dtype(dtype).str, bool(jax.config.jax_enable_x64)


_LATER = "later"


def prepare_solver(m: int, dtype: Any, later: bool = False) -> None:
    """Start compiling (or loading from the persistent cache) ``_advance`` for ``m``
    coordinates of ``dtype`` in the background, once per process. ``later``: not yet
    (the first fit of a size lets its model's programs have the CPU, running the NumPy
    step, and starts it when done)."""
    key = _solver_key(m, dtype)
    if key not in _PREPARED or (_PREPARED[key] is _LATER and not later):
        _PREPARED[key] = _LATER if later else _ahead.run(_compile_advance, *key)


def _forget_prepared() -> None:
    """In a forked child the worker threads do not exist: start afresh."""
    _PREPARED.clear()


os.register_at_fork(after_in_child=_forget_prepared)


def _compile_advance(m: int, dtype: str, x64: bool) -> None:
    if bool(jax.config.jax_enable_x64) != x64:   # a thread-local x64 context: not this one
        return
    dtype = np.dtype(dtype)
    z, held = np.zeros(m, dtype), np.zeros(m, bool)
    layout = packing(m, dtype.str)
    with np.errstate(all="ignore"):
        s, p, _ = _start(z, held)
    jax.block_until_ready(_advance(pack(layout, (s, p), dtype), np.zeros((), dtype),
                                   np.zeros(m, dtype), np.eye(m, dtype=dtype), held,
                                   np.asarray(1e-8, dtype), np.asarray(0, np.int32),
                                   layout=layout))


def wait_solvers() -> None:
    """Wait for every ``_advance`` compilation in flight (``jm.warmup``, tests)."""
    _ahead.wait(*[f for f in list(_PREPARED.values()) if f is not _LATER])


def _solver_ready(m: int, dtype: Any) -> bool:
    """Whether the compiled ``_advance`` may be called without waiting for a compilation:
    done in the background, or not in flight (then the call compiles it, as any program)."""
    future = _PREPARED.get(_solver_key(m, dtype))
    if future is None:
        return True
    return future is not _LATER and future.done()   # (had it failed, the call compiles it)


# --------------------------------------------------------------------------- model programs


class ModelPrograms(NamedTuple):
    unconstrain: Callable   # init leaves → z0
    fgh: Callable           # (inputs, weights, z, T) → f, ∇f, Tᵀ∇²f T (before held rows)
    point: Callable         # (inputs, weights, z, steps) → packed values, J
    meat: Callable          # (inputs, weights, z) → B (compiled on first use only)
    probes: bool            # ``point`` returns the probes' f values (else: ``fgh`` calls)


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
    # ``fgh`` call per probe (:func:`~jaxmle.fitting.host_conclude.probe_values`)
    probes = not getattr(key.loglik, "jaxmle_costly", False)

    def point(inputs, weights, z, steps):
        """θ̂, ℓ, log π, the count (and the probes' f values) packed for the host, and J."""
        inputs = _masked(inputs, weights)
        view = View(key.space, inputs.held, key.constant)
        pt = model_point(key, view, inputs, weights, z, steps if probes else None)
        # where ℓ(ẑ) = −f(ẑ) from the solver (``loglik_from_solver``: ``assemble`` takes
        # it), the program leaves out that pass over the data
        ll = jnp.zeros((2,), z.dtype) if loglik_from_solver(key) else \
            jnp.stack([pt.loglik, pt.logpost]).astype(z.dtype)
        values = [view.space.ravel_natural(pt.params), ll,
                  jnp.asarray(pt.nobs, z.dtype)[None]]
        if probes:
            values.append(pt.f_probe.astype(z.dtype))
        return jnp.concatenate(values), pt.transform

    return ModelPrograms(jax.jit(functools.partial(initial_z, key)), jax.jit(fgh),
                         jax.jit(point), None, probes)


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


def solve(programs: ModelPrograms, inputs: Inputs, weights: Any, z0: Any, tol: Any,
          max_iter: Any, evaluate: Callable | None = None):
    """The Newton's final state from z0 (NumPy arrays), driven from Python (``inputs``,
    ``weights``: on the device already, when large). ``evaluate(inputs, weights, z)``:
    f, ∇f and the step's curvature matrix, if not the model's f/∇f/∇²f
    (:mod:`jaxmle.fitting.rescue`'s metric)."""
    held_z = np.asarray(inputs.held.z)
    z0 = np.asarray(z0)
    with np.errstate(all="ignore"):   # NaN/inf are handled as the program handles them
        s, p, z_trial = _start(z0, held_z)
    layout = packing(z0.shape[0], z0.dtype.str)
    packed = pack(layout, (s, p), z0.dtype)
    tol, max_iter = np.asarray(tol, z0.dtype), np.asarray(max_iter, np.int32)
    prepare_solver(z0.shape[0], z0.dtype, later=True)   # (no-op once started)
    if evaluate is None:
        eye = identity(z0.shape[0], z0.dtype)

        def evaluate(inputs, weights, z):
            return programs.fgh(inputs, weights, z, eye)

    f, g, h = evaluate(inputs, weights, z_trial)
    m, ready = z0.shape[0], False
    while True:
        ready = ready or _solver_ready(m, z0.dtype)
        advance = _advance if ready else _advance_host
        packed, z_trial, active = advance(packed, f, g, h, held_z, tol, max_iter,
                                          layout=layout)
        if not active:
            return unpack(layout, host_arrays(packed))[0]
        f, g, h = evaluate(inputs, weights, z_trial)


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
    prepare_solver(config.space.m, config.dtype)
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

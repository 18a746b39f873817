"""The host driver's solver: the damped Newton's state machine driven from Python.

Per iteration one call of the model's f/∇f/∇²f program (:mod:`jaxmle.fitting.host`) and one
of ``_advance``, the solver's one compiled program (the Newton's ``tell`` then ``ask``:
step, line search, damping, convergence tests). Its arguments are arrays of the
problem's size, so it is compiled once per size and dtype, shared by every model, and
kept by JAX's persistent cache across processes. What runs once per fit (the start, the
eigen-decomposition, the flat test's step, the inference's linear algebra) runs on the
host in NumPy: the same functions as in the fused program (:mod:`jaxmle.core.xp`),
nothing to compile, less time than a program call costs.

The first fit of a size in a process does not wait for ``_advance``: its iterations take
the same step in NumPy (:func:`_step_host`), and ``_advance`` is compiled on a worker
thread (:mod:`jaxmle.fitting.ahead`) once that fit is done; later iterations switch to it
when it is ready. The two give the same numbers to rounding.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import numpy as np

import jaxmle.core.solvers as _solvers
import jaxmle.fitting.ahead as _ahead
from jaxmle.core.held import Inputs
from jaxmle.core.solvers.dense import DenseModel, hold_rows
from jaxmle.core.solvers.newton import DampedNewton, Rules
from jaxmle.fitting.host_conclude import host_arrays, identity
from jaxmle.fitting.packed import Packing, layout_of, pack, unpack


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


def _step_host(newton: DampedNewton, s: Any, p: Any, f: Any, g: Any, h: Any, held_z: Any,
               tol: Any, max_iter: Any):
    """:func:`_advance` in NumPy on the unpacked state: the same functions, nothing to
    compile (~0.4 ms an iteration against ~0.15 ms compiled), for the iterations before
    the compiled step is ready."""
    with np.errstate(all="ignore"):
        f, g, h = np.asarray(f), np.asarray(g), np.asarray(h)
        s = newton.tell(s, p, (f, g, hold_rows(h, held_z)), tol)
        p = newton.ask(s)
        return s, p, s.z + p.step, bool(_solvers.is_active(s, max_iter))


# ``_advance`` is the same program for every model of a size: the first fit of a size in a
# process never waits for its compilation. Its iterations take the NumPy step
# (:func:`_step_host`); while the fit waits for its model's programs to compile on worker
# threads, its own thread traces and lowers ``_advance`` (:func:`lower_solver`), and when
# the fit is done the compilation runs on a worker thread (:mod:`jaxmle.fitting.ahead`: XLA
# releases the GIL); later iterations switch to it once it is ready. (Tracing it on a
# worker thread instead, the first fit was ~0.1 s faster, but for the next half second
# every step waited for the GIL at each program call: a profile right after took 0.13 s
# instead of 0.05 s, a warm fit 14 ms instead of 5.) Where no first fit prepared it (a
# profile or multi-start of a new size) it is traced on the worker thread, yielding the
# GIL often (:func:`~jaxmle.fitting.ahead.yielding`).
_PREPARED: dict = {}
_LOWERED: dict = {}   # lowered on the caller's thread, to be compiled
_LATER = "later"


def _solver_key(m: int, dtype: Any) -> tuple[int, str, bool]:
    return int(m), np.dtype(dtype).str, bool(jax.config.jax_enable_x64)


def prepare_solver(m: int, dtype: Any, later: bool = False) -> None:
    """Start compiling (or loading from the persistent cache) ``_advance`` for ``m``
    coordinates of ``dtype`` in the background, once per process. ``later``: not yet
    (the first fit of a size lets its model's programs have the CPU, running the NumPy
    step, and starts it when done)."""
    key = _solver_key(m, dtype)
    if key in _PREPARED and (_PREPARED[key] is not _LATER or later):
        return
    if later:
        _PREPARED[key] = _LATER
    elif key in _LOWERED:
        _PREPARED[key] = _ahead.run(_LOWERED.pop(key).compile)
    else:
        _PREPARED[key] = _ahead.run(_compile_advance, *key)


def lower_solver(m: int, dtype: Any) -> None:
    """Trace and lower ``_advance`` on this thread if the solver of this size has not been
    prepared (a first fit: while its model's programs compile on worker threads, this
    thread would only wait); :func:`prepare_solver` then only compiles it, on a worker
    thread, without holding the GIL against the caller's next steps."""
    key = _solver_key(m, dtype)
    if _PREPARED.get(key) is not _LATER or key in _LOWERED:
        return
    try:
        _LOWERED[key] = _lower_advance(int(m), np.dtype(dtype))
    except Exception:   # noqa: BLE001  (traced on the worker thread instead)
        pass


def _forget_prepared() -> None:
    """In a forked child the worker threads do not exist: start afresh."""
    _PREPARED.clear()
    _LOWERED.clear()


os.register_at_fork(after_in_child=_forget_prepared)


def _lower_advance(m: int, dtype: np.dtype) -> Any:
    z, held = np.zeros(m, dtype), np.zeros(m, bool)
    layout = packing(m, dtype.str)
    with np.errstate(all="ignore"):
        s, p, _ = _start(z, held)
    args = (pack(layout, (s, p), dtype), np.zeros((), dtype), np.zeros(m, dtype),
            np.eye(m, dtype=dtype), held, np.asarray(1e-8, dtype), np.asarray(0, np.int32))
    return _advance.lower(*args, layout=layout)


def _compile_advance(m: int, dtype: str, x64: bool) -> None:
    if bool(jax.config.jax_enable_x64) != x64:   # a thread-local x64 context: not this one
        return
    with _ahead.yielding():   # tracing and lowering: Python, holding the GIL
        lowered = _lower_advance(m, np.dtype(dtype))
    lowered.compile()   # (XLA releases the GIL; this fills ``_advance``'s caches)


def wait_solvers() -> None:
    """Wait for every ``_advance`` compilation in flight (``jm.warmup``, tests)."""
    _ahead.wait(*[f for f in list(_PREPARED.values()) if f is not _LATER])


def _solver_ready(m: int, dtype: Any) -> bool:
    """Whether the compiled ``_advance`` may be called without waiting for a compilation
    (had it failed in the background, the call compiles it). A size no fit has prepared
    (a profile or multi-start of a new size) starts its compilation here; a first fit's
    deferred one (``later``) is left to the fit."""
    key = _solver_key(m, dtype)
    if key not in _PREPARED:
        prepare_solver(m, dtype)
    future = _PREPARED[key]
    return future is not _LATER and future.done()


def solve(programs: Any, inputs: Inputs, weights: Any, z0: Any, tol: Any,
          max_iter: Any, evaluate: Callable | None = None):
    """The Newton's final state from z0 (NumPy arrays), driven from Python (``inputs``,
    ``weights``: on the device already, when large). ``evaluate(inputs, weights, z)``:
    f, ∇f and the step's curvature matrix, if not the model's f/∇f/∇²f
    (:mod:`jaxmle.fitting.rescue`'s metric)."""
    held_z = np.asarray(inputs.held.z)
    z0 = np.asarray(z0)
    with np.errstate(all="ignore"):   # NaN/inf are handled as the program handles them
        s, p, z_trial = _start(z0, held_z)
    tol, max_iter = np.asarray(tol, z0.dtype), np.asarray(max_iter, np.int32)
    m, packed, layout = z0.shape[0], None, packing(z0.shape[0], z0.dtype.str)
    if evaluate is None:
        eye = identity(z0.shape[0], z0.dtype)

        def evaluate(inputs, weights, z):
            return programs.fgh(inputs, weights, z, eye)

    f, g, h = evaluate(inputs, weights, z_trial)
    newton = _newton(held_z)
    while packed is None:   # the NumPy step until the compiled one is ready
        if _solver_ready(m, z0.dtype):
            packed = pack(layout, (s, p), z0.dtype)
            break
        s, p, z_trial, active = _step_host(newton, s, p, f, g, h, held_z, tol, max_iter)
        if not active:
            return s
        f, g, h = evaluate(inputs, weights, z_trial)
    while True:
        packed, z_trial, active = _advance(packed, f, g, h, held_z, tol, max_iter,
                                           layout=layout)
        if not active:
            return unpack(layout, host_arrays(packed))[0]
        f, g, h = evaluate(inputs, weights, z_trial)

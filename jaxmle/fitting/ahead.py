"""Compile ahead: a fit's programs compiled side by side, off the calling thread.

A first fit in a process compiles several programs: the model's (f/∇f/∇²f, the values at
the optimum, the padding check: :mod:`jaxmle.fitting.host`, :mod:`~jaxmle.fitting.buckets`)
and the solver's step (``_advance``, shared by every model of a size). One after
another they would add up; here each is *lowered* on the calling thread — tracing runs
the user's log-likelihood there, under the caller's configuration (x64, contexts) — and
*compiled* on a worker thread (XLA releases the GIL). A later call of the same jitted
function with arguments of the same shapes finds the compiled program in JAX's caches
(``jit(f).lower(*a).compile()`` fills them: ``jit(f)(*a)`` then neither traces nor
compiles), so the callers wait for the future, then call the function as always.

Anything that fails here (a lowering error, a compile error) is left for the ordinary
call to raise, with its ordinary message.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading
from typing import Any, Callable, Iterator

_POOL: list = []


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Four threads: a fit's three model programs at once, beside a background compilation
    (the solver's step, a tier-up) that must not hold them up; XLA's compilations share
    the cores."""
    if not _POOL:
        _POOL.append(concurrent.futures.ThreadPoolExecutor(4, "jaxmle-compile"))
    return _POOL[0]


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start afresh."""
    _POOL.clear()


os.register_at_fork(after_in_child=_forget_pool)


_YIELD = {"count": 0, "saved": 0.005}
_YIELD_LOCK = threading.Lock()


@contextlib.contextmanager
def yielding(interval: float = 2e-4) -> Iterator[None]:
    """Run Python-heavy work on a worker thread (tracing jaxmle's own programs) without
    starving the caller's thread: while it runs, the interpreter hands the GIL over
    every ``interval`` seconds instead of every 5 ms. (A thread that releases the GIL for
    each program call, as a fit's loop does, otherwise waits up to the full interval to
    get it back at every call: a profile ran 7x slower beside a background trace.)"""
    with _YIELD_LOCK:
        if _YIELD["count"] == 0:
            _YIELD["saved"] = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _YIELD["saved"]))
        _YIELD["count"] += 1
    try:
        yield
    finally:
        with _YIELD_LOCK:
            _YIELD["count"] -= 1
            if _YIELD["count"] == 0:
                sys.setswitchinterval(_YIELD["saved"])


def settle() -> None:
    """Wait for every compilation in flight and stop the worker threads (a later
    compilation starts new ones): e.g. before the compilation cache's directory goes."""
    if _POOL:
        _POOL.pop().shutdown(wait=True)


def run(fn: Callable, *args: Any) -> concurrent.futures.Future:
    """``fn(*args)`` on a worker thread (jaxmle's own code only, never the user's)."""
    return _pool().submit(fn, *args)


def compile_ahead(jitted: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future | None:
    """Lower ``jitted`` for ``args`` here and compile it on a worker thread; None where
    lowering fails (the ordinary call then reports the error)."""
    try:
        lowered = jitted.lower(*args, **kwargs)
    except Exception:   # noqa: BLE001  (raised again, with its message, by the call)
        return None
    return run(lowered.compile)


def wait(*futures: concurrent.futures.Future | None) -> None:
    """Wait for these compilations; a failed one is compiled again by the call itself."""
    for future in futures:
        if future is not None:
            try:
                future.result()
            except Exception:   # noqa: BLE001
                pass

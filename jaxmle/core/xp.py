"""The array namespace of the solver's and the inference's functions: ``jax.numpy``
inside a program, ``numpy`` on the host.

The damped Newton (:mod:`jaxmle.core.solvers.newton`, :mod:`~jaxmle.core.solvers.dense`) and
the inference's linear algebra (:mod:`jaxmle.core.covariance`) are written once, against
the functions that ``numpy`` and ``jax.numpy`` share (the array-API idiom: the
namespace follows the arguments, :func:`namespace`). Given traced or JAX arrays they
build a program (the fused driver: ``fit_batch``, the bootstrap, a user's
``jit``/``vmap``); given NumPy arrays they run on the host with nothing to compile
(``jm.fit``'s host driver, :mod:`jaxmle.fitting.host`: only the model's f, ∇f, ∇²f is a
compiled program).

The few operations the two libraries spell differently are here: a branch
(``lax.cond`` / ``if``), the Cholesky factor and triangular solve, ``eigh``, ``solve`` and
``pinv``. NumPy's versions return NaN where LAPACK fails, as XLA's do, instead of
raising, so the callers' finite-ness tests see the same thing on both sides.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def namespace(*arrays: Any) -> Any:
    """``jax.numpy`` if any argument is a JAX array (or a tracer), else ``numpy``."""
    for x in arrays:
        if isinstance(x, jax.Array):
            return jnp
    return np


def on_host(xp: Any) -> bool:
    return xp is np


def branch(xp: Any, pred: Any, true_fun: Callable, false_fun: Callable, *operands: Any):
    """``lax.cond`` in a program, a Python ``if`` on the host."""
    if on_host(xp):
        return true_fun(*operands) if bool(pred) else false_fun(*operands)
    return jax.lax.cond(pred, true_fun, false_fun, *operands)


def rare(xp: Any, pred: Any, true_fun: Callable, false_fun: Callable, *operands: Any):
    """:func:`branch` for a costly branch that a fit rarely needs (an escape probe, the
    check of a singular point, a test near the optimum). Under ``vmap`` (a batch of fits)
    a ``lax.cond`` becomes a select that computes both branches for every member at
    every iteration; here the batch runs one ``cond`` on whether *any* member's
    predicate holds, and only then computes ``true_fun`` (for all, selecting per
    member), so the result is what a plain ``vmap`` of the ``cond`` gives. The branches
    must be functions of the operands alone (no batched values closed over)."""
    if on_host(xp):
        return true_fun(*operands) if bool(pred) else false_fun(*operands)

    @jax.custom_batching.custom_vmap
    def run(pred, *operands):
        return jax.lax.cond(pred, true_fun, false_fun, *operands)

    @run.def_vmap
    def _batched(axis_size, in_batched, pred, *operands):
        pred_b, *ops_b = in_batched
        # operands without the batch axis stay without it (shared data is not copied per
        # member)
        axes = tuple(jax.tree_util.tree_map(lambda b: 0 if b else None, b) for b in ops_b)
        if not pred_b:
            pred = jnp.broadcast_to(pred, (axis_size,))
        yes_fun = jax.vmap(true_fun, in_axes=axes, axis_size=axis_size)
        no_fun = jax.vmap(false_fun, in_axes=axes, axis_size=axis_size)

        def some(ops):
            yes, no = yes_fun(*ops), no_fun(*ops)
            pick = lambda a, b: jnp.where(  # noqa: E731
                jnp.reshape(pred, (axis_size,) + (1,) * (jnp.ndim(a) - 1)), a, b)
            return jax.tree_util.tree_map(pick, yes, no)

        out = jax.lax.cond(jnp.any(pred), some, lambda ops: no_fun(*ops), tuple(operands))
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return run(pred, *operands)


def _nan_like(a: np.ndarray) -> np.ndarray:
    return np.full(a.shape, np.nan, a.dtype)


def cholesky(xp: Any, a: Any) -> Any:
    """Lower Cholesky factor(s) of ``a`` (leading batch axes); NaN for a member that is
    not positive definite (NumPy raises instead, XLA returns NaN)."""
    if not on_host(xp):
        return jnp.linalg.cholesky(a)
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        if a.ndim == 2:
            return _nan_like(a)
        return np.stack([cholesky(np, m) for m in a])


def cho_solve(xp: Any, chol: Any, b: Any) -> Any:
    """(L Lᵀ)⁻¹ b for a lower Cholesky factor L (one matrix, b a vector)."""
    if not on_host(xp):
        return jax.scipy.linalg.cho_solve((chol, True), b)
    y = np.linalg.solve(chol, b) if np.all(np.isfinite(chol)) else _nan_like(b)
    return np.linalg.solve(chol.T, y) if np.all(np.isfinite(y)) else _nan_like(b)


def eigh(xp: Any, a: Any) -> tuple[Any, Any]:
    """Eigenvalues (ascending) and eigenvectors of symmetric ``a`` (batch axes allowed);
    NaN where LAPACK does not converge."""
    if not on_host(xp):
        values, vectors = jnp.linalg.eigh(a)
        return values, vectors
    try:
        values, vectors = np.linalg.eigh(a)
        return values, vectors
    except np.linalg.LinAlgError:
        return _nan_like(a[..., 0]), _nan_like(a)


def solve(xp: Any, a: Any, b: Any) -> Any:
    """a⁻¹ b; NaN (not an exception) for a singular ``a``."""
    if not on_host(xp):
        return jnp.linalg.solve(a, b)
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return _nan_like(np.broadcast_to(b, np.broadcast_shapes(a.shape[:-1], b.shape)))


def pinv_hermitian(xp: Any, a: Any) -> Any:
    """The pseudo-inverse of a symmetric matrix; NaN where it cannot be computed."""
    if not on_host(xp):
        return jnp.linalg.pinv(a, hermitian=True)
    try:
        return np.linalg.pinv(a, hermitian=True)
    except np.linalg.LinAlgError:
        return _nan_like(a)


def eps(xp: Any, dtype: Any) -> Any:
    """Machine epsilon of ``dtype`` as a 0-d array of that dtype."""
    return xp.asarray(np.finfo(dtype).eps, dtype)


def set_first(xp: Any, a: Any, value: Any) -> Any:
    """``a`` with its first element replaced (``a.at[0].set`` in both libraries)."""
    return xp.where(xp.arange(a.shape[0]) == 0, value, a)

"""Which structure the inner Hessian has: independent groups (block-diagonal) or dense.

Candidate: every random leaf has the same leading axis G ≥ 2 (a (G,) or (G, k)
leaf), so U is (G, K). The structure is then *verified*, not assumed: with the
blocks B_g from K coloured Hessian-vector products, one more product with a
random direction v must satisfy

    ‖Hᵤᵤv − blockdiag(B)v‖∞ ≤ 10⁻⁸ · ‖B‖∞ ‖v‖∞,

else some group is coupled to another (a random walk, a shared effect, REML's
fixed effects) and the dense layout (G = 1) is used. The probe runs at the
start and again at the estimate, since a coupling can vanish at one point
(a correlation started at 0) and not at another.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.random.inner import Layout, grad_and_blocks, joint

PROBE_RTOL = 1e-8


def candidate_layout(names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> Layout:
    """Block layout when all random leaves share a leading axis G ≥ 2, else dense."""
    leading = {s[0] if s else None for s in shapes}
    if len(leading) == 1 and None not in leading and next(iter(leading)) >= 2:
        return Layout(names, shapes, next(iter(leading)))
    return Layout(names, shapes, 1)


def dense(layout: Layout) -> Layout:
    return Layout(layout.names, layout.shapes, 1)


def probe_residual(ell: Callable[[jax.Array], jax.Array], U: jax.Array,
                   blocks: jax.Array) -> jax.Array:
    """‖Hv − blockdiag(B)v‖∞ / (‖B‖∞‖v‖∞) for a fixed pseudo-random v (0 when dense)."""
    v = jnp.asarray(np.random.default_rng(20240607).standard_normal(U.shape), U.dtype)
    hv = jax.jvp(jax.grad(ell), (U,), (v,))[1]
    bv = jnp.einsum("gij,gj->gi", blocks, v)
    scale = jnp.max(jnp.abs(blocks)) * jnp.max(jnp.abs(v)) + jnp.finfo(U.dtype).tiny
    return jnp.max(jnp.abs(hv - bv)) / scale


@functools.lru_cache(maxsize=64)
def _probe_kernel(loglik: Callable, layout: Layout) -> Callable:
    def run(theta, data, u0):
        U = layout.pack(u0)

        def ell(U):
            return joint(loglik, layout, theta, U, data)

        return probe_residual(ell, U, grad_and_blocks(ell, U)[1])

    return jax.jit(run)


def holds(residual: Any) -> bool:
    """The probe found the blocks to be the whole Hessian (a NaN residual does not count)."""
    return bool(np.asarray(residual) <= PROBE_RTOL)


def choose_layout(loglik: Callable, names: tuple[str, ...], shapes, theta: dict, data: Any,
                  u0: dict) -> Layout:
    """The block layout if the probe at (θ₀, u₀) confirms it, else dense."""
    layout = candidate_layout(names, shapes)
    if layout.n_groups == 1:
        return layout
    return layout if holds(_probe_kernel(loglik, layout)(theta, data, u0)) else dense(layout)

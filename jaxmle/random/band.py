"""Block-tridiagonal inner Hessians: random effects coupled to their neighbours only.

A latent process over time (a random walk, an AR(1) process, NumPyro's
``GaussianRandomWalk``) couples each time point's effects to the previous and the
next one: with the random effects laid out as U (G, K) (:class:`~jaxmle.random.inner.Layout`,
row g = time point g), the Hessian Hᵤᵤ is block-tridiagonal, with diagonal blocks
D_g = ∂²ℓ/∂u_g∂u_g and below them C_g = ∂²ℓ/∂u_g∂u_{g−1} (C_0 = 0), all K × K.

Both come from 3K Hessian-vector products of the whole log-density (colour c, column
j: eⱼ at every group g ≡ c mod 3; a group's two neighbours have the two other
colours, so each product's row g holds one block column alone). The Cholesky factor of
the positive definite A = −Hᵤᵤ (or of a damped Newton matrix) is block-bidiagonal,

    L_g L_gᵀ = A_gg − B_g B_gᵀ,    B_g = A_{g,g−1} L_{g−1}^{−T},

and the solves, log det A = 2 Σ log diag L_g and the diagonal blocks of A⁻¹ (the
conditional variances) are scans over the groups: O(G K³) time and O(G K²) memory, where
the dense fallback costs O(G³K³).

Arrays: the blocks travel stacked as one array (G, 2, K, K) (``[:, 0]`` D, ``[:, 1]``
C) and the factor the same way (``[:, 0]`` L, ``[:, 1]`` B), so the Newton state holds
one array whatever the structure; a block-diagonal layout's blocks are (G, K, K).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def is_band(blocks: jax.Array) -> bool:
    """Stacked block-tridiagonal blocks (G, 2, K, K), not block-diagonal ones (G, K, K)."""
    return jnp.ndim(blocks) == 4


def colours(U: jax.Array) -> jax.Array:
    """The 3K directions (3K, G, K): direction (c, j) is eⱼ at the groups g ≡ c (mod 3)."""
    G, K = U.shape
    mask = (jnp.arange(G)[None, :] % 3 == jnp.arange(3)[:, None]).astype(U.dtype)   # (3, G)
    eye = jnp.eye(K, dtype=U.dtype)
    return (mask[:, None, :, None] * eye[None, :, None, :]).reshape(3 * K, G, K)


def from_columns(cols: jax.Array) -> jax.Array:
    """The stacked blocks (G, 2, K, K) from the products H·d of :func:`colours`' directions
    (3K, G, K), symmetrised: D_g and C_g averaged with (H_{g−1,g})ᵀ."""
    _, G, K = cols.shape
    cols = cols.reshape(3, K, G, K)                       # [c, j, g, i] = (H d_cj)[g, i]
    g = jnp.arange(G)
    diag = jnp.swapaxes(cols[g % 3, :, g, :], 1, 2)       # [g, i, j]
    below = jnp.swapaxes(cols[(g - 1) % 3, :, g, :], 1, 2)              # H[g, g−1]
    above = jnp.swapaxes(cols[g % 3, :, (g - 1) % G, :], 1, 2)          # H[g−1, g]
    sub = 0.5 * (below + jnp.swapaxes(above, 1, 2))
    sub = jnp.where((g > 0)[:, None, None], sub, 0.0)
    diag = 0.5 * (diag + jnp.swapaxes(diag, 1, 2))
    return jnp.stack([diag, sub], axis=1)


def matvec(blocks: jax.Array, V: jax.Array) -> jax.Array:
    """H·V for stacked blocks and V (G, K): D_g v_g + C_g v_{g−1} + C_{g+1}ᵀ v_{g+1}."""
    diag, sub = blocks[:, 0], blocks[:, 1]
    zero = jnp.zeros_like(V[:1])
    prev = jnp.concatenate([zero, V[:-1]])
    nxt = jnp.concatenate([V[1:], zero])
    sub_next = jnp.concatenate([sub[1:], jnp.zeros_like(sub[:1])])
    return (jnp.einsum("gij,gj->gi", diag, V) + jnp.einsum("gij,gj->gi", sub, prev)
            + jnp.einsum("gji,gj->gi", sub_next, nxt))


def _rows_solve(tri_solve: Callable, L: jax.Array, M: jax.Array, transpose: bool) -> jax.Array:
    """Each row m of M (K', K) solved: L x = m (or Lᵀ x = m)."""
    return tri_solve(jnp.broadcast_to(L, M.shape[:1] + L.shape), M, transpose)


def cholesky(A: jax.Array, chol: Callable, tri_solve: Callable) -> jax.Array:
    """The block-bidiagonal factor (G, 2, K, K) of the positive definite A (stacked blocks):
    L_g (lower, NaN where a Schur complement is not positive definite) and B_g.
    ``chol``, ``tri_solve``: :mod:`jaxmle.random.inner`'s small-block kernels."""
    K = A.shape[-1]

    def step(l_prev, blocks):
        a_gg, a_sub = blocks[0], blocks[1]
        b = _rows_solve(tri_solve, l_prev, a_sub, False)      # rows: L⁻¹ a_sub[k] → B = a_sub L^{−T}
        l_g = chol(a_gg - b @ b.T)
        return l_g, jnp.stack([l_g, b])

    _, out = lax.scan(step, jnp.eye(K, dtype=A.dtype), A)   # (C_0 = 0: B_0 = 0)
    return out


def solve(factor: jax.Array, rhs: jax.Array, tri_solve: Callable) -> jax.Array:
    """A⁻¹ rhs (G, K) from :func:`cholesky`'s factor: forward then backward substitution."""
    L, B = factor[:, 0], factor[:, 1]

    def forward(y_prev, x):
        l_g, b_g, r_g = x
        y = tri_solve(l_g, r_g - b_g @ y_prev, False)
        return y, y

    _, y = lax.scan(forward, jnp.zeros_like(rhs[0]), (L, B, rhs))
    b_next = jnp.concatenate([B[1:], jnp.zeros_like(B[:1])])

    def backward(x_next, x):
        l_g, b_n, y_g = x
        out = tri_solve(l_g, y_g - b_n.T @ x_next, True)
        return out, out

    _, sol = lax.scan(backward, jnp.zeros_like(rhs[0]), (L, b_next, y), reverse=True)
    return sol


def inverse_diag(factor: jax.Array, tri_solve: Callable) -> jax.Array:
    """diag(A⁻¹) (G, K) from the factor: Σ_gg = L_g^{−T}(I + B_{g+1}ᵀ Σ_{g+1,g+1} B_{g+1}) L_g^{−1},
    a backward scan."""
    L, B = factor[:, 0], factor[:, 1]
    K = L.shape[-1]
    eye = jnp.eye(K, dtype=L.dtype)
    b_next = jnp.concatenate([B[1:], jnp.zeros_like(B[:1])])

    def backward(s_next, x):
        l_g, b_n = x
        linv_t = _rows_solve(tri_solve, l_g, eye, False)    # rows: L⁻¹e_k, i.e. (L⁻¹)ᵀ
        s = linv_t @ (eye + b_n.T @ s_next @ b_n) @ linv_t.T
        s = 0.5 * (s + s.T)
        return s, jnp.diagonal(s)

    _, d = lax.scan(backward, jnp.zeros((K, K), L.dtype), (L, b_next), reverse=True)
    return d


def logdet(factor: jax.Array) -> jax.Array:
    """log det A = 2 Σ log diag L_g."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(factor[:, 0], axis1=-2, axis2=-1)))

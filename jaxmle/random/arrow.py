r"""The bordered block-diagonal ("arrowhead") inner Hessian: many independent groups plus a
few latent coordinates coupled to all of them.

Several grouping factors (a site effect per site and a year effect per year, crossed;
plots nested in sites), an observation-level effect next to a group effect, or REML's
fixed effects integrated out next to the group effects: ordering the many grouped
coordinates first and the B others (the *border*) last, −Hᵤᵤ is

    [ A   C ]      A = diag(A₁ … A_G)  (G blocks of K × K),
    [ Cᵀ  D ]      C (G, K, B),  D (B × B),

and everything the Laplace fit needs is linear in G for a fixed border:

* the pieces come from K + B Hessian-vector products: the K colours eⱼ tiled over the
  groups (zero on the border) give the diagonal blocks A_g; the B unit vectors of the
  border give C's columns and D;
* the factor: A_g = L_g L_gᵀ, W_g = L_g⁻¹ C_g, the Schur complement
  S = D − Σ_g W_gᵀ W_g = L_S L_Sᵀ (B × B), so log det(−H) = log det A + log det S;
* solves by block elimination, and the conditional variances: diag A⁻¹ plus the border's
  share ‖L_S⁻¹ V_gₖᵀ‖² with V_g = L_g⁻ᵀ W_g, and diag S⁻¹ on the border.

The latent vector travels flat: the G·K grouped coordinates (group-major), then the B
border ones. The pieces travel as :class:`Arrow` (a pytree of three arrays).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Arrow(NamedTuple):
    """The pieces of a bordered block-diagonal matrix (or of its factor)."""

    A: jax.Array        # (G, K, K) diagonal blocks   | factor: their Cholesky factors L_g
    C: jax.Array        # (G, K, B) coupling to border | factor: W_g = L_g⁻¹ C_g
    D: jax.Array        # (B, B) border block          | factor: L_S of the Schur complement


def is_arrow(x) -> bool:
    return isinstance(x, Arrow)


def split(x: jax.Array, G: int, K: int) -> tuple[jax.Array, jax.Array]:
    """A flat latent vector (…, G·K + B) → its grouped part (…, G, K) and border (…, B)."""
    lead = x.shape[:-1]
    return x[..., :G * K].reshape(lead + (G, K)), x[..., G * K:]


def join(grouped: jax.Array, border: jax.Array) -> jax.Array:
    lead = border.shape[:-1]
    return jnp.concatenate([grouped.reshape(lead + (-1,)), border], axis=-1)


def directions(U: jax.Array, G: int, K: int) -> jax.Array:
    """The K + B directions (K + B, G·K + B): colours tiled over the groups, then the
    border's unit vectors."""
    B = U.shape[-1] - G * K
    colours = jnp.broadcast_to(jnp.eye(K, dtype=U.dtype)[:, None, :], (K, G, K))
    first = join(colours, jnp.zeros((K, B), U.dtype))
    second = join(jnp.zeros((B, G, K), U.dtype), jnp.eye(B, dtype=U.dtype))
    return jnp.concatenate([first, second], axis=0)


def from_columns(cols: jax.Array, G: int, K: int) -> Arrow:
    """The pieces from the products with :func:`directions` (K + B, G·K + B)."""
    grouped, border = split(cols, G, K)
    A = jnp.transpose(grouped[:K], (1, 2, 0))                 # A_g[:, j] = H e_j (group g)
    A = 0.5 * (A + jnp.swapaxes(A, 1, 2))
    C = jnp.transpose(grouped[K:], (1, 2, 0))                 # C[g, :, b] = (H e_b)_g
    D = border[K:]
    D = 0.5 * (D + D.T)
    # the border rows of the colour products, Σ_g C_g[j, :], are not needed (C comes whole
    # from the border's products)
    return Arrow(A, C, D)


def matvec(H: Arrow, v: jax.Array) -> jax.Array:
    G, K = H.A.shape[:2]
    x, y = split(v, G, K)
    top = jnp.einsum("gij,gj->gi", H.A, x) + jnp.einsum("gib,b->gi", H.C, y)
    bottom = jnp.einsum("gib,gi->b", H.C, x) + H.D @ y
    return join(top, bottom)


def diagonal(H: Arrow) -> jax.Array:
    return join(jnp.diagonal(H.A, axis1=-2, axis2=-1), jnp.diagonal(H.D))


def add_diagonal(H: Arrow, d: jax.Array) -> Arrow:
    """H + diag(d), d flat (G·K + B)."""
    G, K = H.A.shape[:2]
    x, y = split(d, G, K)
    return Arrow(H.A + x[..., None] * jnp.eye(K, dtype=d.dtype), H.C,
                 H.D + jnp.diag(y))


def _grouped_solve(L: jax.Array, M: jax.Array, transpose: bool, tri_solve: Callable):
    """L_g⁻¹ M_g (or L_g⁻ᵀ M_g) for every group: L (G, K, K), M (G, K, B)."""
    G, K, B = M.shape
    Lb = jnp.broadcast_to(L[:, None], (G, B, K, K))
    return jnp.swapaxes(tri_solve(Lb, jnp.swapaxes(M, 1, 2), transpose), 1, 2)


def _border_solve(L: jax.Array, b: jax.Array, transpose: bool) -> jax.Array:
    """L⁻¹ b (or L⁻ᵀ b) for the border's factor L (B, B), b (B,) or (B, m)."""
    vector = b.ndim == 1
    x = jax.lax.linalg.triangular_solve(L, b[:, None] if vector else b, left_side=True,
                                        lower=True, transpose_a=transpose)
    return x[:, 0] if vector else x


def cholesky(M: Arrow, chol: Callable, tri_solve: Callable) -> Arrow:
    """The factor of a positive definite bordered matrix (NaN where it is not)."""
    L = chol(M.A)
    W = _grouped_solve(L, M.C, False, tri_solve)                # (G, K, B)
    S = M.D - jnp.einsum("gkb,gkc->bc", W, W)
    return Arrow(L, W, chol(0.5 * (S + S.T)))


def solve(F: Arrow, rhs: jax.Array, tri_solve: Callable) -> jax.Array:
    """M⁻¹ rhs by block elimination, rhs flat (G·K + B)."""
    G, K = F.A.shape[:2]
    r, s = split(rhs, G, K)
    a = tri_solve(F.A, r, False)                                # L⁻¹ r
    t = s - jnp.einsum("gkb,gk->b", F.C, a)
    y = _border_solve(F.D, _border_solve(F.D, t, False), True)  # S⁻¹ t
    x = tri_solve(F.A, a - jnp.einsum("gkb,b->gk", F.C, y), True)
    return join(x, y)


def logdet(F: Arrow) -> jax.Array:
    return 2.0 * (jnp.sum(jnp.log(jnp.diagonal(F.A, axis1=-2, axis2=-1)))
                  + jnp.sum(jnp.log(jnp.diagonal(F.D))))


def inverse_diag(F: Arrow, tri_solve: Callable, grouped_diag: jax.Array) -> jax.Array:
    """diag(M⁻¹) (flat), from diag(A⁻¹) (``grouped_diag``, (G, K)) and the border's share:
    Var(x_gk) gains ‖L_S⁻¹ V_gₖᵀ‖² with V_g = L_g⁻ᵀ W_g; the border's is diag S⁻¹."""
    B = F.D.shape[0]
    l_inv = _border_solve(F.D, jnp.eye(B, dtype=F.D.dtype), False)       # L_S⁻¹
    V = _grouped_solve(F.A, F.C, True, tri_solve)                         # (G, K, B)
    share = jnp.sum(jnp.einsum("cb,gkb->gkc", l_inv, V) ** 2, axis=-1)
    return join(grouped_diag + share, jnp.sum(l_inv ** 2, axis=0))

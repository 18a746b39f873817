"""The inner problem of a Laplace fit: the mode û(θ) of the random effects and the
curvature there, exploiting independent groups.

The random effects u (the named leaves) are laid out as a (G, K) matrix U:
row g holds group g's effects (every leaf reshaped to (G, kᵢ), K = Σ kᵢ), so
when groups are independent the Hessian Hᵤᵤ = ∇²ᵤℓ is block-diagonal with G
blocks of K × K. All G blocks come from K Hessian-vector products of the whole
log-density with the "coloured" directions eⱼ tiled over the groups (column j
of every block at once): the cost is linear in G. A dense Hessian is the same
layout with one group (G = 1, K = q).

û(θ) = argmaxᵤ ℓ(θ, u) is found by the package's one damped Newton
(:class:`jaxmle.core.solvers.newton.DampedNewton`) with a block-diagonal Levenberg–Marquardt step
model (:class:`BlockModel`), and differentiated implicitly,

    dû/dθ = (−Hᵤᵤ)⁻¹ ∂θ∇ᵤℓ(θ, û),

in a ``custom_jvp`` whose rule calls û again, so JAX transposes it (gradients)
and nests it (Hessians) without differentiating the iterations.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

import jaxmle.random.arrow as _arrow
import jaxmle.random.band as _band
from jaxmle.random.layout import Border, Layout  # noqa: F401  (Layout: re-exported)
from jaxmle.core.solvers.newton import DampedNewton, Measure, NewtonState, Proposal, Rules, run
from jaxmle.core.typing import Status

INNER_MAX_ITER = 200


def joint(loglik: Callable, layout: Layout, theta: dict, U: jax.Array, data: Any) -> jax.Array:
    """ℓ(θ, u): the user's joint log-density (summed if it returns terms)."""
    params = {**theta, **layout.unpack(U)}
    return jnp.sum(jnp.asarray(loglik(params, data))).astype(U.dtype)


def grad_and_blocks(ell: Callable[[jax.Array], jax.Array], U: jax.Array, band: int = 0):
    """∇ᵤℓ (G, K) and the blocks of ∇²ᵤℓ: the diagonal ones (G, K, K) from K coloured
    HVPs, or with ``band`` the diagonal and sub-diagonal ones stacked (G, 2, K, K) from
    3K (:mod:`jaxmle.random.band`).

    Exact when the blocks are the whole Hessian (independent groups, neighbours only, or
    G = 1).
    """
    g, hvp = jax.linearize(jax.grad(ell), U)
    return g, _blocks(products(hvp, _directions(U, band)), band)


VMAP_DIRECTIONS = 4
LOOP_FROM = 1000
"""Up to :data:`VMAP_DIRECTIONS` directions, or below :data:`LOOP_FROM` random effects,
the Hessian-vector products are one batched (``vmap``) program; beyond, a loop
(``lax.map``) of single products. Batched over many directions, a log-density's gathers
(``a[site]``) and their transposes, scatters, become strided ones that XLA:CPU runs 5–8
times slower than the loop over plain ones: the third derivative of 31 products of a
crossed model with 2,030 effects took 72 ms, against 12 ms as a loop. On small problems
the loop's per-iteration overhead wins instead (cbpp, 16 directions over 71 effects:
a warm fit 31 ms batched, 40 ms as a loop)."""


def products(hvp: Callable[[jax.Array], Any], directions: jax.Array) -> Any:
    """``hvp`` of each direction (stacked on a leading axis)."""
    if directions.shape[0] <= VMAP_DIRECTIONS or directions[0].size < LOOP_FROM:
        return jax.vmap(hvp)(directions)
    return lax.map(hvp, directions)


def _directions(U: jax.Array, band) -> jax.Array:
    if isinstance(band, Border):
        return _arrow.directions(U, band.G, band.K)
    return _band.colours(U) if band else colours_like(U)


def _blocks(cols: jax.Array, band) -> jax.Array:
    """The blocks from the products with :func:`_directions` (K or 3K, G, K; K + B, flat)."""
    if isinstance(band, Border):
        return _arrow.from_columns(cols, band.G, band.K)
    if band:
        return _band.from_columns(cols)
    blocks = jnp.transpose(cols, (1, 2, 0))        # cols[j, g] = H_g[:, j]
    return 0.5 * (blocks + jnp.swapaxes(blocks, 1, 2))


def colours_like(U: jax.Array) -> jax.Array:
    """The K directions eⱼ tiled over the groups: (K, G, K)."""
    G, K = U.shape
    eye = jnp.eye(K, dtype=U.dtype)
    return jnp.broadcast_to(eye[:, None, :], (K, G, K))


SMALL_BLOCK = 3
"""Blocks up to this size are factorised (and solved) by unrolled arithmetic. A fit's
Hessian program differentiates the factor twice, and the unrolled form grows with K³:
first fits of 200 nested blocks took 7.9 / 11.0 / 41 s unrolled at K = 3 / 4 / 6 against
8.7 / 7.6 / 8.7 s with LAPACK's (the warm fits equal, or the unrolled form faster at K ≤ 3)."""


def _chol(A: jax.Array) -> jax.Array:
    """Lower Cholesky factors of a stack of SPD matrices (NaN where not positive definite).

    Small blocks (K ≤ :data:`SMALL_BLOCK`) are unrolled into elementwise arithmetic over
    the groups: the same numbers as LAPACK, and no custom call in the program.
    """
    K = A.shape[-1]
    if K > SMALL_BLOCK:
        return jnp.linalg.cholesky(A)
    L = [[None] * K for _ in range(K)]
    for j in range(K):
        d = A[..., j, j] - sum((L[j][p] ** 2 for p in range(j)), jnp.zeros_like(A[..., j, j]))
        L[j][j] = jnp.sqrt(jnp.where(d > 0, d, jnp.nan))
        for i in range(j + 1, K):
            s = A[..., i, j] - sum((L[i][p] * L[j][p] for p in range(j)), jnp.zeros_like(d))
            L[i][j] = s / L[j][j]
    zero = jnp.zeros_like(A[..., 0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(K)], -1)
                      for i in range(K)], -2)


def _tri_solve(L: jax.Array, b: jax.Array, transpose: bool) -> jax.Array:
    """L x = b (or Lᵀ x = b) for stacks of lower-triangular L and vectors b (…, K)."""
    K = L.shape[-1]
    if K > SMALL_BLOCK:
        return lax.linalg.triangular_solve(L, b[..., None], left_side=True, lower=True,
                                           transpose_a=transpose)[..., 0]
    x = [None] * K
    order = range(K - 1, -1, -1) if transpose else range(K)
    for i in order:
        others = range(i + 1, K) if transpose else range(i)
        s = b[..., i] - sum(((L[..., p, i] if transpose else L[..., i, p]) * x[p] for p in others),
                            jnp.zeros_like(b[..., i]))
        x[i] = s / L[..., i, i]
    return jnp.stack(x, -1)


def cholesky(blocks: jax.Array) -> jax.Array:
    """Lower Cholesky factors of the blocks of −Hᵤᵤ (NaN where not positive definite); for
    stacked block-tridiagonal blocks, the block-bidiagonal factor (:mod:`~jaxmle.random.band`)."""
    return _factor(jax.tree_util.tree_map(jnp.negative, blocks))


def _factor(A: jax.Array) -> jax.Array:
    """Factor of a positive definite A given by its blocks (any structure)."""
    if _arrow.is_arrow(A):
        return _arrow.cholesky(A, _chol, _tri_solve)
    if _band.is_band(A):
        return _band.cholesky(A, _chol, _tri_solve)
    return _chol(A)


def chol_solve(chol: jax.Array, rhs: jax.Array) -> jax.Array:
    """(−Hᵤᵤ)⁻¹ rhs, block by block: rhs (G, K) → (G, K) (flat with a border)."""
    if _arrow.is_arrow(chol):
        return _arrow.solve(chol, rhs, _tri_solve)
    if _band.is_band(chol):
        return _band.solve(chol, rhs, _tri_solve)
    return _tri_solve(chol, _tri_solve(chol, rhs, False), True)


def logdet(chol: jax.Array) -> jax.Array:
    """log det(−Hᵤᵤ) = 2 Σ log diag(L)."""
    if _arrow.is_arrow(chol):
        return _arrow.logdet(chol)
    if _band.is_band(chol):
        return _band.logdet(chol)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)))


def block_inverse_diag(chol: jax.Array) -> jax.Array:
    """diag((−Hᵤᵤ)⁻¹) (G, K) (flat with a border): the conditional variances of the
    random effects."""
    if _arrow.is_arrow(chol):
        return _arrow.inverse_diag(chol, _tri_solve, block_inverse_diag(chol.A))
    if _band.is_band(chol):
        return _band.inverse_diag(chol, _tri_solve)
    K = chol.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(K, dtype=chol.dtype), chol.shape)
    linv = jnp.stack([_tri_solve(chol, eye[..., j], False) for j in range(K)], -1)
    return jnp.sum(linv**2, axis=-2)


# --------------------------------------------------------------------------- inner Newton


def value_grad_blocks(ell: Callable[[jax.Array], jax.Array], U: jax.Array, band: int = 0):
    """ℓ, ∇ᵤℓ and the blocks of ∇²ᵤℓ (:func:`grad_and_blocks`) from one linearisation
    (one copy of ℓ)."""
    (f, g), lin = jax.linearize(jax.value_and_grad(ell), U)
    return f, g, _blocks(products(lin, _directions(U, band))[1], band)


def _lm_step(g: jax.Array, hess: jax.Array, mu: jax.Array):
    """The damped Newton step (H + μ·D) d = −g, D = |diag H| (floored per group), of the
    blocks of a minimisation (block-diagonal (G, K, K) or stacked block-tridiagonal
    (G, 2, K, K): the damping goes on the diagonal blocks), and −gᵀd."""
    if _arrow.is_arrow(hess):     # (one floor for all: the border couples every group)
        diag = jnp.abs(_arrow.diagonal(hess))
        diag = jnp.maximum(diag, 1e-12 * jnp.max(diag) + 1e-300)
        d = chol_solve(_factor(_arrow.add_diagonal(hess, mu * diag)), -g)
        return d, jnp.sum(-g * d)
    band = _band.is_band(hess)
    diag_blocks = hess[:, 0] if band else hess
    K = hess.shape[-1]
    diag = jnp.abs(jnp.diagonal(diag_blocks, axis1=-2, axis2=-1))
    diag = jnp.maximum(diag, 1e-12 * jnp.max(diag, axis=-1, keepdims=True) + 1e-300)
    damping = mu * diag[..., None] * jnp.eye(K, dtype=g.dtype)
    d = chol_solve(_factor(hess.at[:, 0].add(damping) if band else hess + damping), -g)
    return d, jnp.sum(-g * d)


class BlockStep(NamedTuple):
    d: jax.Array            # the next step (G, K), taken untested once converged
    decrement: jax.Array    # −gᵀd


class BlockModel(NamedTuple):
    """The step model of the inner mode solve: minimise −ℓ(U) with the Hessian's
    diagonal blocks, one per group (Levenberg–Marquardt, block-diagonal Cholesky), or
    with ``band`` its block-tridiagonal part (:mod:`~jaxmle.random.band`)."""

    band: Any = 0           # or a :class:`Border`

    def initial(self, U0):
        if isinstance(self.band, Border):
            G, K = self.band
            B = U0.shape[0] - G * K
            eye = jnp.broadcast_to(jnp.eye(K, dtype=U0.dtype), (G, K, K))
            return (_arrow.Arrow(eye, jnp.zeros((G, K, B), U0.dtype), jnp.eye(B, dtype=U0.dtype)),
                    BlockStep(jnp.zeros_like(U0), jnp.zeros((), U0.dtype)))
        K = U0.shape[1]
        eye = jnp.broadcast_to(jnp.eye(K, dtype=U0.dtype), U0.shape + (K,))
        if self.band:
            eye = jnp.stack([eye, jnp.zeros_like(eye)], axis=1)
        return eye, BlockStep(jnp.zeros_like(U0), jnp.zeros((), U0.dtype))

    def evaluate(self, neg_ell, U):
        return value_grad_blocks(neg_ell, U, self.band)

    def diagonal(self, hess):
        """The Hessian's diagonal (G, K) (flat with a border)."""
        if _arrow.is_arrow(hess):
            return _arrow.diagonal(hess)
        return jnp.diagonal(hess[:, 0] if self.band else hess, axis1=-2, axis2=-1)

    def propose(self, s: NewtonState) -> Proposal:
        zero = jnp.zeros((), s.f.dtype)      # no predicted decrease: accept any non-increase
        return Proposal(s.model.d, zero, zero, s.damping, jnp.asarray(False))

    def refresh(self, s: NewtonState) -> BlockStep:
        return BlockStep(*_lm_step(s.g, s.hess, s.damping))

    def measure(self, s: NewtonState, step: BlockStep) -> Measure:
        return Measure(step.decrement / (1.0 + jnp.abs(s.f)), s.damping == 0)

    def valid(self, s: NewtonState) -> jax.Array:
        return jnp.asarray(True)


INNER_RULES = Rules(
    decrease=0.0, noise=1e-13 / float(np.finfo(np.float64).eps), shrink=10.0, zero_below=5e-5,
    floor=1e-5, grow=10.0, accelerate=1.0, line_search=False, precision_test=False)
"""Accept any trial that does not increase −ℓ beyond 10⁻¹³(1 + |ℓ|); μ/10 after an
accepted trial (0 from 10⁻⁴), max(10μ, 10⁻⁴) after a rejected one; converged when the
undamped step has decrement ≤ 10⁻¹²(1 + |ℓ|)."""
INNER = DampedNewton(BlockModel(), INNER_RULES)
INNER_BAND = DampedNewton(BlockModel(band=1), INNER_RULES)

INNER_TOL = 1e-6


def solve_mode(ell: Callable[[jax.Array], jax.Array], U0: jax.Array, band: int = 0) -> jax.Array:
    """argmaxᵤ ℓ by Levenberg–Marquardt Newton from U0 (:data:`INNER`); NaN if it does
    not converge.

    Each iteration evaluates ℓ, ∇ℓ and the blocks at a trial point (one copy of
    ℓ in the compiled loop); the trial is accepted when ℓ does not decrease
    (beyond rounding), and μ shrinks ×10 after an accepted trial (to 0) and grows
    ×10 after a rejected one. Converged when the undamped step from an accepted
    point has decrement gᵀ(−H)⁻¹g ≤ 10⁻¹²(1 + |ℓ|); that last step is taken
    (not evaluated), so the error left is of the order of its square.
    """
    def neg_ell(U):
        return -ell(U)

    solver = DampedNewton(BlockModel(band), INNER_RULES) if isinstance(band, Border) else \
        INNER_BAND if band else INNER
    s = run(solver, neg_ell, U0, INNER_TOL, INNER_MAX_ITER - 1)
    ok = s.done & (s.status == Status.SUCCESS)
    return jnp.where(ok, s.z + s.model.d, jnp.nan)


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Static (hashable): what the custom_jvp of û closes over."""

    loglik: Callable
    layout: Layout


def _ell(problem: _Problem, theta, data):
    return lambda U: joint(problem.loglik, problem.layout, theta, U, data)


def _mode_primal(problem: _Problem, theta, data, U0):
    return solve_mode(_ell(problem, theta, data), U0, problem.layout.structure)


mode = jax.custom_jvp(_mode_primal, nondiff_argnums=(0,))


def _zero_tangent(p):
    p = jnp.asarray(p)
    if jnp.issubdtype(p.dtype, jnp.inexact):
        return jnp.zeros_like(p)
    return np.zeros(p.shape, jax.dtypes.float0)      # integer data (group indices)


def _instantiate(primal, tangent):
    return jax.tree_util.tree_map(
        lambda p, t: _zero_tangent(p) if isinstance(t, SymbolicZero) else t, primal, tangent,
        is_leaf=lambda t: isinstance(t, SymbolicZero))


def _all_zero(tangent) -> bool:
    return all(isinstance(t, SymbolicZero) for t in jax.tree_util.tree_leaves(
        tangent, is_leaf=lambda t: isinstance(t, SymbolicZero)))


def _mode_jvp(problem: _Problem, primals, tangents):
    """dû = (−Hᵤᵤ)⁻¹ ∂(θ, data)∇ᵤℓ · (dθ, ddata), at û (computed by a call of ``mode``)."""
    theta, data, U0 = primals
    t_theta, t_data, _ = tangents
    U = mode(problem, theta, data, U0)
    _, blocks = grad_and_blocks(_ell(problem, theta, data), U, problem.layout.structure)
    chol = cholesky(blocks)

    def grad_u(th, d):
        return jax.grad(joint, argnums=3)(problem.loglik, problem.layout, th, U, d)

    if _all_zero(t_data):
        _, rhs = jax.jvp(lambda th: grad_u(th, data), (theta,), (_instantiate(theta, t_theta),))
    else:
        _, rhs = jax.jvp(grad_u, (theta, data),
                         (_instantiate(theta, t_theta), _instantiate(data, t_data)))
    return U, chol_solve(chol, rhs)


mode.defjvp(_mode_jvp, symbolic_zeros=True)


def laplace(loglik: Callable, layout: Layout, theta: dict, data: Any, U0: jax.Array):
    """L(θ) = ℓ(θ, û) + (q/2) log 2π − ½ log det(−Hᵤᵤ(θ, û)), and û."""
    problem = _Problem(loglik, layout)
    U = mode(problem, theta, data, U0)
    f, _, blocks = value_grad_blocks(_ell(problem, theta, data), U, layout.structure)
    value = f + 0.5 * layout.q * math.log(2 * math.pi) - 0.5 * logdet(cholesky(blocks))
    return value, U

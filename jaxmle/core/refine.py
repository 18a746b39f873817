"""The information at the optimum in a well-conditioned basis, and Newton steps there.

H_z = ∇²f(ẑ) summed in float64 loses the digits that an ill-conditioned model's
covariance needs: for y ~ 1 + x with x = c + N(0, 1), H ∝ XᵀX and the Schur complement
that sets SE(slope) is ~c² times smaller than its entries, so at c = 2e6 the SEs from
any inverse of that H are a few percent off, and past c ≈ 1e7 (or NIST's Filip) H is not
even positive definite in float64. No factorisation of H recovers those digits; a
different computation of the information does.

With T = D^-½ V |Λ|^-½ from the eigen-decomposition of the scaled H_z the solver ends
with (:func:`basis`; its null and negative eigenvalues floored at the rounding
threshold: their eigenvectors are accurate even where the eigenvalues are noise),
H_w = ∇²_w f(ẑ + T·w) at w = 0 is near ±I and accurate: the per-observation products
along each direction of T (for the regression, x_i − x̄) are formed before anything is
summed (:func:`value_grad_hessian_in`). Then Cov_z = T·H_w⁻¹·Tᵀ, accurate to ~ε·c (the
SE of y ~ 1 + x at c = 1e8: 2e-8 relative, where H_z's inverse gives NaN).

:func:`frame` expresses H_w's eigen-decomposition as an :class:`Eigen` of the scaled
H_z (directions D½·T·a_k normalised, values their Rayleigh quotients), so the
covariance, the end-of-fit verdict and the singularity flags use it unchanged (the
covariance Σ u_k u_kᵀ/μ_k is exact whatever the directions' angles).

The **polish** (:class:`Polish`): Newton steps in the w basis from the solver's final
point, kept while f falls (or stays level within 1e-9 relative — 1e-6 within √τ standard
errors, where f's rounding hides the gain — while the decrement falls fourfold: the
gradient is more accurate than f), on the well-determined directions, until the
decrement gᵀH⁻¹g (null directions counted with their eigenvalue floored, as the solver
does) is ≤ τ² with H_w not indefinite. Its steps are iterations: at most what the solver
left of ``max_iter``. A fit whose solver converged usually needs none (one evaluation:
the information). The Newton stops on its own when it crawls (``Rules.crawl`` accepted
steps in a row at a numerically singular H: its steps along the floored direction are
rounding noise, e.g. y ~ 1 + x at an offset of 1e7, or NIST's Filip) with STALLED; the
polish finishes such fits, and a ``MAX_ITER`` / ``STALLED`` fit that passes the test here
is converged (the solver's own test, evaluated in a basis where it can be). Where H_w is
itself ill-conditioned (H_z's eigenvectors were only a subspace: Filip), the basis is
refined from H_w (``REBASE`` times at most) before a step.

Written once for NumPy and JAX (:mod:`jaxmle.core.xp`): the host driver runs the
polish as a Python loop of the model's f/∇f/∇²f program, the fused program as a
``lax.while_loop``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.core.solvers import Eigen, Solution, eigen, null_threshold, thresholds
from jaxmle.core.typing import Status
from jaxmle.core import xp as _xp
from jaxmle.core.xp import namespace

MAX_EVAL = 40         # evaluations of f/∇f/∇²f in the polish (the first: the information)
REBASE = 2            # refinements of the basis from H_w
ILL = 1e-4            # H_w's eigenvalues spread more than this: refine the basis
WELL = 1e-4           # a converged fit whose scaled H_z has no eigenvalue below this
#                       share of the largest is not polished (its inverse is accurate)
HALVINGS = 8          # a rejected step is halved this often before the polish gives up
SLACK = 1e-9          # f may rise this much (relative) on a gradient-confirmed step


def value_grad_hessian_in(fun, z: jax.Array, t: jax.Array):
    """f(z), ∇f(z) and Tᵀ∇²f(z)T: the Hessian of w ↦ f(z + T·w) at w = 0, forward over
    reverse. With T = I the very numbers of :func:`~jaxmle.core.solvers.value_grad_hessian`."""
    def grad_with_aux(w):
        f, g = jax.value_and_grad(fun)(z + t @ w)
        # Tᵀg with T's exact zeros kept out of the sum: a non-finite entry of ∇f (or of a
        # Hessian column, in the forward pass) stays in its own coordinate (with T = I the
        # solver reads which coordinate's derivative is not finite at a bad start)
        return jnp.sum(jnp.where(t != 0, t * g[:, None], 0.0), axis=0), (f, g)

    hess, (f, g) = jax.jacfwd(grad_with_aux, has_aux=True)(jnp.zeros_like(z))
    return f, g, 0.5 * (hess + hess.T)


def basis(e: Eigen) -> tuple[jax.Array, jax.Array]:
    """T = D^-½ V |Λ|^-½ (eigenvalues floored at the null threshold), for which Tᵀ H T ≈
    diag(±1) on the well-determined directions, and T⁻¹ = |Λ|^½ Vᵀ D^½ (no solve); the
    held coordinates' columns stay unit vectors (scaled), last, as
    :func:`~jaxmle.core.solvers.eigen` orders them."""
    xp = namespace(e.values, e.vectors)
    root = xp.sqrt(xp.maximum(xp.abs(e.values), null_threshold(e)))
    t = e.vectors / e.scale[:, None] / root[None, :]
    tinv = root[:, None] * e.vectors.T * e.scale[None, :]
    ok = xp.all(xp.isfinite(t)) & xp.all(xp.isfinite(tinv))
    return xp.where(ok, t, xp.diag(1.0 / e.scale)), xp.where(ok, tinv, xp.diag(e.scale))


def held_columns(held_z: jax.Array) -> jax.Array:
    """Which columns of :func:`basis`'s T are held coordinates (the last n_held)."""
    xp = namespace(held_z)
    m = held_z.shape[0]
    return xp.arange(m) >= m - xp.sum(held_z)


def frame(ew: Eigen, t: jax.Array, held_w: jax.Array, scale: jax.Array) -> Eigen:
    """H_z's eigen-decomposition in the scaled frame of ``scale`` (= D½ of H_z), from that
    of H_w = TᵀH_zT (``ew``, unscaled: ``eigen(H_w, held_w, scaled=False)``): the
    directions u_k = T·a_k of H_w's eigenvectors (a_kᵀH_w a_k = μ_k), as unit vectors
    D½u_k/‖D½u_k‖ with values μ_k/‖D½u_k‖², ascending, the held ones last; each
    direction's null threshold is H_w's, carried over the same way."""
    xp = namespace(ew.values, t, scale)
    u = t @ ew.vectors
    su = u * scale[:, None]
    norm2 = xp.sum(su * su, axis=0)
    ok = norm2 > 0
    vectors = su / xp.sqrt(xp.where(ok, norm2, 1.0))[None, :]
    values = ew.values / xp.where(ok, norm2, 1.0)
    n_free = held_w.shape[0] - xp.sum(held_w)
    held_dir = xp.arange(values.shape[0]) >= n_free
    thr = null_threshold(ew) / xp.where(ok, norm2, 1.0)
    # ascending, the held last: a permutation matrix from the ranks (dense m × m algebra:
    # under ``vmap`` it compiled ~0.7 s faster than an argsort and gathers)
    key = xp.where(held_dir, np.inf, values)
    idx = xp.arange(key.shape[0])
    before = (key[None, :] < key[:, None]) | ((key[None, :] == key[:, None])
                                               & (idx[None, :] < idx[:, None]))
    perm = (xp.sum(before, axis=1)[:, None] == idx[None, :]).astype(values.dtype)
    values, thr = values @ perm, thr @ perm
    vectors = vectors @ perm
    held_dir = (held_dir.astype(values.dtype) @ perm) > 0.5
    top = xp.max(xp.where(held_dir, -np.inf, values), initial=-np.inf)
    values = xp.where(held_dir, xp.where(xp.isfinite(top), top, 1.0), values)
    return Eigen(values, vectors, scale, xp.where(held_dir, 0.0, thr))


class Polish(NamedTuple):
    """The polish's state: the current point (f, ∇f, H_w in basis ``t``), its decrement,
    the next point to evaluate, and whether the current point passes the test."""

    z: jax.Array
    f: jax.Array
    g: jax.Array
    hw: jax.Array
    t: jax.Array
    tinv: jax.Array         # T⁻¹
    values: jax.Array       # the current H_w's eigen-decomposition (unscaled)
    vectors: jax.Array
    scale: jax.Array        # D½ of the solver's H_z (the frame of :func:`frame`)
    lam2: jax.Array
    trial: jax.Array
    n: jax.Array            # evaluations so far
    rebased: jax.Array      # basis refinements so far
    halved: jax.Array       # halvings of the current step
    moved: jax.Array        # accepted steps
    budget: jax.Array       # steps allowed: what the solver left of ``max_iter``
    reached: jax.Array      # the current point passes the decrement test, H_w not indefinite
    done: jax.Array


def start(sol: Solution, hess: jax.Array, held_z: jax.Array, max_iter) -> Polish:
    """The polish at the solver's final point (its first evaluation: ẑ itself, in the
    basis from the solver's H); its steps are iterations: at most what the solver left
    of ``max_iter`` (a fit that ran out gets the information, no step)."""
    xp = namespace(sol.z, hess)
    budget = xp.maximum(xp.asarray(max_iter, np.int32) - sol.n_iter, 0).astype(np.int32)
    e = eigen(hess, held_z)
    zero = xp.zeros((), np.int32)
    inf = xp.asarray(np.inf, sol.z.dtype)
    eye = xp.eye(sol.z.shape[0], dtype=sol.z.dtype)
    # nothing to polish where H_z is well conditioned and the solver converged (its
    # inverse then loses < ~1e-10 of the SEs): the current eigen-decomposition is H_z's
    top = xp.max(xp.abs(e.values), initial=0.0)
    stopped = (sol.status == Status.MAX_ITER) | (sol.status == Status.STALLED)
    needed = (xp.all(xp.isfinite(e.values)) & xp.all(xp.isfinite(sol.g))
              & ((e.values[0] < WELL * top) | stopped)
              & ((sol.status == Status.SUCCESS) | stopped))
    # (rare: a batch computes the basis only when some member is polished)
    t, tinv = _xp.rare(xp, needed, basis,
                       lambda e: (xp.eye(e.values.shape[-1], dtype=e.values.dtype),) * 2, e)
    return Polish(sol.z, inf, sol.g, eye, t, tinv, e.values, e.vectors, e.scale, inf,
                  sol.z, zero, zero, zero, zero, budget, xp.zeros((), bool), ~needed)


def _newton(e: Eigen, gw: jax.Array, held_w: jax.Array):
    """From H_w's eigen-decomposition: the Newton step in w on the well-determined free
    directions, the decrement (a numerically null direction counts with its eigenvalue
    floored at the threshold, as in the solver: a gradient along it keeps λ² large),
    whether H_w has no negative eigenvalue beyond rounding, and whether its regular
    spectrum is ill-conditioned."""
    xp = namespace(e.values, gw)
    thr = null_threshold(e)
    free = xp.arange(e.values.shape[0]) < held_w.shape[0] - xp.sum(held_w)
    finite = xp.all(xp.isfinite(e.values)) & xp.all(xp.isfinite(gw))
    psd = finite & ~xp.any(free & (e.values < -thr))
    a = e.vectors / e.scale[:, None]
    gv = a.T @ xp.where(held_w, 0.0, gw)
    ok = free & (e.values > thr)
    coef = xp.where(ok, gv / xp.where(ok, e.values, 1.0), 0.0)
    null = free & ~ok
    lam2 = xp.sum(coef * gv) + xp.sum(xp.where(null, gv * gv, 0.0)) / thr
    lam2 = xp.where(finite, lam2, np.inf)
    top = xp.max(xp.where(ok, e.values, 0.0), initial=0.0)
    low = xp.min(xp.where(ok, e.values, np.inf), initial=np.inf)
    return -(a @ coef), lam2, psd, psd & (low < ILL * top)


def tell(p: Polish, f: jax.Array, g: jax.Array, hw: jax.Array, held_w: jax.Array,
         tol: jax.Array) -> Polish:
    """f, ∇f and H_w at ``p.trial`` (in basis ``p.t``): keep it or not, then the next
    trial point (or done)."""
    xp = namespace(f, g, hw, p.f)
    e = eigen(hw, held_w, scaled=False)
    step, lam2, psd, ill = _newton(e, p.t.T @ g, held_w)
    eps = np.finfo(np.dtype(hw.dtype)).eps
    first = p.n == 0
    same = xp.all(p.trial == p.z)       # a re-evaluation in a refined basis
    finite = xp.isfinite(f) & xp.all(xp.isfinite(g)) & xp.all(xp.isfinite(hw))
    scale = 1.0 + xp.abs(p.f)
    lower = f < p.f - 16 * eps * scale
    # within √τ standard errors the quadratic model is exact and f's rounding (Filip: ~5e-9
    # relative) hides the gain: a step that cuts the decrement fourfold is kept unless f
    # rises beyond rounding of any reasonable size
    slack = xp.where(p.lam2 <= tol, 1e-6, SLACK)
    level = (f <= p.f + slack * scale) & (lam2 <= 0.25 * p.lam2)
    accept = first | (finite & (same | lower | level))
    moved = p.moved + (accept & ~first & ~same).astype(np.int32)
    small = xp.abs(f - p.f) <= (tol**2 + 16 * eps) * scale
    reached = psd & ((lam2 <= tol**2) | (~first & ~same & small & (lam2 <= tol)))
    rebase = accept & ill & (p.rebased < REBASE)
    def rebased(e):
        b, binv = basis(e)
        return p.t @ b, binv @ p.tinv

    t_next, tinv_next = _xp.branch(xp, rebase, rebased, lambda e: (p.t, p.tinv), e)
    keep = lambda new, old: xp.where(accept, new, old)   # noqa: E731
    z, f_, g_, hw_, lam2_ = (keep(p.trial, p.z), keep(f, p.f), keep(g, p.g), keep(hw, p.hw),
                             keep(lam2, p.lam2))
    values, vectors = keep(e.values, p.values), keep(e.vectors, p.vectors)
    # a rejected step from a point within √τ standard errors (H_w positive definite) is
    # the precision limit (the solver's own rule): done; farther out it is halved
    halve = ~accept & (p.halved < HALVINGS) & (p.lam2 > tol)
    reached = xp.where(accept, reached,
                       p.reached | (~halve & (p.lam2 <= tol) & (p.n > 0) & xp.isfinite(p.f)))
    n = p.n + 1
    no_room = accept & ~rebase & (moved >= p.budget)
    done = ((~accept & ~halve) | (reached & ~rebase) | (~psd & accept) | (n >= MAX_EVAL)
            | ~xp.isfinite(lam2_) | no_room)
    trial = xp.where(rebase, z, z + p.t @ step)
    trial = xp.where(halve, p.z + 0.5 * (p.trial - p.z), trial)
    halved = xp.where(halve, p.halved + 1, 0).astype(np.int32)
    return Polish(z, f_, g_, hw_, t_next, tinv_next, values, vectors, p.scale, lam2_, trial, n,
                  p.rebased + rebase.astype(np.int32), halved, moved, p.budget, reached, done)


def finish(sol: Solution, p: Polish, held_w: jax.Array) -> tuple[Solution, jax.Array, Eigen]:
    """The solution at the polished point (a MAX_ITER or STALLED fit that now passes the
    decrement test is converged), H_z there from H_w (T⁻ᵀH_wT⁻¹: the reported information)
    and the eigen-decomposition the inference uses (:func:`frame`: from H_w itself); where
    nothing was polished (see :func:`start`), the solution, H_z and its eigen-decomposition
    as the solver left them."""
    xp = namespace(p.z, p.hw)

    def polished(sol, p, held_w):
        upgrade = p.reached & ((sol.status == Status.MAX_ITER) | (sol.status == Status.STALLED))
        status = xp.where(upgrade, Status.SUCCESS, sol.status).astype(np.int32)
        hess_z = p.tinv.T @ p.hw @ p.tinv
        hess_z = 0.5 * (hess_z + hess_z.T)
        moved = p.moved > 0
        out = sol._replace(z=xp.where(moved, p.z, sol.z), f=xp.where(moved, p.f, sol.f),
                           g=xp.where(moved, p.g, sol.g), n_iter=sol.n_iter + p.moved,
                           status=status)
        hess = xp.where(xp.all(xp.isfinite(hess_z)), hess_z, sol.hess)
        ew = Eigen(p.values, p.vectors, xp.ones_like(p.values))
        return out._replace(hess=hess), frame(ew, p.t, held_w, p.scale)

    def unchanged(sol, p, held_w):
        plain = Eigen(p.values, p.vectors, p.scale)   # H_z's own (see start)
        return sol, plain._replace(threshold=thresholds(plain))

    # (rare: a batch computes the polished frame only when some member was polished)
    out, eig = _xp.rare(xp, p.n > 0, polished, unchanged, sol, p, held_w)
    return out, out.hess, eig


def run(objective_of, operands: tuple, sol: Solution, hess: jax.Array, held_z: jax.Array,
        tol, max_iter, unfinished=None) -> tuple[Solution, jax.Array, Eigen]:
    """The polish in a program: :func:`start`, a ``lax.while_loop`` of :func:`tell` with
    f/∇f/H_w of ``objective_of(*operands)``, :func:`finish`. The loop is a
    :func:`~jaxmle.core.xp.rare` branch (the objective is built inside it from the
    operands: a branch closes over no batched value), so a batch in which no member is
    polished does not enter it. ``unfinished``: a ``fit_batch`` pass's member still
    iterating (its result is discarded; the pass concludes every member) is not polished:
    as a stopped fit it would be, and the batch's loop then ran several evaluations of the
    whole chunk for its stragglers (~12% of ``fit_batch``'s time, Normal n = 100)."""
    held_w = held_columns(held_z)
    tol = jnp.asarray(1e-8 if tol is None else tol, sol.z.dtype)

    def loop(p, held_w, tol, *operands):
        objective = objective_of(*operands)

        def body(p):
            f, g, hw = value_grad_hessian_in(objective, p.trial, p.t)
            return tell(p, f, g, hw, held_w, tol)

        return jax.lax.while_loop(lambda p: ~p.done, body, p)

    max_iter = np.iinfo(np.int32).max if max_iter is None else max_iter
    p = start(sol, hess, held_z, max_iter)
    if unfinished is not None:
        p = p._replace(done=p.done | unfinished)
    p = _xp.rare(jnp, ~p.done, loop, lambda p, *_: p, p, held_w, tol, *operands)
    return finish(sol, p, held_w)

"""The plain Newton's step model: a dense Hessian, factorised by Cholesky or ``eigh``.

H = ∇²f is the observed information in z. The step is the Levenberg–Marquardt
step d = −(H + μD)⁻¹g, D = |diag H| (so μ is scale-free), from the unit-diagonal-
scaled Hs = D^-½ H D^-½: from its Cholesky factor where Hs is safely positive
definite and μ = 0, else from its eigen-decomposition, which gives the step for
any μ, the definiteness test and the Newton decrement λ² = gᵀH⁻¹g. Where H is
indefinite, μ is raised above −λ_min (the step descends along the negative
curvature) and the step is capped to ``reach`` times each coordinate's size.
The acceptance, damping and status logic is :class:`jaxmle.core.solvers.newton.DampedNewton`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.core import xp as _xp
from jaxmle.core.solvers.escape import escape_probe, probe_plan
from jaxmle.core.solvers.newton import (
    DampedNewton,
    Measure,
    NewtonState,
    Proposal,
    Rules,
    _eps,
)
from jaxmle.core.xp import namespace


def value_grad_hessian(fun, z: jax.Array):
    """f, ∇f and ∇²f in one forward-over-reverse pass."""

    def grad_with_aux(z):
        f, g = jax.value_and_grad(fun)(z)
        return g, (f, g)

    hess, (f, g) = jax.jacfwd(grad_with_aux, has_aux=True)(z)
    return f, g, 0.5 * (hess + hess.T)


def _scaling(hess: jax.Array, floor: jax.Array | None = None) -> jax.Array:
    """Diagonal scaling D½ with D = |diag H| (floored), so damping is scale-free (leading
    batch axes allowed). The floor, ε⁴ of the largest |H_ii| (and the smallest normal
    number), only keeps a zero diagonal from dividing by 0: a floor near the largest
    entry (it was 1e-12 of it) leaves the coordinates of badly scaled problems (Pontius:
    diag ratio ~1e25 between x² and σ) unscaled, so a well-determined σ looked numerically
    null to the eigen-decomposition and its Newton step was floored to a crawl.
    ``floor``: a lower bound on D per coordinate as well (the solver's
    :func:`gradient_floor`)."""
    xp = namespace(hess, floor)
    finfo = np.finfo(hess.dtype)
    diag = xp.abs(xp.diagonal(hess, axis1=-2, axis2=-1))
    top = xp.max(diag, axis=-1, keepdims=True, initial=0.0)
    if floor is not None:
        diag = xp.maximum(diag, floor)
    low = xp.maximum(top * finfo.eps**4, finfo.tiny)
    return xp.sqrt(xp.where(xp.isfinite(diag), xp.maximum(diag, low), 1.0))


def gradient_floor(g: jax.Array, z: jax.Array) -> jax.Array:
    """10⁻³·|g_i| / max(|z_i|, 1): the curvature below which coordinate i's Newton step
    would be more than a thousand times its own size. D_i is at least this, so the
    damping can shorten any coordinate's step to a finite length: a coordinate whose row
    of H is zero while its gradient is not (a variance at a start where the effects it
    scales are all 0: f is linear in it there) was scaled by the ε⁴ floor alone, and no
    damping up to the collapse limit could bring its step to anything finite (the fit
    stalled at its start). The factor 10⁻³ leaves every ordinary path as it was (at the
    factor 1, a Normal fit from μ = 0, σ = 1 took 10–14 iterations instead of 9–10, and
    ``fit_batch`` ran 25% slower; it also brought NIST Eckerle4 from its first start with
    σ free to its optimum, which this factor does not). It vanishes with g at an optimum:
    the scaling of a converged fit's information is H's own."""
    xp = namespace(g, z)
    out = 1e-3 * xp.abs(g) / xp.maximum(xp.abs(z), 1.0)
    return xp.where(xp.isfinite(out), out, 0.0)


class Eigen(NamedTuple):
    """Eigen-decomposition of the unit-diagonal-scaled Hessian D^-½ H D^-½ = V Λ Vᵀ."""

    values: jax.Array
    vectors: jax.Array
    scale: jax.Array        # D½
    # per-direction null thresholds, where the values were not computed from the scaled
    # H itself (:func:`jaxmle.core.refine.frame`: from the information in another basis,
    # whose own rounding sets them); None: :func:`null_threshold` for every direction
    threshold: jax.Array | None = None


def _scaled(hess: jax.Array, floor: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """D^-½ H D^-½ (the identity if H is not finite) and D½ (leading batch axes allowed:
    the test and the scaling are per matrix)."""
    xp = namespace(hess, floor)
    scale = _scaling(hess, floor)
    hs = hess / (scale[..., :, None] * scale[..., None, :])
    finite = xp.all(xp.isfinite(hs), axis=(-2, -1), keepdims=True)
    return xp.where(finite, hs, xp.eye(hs.shape[-1], dtype=hs.dtype)), scale


def eigen(hess: jax.Array, held: jax.Array | None = None, scaled: bool = True) -> Eigen:
    """The eigen-decomposition of the scaled H; with ``held`` (a mask over z), of the free
    block only: the held coordinates get eigenvalues above every free one (Gershgorin),
    so they are the last ``n_held`` and their vectors are the held unit vectors; those
    values are then reported as the largest free one, so thresholds relative to λ_max
    (:func:`null_threshold`) are the free block's and the held ones are never "null".
    ``scaled=False``: of H itself (already well scaled: :mod:`jaxmle.core.refine`'s H_w,
    whose null directions a unit diagonal would inflate to rounding noise of order 1)."""
    xp = namespace(hess, held)
    if scaled:
        hs, scale = _scaled(hess)
    else:
        finite = xp.all(xp.isfinite(hess))
        hs = xp.where(finite, hess, xp.eye(hess.shape[-1], dtype=hess.dtype))
        scale = xp.ones(hess.shape[-1], hess.dtype)
    if held is None:
        values, vectors = _xp.eigh(xp, hs)
        return Eigen(values, vectors, scale)
    hs = xp.where(held[:, None] | held[None, :], 0.0, hs)
    top = 2.0 * xp.max(xp.sum(xp.abs(hs), axis=1), initial=0.0) + 1.0
    values, vectors = _xp.eigh(xp, hs + xp.diag(xp.where(held, top, 0.0)))
    n_free = xp.sum(~held)
    lam_max = xp.where(n_free > 0, values[xp.maximum(n_free - 1, 0)], 1.0)
    values = xp.where(xp.arange(values.shape[0]) >= n_free, lam_max, values)
    return Eigen(values, vectors, scale)


def hold_rows(hess: jax.Array, held: jax.Array | None) -> jax.Array:
    """H with the held coordinates' rows and columns replaced by d·I, d the largest free
    |H_ii|: their Newton step is 0 and, scaled, they are a unit block that leaves the
    free coordinates' scaling, damping and Cholesky/eigen choice as they were."""
    if held is None:
        return hess
    xp = namespace(hess, held)
    diag = xp.where(held, 0.0, xp.abs(xp.diag(hess)))
    d = xp.max(xp.where(xp.isfinite(diag), diag, 0.0), initial=0.0)
    eye = xp.eye(hess.shape[0], dtype=hess.dtype) * xp.where(d > 0, d, 1.0)
    return xp.where(held[:, None] | held[None, :], eye, hess)


class Factor(NamedTuple):
    """The scaled Hessian Hs = D^-½ H D^-½ factorised for the Newton step.

    Where Hs is safely positive definite (Cholesky pivots ≥ √ε) and no damping is
    in use, the step and the decrement come from the Cholesky factor; elsewhere
    (indefinite, nearly singular, or damped) from the eigen-decomposition, which is
    computed only when some member of the batch needs it.
    """

    eig: Eigen              # valid where use_eig (``eig.scale`` always)
    chol: jax.Array         # lower Cholesky factor of Hs, valid where not use_eig
    use_eig: jax.Array


def factorize(hess: jax.Array, damping: jax.Array, floor: jax.Array | None = None) -> Factor:
    """Factor a batch of Hessians (leading axis).

    The choice between Cholesky and ``eigh`` is made per member, from its own
    Hessian and damping only, so a fit's path never depends on the rest of the
    batch; the batched ``eigh`` runs only when at least one member needs it.
    """
    xp = namespace(hess, damping, floor)
    hs, scale = _scaled(hess, floor)
    chol = _xp.cholesky(xp, hs)
    pivots = xp.diagonal(chol, axis1=-2, axis2=-1) ** 2
    finite = xp.all(xp.isfinite(chol), axis=(-2, -1))
    safe = finite & (xp.min(pivots, axis=-1, initial=1.0) >= xp.sqrt(_eps(hess.dtype, xp)))
    use_eig = ~(safe & (damping == 0))
    eye = xp.broadcast_to(xp.eye(hess.shape[-1], dtype=hess.dtype), hess.shape)
    values, vectors = _xp.branch(xp, xp.any(use_eig), lambda h: _xp.eigh(xp, h),
                                 lambda h: (xp.ones(h.shape[:-1], h.dtype), eye), hs)
    chol = xp.where(use_eig[:, None, None], eye, chol)
    return Factor(Eigen(values, vectors, scale), chol, use_eig)


def factorize_one(hess: jax.Array, damping: jax.Array, floor: jax.Array) -> Factor:
    """:func:`factorize` of one Hessian (on the host: NumPy; in a program:
    :func:`_factorize_one`, batched by ``vmap`` as one call)."""
    if namespace(hess, damping, floor) is np:
        return jax.tree_util.tree_map(lambda x: x[0],
                                      factorize(hess[None], damping[None], floor[None]))
    return _factorize_one(hess, damping, floor)


@jax.custom_batching.custom_vmap
def _factorize_one(hess: jax.Array, damping: jax.Array, floor: jax.Array) -> Factor:
    """:func:`factorize` of one Hessian. Under ``vmap`` it factorises the whole batch in
    one call (``eigh`` only when some member needs it), not one ``cond`` per member,
    which ``vmap`` would turn into an ``eigh`` for everyone."""
    return jax.tree_util.tree_map(lambda x: x[0],
                                  factorize(hess[None], damping[None], floor[None]))


@_factorize_one.def_vmap
def _factorize_batched(axis_size, in_batched, hess, damping, floor):
    hess_b, damping_b, floor_b = in_batched
    if not hess_b:
        hess = jnp.broadcast_to(hess, (axis_size,) + hess.shape)
    if not damping_b:
        damping = jnp.broadcast_to(damping, (axis_size,) + damping.shape)
    if not floor_b:
        floor = jnp.broadcast_to(floor, (axis_size,) + floor.shape)
    out = factorize(hess, damping, floor)
    return out, jax.tree_util.tree_map(lambda _: True, out)


def null_threshold(e: Eigen) -> jax.Array:
    """Scaled eigenvalues below this are numerically zero (64·ε·λ_max, floored at the
    smallest normal number): their inverse would carry no correct digit."""
    xp = namespace(e.values)
    finfo = np.finfo(e.values.dtype)
    return xp.maximum(64 * finfo.eps * xp.max(xp.abs(e.values), initial=0.0), finfo.tiny)


def thresholds(e: Eigen) -> jax.Array:
    """The null threshold of each direction (:func:`null_threshold`, or the Eigen's own)."""
    if e.threshold is not None:
        return e.threshold
    return null_threshold(e) * namespace(e.values).ones_like(e.values)


def _indefinite(fac: Factor) -> jax.Array:
    return fac.use_eig & (fac.eig.values[0] < -null_threshold(fac.eig))


def _chol_solve(fac: Factor, gs: jax.Array) -> jax.Array:
    return _xp.cho_solve(namespace(fac.chol, gs), fac.chol, gs)


def newton_decrement_sq(g: jax.Array, fac: Factor) -> jax.Array:
    """λ² = gᵀH⁻¹g (numerically zero eigenvalues floored), +inf if H is indefinite.

    λ is the distance to the optimum of the quadratic model in standard-error units,
    since H is the observed information in z. A gradient along a numerically null
    direction keeps λ large, so a merely flat direction never passes for convergence.
    """
    xp = namespace(g, fac.eig.values)
    e, gs = fac.eig, g / fac.eig.scale
    gv = e.vectors.T @ gs
    lam2_eig = xp.sum(gv**2 / xp.maximum(e.values, null_threshold(e)))
    lam2_chol = gs @ _chol_solve(fac, gs)
    lam2 = xp.where(fac.use_eig, lam2_eig, lam2_chol)
    return xp.where(_indefinite(fac), np.inf, lam2)


def newton_direction(g: jax.Array, fac: Factor, damping: jax.Array):
    """Damped Newton step d = −(H + μD)⁻¹g, D = |diag H|.

    Where H is indefinite, μ is raised to twice the most negative scaled
    eigenvalue, so H + μD is positive definite and d descends; at a saddle point,
    where the gradient vanishes, the step goes one (scaled) unit along the most
    negative-curvature direction, so it does not stall there. Returns d and the
    damping used.
    """
    xp = namespace(g, fac.eig.values, damping)
    e = fac.eig
    thr = null_threshold(e)
    indefinite = _indefinite(fac)
    used = xp.where(indefinite, xp.maximum(damping, -2.0 * e.values[0]), damping)
    gv = e.vectors.T @ (g / e.scale)
    coef = -gv / xp.maximum(e.values + used, thr)
    # at a saddle (stationary to ~1e-6 in scaled units) step off along the negative curvature
    at_saddle = indefinite & (xp.max(xp.abs(gv), initial=0.0) <= 1e-6)
    away = xp.where(gv[0] > 0, -1.0, 1.0) * xp.maximum(xp.abs(coef[0]), 1.0)
    coef = _xp.set_first(xp, coef, xp.where(at_saddle, away, coef[0]))
    step = xp.where(fac.use_eig, e.vectors @ coef, -_chol_solve(fac, g / e.scale)) / e.scale
    return step, used


def cap_indefinite_step(step: jax.Array, z: jax.Array, fac: Factor, reach: jax.Array):
    """Where H is indefinite the quadratic model is unbounded and the length of the
    shifted step means little: shorten it so that no coordinate moves by more than
    ``reach`` times its magnitude (or its local standard error, 1/D½_i with D floored at
    :func:`gradient_floor`, for coordinates near 0). ``reach`` starts at ½ and grows
    fourfold after every accepted capped step, so a far start is left in a few steps,
    not a crawl. Returns the step and whether it was capped."""
    xp = namespace(step, z)
    size = xp.maximum(xp.abs(z), 1.0 / fac.eig.scale)
    ratio = xp.max(xp.abs(step) / size, initial=0.0)
    capped = _indefinite(fac) & (ratio > reach)
    return step * xp.where(capped, reach / ratio, 1.0), capped


def plateau(f: jax.Array, z: jax.Array, hess: jax.Array) -> jax.Array:
    """f is flat to rounding in every coordinate (e.g. an underflowed model): no optimum."""
    xp = namespace(f, z, hess)
    eps = _eps(f.dtype, xp)
    return xp.all(xp.abs(xp.diag(hess)) * (1.0 + xp.abs(z)) ** 2 <= 1e3 * eps * (1 + xp.abs(f)))


def identity_factor(m: int, dtype, xp=jnp) -> Factor:
    """The factors of I, without a decomposition."""
    eye = xp.eye(m, dtype=dtype)
    ones = xp.ones(m, dtype)
    return Factor(Eigen(ones, eye, ones), eye, xp.asarray(False))


class DenseModel(NamedTuple):
    """The plain Newton's step model (see the module docstring). ``held``: a mask over z
    of coordinates that do not move (their gradient is 0; :func:`hold_rows`)."""

    held: jax.Array | None = None

    def initial(self, z0):
        xp = namespace(z0)
        return (xp.eye(z0.shape[0], dtype=z0.dtype),
                identity_factor(z0.shape[0], z0.dtype, xp))

    def evaluate(self, fun, z):
        f, g, h = value_grad_hessian(fun, z)
        return f, g, hold_rows(h, self.held)

    def propose(self, s: NewtonState) -> Proposal:
        xp = namespace(s.z, s.g)
        direction, used = newton_direction(s.g, s.model, s.damping)
        if self.held is not None:
            direction = xp.where(self.held, 0.0, direction)
        direction, capped = cap_indefinite_step(direction, s.z, s.model, s.reach)
        step = s.alpha * direction
        slope = s.g @ direction
        predicted = -(s.alpha * slope + 0.5 * step @ s.hess @ step)
        # the probe's step only when a probe is next (rare: a batch computes it only in the
        # iterations where some member probes)
        probe = _xp.rare(xp, s.probe_next, escape_probe, lambda s, held: xp.zeros_like(s.z),
                         s, self.held)
        return Proposal(xp.where(s.probe_next, probe, step),
                        xp.where(s.probe_next, 0.0, predicted),
                        xp.where(s.probe_next, s.g @ probe, slope), used,
                        capped & ~s.probe_next)

    def closer(self, s: NewtonState, g_t: jax.Array) -> jax.Array:
        """Within 0.01 standard errors of the optimum (λ² ≤ 1e-4, H positive definite),
        the gradient at the trial point has at most a quarter of the current λ² in the
        current metric (Newton's quadratic convergence shows it; f's noise need not).
        ``s.lam2`` is gᵀH⁻¹g with this very factorisation (the last ``measure``)."""
        xp = namespace(s.g, g_t)

        def quarter(s, g_t):
            lam2_t = newton_decrement_sq(g_t, s.model)
            return xp.isfinite(lam2_t) & (lam2_t <= 0.25 * s.lam2)

        return _xp.rare(xp, s.lam2 <= 1e-4, quarter, lambda s, g_t: xp.asarray(False),
                        s, g_t)

    def null(self, fac: Factor) -> jax.Array:
        """The scaled H is numerically singular (its smallest eigenvalue at or below the
        null threshold) and not indefinite."""
        return fac.use_eig & (fac.eig.values[0] <= null_threshold(fac.eig)) & ~_indefinite(fac)

    def singular(self, s: NewtonState, fac: Factor) -> jax.Array:
        """The information at s is numerically singular (and not indefinite) and escape
        probes remain (:func:`probe_plan`; counted only where it is singular)."""
        xp = namespace(s.z, s.anchor)

        def remain(s, fac, held):
            at = s._replace(model=fac, anchor=xp.where(s.probes == 0, s.z, s.anchor))
            return s.probes < probe_plan(at, held)[2]

        return _xp.rare(xp, self.null(fac), remain, lambda s, fac, held: xp.asarray(False),
                        s, fac, self.held)

    def refresh(self, s: NewtonState) -> Factor:
        return factorize_one(s.hess, s.damping, gradient_floor(s.g, s.z))

    def measure(self, s: NewtonState, fac: Factor) -> Measure:
        return Measure(newton_decrement_sq(s.g, fac), namespace(s.g).asarray(True))

    def valid(self, s: NewtonState) -> jax.Array:
        if self.held is None:
            return ~plateau(s.f, s.z, s.hess)
        # nothing free (a profile point of a one-parameter fit): the start is the answer
        xp = namespace(s.hess, self.held)
        hess = xp.where(self.held[:, None], 0.0, s.hess)
        return ~(plateau(s.f, s.z, hess) & xp.any(~self.held))


NEWTON = DampedNewton(DenseModel(), Rules())
"""Plain damped Newton (line search, LM damping, indefinite-Hessian handling)."""

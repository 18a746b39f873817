"""Is the solver's stopping point a maximum? The checks run once, at the end of a fit.

A solver stops when its own test passes (Newton: the decrement λ² = gᵀH⁻¹g in
standard-error units; optax: the gradient). That test can pass at a point that is no
maximum: where ℓ keeps rising towards infinity slowly enough that gradient and
curvature vanish together (complete separation in a logistic regression), where a
parameter runs to the edge of its support (a variance → 0 under an unbounded density, a
mixture weight → 0 under a Dirichlet(α < 1) prior), where the information is
numerically singular along a direction in which the point is not stationary, at a
saddle, or (optax) where the gradient is small only because the parameters are badly
scaled. These checks decide, from the eigen-decomposition of the scaled information
that the inference computes anyway and five evaluations of f = −ℓ near ẑ:

* **SADDLE**: the information is indefinite (a negative eigenvalue beyond rounding);
* **NOT_STATIONARY**: (optax methods) the exact decrement at ẑ exceeds max(τ, 10⁻⁶), or,
  along a numerically null direction v (a unit move of the coordinates it involves),
  the parabola with the slope gᵀv through f at ẑ + v on the descending side puts the
  maximum more than ``GAIN`` log-likelihood units above ẑ (the information there is
  singular only to the precision of the scaled matrix, e.g. data spread 1e-20);
* **DIVERGED**: one unit further along the unconstrained coordinate of every
  constrained parameter with |z| ≥ ``RUNAWAY_Z`` (towards its edge), together with e
  times further out for every real-line parameter with |θ| ≥ ``FAR`` (NIST MGH09 from
  its first start with σ free ends at b ≈ (5e10, −14, −2e12, −1e12), on a ray along
  which the rational model tends to a limit and ℓ rises by ~1e-15 relative: locally a
  maximum to float64's precision), ℓ does not fall by ``LOSS``, or ℓ rises by more than
  ``LOSS`` along a null direction: the supremum is not attained;
* **FLAT**: along the weakest regular eigen-direction ℓ loses less than ``LOSS`` = a
  tenth of the quadratic prediction c²/2 at c = 3 standard errors on one side, or along
  the Newton step H⁺g restricted to the regular subspace (the direction in which the fit
  would still move, which for a separated logistic regression is not the weakest one)
  ℓ does not fall by ``LEVEL`` at 3 standard errors: flat or still rising, no regular
  maximum.

A numerically null direction along which f stays level on both sides (collinear
covariates: a ridge of maxima) passes: the maximum is attained, the parameters along it
are not identified (NaN standard errors, :class:`SingularInformationWarning`).
Everything here is linear algebra on the solver's side (:func:`probe_steps`,
:func:`verdict`) or the f values the model's side computes at ẑ + steps, written once
for NumPy and JAX (:mod:`jaxmle.core.xp`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxmle.core.solvers import Eigen, thresholds
from jaxmle.core.typing import Status
from jaxmle.core.xp import namespace

REACH = 3.0                   # standard errors of the regular probes
LOSS = 0.1 * REACH**2 / 2     # a regular maximum loses at least this much there
RUNAWAY_Z = 25.0              # |z| past which a constrained coordinate may be at its edge
FAR = 1e10                    # |z| past which a real-line coordinate may be running to ±∞
GAIN = 1e-3                   # a null direction may hide at most this rise of ℓ
LEVEL = 1e-3                  # ℓ still rises (or is level to this) along the Newton step


class ProbeInfo(NamedTuple):
    """What the verdict needs from the solver's side besides the f values."""

    regular: jax.Array      # the weakest direction is regular (else numerically null)
    null: jax.Array         # ... it is null and some coordinate is free
    slope: jax.Array        # gᵀv along the null probe's unit step v
    lam2: jax.Array         # the decrement gᵀH⁺g on the regular subspace
    saddle: jax.Array       # a negative eigenvalue beyond rounding


def probe_steps(e: Eigen, g: jax.Array, n_free) -> tuple[ProbeInfo, jax.Array]:
    """The first four probe steps (rows) and what the verdict needs: ± the weakest
    eigen-direction (3 SEs if regular, else a unit move of the coordinates it involves),
    ± the regular-subspace Newton direction scaled to 3 SEs. Row 5 (the edge step)
    needs the parameter space: :func:`edge_step`."""
    xp = namespace(e.values, e.vectors, g)
    thrs = thresholds(e)
    thr = thrs[0]
    lam = e.values[0]
    free = n_free > 0
    regular = (lam > thr) & free
    null = ~regular & free & (lam >= -thr)
    u = e.vectors[:, 0] / e.scale
    big = xp.max(xp.abs(u), initial=0.0)
    unit = u / xp.where(big > 0, big, 1.0)
    weak = xp.where(regular, REACH * u / xp.sqrt(xp.where(regular, lam, 1.0)), unit)
    # the Newton direction on the well-determined subspace (as the covariance inverts it)
    ok = e.values > thrs
    gv = e.vectors.T @ (g / e.scale)
    coef = xp.where(ok, gv / xp.where(ok, e.values, 1.0), 0.0)
    lam2 = xp.sum(coef * gv)
    newton = -(e.vectors @ coef) / e.scale
    usable = (lam2 > 0) & xp.isfinite(lam2)
    newton = xp.where(usable, REACH * newton / xp.sqrt(xp.where(usable, lam2, 1.0)), 0.0)
    steps = xp.stack([weak, -weak, newton, -newton])
    steps = xp.where(xp.all(xp.isfinite(steps)), steps, 0.0)
    info = ProbeInfo(regular, null, g @ unit, xp.where(usable, lam2, 0.0),
                     free & (lam < -thr))
    return info, steps


def constrained_z(space) -> np.ndarray:
    """Which unconstrained coordinates belong to a leaf with a constraint other than the
    real line (static: from the parameter space)."""
    from jaxmle.core.space import is_real_line

    def is_real(c):
        while hasattr(c, "base_constraint"):
            c = c.base_constraint
        return is_real_line(c)

    return np.concatenate([np.full(l.unc_size, not is_real(l.constraint), bool)
                           for l in space.leaves] or [np.zeros(0, bool)])


def edge_step(z: jax.Array, constrained: np.ndarray, held: jax.Array | None) -> jax.Array:
    """One unit further out along every free constrained coordinate with |z| ≥ RUNAWAY_Z,
    and e times further out along every free real-line coordinate with |z| ≥ FAR (the
    same move in the parameter: θ = e^z becomes e·θ), all at once (zero if there is
    none: f there is then reported as +inf, which passes)."""
    xp = namespace(z, held)
    edge = xp.asarray(constrained) & (xp.abs(z) >= RUNAWAY_Z)
    far = ~xp.asarray(constrained) & (xp.abs(z) >= FAR)
    if held is not None:
        edge, far = edge & ~held, far & ~held
    step = xp.where(edge, xp.sign(z), 0.0)
    return xp.where(far, (np.e - 1.0) * z, step).astype(z.dtype)


def verdict(status: jax.Array, info: ProbeInfo, f_probe: jax.Array, f_hat: jax.Array,
            tol=None) -> jax.Array:
    """The final status: ``status`` unless it is SUCCESS and a check above fails
    (``f_probe``: f at ẑ + each probe step, +inf for an edge step of zero;
    ``tol``: given for the optax methods, whose own test is not the decrement)."""
    xp = namespace(f_probe, f_hat, info.lam2)
    rise = f_probe - f_hat
    rise = xp.where(xp.isnan(rise), np.inf, rise)
    weak = xp.minimum(rise[0], rise[1])
    # along the Newton direction only the side the fit would still move to counts, and only
    # a level or rising ℓ there: at a converged point that direction is mostly rounding
    # noise, and a regular but skewed maximum can lose little on one side of a random
    # direction (NIST Nelson: 0.06 against 9.9 on the other side), while a fit stopped
    # short of a supremum (complete separation) still gains along it
    flat = (info.regular & (weak < LOSS)) | ((info.lam2 > 0) & (rise[2] < LEVEL))
    # along a null direction v (a unit move): the parabola with slope a = gᵀv through f
    # on the side where f descends gives the gain to the maximum along v
    a = info.slope
    descent = xp.where(a < 0, rise[0], rise[1])
    noise = 1e3 * np.finfo(f_probe.dtype).eps * (1.0 + xp.abs(f_hat))
    curvature = xp.maximum(2.0 * (descent + xp.abs(a)), noise)
    gain = xp.where(xp.isfinite(descent), a**2 / (2.0 * curvature), 0.0)
    moving = info.null & ((gain > GAIN) | (-descent > GAIN))
    if tol is not None:
        moving = moving | (info.lam2 > xp.maximum(tol, 1e-6))
    diverged = (rise[4] < LOSS) | (info.null & (weak < -LOSS))
    out = xp.where(flat, Status.FLAT, Status.SUCCESS)
    out = xp.where(moving, Status.NOT_STATIONARY, out)
    out = xp.where(info.saddle, Status.SADDLE, out)
    # a point on a ray to infinity may also look indefinite (rounding): the ray says more
    out = xp.where(diverged, Status.DIVERGED, out)
    return xp.where(status == Status.SUCCESS, out, status).astype(np.int32)

"""Inference at the optimum: observed information, covariance, standard errors.

With f(z) = −ℓ(θ(z)) and H_z = ∇²f(ẑ) the observed information in the
unconstrained coordinates, the covariance of the natural parameters is the
delta method through the transform's Jacobian J = ∂θ/∂z (k × m):

    Cov(θ̂) = J H_z⁻¹ Jᵀ,

exact at a stationary point. For a simplex (m = k − 1) it is rank-deficient,
e.g. the multinomial p_i(δ_ij − p_j)/n. Before inverting, H_z is scaled to unit
diagonal and checked with ``eigh``: eigenvalues ≤ 64·ε·λ_max (singular: the
inverse would carry no correct digit in that direction) or
negative (not positive definite) mark directions whose parameters get NaN
standard errors instead of garbage.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmle.core import xp as _xp
from jaxmle.core.solvers import Eigen, eigen, thresholds
from jaxmle.core.xp import namespace
from jaxmle.core.space import ParamSpace

# Eigenvector components below this size do not implicate a parameter.
_INVOLVEMENT = 1e-4


class Inference(NamedTuple):
    cov: jax.Array            # (k, k) natural-parameter covariance, NaN where unidentified
    fisher_info: jax.Array    # (k, k) observed information in the natural parameters
    stderr: jax.Array         # (k,)
    score: jax.Array          # (k,) ∇θ ℓ at the estimate
    info_eigvals: jax.Array   # (m,) eigenvalues of the unit-diagonal-scaled H_z
    singular: jax.Array       # (k,) bool: parameter lies in a singular / indefinite direction


def _checked_inverse(e: Eigen):
    """Pseudo-inverse of H on its well-determined subspace, from the eigen-decomposition
    of the scaled H, and the unconstrained coordinates caught in singular or negative
    directions."""
    xp = namespace(e.values, e.vectors)
    finite = xp.all(xp.isfinite(e.values)) & xp.all(xp.isfinite(e.vectors))
    bad = (e.values <= thresholds(e)) | ~finite
    inv_vals = xp.where(bad, 0.0, 1.0 / xp.where(bad, 1.0, e.values))
    cov_s = (e.vectors * inv_vals[None, :]) @ e.vectors.T
    involved = xp.any(bad[None, :] & (xp.abs(e.vectors) > _INVOLVEMENT), axis=1)
    eigvals = xp.where(finite, e.values, np.nan)
    return cov_s / xp.outer(e.scale, e.scale), eigvals, involved | ~finite


class Transform(NamedTuple):
    """The transform z → θ at ẑ, as the inference needs it (the model's side of it:
    :func:`transform_terms`; the rest is linear algebra, :func:`combine`)."""

    jac: jax.Array | None       # J = ∂θ/∂z (k × m), None for an elementwise/identity space
    jdiag: jax.Array | None     # diag J of an elementwise space
    ambient: jax.Array | None   # ∇θℓ on a manifold (the space is not bijective)
    # natural elements the constraint fixes (a Cholesky factor's upper triangle, a
    # correlation factor's first diagonal element): J's row is 0 at ẑ and elsewhere, so
    # their standard error of 0 is exact knowledge, not a saturated transform
    constant: jax.Array | None = None


def space_kind(space: ParamSpace) -> str:
    """How :func:`combine` maps H_z to θ: ``identity``, ``elementwise`` (diagonal J),
    ``bijective`` (square J) or ``manifold`` (J is k × m, m < k)."""
    if space.is_identity:
        return "identity"
    if space.is_elementwise:
        return "elementwise"
    return "bijective" if space.is_bijective else "manifold"


def transform_terms(space: ParamSpace, loglik_flat: Callable[[jax.Array], jax.Array],
                    z_hat: jax.Array) -> Transform:
    """J (or its diagonal) at ẑ, and on a manifold the ambient score ∇θℓ."""
    kind = space_kind(space)
    if kind == "identity":
        return Transform(None, None, None)
    if kind == "elementwise":
        return Transform(None, jax.jvp(space.to_natural_flat, (z_hat,),
                                       (jnp.ones_like(z_hat),))[1], None)
    jac = jax.jacfwd(space.to_natural_flat)(z_hat)
    # J at a fixed point that is no special value of any coordinate
    z_ref = 0.7 * jnp.sin(1.0 + jnp.arange(z_hat.shape[0], dtype=z_hat.dtype))
    constant = (jnp.all(jac == 0, axis=1)
                & jnp.all(jax.jacfwd(space.to_natural_flat)(z_ref) == 0, axis=1))
    if kind == "bijective":
        return Transform(jac, None, None, constant)
    return Transform(jac, None, jax.grad(loglik_flat)(space.to_natural_flat(z_hat)), constant)


def observed_inference(space: ParamSpace, loglik_flat: Callable[[jax.Array], jax.Array],
                       z_hat: jax.Array, hess_z: jax.Array, grad_z: jax.Array,
                       eig: Eigen | None = None, cov_type: str = "observed",
                       meat: jax.Array | None = None) -> Inference:
    """Covariance and information of θ̂ = θ(ẑ) from H_z = −∇²_z ℓ.

    ``loglik_flat(theta)`` is ℓ as a function of the flat natural parameters;
    ``eig`` is the solver's eigen-decomposition of the scaled H_z, if it has one.
    ``cov_type``: ``"observed"`` (H_z⁻¹), ``"opg"`` (B⁻¹) or ``"sandwich"``
    (H_z⁻¹ B H_z⁻¹), with B = ``meat`` the outer product of the scores in z
    (see :func:`score_outer_product`); each goes through J to the natural space.
    Held coordinates (``space.held``, a View's): J has zero rows (fixed elements) and
    columns (held z); their rows of the results are dropped on the host.
    """
    held = getattr(space, "held", None)
    held_z = jnp.zeros(z_hat.shape, bool) if held is None else held.z
    return combine(space_kind(space), transform_terms(space, loglik_flat, z_hat), held_z,
                   hess_z, grad_z, eigen(hess_z) if eig is None else eig, cov_type, meat)


def combine(kind: str, t: Transform, held_z: jax.Array, hess_z: jax.Array, grad_z: jax.Array,
            eig: Eigen, cov_type: str = "observed", meat: jax.Array | None = None) -> Inference:
    """:func:`observed_inference` from the transform's terms: linear algebra only (no
    log-likelihood), so one compiled program serves every model of the same size; on
    NumPy arrays it runs on the host (:mod:`jaxmle.core.xp`)."""
    xp = namespace(hess_z, grad_z, eig.values)
    cov_z, eigvals, involved_z = _checked_inverse(eig)
    if cov_type == "sandwich":
        cov_z = cov_z @ meat @ cov_z
    elif cov_type == "opg":
        cov_z, _, involved_b = _checked_inverse(eigen(meat))
        involved_z = involved_z | involved_b
    if kind == "identity":
        jac = xp.eye(hess_z.shape[0], dtype=hess_z.dtype)
        cov, fisher, score = cov_z, hess_z, -grad_z
    elif kind == "elementwise":
        # diagonal J: the same formulas as below without any matrix solve
        jac = xp.diag(t.jdiag)
        jdiag = xp.where(held_z, 1.0, t.jdiag)
        cov = cov_z * xp.outer(jdiag, jdiag)
        fisher = hess_z / xp.outer(jdiag, jdiag)
        score = -grad_z / jdiag
    else:
        jac = t.jac
        cov = jac @ cov_z @ jac.T
        if kind == "bijective":
            # (every leaf is bijective, so z_i and θ_i are the same element: a unit
            # entry for each held one makes J invertible without touching the rest)
            jac_t = (jac + xp.diag(held_z.astype(jac.dtype))).T
            score = _xp.solve(xp, jac_t, -grad_z)   # ∇θℓ = J⁻ᵀ ∇zℓ
            # I_θ = J⁻ᵀ H_z J⁻¹: exact at a stationary point, where the transform's
            # curvature term (∇ℓ · ∂²θ/∂z²) vanishes.
            jinv_t_h = _xp.solve(xp, jac_t, hess_z)
            fisher = _xp.solve(xp, jac_t, jinv_t_h.T).T
        else:
            # on a manifold ∇θℓ is the ambient gradient (its tangent part vanishes at θ̂)
            score = t.ambient
            fisher = _xp.pinv_hermitian(xp, cov)
    singular = xp.any((jac != 0) & involved_z[None, :], axis=1)
    mask = singular[:, None] | singular[None, :]
    cov = xp.where(mask, np.nan, 0.5 * (cov + cov.T))
    stderr = xp.sqrt(xp.maximum(xp.diag(cov), 0.0))  # PSD by construction; NaN stays NaN
    return Inference(cov, fisher, stderr, score, eigvals, singular)


def score_outer_product(per_obs: Callable[[jax.Array], jax.Array], z_hat: jax.Array,
                        weights: jax.Array | None, groups: jax.Array | None,
                        n_groups: int) -> jax.Array:
    """B = Σᵢ wᵢ sᵢsᵢᵀ, or Σ_g S_g S_gᵀ with S_g = Σ_{i∈g} wᵢ sᵢ (clusters), where
    sᵢ = ∇_z ℓᵢ are the per-observation scores.

    The (n, m) score matrix is the Jacobian of the vector of per-observation terms,
    taken forward (m passes over the data, i.e. ``vmap`` of a JVP over the m
    coordinates): the same numbers as ``vmap(grad)`` over observations without
    having to split the user's data into rows. Weights are frequency weights.
    """
    scores = jax.jacfwd(per_obs)(z_hat)                     # (n, m)
    w = jnp.ones(scores.shape[0], scores.dtype) if weights is None else weights.astype(scores.dtype)
    weighted = jnp.where((w > 0)[:, None], w[:, None] * scores, 0.0)
    if groups is None:
        return weighted.T @ jnp.where((w > 0)[:, None], scores, 0.0)
    sums = jax.ops.segment_sum(weighted, groups, num_segments=n_groups)
    return sums.T @ sums

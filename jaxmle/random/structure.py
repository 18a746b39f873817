"""Which structure the inner Hessian has: independent groups (block-diagonal), groups
coupled to their neighbours only (block-tridiagonal: a latent process over time), or dense.

Candidate: every random leaf has the same leading axis G ≥ 2 (a (G,) or (G, k)
leaf), so U is (G, K). The structure is then *verified*, not assumed: with the
blocks B from the coloured Hessian-vector products (K of them for the diagonal blocks,
3K for the tridiagonal ones), one more product with a random direction v must satisfy

    ‖Hᵤᵤv − B v‖∞ ≤ 10⁻⁸ · ‖B‖∞ ‖v‖∞,

else some group is coupled to another in a way the structure leaves out (a shared
effect, REML's fixed effects, a coupling beyond the neighbours) and the next structure
is tried: block-diagonal, then block-tridiagonal, then dense (G = 1). The probe runs at
the start (at θ₀ and next to it: :func:`probe_near`) and again at the estimate, since a
coupling can vanish at one point (a correlation started at 0) and not at another.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jaxmle.random.arrow as _arrow
import jaxmle.random.band as _band
from jaxmle.core.typing import JaxmleWarning, user_stacklevel
from jaxmle.random.inner import Layout, grad_and_blocks, joint

PROBE_RTOL = 1e-8
BORDER_MAX = 1000   # border coordinates at most: each costs an HVP per inner iteration


def candidate_layout(names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...],
                     flat: tuple[str, ...] = ()) -> Layout:
    """The groups: the leaves (not ``flat``) with the longest leading axis G ≥ 2; any
    other leaf (a second grouping factor, a flat-prior fixed effect, a scalar) is the
    border, up to :data:`BORDER_MAX` elements; dense when nothing groups or the border is
    larger."""
    lead = {n: (s[0] if s else 0) for n, s in zip(names, shapes)}
    G = max((lead[n] for n in names if n not in flat), default=0)
    if G < 2:
        return Layout(names, shapes, 1)
    border = tuple(n for n in names if n in flat or lead[n] != G)
    layout = Layout(names, shapes, G, border=border)
    return layout if layout.border_size <= BORDER_MAX else Layout(names, shapes, 1)


def dense(layout: Layout) -> Layout:
    return Layout(layout.names, layout.shapes, 1)


def banded(layout: Layout) -> Layout:
    """The block-tridiagonal layout of the same groups."""
    return Layout(layout.names, layout.shapes, layout.n_groups, band=1)


def next_structure(layout: Layout) -> Layout:
    """What to try when the probe rejects ``layout``: block-diagonal → block-tridiagonal
    (G ≥ 3: with two groups the tridiagonal blocks are the whole matrix, as dense) → dense;
    bordered → dense."""
    if layout.n_groups >= 3 and not layout.band and not layout.border:
        return banded(layout)
    return dense(layout)


def describe(layout: Layout) -> str:
    if layout.n_groups == 1:
        return "dense"
    if layout.border:
        return "bordered block-diagonal"
    return "block-tridiagonal" if layout.band else "block-diagonal"


def probe_residual(ell: Callable[[jax.Array], jax.Array], U: jax.Array,
                   blocks: jax.Array) -> jax.Array:
    """‖Hv − Bv‖∞ / (‖B‖∞‖v‖∞) for a fixed pseudo-random v (0 when dense)."""
    v = jnp.asarray(np.random.default_rng(20240607).standard_normal(U.shape), U.dtype)
    hv = jax.jvp(jax.grad(ell), (U,), (v,))[1]
    bv = _arrow.matvec(blocks, v) if _arrow.is_arrow(blocks) else \
        _band.matvec(blocks, v) if _band.is_band(blocks) else \
        jnp.einsum("gij,gj->gi", blocks, v)
    big = jnp.max(jnp.stack([jnp.max(jnp.abs(b)) for b in jax.tree_util.tree_leaves(blocks)]))
    scale = big * jnp.max(jnp.abs(v)) + jnp.finfo(U.dtype).tiny
    return jnp.max(jnp.abs(hv - bv)) / scale


JITTER = 1e-3


def probe_near(ell: Callable, U: jax.Array, flat: jax.Array, band: int,
               nesting: bool = False) -> tuple[jax.Array, jax.Array]:
    """The probe's residual at (θ, U) and at a point next to θ, the worse of the two
    (``ell(U, x)``: ℓ at the flat natural parameters x). A coupling can vanish at one
    point — an AR(1) process started at ρ = 0 has independent time points there and only
    there — so the start is probed at θ₀ and at θ₀ moved by 10⁻³·(|θ₀ᵢ| + 10⁻³) in every
    element (signs alternating); a NaN there (the move left a support) is ignored.
    Returns (the residual, whether the groups are nested in the border at θ₀:
    :func:`nested_in_border`, checked only with ``nesting``, else False)."""
    signs = jnp.where(jnp.arange(flat.size) % 2 == 0, 1.0, -1.0).astype(flat.dtype)
    moved = flat + JITTER * (jnp.abs(flat) + JITTER) * signs

    def at(x):
        def e(V):
            return ell(V, x)
        blocks = grad_and_blocks(e, U, band)[1]
        nested = nested_in_border(blocks) if nesting else jnp.asarray(False)
        return probe_residual(e, U, blocks), nested

    (here, near), nested = jax.vmap(at)(jnp.stack([flat, moved]))
    return jnp.where(jnp.isnan(near), here, jnp.maximum(here, near)), nested[0]


NESTED_HINT = 100
"""A border of one leaf with more elements than this is checked for nesting: each border
element costs a Hessian-vector product per inner step, and nested factors need none."""


def nested_in_border(blocks: Any) -> jax.Array:
    """Each group coupled to at most one border coordinate, and the border's coordinates
    to no other: the groups' factor is nested in the border's (plots within sites)."""
    links = jnp.sum(jnp.any(blocks.C != 0, axis=1), axis=-1)           # (G,)
    off = blocks.D - jnp.diag(jnp.diagonal(blocks.D))
    return jnp.all(links <= 1) & jnp.all(off == 0)


def _checks_nesting(layout: Layout) -> bool:
    return len(layout.border) == 1 and layout.border_size > NESTED_HINT


@functools.lru_cache(maxsize=64)
def _probe_kernel(loglik: Callable, layout: Layout) -> Callable:
    def run(theta, data, u0):
        flat, unravel = ravel_pytree(theta)

        def ell(U, x):
            return joint(loglik, layout, unravel(x), U, data)

        return probe_near(ell, layout.pack(u0), flat, layout.structure,
                          _checks_nesting(layout))

    return jax.jit(run)


def holds(residual: Any) -> bool:
    """The probe found the blocks to be the whole Hessian (a NaN residual does not count)."""
    return bool(np.asarray(residual) <= PROBE_RTOL)


def choose_layout(loglik: Callable, names: tuple[str, ...], shapes, theta: dict, data: Any,
                  u0: dict, flat: tuple[str, ...] = ()) -> Layout:
    """The first structure the probe at (θ₀, u₀) confirms: block-diagonal (bordered by the
    other leaves, if any), block-tridiagonal, dense."""
    layout = candidate_layout(names, shapes, flat)
    tried = []
    while layout.n_groups > 1:
        residual, nested = _probe_kernel(loglik, layout)(theta, data, u0)
        if holds(residual):
            if bool(nested):
                _hint_nesting(layout)
            break
        tried.append(describe(layout))
        layout = next_structure(layout)
    if layout.q > DENSE_WARN:
        looked = (f"the probe rejected {', '.join(tried)}" if tried else
                  "no leaf has a leading axis of groups, or the border would exceed "
                  f"{BORDER_MAX}")
        warnings.warn(
            f"the random effects' inner Hessian is dense, {layout.q} × {layout.q} ({looked}): "
            "each inner Newton step costs O(q³); give the random leaves a leading axis of "
            "groups (one row per group), with any other factor as a separate leaf of at most "
            f"{BORDER_MAX} elements", JaxmleWarning, stacklevel=user_stacklevel())
    return layout


DENSE_WARN = 2000   # random effects beyond which a dense inner Hessian is warned about


def _hint_nesting(layout: Layout) -> None:
    inner, outer = layout.grouped[0][0], layout.border[0]
    B, G = layout.border_size, layout.n_groups
    warnings.warn(
        f"the random effects {inner} ({G}) are nested in {outer} ({B}): as the border of "
        f"{inner}'s groups, {outer} costs {B} Hessian-vector products per inner Newton step. "
        f"Shape {inner} ({B}, k) instead, indexed by ({outer}'s index, position within it), "
        f"unused cells padded (an effect with no data integrates out exactly): {B} "
        f"independent blocks of one {outer} and its {inner} (README: nested factors)",
        JaxmleWarning, stacklevel=user_stacklevel())


@dataclasses.dataclass(frozen=True)
class RandomInfo:
    """Static description of a random-effects fit (for the summary)."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    n_groups: int               # G of the block-diagonal inner Hessian (1: dense)
    block: int                  # K
    boundary: tuple[str, ...] = ()
    flat: tuple[str, ...] = ()  # leaves integrated out under a flat prior (REML)
    band: int = 0               # 1: block-tridiagonal (each group coupled to its neighbours)
    border: tuple[str, ...] = ()  # leaves coupled to every group (bordered block-diagonal)

    @property
    def reml(self) -> bool:
        """Fixed effects are integrated out (``random={..., "beta": "flat"}``): REML."""
        return bool(self.flat)

    @property
    def n_flat(self) -> int:
        """Elements of the flat leaves: the fixed effects AIC/BIC count under REML."""
        return sum(s for n, s in zip(self.names, self.sizes) if n in self.flat)

    def describe(self) -> str:
        def listing(keep):
            return ", ".join(f"{n} ({s})" for n, s in zip(self.names, self.sizes) if keep(n))

        kind = "block-tridiagonal" if self.band else "block-diagonal"
        how = (f"{kind} inner Hessian, {self.n_groups} groups of {self.block}"
               if self.n_groups > 1 else f"dense inner Hessian, {self.block}×{self.block}")
        if self.border:
            size = sum(s for n, s in zip(self.names, self.sizes) if n in self.border)
            how += f", bordered by {', '.join(self.border)} ({size})"
        if not self.reml:
            return f"random effects {listing(lambda n: True)} integrated out by Laplace ({how})"
        random = listing(lambda n: n not in self.flat)
        flat = ", ".join(f"{n} ({s}, flat prior)" for n, s in zip(self.names, self.sizes)
                         if n in self.flat)
        return (f"REML: {'random effects ' + random + ' and ' if random else ''}fixed effects "
                f"{flat} integrated out by Laplace ({how})")


def info(layout: Layout, boundary: tuple[str, ...], flat: tuple[str, ...]) -> RandomInfo:
    """The :class:`RandomInfo` of a fit with ``layout``."""
    return RandomInfo(layout.names, tuple(math.prod(s) for s in layout.shapes), layout.n_groups,
                      layout.block, boundary, flat, layout.band, layout.border)

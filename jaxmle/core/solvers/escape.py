"""Escape probes: where the damped Newton looks, from a converged point whose information
is numerically singular, before it believes that point (it may be a saddle on a flat
manifold, e.g. two merged exponential terms of a model). The probes move along the null
eigenvector of the scaled information (:data:`~jaxmle.core.solvers.newton.PROBES`) and
end where they began; :class:`~jaxmle.core.solvers.dense.DenseModel` proposes them."""

from __future__ import annotations

import jax
import numpy as np

from jaxmle.core.solvers.newton import PROBES, NewtonState
from jaxmle.core.xp import namespace


def _null_vector(s: NewtonState, held: jax.Array | None) -> jax.Array:
    """The null eigenvector of the scaled information at s in z units, oriented so that
    its largest component is +1."""
    xp = namespace(s.z, s.anchor)
    e = s.model.eig
    v = e.vectors[:, 0] / e.scale
    if held is not None:
        v = xp.where(held, 0.0, v)
    top = v[xp.argmax(xp.abs(v))]
    return xp.where(top < 0, -v, v) / xp.where(top == 0, 1.0, xp.abs(top))


def probe_plan(s: NewtonState, held: jax.Array | None = None):
    """Where the escape probes go along the null direction v (see
    :func:`escape_probe`), as positions t (z = anchor + t·v) and how many there are.

    First the midpoints between consecutive zero crossings of the coordinates v involves
    (|v_i| ≥ 0.1): where those coordinates are equal in size, the configuration in
    which two merged terms of a model split (two exponentials b1·e^(−b2x) + b3·e^(−b4x)
    with b2 = b4 are stationary for any b1 + b3, and the split direction curves down
    only where b1 and b3 have the same sign); then :data:`PROBES`, in units of the size
    of the involved coordinates (their |values| at the anchor weighted by |v|, ≥ 1)."""
    xp = namespace(s.z, s.anchor)
    v = _null_vector(s, held)
    w = xp.abs(v)
    involved = w >= 0.1
    cross = xp.sort(xp.where(involved, -s.anchor / xp.where(involved, v, 1.0), np.inf))
    mids = xp.concatenate([0.5 * (cross[:-1] + cross[1:]), xp.full((1,), np.inf, s.z.dtype)])
    mids = mids[xp.argsort(~xp.isfinite(mids), stable=True)]      # the finite ones first
    n_mid = xp.sum(xp.isfinite(mids))
    size = xp.maximum(xp.sum(w * xp.abs(s.anchor)) / xp.maximum(xp.sum(w), 1e-300), 1.0)
    schedule = xp.asarray(PROBES, s.z.dtype) * size
    k = s.probes
    position = xp.where(k < n_mid, mids[xp.minimum(k, mids.shape[0] - 1)],
                        schedule[xp.clip(k - n_mid, 0, len(PROBES) - 1)])
    return v, position, n_mid + len(PROBES)


def escape_probe(s: NewtonState, held: jax.Array | None = None) -> jax.Array:
    """The step to the next escape probe: from ``s.anchor`` to ``anchor + t·v``, v the
    null eigenvector of the scaled information at s (largest component +1), t the
    position :func:`probe_plan` gives for probe number ``s.probes``."""
    xp = namespace(s.z, s.anchor)
    v, position, _ = probe_plan(s, held)
    v = xp.where(xp.abs(v) >= 0.1, v, 0.0)    # the involved coordinates only (the rest: noise)
    step = s.anchor + position * v - s.z
    return xp.where(xp.all(xp.isfinite(step)), step, 0.0)

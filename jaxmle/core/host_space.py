"""The parameter space's transforms evaluated in NumPy on the host.

Host-side work on concrete values (the start in z, the boundary test of a fixed value,
profile bookkeeping, the fixed elements' scores) would otherwise call NumPyro's
transforms on arrays, which compiles one small program per operation and shape. The
common elementwise bijections (identity, exp, sigmoid, affine, softplus and
compositions of them: every ``positive``/``greater_than``/``less_than``/``interval``/
``unit_interval`` leaf) are written here in NumPy, with the same values as NumPyro's to
rounding (tested); any other transform returns None and the caller uses NumPyro's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import jaxmle.core.params as _params
from jaxmle.core.space import IDENTITY, ParamSpace


def host_transform(transform: Any, x: np.ndarray, inverse: bool = False) -> np.ndarray:
    """``transform(x)`` (or its inverse) evaluated in NumPy on the host, for the common
    elementwise bijections (identity, exp, sigmoid, affine, softplus and compositions of
    them: every ``positive``/``greater_than``/``less_than``/``interval``/``unit_interval``
    leaf). Host-side checks and profile bookkeeping call transforms on concrete values;
    NumPyro's versions would compile one small program per operation and shape. Other
    transforms run NumPyro's (the same numbers, to rounding)."""
    x = np.asarray(x)
    out = _host_transform(transform, x, inverse)
    if out is not None:
        return np.asarray(out, x.dtype if x.dtype.kind == "f" else np.float64)
    return np.asarray(transform.inv(x) if inverse else transform(x))


def _expit(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e⁻ˣ) without overflow on either side."""
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def _host_transform(t: Any, x: np.ndarray, inverse: bool) -> np.ndarray | None:
    if t is IDENTITY:
        return x
    from numpyro.distributions import transforms as T

    finfo = np.finfo(x.dtype if x.dtype.kind == "f" else np.float64)
    with np.errstate(all="ignore"):
        if type(t) is T.IdentityTransform:
            return x
        if type(t) is T.IndependentTransform:
            return _host_transform(t.base_transform, x, inverse)
        if type(t) is T.ExpTransform:
            return np.log(x) if inverse else np.exp(x)
        if type(t) is T.SigmoidTransform:
            if inverse:
                return np.log(x) - np.log1p(-x)
            return np.clip(_expit(x), finfo.tiny, 1.0 - finfo.eps)   # as NumPyro clips
        if type(t) is T.SoftplusTransform:
            if inverse:
                return x + np.log(-np.expm1(-x))
            return np.logaddexp(0.0, x)
        if type(t) is T.AffineTransform:
            loc, scale = _concrete(t.loc), _concrete(t.scale)
            if loc is None or scale is None:
                return None
            return (x - loc) / scale if inverse else loc + scale * x
        if type(t) is T.ComposeTransform:
            parts = t.parts[::-1] if inverse else t.parts
            for part in parts:
                x = _host_transform(part, x, inverse)
                if x is None:
                    return None
            return x
    return None


def host_transform_grad(t: Any, z: np.ndarray) -> np.ndarray | None:
    """dθ/dz of an elementwise bijection θ = t(z) at z, in NumPy, for the transforms
    :func:`host_transform` knows (None for another)."""
    z = np.asarray(z)
    if t is IDENTITY:
        return np.ones_like(z)
    from numpyro.distributions import transforms as T

    with np.errstate(all="ignore"):
        if type(t) is T.IdentityTransform:
            return np.ones_like(z)
        if type(t) is T.IndependentTransform:
            return host_transform_grad(t.base_transform, z)
        if type(t) is T.ExpTransform:
            return np.exp(z)
        if type(t) is T.SigmoidTransform:
            e = np.exp(-np.abs(z))
            return e / (1.0 + e) ** 2
        if type(t) is T.SoftplusTransform:
            return _expit(z)
        if type(t) is T.AffineTransform:
            scale = _concrete(t.scale)
            return None if scale is None else np.broadcast_to(scale, z.shape) * np.ones_like(z)
        if type(t) is T.ComposeTransform:
            grad, x = np.ones_like(z), z
            for part in t.parts:
                d = host_transform_grad(part, x)
                x = _host_transform(part, x, False)
                if d is None or x is None:
                    return None
                grad = grad * d
            return grad
    return None


def host_unconstrained(space: ParamSpace, leaves: list, dtype: Any) -> np.ndarray | None:
    """:meth:`ParamSpace.to_unconstrained` in NumPy when every leaf's transform is one
    :func:`host_transform` knows (elementwise: z has the leaf's shape); else None."""
    parts = []
    for leaf, x in zip(space.leaves, leaves):
        x = np.asarray(x, dtype)
        z = _host_transform(leaf.transform, x, inverse=True)
        if z is None or np.shape(z) != tuple(leaf.unc_shape):
            return None
        parts.append(np.ravel(np.asarray(z, dtype)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _concrete(v: Any) -> np.ndarray | None:
    try:
        return np.asarray(v)
    except Exception:   # a tracer: not on the host
        return None


def check_init(space: ParamSpace, init_leaves: list[np.ndarray]) -> None:
    """Raise if an initial value violates its constraint or lies on its boundary.

    Values already checked for this space are remembered: refitting from the same
    init (the usual case in a loop over datasets) costs no JAX dispatch here.
    """
    key = (space, tuple((x.dtype.str, x.shape, x.tobytes()) for x in init_leaves))
    if key in _CHECKED:
        return
    _check_init(space, init_leaves)
    _CHECKED.add(key)


_CHECKED = _params.SeenSet(1024)


def _check_init(space: ParamSpace, init_leaves: list[np.ndarray]) -> None:
    for leaf, value in zip(space.leaves, init_leaves):
        inside = np.asarray(leaf.constraint.check(value))
        if not inside.all():
            bad = np.argwhere(~np.broadcast_to(inside, inside.shape).reshape(-1)).ravel()
            where = "" if np.ndim(value) == 0 else f" (element(s) {bad[:10].tolist()})"
            raise ValueError(
                f"init for parameter '{leaf.name}' = {np.asarray(value)!r} violates its constraint "
                f"{leaf.constraint!r}{where}"
            )
        z = host_transform(leaf.transform, value, inverse=True)
        if not np.all(np.isfinite(z)):
            raise ValueError(
                f"init for parameter '{leaf.name}' = {np.asarray(value)!r} lies on the boundary of "
                f"its constraint {leaf.constraint!r}; start from an interior point"
            )

"""The engine behind :func:`jaxmle.fit_distribution`: checks, starts, the fit, the result.

Fixed parameters and closed-form (non-regular) estimates travel in the *data*
pytree ``(x, held)`` of one stable log-likelihood per NumPyro class, so the
compiled kernel of :func:`jaxmle.fit` is reused across datasets and fixed
values of the same shapes.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from typing import Any, Callable, Mapping

import numpy as np

import jaxmle.distributions.start as _start
import jaxmle.distributions.support as _support
from jaxmle.core.typing import user_stacklevel
from jaxmle.distributions.logpmf import exact_log_prob
from jaxmle.distributions.registry import DistSpec
from jaxmle.distributions.result import DistributionFit, build_fit
from jaxmle.fitting.kernel import float_dtype
from jaxmle.fitting.single import fit

FALLBACK_STARTS = 8  # multi-start size of the last attempt for a fit that does not converge


@functools.lru_cache(maxsize=None)
def loglik_for(cls: Any) -> Callable:
    """One log-likelihood function object per class (the compile cache keys on its identity);
    the exact log-pmf of :mod:`jaxmle.distributions.logpmf` where NumPyro's is inexact."""
    exact = exact_log_prob(cls)

    def loglik(params, data):
        x, held = data
        if exact is not None:
            return exact({**params, **held}, x)
        return cls(**params, **held).log_prob(x)

    loglik.__name__ = loglik.__qualname__ = f"{cls.__name__}_loglik"
    loglik.jaxmle_rowwise = True   # one log-density per observation: padding is safe
    return loglik


def check_fixed(spec: DistSpec, fixed: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Validate ``fixed``: known names, values inside their constraints, integer ones given."""
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(spec.params))
    if unknown:
        raise ValueError(f"fixed names unknown parameter(s) {unknown} of {spec.name}; its "
                         f"parameters are {list(spec.params)}")
    out = {}
    for name, value in fixed.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf" or not np.all(np.isfinite(arr)):
            raise ValueError(f"fixed value of {spec.name} parameter '{name}' must be finite numbers, "
                             f"got {value!r}")
        constraint = spec.cls.arg_constraints[name]
        if not np.all(np.asarray(constraint.check(arr))):
            raise ValueError(f"fixed value {name}={value!r} of {spec.name} violates its constraint "
                             f"{constraint!r}")
        out[name] = arr if arr.dtype.kind in "iu" else arr.astype(float_dtype())
    for name, constraint in spec.arg_constraints.items():
        if getattr(constraint, "is_discrete", False) and name not in out:
            raise ValueError(
                f"{spec.name} parameter '{name}' is integer-valued and is not estimated by maximum "
                f"likelihood here; give it, e.g. {fixed_hint(name, 20)}")
    return out


def fixed_hint(name: str, value: Any) -> str:
    """How to fix a parameter, in Python syntax (``jaxmle fit`` rewrites it, :func:`cli_hints`)."""
    return f"fixed={{'{name}': {value}}}"


_FIXED_HINT = re.compile(r"fixed=\{'(\w+)': ([^{}]+?)\}")


def cli_hints(message: str) -> str:
    """A message's :func:`fixed_hint` s in command-line syntax: ``--fixed total_count=20``."""
    return _FIXED_HINT.sub(lambda m: f"--fixed {m[1]}={m[2]}", message)


def param_shapes(spec: DistSpec, x: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Shapes of the parameters: scalars, or vectors/matrices sized by the data's event size."""
    if x.ndim > 1:
        d = x.shape[-1]
    elif getattr(spec.cls.support, "is_discrete", False):  # categories 0 … max(x)
        d = max(int(np.floor(np.max(x))) + 1, 1)
    else:
        d = 1
    return {p: (d,) * int(getattr(c, "event_dim", 0)) for p, c in spec.arg_constraints.items()}


def first_start(spec: DistSpec, x: np.ndarray, held: dict, free: list[str],
                init: Mapping[str, Any] | None) -> dict:
    """The user's init over the tailored start (moments, quantiles, closed forms)."""
    first = dict(spec.start(x, held)) if spec.start is not None else generic_starts(
        spec, x, held, free)[0]
    if init:
        unknown = sorted(set(init) - set(free))
        if unknown:
            raise ValueError(f"init names parameter(s) {unknown} that are not estimated; the "
                             f"estimated parameters of {spec.name} are {free}")
        first.update(init)
    return _as_start(first, free)


def generic_starts(spec: DistSpec, x: np.ndarray, held: dict, free: list[str]) -> list[dict]:
    """The two starts derived from the constraints alone (computed only when needed)."""
    shapes = param_shapes(spec, x)
    cons = {p: spec.arg_constraints[p] for p in free}
    return [_as_start(_start.generic(x, held, cons, shapes, v), free) for v in (0, 1)]


def _as_start(values: Mapping[str, Any], free: list[str]) -> dict:
    return {p: np.asarray(values[p], dtype=float_dtype()) for p in free}


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def _attempt(spec: DistSpec, x: np.ndarray, held: dict, start: dict, options: dict):
    """One fit; returns (FitResult or the ValueError, the warnings it raised)."""
    constraints = {p: spec.cls.arg_constraints[p] for p in start}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = fit(loglik_for(spec.cls), (x, held), init=start, constraints=constraints,
                      **options)
        except ValueError as err:
            res = err
    return res, caught


def _plan(first: dict, fallbacks: Callable[[], list[dict]], n_starts: int):
    """(start, number of starts) in the order tried: the first start (a multi-start if asked),
    the generic starts that differ from it, and last a multi-start around the first start."""
    yield first, n_starts
    for start in fallbacks():
        if not _same(start, first):
            yield start, 1
    if n_starts < FALLBACK_STARTS:
        yield first, FALLBACK_STARTS


def fit_free(spec: DistSpec, x: np.ndarray, held: dict, first: dict,
             fallbacks: Callable[[], list[dict]], options: dict, n_starts: int = 1):
    """Fit from the first start; if it fails or does not converge, from the next ones.

    Returns the first converged fit, else the attempt with the highest log-likelihood
    (its warnings re-emitted, prefixed by the distribution's name).
    """
    attempts = []
    for start, k in _plan(first, fallbacks, n_starts):
        if k > 1 and attempts and all(isinstance(r, ValueError) for r, _ in attempts):
            bad = _support.nonfinite_message(spec, x, {**first, **held})
            if bad is not None:  # not finite from every start because of the data
                raise ValueError(bad) from attempts[0][0]
        res, caught = _attempt(spec, x, held, start, {**options, **({"n_starts": k} if k > 1 else {})})
        attempts.append((res, caught))
        if not isinstance(res, ValueError) and bool(res.converged):
            break
    fitted = [(r, c) for r, c in attempts if not isinstance(r, ValueError)]
    if not fitted:
        bad = _support.nonfinite_message(spec, x, {**first, **held})
        raise ValueError(bad or f"{spec.name}: {attempts[0][0]}") from attempts[0][0]
    res, caught = max(fitted, key=lambda rc: (bool(rc[0].converged), _finite(rc[0].loglik)))
    level = user_stacklevel()
    for w in caught:
        warnings.warn(f"{spec.name}: {w.message}", w.category, stacklevel=level)
    return res


def _finite(v: Any) -> float:
    v = float(v)
    return v if math.isfinite(v) else -math.inf


def fit_distribution(distribution: Any, data: Any, *, fixed: Mapping[str, Any] | None = None,
                     init: Mapping[str, Any] | None = None, n_starts: int = 1,
                     **options: Any) -> DistributionFit:
    """See :func:`jaxmle.distributions.fit_distribution`."""
    from jaxmle.distributions.registry import spec_for

    spec = spec_for(distribution)
    x = _support.as_data(data, spec)
    fixed = check_fixed(spec, fixed)
    free = [p for p in spec.params if p not in fixed]
    support = _support.support_of(
        spec, fixed, lambda: generic_starts(spec, x, fixed, free)[0])  # if it depends on them
    _support.check_support(spec, x, support)
    x = _support.cast_for(spec, x, float_dtype())
    closed = {} if spec.closed_form is None else {
        k: np.asarray(v, float_dtype()) for k, v in spec.closed_form(x, fixed).items() if k not in fixed}
    held = {**fixed, **closed}
    free = [p for p in spec.params if p not in held]
    _check_degenerate(spec, x, free)
    if not free:
        return build_fit(spec, x, fixed, closed, None)
    try:
        first = first_start(spec, x, held, free, init)
    except ValueError as err:
        raise ValueError(f"{spec.name}: {err}") from err
    res = fit_free(spec, x, held, first, lambda: generic_starts(spec, x, held, free), options,
                   n_starts)
    return build_fit(spec, x, fixed, closed, res)


def _check_degenerate(spec: DistSpec, x: np.ndarray, free: list[str]) -> None:
    """Constant continuous data leave a scale at 0 (no maximum) for two or more parameters."""
    if x.dtype.kind == "f" and x.ndim == 1 and len(free) >= 2 and np.ptp(x) == 0:
        raise ValueError(f"{spec.name}: all {x.size} observations equal {x[0]:.6g}: the spread "
                         "MLE is 0, on the boundary (no finite maximum)")

"""Host-side checks of the data against a distribution: type, shape, finiteness, support."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from jaxmle.distributions.registry import DistSpec

_SHOW = 5  # offending observations named in a message


def _where(bad_rows: np.ndarray, x: np.ndarray) -> str:
    idx = np.flatnonzero(bad_rows)[:_SHOW]
    vals = ", ".join(_fmt(x[i]) for i in idx)
    more = ", …" if np.count_nonzero(bad_rows) > _SHOW else ""
    s = "" if idx.size == 1 and not more else "s"
    return f"{'indices' if s else 'index'} {', '.join(map(str, idx))}{more} (value{s} {vals}{more})"


def _fmt(v: Any) -> str:
    v = np.asarray(v)
    if v.ndim == 0:
        return f"{v.item():.6g}" if v.dtype.kind == "f" else str(v.item())
    return "[" + " ".join(f"{e:.4g}" for e in v.ravel()[:6]) + (" …]" if v.size > 6 else "]")


def as_data(data: Any, spec: DistSpec) -> np.ndarray:
    """Numeric numpy data of the right shape, finite; bool becomes int."""
    try:
        x = np.asarray(data)
    except Exception as err:
        raise TypeError(f"data for {spec.name} is not array-like: {type(data).__name__}") from err
    if x.dtype == bool:
        x = x.astype(np.int64)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"data for {spec.name} must be numeric, got dtype {x.dtype}")
    want = 1 + spec.data_event_dim
    if x.ndim != want:
        what = ("a 1-D array of observations" if want == 1
                else "a 2-D array, one row per observation (vector-valued data)")
        raise ValueError(f"data for {spec.name} must be {what}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"data for {spec.name} is empty")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
        if bad.any():
            raise ValueError(f"data contains {int(bad.sum())} NaN/inf observation(s) at "
                             f"{_where(bad, x)}; drop them before fitting")
    return x


def describe(constraint: Any) -> str:
    """A short description of a NumPyro support for error messages."""
    from numpyro.distributions import constraints as c

    lo = getattr(constraint, "lower_bound", None)
    hi = getattr(constraint, "upper_bound", None)
    names = [(c.real, "real numbers"), (c.positive, "values > 0"), (c.nonnegative, "values ≥ 0"),
             (c.unit_interval, "values in [0, 1]"), (c.nonnegative_integer, "integers ≥ 0"),
             (c.positive_integer, "integers ≥ 1"),
             (c.simplex, "rows on the simplex (≥ 0, summing to 1)"),
             (c.real_vector, "real vectors"), (c.boolean, "0 or 1")]
    for con, text in names:
        if constraint is con:
            return text
    kind = type(constraint).__name__
    if kind == "_IntegerInterval":
        return f"integers {_num(lo)} … {_num(hi)}"
    if kind == "_GreaterThanEq":
        return f"values ≥ {_num(lo)}"
    if kind == "_GreaterThan":
        return f"values > {_num(lo)}"
    if lo is not None and hi is not None:
        return f"values in [{_num(lo)}, {_num(hi)}]"
    return repr(constraint)


def _num(v: Any) -> str:
    v = np.asarray(v)
    return _fmt(v) if v.ndim == 0 else f"({_fmt(v)})"


def support_of(spec: DistSpec, fixed: dict, params: Callable[[], dict]) -> Any:
    """The support the data must lie in: the spec's rule, the class's, or that of an instance
    at ``params()`` (for a support that depends on the parameters)."""
    from numpyro.distributions import constraints as c

    if spec.support is not None:
        return spec.support(fixed)
    if not c.is_dependent(spec.cls.support):
        return spec.cls.support
    import jax.numpy as jnp

    values = {k: jnp.asarray(v) for k, v in {**params(), **fixed}.items()}
    return spec.cls(**values).support


def check_support(spec: DistSpec, x: np.ndarray, support: Any) -> None:
    """Raise naming the count and first indices of the observations outside ``support``."""
    bad = ~np.broadcast_to(np.asarray(support.check(x), dtype=bool), (x.shape[0],))
    if bad.any():
        raise ValueError(
            f"{spec.name} needs {describe(support)}, but {int(bad.sum())} of {x.shape[0]} "
            f"observations are outside: {_where(bad, x)}")


def cast_for(spec: DistSpec, x: np.ndarray, dtype: Any) -> np.ndarray:
    """Discrete data as integers (checked integral by the support), continuous as floats."""
    if getattr(spec.cls.support, "is_discrete", False):
        return x.astype(np.int64 if np.dtype(dtype) == np.float64 else np.int32)
    return x.astype(dtype)


def nonfinite_message(spec: DistSpec, x: np.ndarray, params: dict) -> str | None:
    """Name the observations whose log-density is not finite at ``params`` (None if all are)."""
    from jaxmle.distributions.result import compiled_method

    with warnings.catch_warnings():  # NumPyro warns about out-of-support values: we name them
        warnings.simplefilter("ignore")
        lp = np.asarray(compiled_method(spec.cls, "log_prob")(params, x))
    bad = ~np.isfinite(lp)
    if not bad.any():
        return None
    return (f"the {spec.name} log-density is not finite at {int(bad.sum())} observation(s), "
            f"{_where(bad, x)}, at the starting values {_fmt_params(params)}: values on the edge "
            "of the support (e.g. exact 0 or 1) make the likelihood unbounded or zero")


def _fmt_params(params: dict) -> str:
    return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) + "}"

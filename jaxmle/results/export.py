"""Results that leave Python: JSON-safe dicts, pandas frames, z- and p-values (the
simulation-study summary of a batch is in :mod:`jaxmle.results.simulation`, the distribution
fits' exports in :mod:`jaxmle.distributions.export`).

Everything here works on concrete (host) values and reads the result objects by their
attributes only; the result classes' ``to_dict``/``to_dataframe``/... methods are
one-line calls into this module. It imports no feature module (only ``_params``,
``_typing``, numpy, jax and the standard library), so it adds no import cycle.

JSON rule: every ``to_dict`` returns only ``dict``/``list``/``str``/``int``/``float``/
``bool``/``None``, so ``json.dumps(d, allow_nan=False)`` works; NaN and ±inf become
``None`` (e.g. the SE of a fixed parameter, an open end of a profile interval).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxmle.core.params import all_flat_names
from jaxmle.core.stats import wald_quantile
from jaxmle.core.typing import STATUS_LABELS, Status

# --------------------------------------------------------------------------- plain values


def jsonable(x: Any) -> Any:
    """``x`` as plain Python (dict, list, str, int, float, bool, None), NaN/±inf as None.

    Arrays (numpy, JAX) become nested lists, mappings dicts with str keys, tuples and
    lists lists, named tuples and dataclasses dicts of their fields; anything else
    non-numeric its ``str``.
    """
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_asdict"):
        return jsonable(x._asdict())
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(x)
        if a.dtype.kind == "f":
            out = a.astype(object)
            out[~np.isfinite(a)] = None
            return out.tolist()
        if a.dtype.kind in "biu":
            return a.tolist()
        return jsonable(a.tolist())
    return str(x)


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str | None], ...]:
    from importlib import metadata

    out = []
    for name in ("jaxmle", "jax", "jaxlib", "numpyro", "numpy"):
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    out.append(("python", platform.python_version()))
    return tuple(out)


def versions() -> dict[str, str | None]:
    """Versions of jaxmle, jax, jaxlib, numpyro, numpy and Python (None: not installed)."""
    return dict(_versions())


def pandas() -> Any:
    """The pandas module, imported on demand (it is an optional dependency)."""
    try:
        import pandas as pd
    except ImportError as err:
        raise ImportError("to_dataframe() needs pandas: pip install pandas "
                          "(or use to_dict(), which needs nothing)") from err
    return pd


def frame(rows: list[dict[str, Any]], index: str | None = None) -> Any:
    """A pandas DataFrame of ``rows`` (dicts with the same keys), indexed by ``index``."""
    pd = pandas()
    df = pd.DataFrame.from_records(rows)
    return df.set_index(index) if index is not None and len(rows) else df




def _z(estimate: Any, stderr: Any) -> np.ndarray:
    e = np.asarray(estimate, dtype=float)
    s = np.asarray(stderr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, e / s, np.nan)


_erfc = np.vectorize(math.erfc, otypes=[float])


def _p(z: Any) -> np.ndarray:
    """Two-sided normal p-values P(|Z| > |z|) (NaN where z is NaN)."""
    z = np.asarray(z, dtype=float)
    return np.where(np.isfinite(z), _erfc(np.abs(np.nan_to_num(z)) / math.sqrt(2.0)),
                    np.where(np.isnan(z), np.nan, 0.0))


def zvalues(params: Any, stderr: Any) -> Any:
    """``estimate / SE`` leaf by leaf (NaN where the SE is NaN or 0, e.g. fixed parameters)."""
    return jax.tree_util.tree_map(lambda e, s: _z(e, s)[()], params, stderr)


def pvalues(params: Any, stderr: Any) -> Any:
    """Two-sided Wald p-values 2·(1 − Φ(|z|)) leaf by leaf, NaN where z is."""
    return jax.tree_util.tree_map(lambda e, s: _p(_z(e, s))[()], params, stderr)


def _flat(tree: Any, batch: int | None = None) -> np.ndarray:
    """Leaves as one flat float vector (``batch``: a (B, k) matrix)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if batch is None:
        parts = [np.ravel(np.asarray(x, dtype=float)) for x in leaves]
        return np.concatenate(parts) if parts else np.zeros(0)
    parts = [np.asarray(x, dtype=float).reshape(batch, -1) for x in leaves]
    return np.concatenate(parts, axis=1) if parts else np.zeros((batch, 0))


def _wald_rows(names, estimate, stderr, level, fixed=()) -> list[dict[str, Any]]:
    """estimate, stderr, z, pvalue, ci_lower, ci_upper (+ fixed) per name."""
    q = wald_quantile(level)
    e, s = np.asarray(estimate, float), np.asarray(stderr, float)
    z = _z(e, s)
    p = _p(z)
    rows = []
    for i, n in enumerate(names):
        rows.append(dict(name=n, estimate=float(e[i]), stderr=float(s[i]), z=float(z[i]),
                         pvalue=float(p[i]), ci_lower=float(e[i] - q * s[i]),
                         ci_upper=float(e[i] + q * s[i]), fixed=n in fixed))
    return rows


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in rows}


def _status_label(code: Any) -> str:
    try:
        return STATUS_LABELS[Status(int(code))]
    except ValueError:
        return f"status {int(code)}"


def _status_labels(codes: np.ndarray) -> np.ndarray:
    """Labels of an array of status codes (object array)."""
    uniq, inverse = np.unique(np.asarray(codes, dtype=int), return_inverse=True)
    return np.asarray([_status_label(u) for u in uniq] + [""], dtype=object)[:-1][inverse]


# --------------------------------------------------------------------------- FitResult


def fit_rows(res: Any, level: float = 0.95, include_fixed: bool = True) -> list[dict[str, Any]]:
    """One row per flat parameter (pytree order): Wald inference, ``fixed`` flag."""
    names = all_flat_names(res.params)
    fixed = set(res.fixed_names)
    rows = _wald_rows(names, _flat(res.params), _flat(res.stderr), level, fixed)
    for r in rows:
        if r["fixed"]:
            r.update(stderr=math.nan, z=math.nan, pvalue=math.nan, ci_lower=math.nan,
                     ci_upper=math.nan)
    return rows if include_fixed else [r for r in rows if not r["fixed"]]


def fit_to_dict(res: Any, level: float = 0.95) -> dict[str, Any]:
    """See :meth:`FitResult.to_dict`."""
    singular = np.asarray(res.stats.singular, bool).reshape(-1)
    out: dict[str, Any] = {
        "kind": res.kind, "method": res.method, "cov_type": res.cov_type, "dtype": res.dtype,
        "param_names": list(res.param_names), "fixed_names": list(res.fixed_names),
        "params": res.params, "stderr": res.stderr, "level": level,
        "estimates": _by_name(fit_rows(res, level)), "cov": res.cov,
        "loglik": res.loglik, "logpost": res.logpost, "aic": res.aic, "bic": res.bic,
        "nobs": res.nobs, "n_free": res.n_free, "n_groups": res.n_groups,
        "converged": bool(res.converged), "status": int(res.status),
        "status_label": _status_label(res.status), "n_iter": int(res.n_iter),
        "grad_norm": res.grad_norm,
        "singular": [n for n, s in zip(res.param_names, singular) if s],
        "priors": list(res.priors),
    }
    if res.starts is not None:
        out["starts"] = {**res.starts._asdict(), "n_at_best": res.n_at_best}
        out["starts"].pop("z0")
    if res.deterministic is not None:
        out["deterministic"] = res.deterministic
        out["deterministic_stderr"] = res.deterministic_stderr
    if res.random is not None:
        out["random"] = res.random
        out["random_stderr"] = res.random_stderr
        out["random_cond_stderr"] = res.random_cond_stderr
        if res.random_info is not None:
            out["random_info"] = res.random_info.describe()
    out["versions"] = versions()
    return jsonable(out)


def fit_to_dataframe(res: Any, level: float = 0.95, include_fixed: bool = True) -> Any:
    """See :meth:`FitResult.to_dataframe`."""
    pandas()
    return frame(fit_rows(res, level, include_fixed), "name")


# --------------------------------------------------------------------------- BatchFitResult


def batch_to_dict(bres: Any) -> dict[str, Any]:
    """See :meth:`BatchFitResult.to_dict`."""
    fits = bres.fits
    out: dict[str, Any] = {
        "n_fits": len(bres), "n_converged": bres.n_converged,
        "kind": fits.kind, "method": fits.method, "cov_type": fits.cov_type, "dtype": fits.dtype,
        "param_names": list(fits.param_names), "fixed_names": list(fits.fixed_names),
        "params": fits.params, "stderr": fits.stderr, "cov": fits.cov,
        "loglik": fits.loglik, "logpost": fits.logpost, "aic": fits.aic, "bic": fits.bic,
        "nobs": fits.nobs, "n_free": fits.n_free, "n_groups": fits.n_groups,
        "converged": np.asarray(fits.converged, bool), "status": np.asarray(fits.status),
        "status_label": _status_labels(np.asarray(fits.status).reshape(-1)),
        "n_iter": np.asarray(fits.n_iter), "grad_norm": fits.grad_norm,
        "priors": list(fits.priors),
    }
    if fits.random is not None:
        out["random"] = fits.random
        out["random_stderr"] = fits.random_stderr
    out["versions"] = versions()
    return jsonable(out)


def batch_columns(bres: Any) -> dict[str, np.ndarray]:
    """Column arrays of the per-dataset table (see :meth:`BatchFitResult.to_dataframe`)."""
    fits, names = bres.fits, bres.fits.param_names
    est, se = bres.flat_params(), bres.flat_stderr()
    cols: dict[str, np.ndarray] = {n: est[:, j] for j, n in enumerate(names)}
    cols.update({f"se_{n}": se[:, j] for j, n in enumerate(names)})
    status = np.asarray(fits.status).reshape(-1).astype(int)
    cols.update(converged=np.asarray(fits.converged, bool).reshape(-1), status=status,
                status_label=_status_labels(status),
                loglik=np.asarray(fits.loglik, float).reshape(-1),
                n_iter=np.asarray(fits.n_iter).reshape(-1).astype(int),
                grad_norm=np.asarray(fits.grad_norm, float).reshape(-1))
    return cols


def batch_to_dataframe(bres: Any) -> Any:
    """See :meth:`BatchFitResult.to_dataframe`."""
    pd = pandas()
    return pd.DataFrame(batch_columns(bres), index=pd.RangeIndex(len(bres), name="fit"))


# --------------------------------------------------------------------------- summaries


def _summary_rows(rows: Any) -> list[dict[str, Any]]:
    return [dict(name=r["name"], estimate=r["estimate"], stderr=r["stderr"], z=r["z"],
                 pvalue=r["pvalue"], ci_lower=r["lower"], ci_upper=r["upper"]) for r in rows]


def summary_to_dict(s: Any) -> dict[str, Any]:
    """See :meth:`Summary.to_dict`."""
    return jsonable({"title": s.title, "level": s.level, "stats": dict(s.stats),
                     "params": _by_name(_summary_rows(s.rows)), "notes": list(s.notes),
                     "header": dict(s.header), "versions": versions()})


def summary_to_dataframe(s: Any) -> Any:
    pandas()
    return frame(_summary_rows(s.rows), "name")


def batch_summary_to_dict(s: Any) -> dict[str, Any]:
    """See :meth:`BatchSummary.to_dict`."""
    return jsonable({"n": s.n, "method": s.method, "status": dict(s.counts),
                     "params": _by_name([dict(r) for r in s.rows]), "versions": versions()})


def batch_summary_to_dataframe(s: Any) -> Any:
    pandas()
    return frame([dict(r) for r in s.rows], "name")


# --------------------------------------------------------------------------- other results


def profile_to_dict(p: Any) -> dict[str, Any]:
    """See :meth:`Profile.to_dict`."""
    iv = p.interval
    return jsonable({
        "name": p.name, "estimate": p.estimate, "stderr": p.stderr, "level": p.level,
        "threshold": p.threshold, "max_loglik": p.max_loglik, "lower": iv.lower,
        "upper": iv.upper, "lower_status": iv.lower_status, "upper_status": iv.upper_status,
        "wald": list(p.wald), "note": iv.note, "values": p.values, "loglik": p.loglik,
        "deviance": p.deviance, "converged": np.asarray(p.converged, bool),
        "versions": versions()})


def profile_to_dataframe(p: Any) -> Any:
    pd = pandas()
    return pd.DataFrame({"value": np.asarray(p.values, float),
                         "loglik": np.asarray(p.loglik, float),
                         "deviance": np.asarray(p.deviance, float),
                         "converged": np.asarray(p.converged, bool)})


def _bootstrap_rows(b: Any) -> list[dict[str, Any]]:
    return [dict(name=n, estimate=float(e), bias=float(bi), stderr=float(s),
                 ci_lower=float(lo), ci_upper=float(hi))
            for n, e, bi, s, lo, hi in zip(b.param_names, b.estimate, b.bias, b.stderr, b.lower, b.upper)]


def bootstrap_to_dict(b: Any, draws: bool = False) -> dict[str, Any]:
    """See :meth:`BootstrapResult.to_dict`."""
    out = {"names": list(b.param_names), "param_names": list(b.param_names), "level": b.level, "n": b.n, "n_failed": b.n_failed,
           "failures": dict(b.failures), "estimates": _by_name(_bootstrap_rows(b))}
    if draws:
        out["draws"] = np.asarray(b.draws, float)
    out["versions"] = versions()
    return jsonable(out)


def bootstrap_to_dataframe(b: Any) -> Any:
    pandas()
    return frame(_bootstrap_rows(b), "name")


def lrt_to_dict(r: Any) -> dict[str, Any]:
    """See :meth:`LRTResult.to_dict`."""
    out = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
    out["boundary"] = list(r.boundary)
    out["versions"] = versions()
    return jsonable(out)


def lrt_to_dataframe(r: Any) -> Any:
    pandas()
    row = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
    row["boundary"] = ", ".join(r.boundary)
    row["pvalue_boundary"] = math.nan if r.pvalue_boundary is None else r.pvalue_boundary
    return frame([row])


def _delta_rows(d: Any) -> list[dict[str, Any]]:
    rows = _wald_rows(d.names, np.ravel(d.estimate), np.ravel(d.stderr), d.level)
    for r, lo, hi in zip(rows, np.ravel(d.lower), np.ravel(d.upper)):
        r.pop("fixed")
        r.update(ci_lower=float(lo), ci_upper=float(hi))
    return rows


def delta_to_dict(d: Any) -> dict[str, Any]:
    """See :meth:`DeltaResult.to_dict`."""
    return jsonable({"names": list(d.names), "shape": list(np.shape(d.estimate)),
                     "level": d.level, "estimates": _by_name(_delta_rows(d)), "cov": d.cov,
                     "jacobian": d.jacobian, "versions": versions()})


def delta_to_dataframe(d: Any) -> Any:
    pandas()
    return frame(_delta_rows(d), "name")

"""Host-side options of a fit: the method, tolerances, the start, option checks.

Plain Python and NumPy (nothing here is traced); :mod:`jaxmle.fitting.kernel` re-exports
these names.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

import jaxmle.core.params as _params
import jaxmle.core.space as _space
import jaxmle.fitting.data as _data
from jaxmle.core.priors import PriorSpec
from jaxmle.core.typing import is_optax_transformation

AUTO_NEWTON_MAX_PARAMS = 200
_DEFAULT_MAX_ITER = {"newton": 2000, "prox-newton": 2000, "lbfgs": 10000}


@functools.lru_cache(maxsize=256)
def constrained_leaves(space: _space.ParamSpace) -> frozenset:
    """Names of the leaves with a constraint other than the real line."""
    def is_real(c):
        while hasattr(c, "base_constraint"):
            c = c.base_constraint
        return _space.is_real_line(c)

    return frozenset(l.name for l in space.leaves if not is_real(l.constraint))


def resolve_method(method: Any, n_free: int, prior: PriorSpec | None = None) -> Any:
    """``"auto"`` → Newton for up to 200 free parameters, else L-BFGS; validate the rest.

    With no free parameter (everything fixed) the "fit" only evaluates ℓ: L-BFGS's
    init does that for a zero-length vector (Newton's eigen-step needs one coordinate).
    Laplace (L1) priors need the proximal Newton solver (``"prox-newton"``).
    """
    if prior is not None and prior.has_l1 and n_free:
        if method not in ("auto", "newton", "prox-newton"):
            raise ValueError(f"Laplace (L1) priors need method='newton' (a proximal Newton "
                             f"step lands exactly on zero), not {method!r}")
        return "prox-newton"
    if method == "auto":
        method = "newton" if n_free <= AUTO_NEWTON_MAX_PARAMS else "lbfgs"
    if method in ("newton", "lbfgs", "adam") or is_optax_transformation(method):
        return "lbfgs" if n_free == 0 else method
    raise ValueError(
        f"unknown method {method!r}: use 'auto', 'newton', 'lbfgs', 'adam' or an "
        "optax.GradientTransformation"
    )


float_dtype = _data.float_dtype


def prepare_init(init: Any, dtype: np.dtype):
    """Flatten ``init`` into float arrays; names in pytree order."""
    if init is None:
        raise ValueError("init is required: a dict (or pytree) of starting values")
    init = jax.tree_util.tree_map(np.asarray, init, is_leaf=_params.is_number_list)
    leaves, treedef = jax.tree_util.tree_flatten(init)
    if not leaves:
        raise ValueError("init has no parameters")
    names = _params.leaf_names(init)
    arrays = []
    for name, leaf in zip(names, leaves):
        arr = np.asarray(leaf)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"init for parameter '{name}' must be real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"init for parameter '{name}' is not finite: {arr!r}")
        arrays.append(np.asarray(arr, dtype))  # numpy: one transfer at the kernel call
    return arrays, treedef, names


def _check_options(cov_type, priors=None) -> None:
    if cov_type not in ("observed", "opg", "sandwich"):
        raise ValueError(f"unknown cov_type {cov_type!r}: use 'observed', 'opg' or 'sandwich'")
    if priors and cov_type != "observed":
        raise ValueError(f"cov_type={cov_type!r} is for maximum likelihood; with priors the "
                         "covariance is the inverse Hessian of the log posterior (cov_type="
                         "'observed')")


def resolve_tolerances(tol, max_iter, method, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``tol`` (default 1e-8 in float64, 1e-5 in float32) and ``max_iter`` (by method)."""
    tol = (1e-8 if dtype == np.float64 else 1e-5) if tol is None else tol
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    max_iter = _DEFAULT_MAX_ITER.get(method, 20000) if max_iter is None else int(max_iter)
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    return np.asarray(tol, dtype), np.asarray(max_iter, np.int32)

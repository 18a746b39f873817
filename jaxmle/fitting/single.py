"""``jm.fit`` without random effects: validate on the host, run the fit — a Newton fit
by the host driver (:mod:`jaxmle.fitting.host`: the model's programs and the shared
solver programs), anything traced or not Newton by the fused kernel
(:mod:`jaxmle.fitting.kernel`), from one start or several
(:mod:`jaxmle.fitting.multistart`) — and report.

The public :func:`jaxmle.fit` (:mod:`jaxmle._api`) sends ``random=`` fits to
:mod:`jaxmle.random.marginal`, which uses this one for the marginal likelihood.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import numpy as np

import jaxmle.core.objective as _objective
import jaxmle.core.space as _space
import jaxmle.fitting.data as _data
import jaxmle.fitting.host as _host
from jaxmle.core.held import Inputs, constant_leaves, layout, prepare_held
from jaxmle.core.host_space import check_init
from jaxmle.core.priors import prepare_priors
from jaxmle.core.typing import LogLikFn, Status
from jaxmle.fitting.free_rows import free_rows, with_fixed_scores
from jaxmle.fitting.kernel import (
    FitContext,
    KernelConfig,
    _check_options,
    compiled_kernel,
    constrained_leaves,
    float_dtype,
    prepare_init,
    resolve_method,
    resolve_tolerances,
)
from jaxmle.fitting.multistart import fit_multistart
from jaxmle.fitting.rescue import rescue
from jaxmle.fitting.report import report
from jaxmle.fitting.ahead import compile_ahead
from jaxmle.fitting.start import COMPILED, call_key, check_start
from jaxmle.results.result import FitResult


def fit(
    loglik: LogLikFn,
    data: Any,
    init: Any,
    *,
    constraints: Mapping[str, Any] | None = None,
    priors: Mapping[str, Any] | None = None,
    method: Any = "auto",
    weights: Any = None,
    cov_type: str = "observed",
    fixed: Mapping[str, Any] | None = None,
    groups: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    n_starts: int = 1,
    key: Any = None,
    start_scale: float = 1.0,
    distributed: bool = False,
) -> FitResult:
    """:func:`jaxmle.fit` without ``random=`` (see its docstring)."""
    _check_options(cov_type, priors)
    dtype = float_dtype()
    data = _data.prepare_data(data)
    init_leaves, treedef, names = prepare_init(init, dtype)
    constraints, prior, prior_values = prepare_priors(priors, names, init_leaves, constraints,
                                                      dtype)
    space = _space.build_space(init_leaves, names, treedef, constraints)
    internal = getattr(loglik, "jaxmle_checked", False)   # e.g. the random effects' marginal
    if not internal:
        _objective.check_loglik(loglik, jax.tree_util.tree_unflatten(treedef, init_leaves), data)
    with jax.ensure_compile_time_eval():   # host-side checks: concrete inside a jit too
        held, codes, n_groups = prepare_held(loglik, data, space, init_leaves, fixed,
                                             cov_type, groups, dtype)
    with jax.ensure_compile_time_eval():   # concrete even inside the user's jit
        check_init(space, init_leaves)
    lay = layout(space, held)
    method = resolve_method(method, lay.m_free, prior)
    w = _data.prepare_weights(weights, dtype)
    tol, max_iter = resolve_tolerances(tol, max_iter, method, dtype)
    with jax.ensure_compile_time_eval():
        constant = constant_leaves(space, held)
    config = KernelConfig(loglik, space, method, w is not None, dtype.name, cov_type, n_groups,
                          prior, constant)
    context = FitContext(config, data, w, held, codes, tol, max_iter, prior_values)
    data = Inputs(data, held, codes, prior_values)
    scores = None   # the fixed elements' scores: the score program unless the host has them
    if distributed and n_starts == 1:
        raise ValueError("fit(distributed=True) spreads the starts of a multi-start over the "
                         "processes: give n_starts > 1 (one fit runs on one process; split a "
                         "big dataset's rows with global arrays instead)")
    if n_starts != 1:
        if int(n_starts) != n_starts or n_starts < 1:
            raise ValueError(f"n_starts must be a positive integer, got {n_starts}")
        if not start_scale > 0:
            raise ValueError(f"start_scale must be positive, got {start_scale}")
        res = fit_multistart(config, data, init_leaves, w, tol, max_iter, int(n_starts), key,
                             float(start_scale), distributed)
        if _host.eligible(config) and not distributed and not _traced(data, init_leaves, w):
            scores = functools.partial(_host.fixed_scores, config, data, w)
    elif _host_driven(config, data, init_leaves, w, tol, max_iter):
        # a model's programs and the shared solver programs, driven from here
        res = _host.host_fit(config, data, init_leaves, w, tol, max_iter)
        scores = functools.partial(_host.fixed_scores, config, data, w)
        if int(res.status) == Status.NONFINITE_START and not np.isfinite(float(res.loglik)):
            check_start(config, data, init_leaves, w)
    else:
        kernel = compiled_kernel(config)
        key = call_key(kernel, (data, init_leaves, w))
        if not internal and key not in COMPILED:
            check_start(config, data, init_leaves, w)   # before compiling the fit
        res = kernel(data, init_leaves, w, tol, max_iter)
        if not _traced(res.status):   # (inside a user's jit nothing was compiled on its own)
            COMPILED.add(key)
        if not isinstance(res.status, jax.core.Tracer) and int(res.status) == \
                Status.NONFINITE_START and not np.isfinite(float(res.loglik)):
            check_start(config, data, init_leaves, w)
    if n_starts == 1 and not _traced(res.status):
        # a stalled plain Newton: the scoring-metric path from the same start
        # (:mod:`jaxmle.fitting.rescue`; the same for the host and the fused driver)
        res = rescue(config, data, init_leaves, w, tol, max_iter, res)
    # the free rows and the labels are host-side (not part of the compiled program's key)
    res = with_fixed_scores(res, config, data, w, lay, scores=scores)
    res = dataclasses.replace(free_rows(res, lay, space), context=context,
                              priors=() if prior is None else prior.labels)
    if not _traced(res.status):   # inside the user's jit/vmap: read res.converged
        report(res, space.unc_names, constrained_leaves(space))
    return res


def _traced(*trees: Any) -> bool:
    """Called inside the user's ``jit``/``vmap``: the fused program runs (it is traced)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(trees))


TIER_UP = 200
"""After this many host-driven fits of one model, options and data shapes in a process,
``jm.fit`` starts compiling the fused program (the whole fit in one program) on a worker
thread (:mod:`jaxmle.fitting.ahead`: lowered here, ~0.3 s, compiled there, ~2-3 s on a
2-core CPU) and goes on with the host driver until it is ready; then the same fit costs
a fraction of the host's per-fit overhead (Normal n = 100: ~3.4 → ~0.8 ms; logistic
n = 200: ~2.7 → ~0.7 ms). A loop of fits pays one lowering and never waits for the
compilation; a research script never reaches it; for many datasets at once,
``fit_batch`` is the tool. (Why not sooner: a compilation in flight when the script
ends is waited for at the interpreter's exit; after 200 fits, ~0.7 s of them, that wait
is at most what the fits took, and no more than the synchronous compile it replaced.)"""
_HOST_FITS: dict = {}
_TIERING: dict = {}   # call key → the fused program's compilation in flight (or None)


def _host_driven(config: KernelConfig, data: Any, init_leaves: list, weights: Any,
                 tol: Any, max_iter: Any) -> bool:
    """The host driver, unless the call is traced or this model's fused program (compiled
    once it has been fitted often enough in this process, :data:`TIER_UP`) is ready."""
    if not _host.eligible(config) or _traced(data, init_leaves, weights):
        return False
    kernel = compiled_kernel(config)
    key = call_key(kernel, (data, init_leaves, weights))
    if key in COMPILED:
        return False
    if key in _TIERING:
        future = _TIERING[key]
        if future is None or not future.done():
            return True
        if future.exception() is not None:   # stay on the host driver
            _TIERING[key] = None
            return True
        del _TIERING[key]
        COMPILED.add(key)
        return False
    count = _HOST_FITS.get(key, 0) + 1
    if len(_HOST_FITS) > 4096:
        _HOST_FITS.clear()
    _HOST_FITS[key] = count
    if count > TIER_UP:   # (the 201st fit: as many host fits as before the background tier-up)
        _TIERING[key] = compile_ahead(kernel, data, init_leaves, weights, tol, max_iter)
    return True

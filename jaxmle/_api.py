"""The public entry points :func:`fit` and :func:`fit_batch`.

They send a fit with ``random=`` to :mod:`jaxmle.random.marginal` (the Laplace marginal
likelihood, itself fitted by the plain entry points) and every other fit to
:mod:`jaxmle.fitting.single` / :mod:`jaxmle.fitting.batch`. Keeping the dispatch here, above
both, is what keeps the module graph acyclic (``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import jaxmle.fitting.single as _single
from jaxmle.core.typing import LogLikFn
from jaxmle.fitting.cache import enable_by_default
from jaxmle.results.result import FitResult

if TYPE_CHECKING:
    from jaxmle.results.batch import BatchFitResult

# JAX's persistent compilation cache, on unless opted out (see jaxmle.fitting.cache): the
# second run of a script loads its compiled programs from disk
enable_by_default()


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
    random: Any = None,
    groups: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    n_starts: int = 1,
    key: Any = None,
    start_scale: float = 1.0,
    distributed: bool = False,
) -> FitResult:
    r"""Maximum-likelihood fit of ``loglik(params, data)``.

    Maximises ℓ(θ) = Σᵢ wᵢ ℓᵢ(θ) (or the scalar the function returns) over the
    natural parameters θ, working in unconstrained coordinates z with
    θ = biject_to(constraint)(z), and computes the observed information and
    ``cov = J H_z⁻¹ Jᵀ`` at the optimum. A Newton fit compiles only the model's
    programs (f, ∇f, ∇²f and the values at the optimum, for this log-likelihood and
    data shape); the solver's programs are shared by every model and kept in the
    persistent compilation cache. Inside the user's ``jax.jit``/``jax.vmap`` the whole
    fit is one traced program (same numbers).

    Parameters
    ----------
    loglik : callable
        ``loglik(params, data)`` written in JAX, returning a scalar total or a 1-D
        vector of per-observation log-likelihoods.
    data : array or pytree of arrays
        Passed to ``loglik`` as numeric arrays (traced: new data of the same shapes
        does not recompile). Accepted: NumPy/JAX arrays and scalars; (nested) lists
        of numbers, which become arrays, also inside containers; tuples, lists,
        dicts, NamedTuples and other pytrees of these; a pandas ``DataFrame``, which
        ``loglik`` receives as a dict of its columns by name (``d["y"]``; float and
        integer and boolean columns keep their type); a pandas
        ``Series``, received as an array. Must be finite; non-numeric leaves or
        columns (strings, objects, None) are a ``TypeError`` naming them.
    init : pytree
        Starting values; its structure is the structure of ``params``.
    constraints : dict, optional
        ``{name: numpyro.distributions.constraints.*}``; default ``real``.
    method : {"auto", "newton", "lbfgs", "adam"} or optax.GradientTransformation
        ``"auto"``: Newton for up to 200 free parameters, else L-BFGS.
        ``"newton"``: the exact Hessian, a backtracking line search (unrolled into
        the single compiled loop) and Levenberg–Marquardt damping, which grows when
        the line search gives up and, where the Hessian is indefinite, is raised
        past its most negative eigenvalue (the step there capped at first to half of
        each coordinate's size), so every step descends (see :mod:`jaxmle.core.solvers`).
        ``"lbfgs"``: ``optax.lbfgs`` with its zoom line search; ``"adam"`` or any
        optax transformation: first-order steps (give them a looser ``tol``).
    weights : array, optional
        Per-observation weights multiplying the terms (0 masks padding); ``nobs``
        is their sum.
    cov_type : {"observed", "opg", "sandwich"}
        What ``cov`` and ``stderr`` hold. ``"observed"``: H⁻¹, the inverse observed
        information; ``"opg"``: B⁻¹, the outer product of the per-observation scores
        B = Σ wᵢ sᵢsᵢᵀ (BHHH); ``"sandwich"``: H⁻¹ B H⁻¹ (Huber–White, robust to a
        misspecified likelihood; statsmodels' ``cov_type="HC0"``, no small-sample
        factor). The last two need ``loglik`` to return per-observation terms.
        ``fisher_info`` is always the observed information.
    fixed : dict, optional
        ``{name: value}`` held fixed: leaf names (``"sigma"``, or ``"beta"`` for a
        whole array; a scalar is broadcast) or element names (``"beta[1]"``, for
        elementwise constraints). The values must satisfy the constraints (a
        boundary value the constraint admits, e.g. p = 0 for ``unit_interval``, is
        allowed). Fixed parameters stay in ``params`` (NaN ``stderr``; ``score`` is
        ∂ℓ/∂θ there, the score-test ingredient) but are not estimated: ``cov``,
        ``fisher_info`` and ``param_names`` cover the estimated elements only,
        ``fixed_names`` lists the others, and ``n_free``/AIC/BIC count only free
        coordinates. The values are traced: new values reuse the compiled program.
        Fixing every parameter evaluates ℓ there (``method`` "none", 0×0 ``cov``),
        e.g. for a likelihood-ratio test of a simple hypothesis.
    random : list of str, optional
        Names of ``init`` leaves to integrate out by the Laplace approximation:
        ``loglik`` is then the joint log-density of the data and these random
        effects, ``params`` holds the other parameters θ, ``loglik`` of the result
        is the Laplace marginal log-likelihood, and ``random``/``random_stderr``
        hold the predictions û(θ̂) and their SEs (see :mod:`jaxmle.random.marginal`).
        A dict ``{name: "random" | "flat"}`` marks fixed effects (no density term
        in ``loglik``) to integrate out under a flat prior: REML, e.g.
        ``random={"b": "random", "beta": "flat"}``; their estimates and GLS SEs are
        then in ``random``/``random_cond_stderr``, and AIC/BIC count them (as lme4).
    groups : array, optional
        Cluster labels (one per observation) for ``cov_type="sandwich"``: the
        cluster-robust B = Σ_g S_g S_gᵀ, S_g = Σ_{i∈g} wᵢsᵢ (statsmodels'
        ``cov_type="cluster"`` with ``use_correction=False``).
    tol : float, optional
        Convergence tolerance (default 1e-8 in float64, 1e-5 in float32), see
        :mod:`jaxmle.core.solvers`.
    max_iter : int, optional
        Iteration limit (default 2000 for Newton, 10000 for L-BFGS, 20000 else); each
        Newton iteration is one evaluation of f, ∇f and ∇²f (a rejected trial counts).
    n_starts : int, optional
        Multi-start for likelihoods with several local maxima: fit from ``init`` and
        ``n_starts − 1`` random starts z₀ + s·(1 + |z₀|)·ε (ε ~ N(0, I) in the
        unconstrained coordinates, s = ``start_scale``) as one batch, and return
        the converged fit with the highest log-likelihood; ``res.starts`` and the
        summary report how many starts reached it.
    key : jax.random.PRNGKey, optional
        Random key for the starts (default ``PRNGKey(0)``: reproducible).
    start_scale : float, optional
        Spread s of the random starts (default 1.0).
    distributed : bool, optional
        With ``n_starts``, in a multi-process JAX program (``jax.distributed``; every
        process makes the same call): the K starts (the same on every process) are split
        between the processes, each fits its part, and every process gets the best of
        all. (One big dataset across processes needs no flag: pass global arrays.)

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError, TypeError
        For NaN/inf data, bad shapes, unknown constraint names, an init outside its
        constraint, or a log-likelihood that is not finite at ``init``.

    Warns
    -----
    ConvergenceWarning
        The optimiser stopped without converging (``converged`` is False).
    SingularInformationWarning
        The information matrix is singular / not positive definite; the
        parameters involved get NaN standard errors.

    Examples
    --------
    Define the log-likelihood once, with ``def`` (not a fresh ``lambda`` per call):
    the compiled program is cached by the function, so a second fit of same-shaped
    data reuses it.

    >>> import jaxmle as jm, numpyro.distributions as dist
    >>> from numpyro.distributions import constraints
    >>> def loglik(p, x):
    ...     return dist.Normal(p["mu"], p["sigma"]).log_prob(x)
    >>> x = [160., 162., 165., 167., 170., 172., 175., 177., 180., 182.]
    >>> res = jm.fit(loglik, x, init={"mu": 150.0, "sigma": 5.0},
    ...              constraints={"sigma": constraints.positive})
    >>> round(float(res.params["mu"]), 6), round(float(res.params["sigma"]) ** 2, 6)
    (171.0, 51.0)
    """
    if random is not None and len(random):
        import jaxmle.random.marginal as _marginal

        if distributed:
            raise ValueError("fit(distributed=True) does not take random= (a distributed "
                             "multi-start of Laplace fits is not implemented)")
        return _marginal.fit_random(loglik, data, init, random=random, constraints=constraints,
                                  priors=priors, method=method, weights=weights,
                                  cov_type=cov_type, fixed=fixed, groups=groups, tol=tol,
                                  max_iter=max_iter, n_starts=n_starts, key=key,
                                  start_scale=start_scale)
    return _single.fit(loglik, data, init, constraints=constraints, priors=priors, method=method,
                    weights=weights, cov_type=cov_type, fixed=fixed, groups=groups, tol=tol,
                    max_iter=max_iter, n_starts=n_starts, key=key, start_scale=start_scale,
                    distributed=distributed)


def fit_batch(
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
    random: Any = None,
    groups: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    chunk_size: int | None = None,
    batched_init: bool | None = None,
    progress: bool | None = None,
    devices: Any = None,
    distributed: str | None = None,
    gather: bool = True,
) -> BatchFitResult:
    r"""Fit ``loglik`` to B datasets at once: ``vmap`` of the :func:`jaxmle.fit` kernel.

    Every data leaf carries a leading batch axis of length B (the datasets must
    have the same shapes; pad ragged ones and give the padding weight 0).
    Each fit is exactly what :func:`jaxmle.fit` computes on that dataset, with its
    own ``converged``, ``n_iter`` and ``grad_norm``.

    Parameters
    ----------
    loglik, constraints, method, cov_type, fixed, groups, tol, max_iter
        As in :func:`jaxmle.fit`; ``fixed`` values and ``groups`` are shared by all
        datasets.
    data : pytree of arrays
        Read as :func:`jaxmle.fit` reads one dataset (an array, a tuple, dict or
        nested pytree of arrays), with every leaf shaped (B, ...): the leading axis
        indexes the datasets. A top-level Python list of arrays, or a DataFrame, is
        refused as ambiguous; :func:`jaxmle.stack_datasets` turns a list of separate
        datasets into such a batch. A dataset containing NaN/inf is not fitted: its
        results are NaN, its ``status`` is ``NONFINITE_DATA``, and a warning names it;
        the other datasets are fitted normally.
    init : pytree
        Shared starting values (shaped like one fit's parameters), or per-dataset
        starts with a leading axis B on every leaf.
    weights : array, optional
        (n,) shared or (B, n) per-dataset observation weights; weight 0 masks
        padding, so ragged datasets can be padded to a common length.
    chunk_size : int, optional
        Datasets per compiled call (default: from the data size per dataset, 64 to
        1024). Every chunk reuses one compiled program; memory grows with it.
    batched_init : bool, optional
        Whether ``init`` carries the batch axis. Default: yes when every init leaf
        has a leading axis of length B (pass ``False`` if a shared vector parameter
        happens to have length B).
    progress : bool, optional
        A progress bar of finished fits (tqdm): it says "compiling…" until the
        program is compiled (its rate and ETA start after that), and names the phase
        where the slow fits continue. Default: on when attached to a terminal;
        ``True`` shows it anywhere, ``False`` never.
    devices : sequence of jax.Device, optional
        Devices to shard the batch axis over (default: all devices of the default
        backend, when there are several; in a distributed fit, this process's devices).
    distributed : {None, "local", "global"}, optional
        A batch spread over the processes of a multi-process JAX program (every process
        calls ``jax.distributed.initialize()`` first, then ``fit_batch`` with the same
        options). ``"local"``: ``data`` (and batched ``init``, per-dataset ``weights``) is
        this process's share of the datasets; the global batch is process 0's share,
        then process 1's, ... (shares may differ in size). ``"global"``: ``data`` is the
        whole batch, either global ``jax.Array``\ s sharded on the batch axis (built with
        ``jax.make_array_from_process_local_data``; each process fits the rows it holds)
        or the same host arrays on every process (split into equal contiguous parts);
        global-array data implies it. Each process fits its share on its own devices
        (chunks and the straggler schedule as in one process), so every dataset is
        fitted once; failures and warnings name global dataset indices, and an error on
        one process is raised on all. Default ``None``: this process fits everything.
    gather : bool, optional
        With ``distributed``: ``True`` (default) gives every process the whole result
        (numpy arrays, leading axis the global B); ``False`` returns global
        ``jax.Array``\ s sharded on the batch axis (like the data when it is global, else
        over all processes' devices, which needs B divisible by their number), nothing
        gathered on one host (read them with ``addressable_shards`` or
        ``multihost_utils.process_allgather``). A distributed result carries no data to
        refit a member (``bres[i].profile()`` needs ``jm.fit`` on that dataset).

    Returns
    -------
    BatchFitResult
        ``params["mu"].shape == (B,)``, ``cov.shape == (B, k, k)``, ``converged``
        (B,), ...; ``bres[i]`` is the i-th fit as a :class:`FitResult`.

    Warns
    -----
    ConvergenceWarning
        Some fits did not converge (how many, why, and the first indices).
    SingularInformationWarning
        Some converged fits have a singular information matrix (NaN SEs).
    """
    import jaxmle.fitting.distributed as _distributed

    if distributed is not None or _distributed.has_global_leaves(data):
        if random is not None and len(random):
            raise ValueError("fit_batch(distributed=...) does not take random= (a distributed "
                             "batch of Laplace fits is not implemented): fit each process's "
                             "share with distributed=None and random=[...]")
        return _distributed.fit_batch_distributed(
            loglik, data, init, distributed=distributed, gather=gather, constraints=constraints,
            priors=priors, method=method, weights=weights, cov_type=cov_type, fixed=fixed,
            groups=groups, tol=tol, max_iter=max_iter, chunk_size=chunk_size,
            batched_init=batched_init, progress=progress, devices=devices)
    if random is not None and len(random):
        import jaxmle.random.marginal as _marginal

        return _marginal.fit_batch_random(loglik, data, init, random=random,
                                        constraints=constraints, priors=priors, method=method,
                                        weights=weights, cov_type=cov_type, fixed=fixed,
                                        groups=groups, tol=tol, max_iter=max_iter,
                                        chunk_size=chunk_size, batched_init=batched_init,
                                        progress=progress, devices=devices)
    import jaxmle.fitting.batch as _batch

    return _batch.fit_batch(loglik, data, init, constraints=constraints, priors=priors,
                            method=method, weights=weights, cov_type=cov_type, fixed=fixed,
                            groups=groups, tol=tol, max_iter=max_iter, chunk_size=chunk_size,
                            batched_init=batched_init, progress=progress, devices=devices)


def warmup(loglik: LogLikFn, data: Any, init: Any, **options: Any) -> int:
    """Compile what ``jm.fit(loglik, data, init, **options)`` needs, so that a later fit
    of the same model, options and data shapes runs without compiling (for benchmark
    authors timing compilation and running apart, and for services that answer the
    first request fast). It runs one iteration on ``data`` (nothing is returned; no
    warning is raised) and returns the number of programs compiled or loaded from
    the persistent cache. ``fit_batch`` and the bootstrap compile their batch program
    on first use.
    """
    import warnings

    import jax

    counted = [0]

    def listen(event: str, duration: float, **kwargs: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            counted[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(loglik, data, init, **{**options, "max_iter": 1})
        from jaxmle.fitting.host import wait_solvers

        wait_solvers()   # the solver's step compiles in the background after a first fit
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return counted[0]

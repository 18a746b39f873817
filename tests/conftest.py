"""Test configuration: float64 everywhere (the accuracy the comparisons assume), and a
persistent XLA compilation cache of each pytest process's own.

The suite is compile-bound. JAX's persistent cache keys a program by its HLO (debug
information stripped), not by the Python function, so with the cache on, a test whose
log-likelihood is a local copy of one another test already fitted (same model, same
shapes, same options) loads that program from disk instead of compiling it again; and
a program dropped from jaxmle's in-memory caches (``cache_clear()`` in a test) comes
back from disk.

Each pytest-xdist worker (and a run without xdist) has its own cache directory: a run
whose workers shared one (2026-12-04, jax 0.10.2) had a worker die of a segmentation
fault inside ``backend.deserialize_executable`` while loading a program another worker
was writing (JAX writes cache entries in place, not atomically). ``JAXMLE_CACHE_DIR``
is set to the same directory, so the example and CLI subprocesses a worker starts (one
at a time, while it waits) load that worker's programs and add theirs. Tests that start
several processes at once give each its own directory
(``tests/shared.py``: ``private_cache_env``).

The suite compiles at XLA's backend optimisation level 0 (``XLA_FLAGS``, inherited by the
example and CLI subprocesses): the programs are the same, LLVM spends less time on them
(tests/test_random_border.py: 72 → 44 s), and the suite runs mostly compilations; the
programs run up to 2× slower, which the tests do not time. Set ``JAXMLE_TEST_XLA_OPT=1``
to run the suite at XLA's default level.

The configuration is done here, at import, before any test module is collected and
before anything is compiled: JAX reads the cache settings once, at its first compile,
and an environment variable set after JAX was imported is ignored.
``JAXMLE_NO_COMPILATION_CACHE=1`` (jaxmle's own opt-out, which the subprocesses inherit)
turns it off: every process then compiles what it needs.
"""

import os
import shutil
import tempfile

import jax
import pytest

if not os.environ.get("JAXMLE_TEST_XLA_OPT"):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0").strip()
jax.config.update("jax_enable_x64", True)

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
CACHE_DIR = None
if os.environ.get("JAXMLE_NO_COMPILATION_CACHE", "").strip().lower() not in ("1", "true", "yes", "on"):
    CACHE_DIR = tempfile.mkdtemp(prefix=f"jaxmle-test-cache-{WORKER}-")
    jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    os.environ["JAXMLE_CACHE_DIR"] = CACHE_DIR


def pytest_unconfigure(config):
    from jaxmle.fitting import ahead

    ahead.settle()   # background compilations write into the cache: let them finish
    if CACHE_DIR is not None:
        for path in (CACHE_DIR, CACHE_DIR + "-concurrent"):   # (see shared.private_cache_env)
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- xdist groups
#
# With ``--dist loadgroup`` (pyproject.toml) the tests of one group run on one worker, so
# the programs they share (the same log-likelihood function from tests/shared.py, the same
# data shapes, the same fit_distribution models) are traced and compiled once per run
# instead of once per worker. Files not listed are spread test by test. A NIST problem
# is a group of its own (its two starts and its standard-error test share one fit program
# and the cached fits; the harness checks and the SE test share the jitted Jacobian).
GROUPS = {
    # fit_distribution / compare_distributions at n = 200
    "test_distributions.py": "distributions",
    "test_distribution_view.py": "distributions",
    "test_plots.py": "distributions",
    "test_cli_fit.py": "distributions",
    # Normal(mu, sigma) batches and single fits (shared.normal)
    "test_batch.py": "normal-batch",
    "test_inputs.py": "normal-batch",
    "test_result_data.py": "normal-batch",
    "test_api.py": "normal-batch",
    "test_export.py": "normal-batch",
    "test_fixed.py": "normal",
    "test_solvers.py": "normal",
    "test_errors.py": "normal",
    "test_constraints.py": "normal",
    "test_profile.py": "normal",
    "test_lrt_delta_bootstrap.py": "normal",
    "test_priors.py": "normal",
    "test_laplace.py": "normal",
    "test_textbook.py": "normal",
    "test_contract.py": "normal",
    # the demo subprocess loads the programs test_textbook's in-process demo compiled
    "test_examples.py::test_cli_demo": "normal",
    # logistic / Poisson regressions at N = 500 (shared.logit, shared.poisson_reg)
    "test_peers.py": "regression",
    "test_robust_cov.py": "regression",
    # random effects (Laplace marginal programs)
    "test_random.py": "random",
    "test_model.py": "random",
    # with the Eckerle4 fits it repeats (their programs, the rescue's metric program)
    "test_nist.py::test_eckerle4_start1_sigma_free_rescue_in_fit_batch_and_its_limits":
        "nist-Eckerle4",
}


def _group(item):
    name = item.path.name
    if name == "test_nist.py":
        params = getattr(item, "callspec", None)
        problem = params.params.get("name") if params else None
        if problem:
            return f"nist-{problem}"
    return GROUPS.get(f"{name}::{item.name}", GROUPS.get(name))


@pytest.hookimpl(tryfirst=True)    # before xdist reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = _group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))

"""Test configuration: float64 everywhere (the accuracy the comparisons assume), and one
XLA compilation cache shared by the pytest-xdist workers and the example subprocesses
of this run (the suite is bound by compilation; many programs recur across workers and
processes). The cache directory is fresh for every run, so nothing stale is ever read.
"""

import os
import tempfile

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
_CACHE = os.path.join(tempfile.gettempdir(), f"jaxmle-test-xla-cache-{_RUN}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

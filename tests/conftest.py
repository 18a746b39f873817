"""Test configuration: float64 everywhere (the accuracy the comparisons assume).

No persistent XLA compilation cache is shared between the pytest-xdist workers and the
example subprocesses: a run that shared one (2026-12-04, jax 0.10.2) had a worker die
of a segmentation fault inside ``backend.deserialize_executable`` while loading a
program another worker had written, and a crashed worker fails CI at random. Each
process compiles what it needs (about 2.5 minutes more for the suite on 2 cores).
"""

import jax

jax.config.update("jax_enable_x64", True)

"""Test configuration: float64 everywhere (the accuracy the comparisons assume)."""

import jax

jax.config.update("jax_enable_x64", True)

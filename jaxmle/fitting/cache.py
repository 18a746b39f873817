"""JAX's persistent compilation cache: compiled fits survive the Python process."""

from __future__ import annotations

import os

import jax


def default_cache_dir() -> str:
    """``$JAXMLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxmle`` (``~/.cache/jaxmle``)."""
    if os.environ.get("JAXMLE_CACHE_DIR"):
        return os.environ["JAXMLE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxmle")


def enable_compilation_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache, so a new process reuses compiled fits.

    A cold first fit spends most of its time compiling; with the cache warm, a
    fresh process loads the compiled program from disk instead. Every program is
    cached, however quick it was to compile. Returns the cache directory.
    """
    path = os.path.abspath(path or default_cache_dir())
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path

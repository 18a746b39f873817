"""JAX's persistent compilation cache: compiled fits survive the Python process.

On by default: ``import jaxmle`` points JAX's persistent cache at the user's cache
directory (``$JAXMLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxmle``, else
``~/.cache/jaxmle``), so the second run of a script loads its programs from disk
instead of compiling them. The cache is bounded (``$JAXMLE_CACHE_MAX_BYTES``, default
1 GiB): when it is turned on, the oldest entries are deleted until it fits (checked
at most once an hour; JAX's own bounded mode needs the ``filelock`` package and all
processes to agree on it, so jaxmle prunes instead). It is left alone when:

* ``JAXMLE_NO_COMPILATION_CACHE=1`` (or ``true``/``yes``) is set, or
* the program already chose a cache directory (``jax_compilation_cache_dir``), or
* the directory cannot be created.

:func:`disable_compilation_cache` turns it off for the rest of the process;
:func:`enable_compilation_cache` turns it on (elsewhere, if given a path).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import jax

_DEFAULT_MAX_BYTES = 1 << 30
_OFF = ("1", "true", "yes", "on")
_state = {"dir": None}


def default_cache_dir() -> str:
    """``$JAXMLE_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxmle`` (``~/.cache/jaxmle``)."""
    if os.environ.get("JAXMLE_CACHE_DIR"):
        return os.environ["JAXMLE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxmle")


def _max_bytes() -> int:
    raw = os.environ.get("JAXMLE_CACHE_MAX_BYTES")
    try:
        return int(raw) if raw else _DEFAULT_MAX_BYTES
    except ValueError:
        return _DEFAULT_MAX_BYTES


def enable_compilation_cache(path: str | None = None, max_bytes: int | None = None) -> str:
    """Turn on JAX's persistent compilation cache, so a new process reuses compiled fits.

    A cold first fit spends most of its time compiling; with the cache warm, a
    fresh process loads the compiled programs from disk instead. Every program is
    cached, however quick it was to compile; the directory is pruned to ``max_bytes``
    (default ``$JAXMLE_CACHE_MAX_BYTES`` or 1 GiB; −1: unbounded), oldest entries first.
    ``import jaxmle`` already does this (see :mod:`jaxmle.fitting.cache`); call it to
    choose another directory. Returns the cache directory.
    """
    path = os.path.abspath(path or default_cache_dir())
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    prune(path, _max_bytes() if max_bytes is None else int(max_bytes))
    _atomic_writes()
    _state["dir"] = path
    return path


def _atomic_writes() -> None:
    """Make JAX's cache writes atomic (write a temporary file, then rename it): JAX 0.10
    writes an entry in place, so another process reading it at that moment may load a
    truncated program (seen as a crash inside ``deserialize_executable``). With the
    cache on by default, parallel processes sharing it must be safe. Left alone if
    JAX's internals differ from what this expects."""
    try:
        from jax._src import lru_cache as _lru
        cls, suffix = _lru.LRUCache, _lru._CACHE_SUFFIX
    except (ImportError, AttributeError):
        return
    original = cls.put
    if getattr(original, "_jaxmle_atomic", False):
        return

    def put(self: Any, key: str, value: bytes) -> None:
        if not key or getattr(self, "eviction_enabled", True):
            return original(self, key, value)
        try:
            final = os.fspath(self.path / f"{key}{suffix}")
            if os.path.exists(final):
                return None
            tmp = os.fspath(self.path / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as f:
                f.write(value)
            os.replace(tmp, final)
        except (OSError, TypeError):   # not a local directory: JAX's own way
            return original(self, key, value)
        return None

    put._jaxmle_atomic = True
    cls.put = put


def disable_compilation_cache() -> None:
    """Turn the persistent compilation cache off for the rest of the process (programs
    are still compiled once per process and kept in memory)."""
    jax.config.update("jax_enable_compilation_cache", False)
    _state["dir"] = None


def compilation_cache_dir() -> str | None:
    """The directory jaxmle's persistent cache uses, or None when it is off."""
    return _state["dir"] if jax.config.jax_enable_compilation_cache else None


def enable_by_default() -> None:
    """What ``import jaxmle`` does: the cache on, unless opted out or already set."""
    if os.environ.get("JAXMLE_NO_COMPILATION_CACHE", "").strip().lower() in _OFF:
        return
    if jax.config.jax_compilation_cache_dir:   # the program chose its own
        return
    try:
        enable_compilation_cache()
    except OSError:   # a read-only home: compile in memory, as JAX does by default
        pass


def prune(path: str, max_bytes: int, every_s: float = 3600.0) -> int:
    """Delete the oldest cache entries until the directory holds at most ``max_bytes``
    (at most once per ``every_s`` seconds: a marker file remembers the last check).
    Returns the number of files deleted. A program whose entry is deleted under it is
    compiled again, so this is safe while other processes use the cache."""
    if max_bytes < 0:
        return 0
    marker = os.path.join(path, ".jaxmle-pruned")
    try:
        if time.time() - os.stat(marker).st_mtime < every_s:
            return 0
    except OSError:
        pass
    try:
        with open(marker, "w"):
            pass
        entries = []
        with os.scandir(path) as it:
            for e in it:
                if e.is_file() and not e.name.startswith("."):
                    st = e.stat()
                    entries.append((max(st.st_atime, st.st_mtime), st.st_size, e.path))
    except OSError:
        return 0
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, file in sorted(entries):
        if total <= max_bytes:
            break
        try:
            os.remove(file)
        except OSError:
            continue
        total, removed = total - size, removed + 1
    return removed

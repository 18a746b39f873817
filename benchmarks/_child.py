"""Fresh-process runner used for cold / persistent-cache latency.

    python benchmarks/_child.py WORKLOAD CONTENDER SEED [CACHE_DIR]

Only numpy + the benchmark helpers are imported before the timer starts (data is
generated before the timer too).  The timed region covers: enabling the persistent
cache (if CACHE_DIR given), importing the library (jax/jaxmle/scipy/...), compiling,
the fit, and materialising estimates + standard errors as numpy floats.
Prints one line ``@@RESULT {json}``.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import _common as C  # noqa: E402  (numpy-only module)
import _contenders as K  # noqa: E402  (lazy imports only)


def main():
    workload, name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache_dir = sys.argv[4] if len(sys.argv) > 4 else None
    heavy = [m for m in ("jax", "jaxmle", "scipy", "statsmodels", "iminuit", "optax") if m in sys.modules]
    assert not heavy, f"heavy modules imported before the timer: {heavy}"
    data = K.make_data(workload, seed)
    fn = K.CONTENDERS[workload][name]

    t0 = time.perf_counter()
    how = K.enable_cache(name, cache_dir) if cache_dir else None
    res = C.materialise(fn(data))
    t1 = time.perf_counter()

    rec = {
        "workload": workload,
        "contender": name,
        "seconds": t1 - t0,
        "params": {k: v.tolist() for k, v in res["params"].items()},
        "stderr": {k: v.tolist() for k, v in res["stderr"].items()},
        "converged": res["converged"],
    }
    if cache_dir:
        import jax

        rec["cache_enabled_by"] = how
        rec["cache_config"] = {
            "dir": jax.config.jax_compilation_cache_dir,
            "min_compile_time_secs": jax.config.jax_persistent_cache_min_compile_time_secs,
            "min_entry_size_bytes": jax.config.jax_persistent_cache_min_entry_size_bytes,
        }
        rec["cache_files"] = sum(len(f) for _, _, f in os.walk(cache_dir))
    print("@@RESULT " + json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()

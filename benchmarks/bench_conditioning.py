"""SE accuracy against Householder QR: y ~ 1 + x at offsets, and nearly collinear designs.

Usage: ``python3 benchmarks/bench_conditioning.py LABEL`` prints a markdown table (the
label names the column of RESULTS.md (l): "before" / "after"). The data and the QR
reference are ``tests/test_conditioning.py``'s.
"""
import os
import sys
import warnings
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import jax; jax.config.update("jax_enable_x64", True)
import numpy as np, jax.numpy as jnp
import jaxmle as jm
from test_conditioning import offset_data, qr_reference, regression, collinear_design
from numpyro.distributions import constraints
def one(label, X, y):
    b, se = qr_reference(X, y)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = jm.fit(regression, {"X": X, "y": y}, init={"b": jnp.zeros(X.shape[1]), "sigma": 1.0},
                   constraints={"sigma": constraints.positive}, method="newton")
    berr = np.max(np.abs(np.asarray(r.params["b"]) - b) / se)
    serr = np.max(np.abs(np.asarray(r.stderr["b"]) / se - 1))
    ws = sorted({type(x.message).__name__.replace("Warning", "W") for x in w}) or ["–"]
    print(f"| {label} | {'yes' if bool(r.converged) else 'no'} ({int(r.n_iter)}) | {berr:.1e} | {serr:.1e} | {', '.join(ws)} |", flush=True)
print(f"| design ({sys.argv[1]}) | converged (iterations) | max \\|b − b_QR\\|/SE | max \\|SE/SE_QR − 1\\| | warnings |")
print("|---|---|---|---|---|")
for c in [1e4, 1e6, 2e6, 4e6, 1e7, 1e8]:
    one(f"y ~ 1 + x, x = {c:.0e} + N(0,1), n = 2000", *offset_data(c))
for d in [1e-3, 1e-5, 1e-6, 1e-7, 1e-8]:
    X, y = collinear_design(d)
    one(f"1, x, x + {d:.0e}·u, 1e3·v (n = 500): cond(X) = {np.linalg.cond(X):.1e}", X, y)

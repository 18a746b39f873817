"""``benchmarks/bench_gpu.py`` runs end to end on tiny sizes (a smoke test: the script is
meant for a GPU machine later, and must not have rotted on the way)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_gpu_runs_on_tiny_sizes(tmp_path):
    out = tmp_path / "gpu.json"
    md = tmp_path / "gpu.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_gpu.py"), "--sizes", "64",
         "--problems", "normal", "--repeats", "1", "--big-n", "3000", "--big-p", "3",
         "--glmm-groups", "", "--out", str(out), "--md-out", str(md)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    (cell,) = record["cells"]
    assert cell["B"] == 64 and cell["jm_converged"] == 64 and not cell["precision_warning"]
    assert cell["max_abs_dtheta_jm_closed"] < 1e-8
    (big,) = record["big"]
    assert big["converged"] and big["se_finite"] and big["max_dbeta_in_se"] < 1e-4
    text = md.read_text()
    assert "jm µs per fit" in text and "Big single fit" in text

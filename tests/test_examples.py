"""The examples and the ``jaxmle`` command run and print what they promise."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# smaller runs of the same scripts where the size is a command-line option (compile-bound CI)
ARGS = {"simulation_study.py": ["--B", "500", "--sizes", "20,100"],
        "glmm_sites.py": ["--nuts-samples", "0"]}     # NUTS's compile: numpyro's, not ours


def _run(args, timeout=600):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script):
    out = _run([sys.executable, str(script), *ARGS.get(script.name, [])])
    assert out.returncode == 0, out.stderr
    assert "jaxmle fit results" in out.stdout
    assert "Converged:                          NO" not in out.stdout
    assert "Warning" not in out.stderr


def test_cli_demo(tmp_path):
    env = dict(os.environ)     # the worker's cache (tests/conftest.py), else a fresh one
    env.setdefault("JAXMLE_CACHE_DIR", str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "jaxmle.cli", "demo"], capture_output=True,
                         text=True, timeout=600, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert "All textbook answers reproduced." in out.stdout
    assert out.stdout.count("jaxmle fit results") == 5


def test_cli_help():
    out = _run([sys.executable, "-m", "jaxmle.cli", "--help"])
    assert out.returncode == 0 and "demo" in out.stdout

"""``jaxmle fit`` end to end, in subprocesses.

A subprocess pays ~1.5 s to import JAX, so the cases are grouped: one happy path
(JSON, plot, a skipped candidate), then every bad input, the help page and a run from
standard input (which finds the compiled fit in the persistent compilation cache)
concurrently. Each bad input must give exit status 2 (1 when no candidate could be
fitted) and exactly one ``error:`` line on stderr, and no file may change. Option
errors that stop before any fit are checked in-process.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import numpyro.distributions as dist
import pytest

import jaxmle as jm
import jaxmle.distributions.io as _io
from jaxmle import cli
from shared import private_cache_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 200  # as in test_distributions.py: the in-process comparison reuses its compiled fits


def waiting_times():
    return np.random.default_rng(3).gamma(2.5, 1.5, N)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    x = waiting_times()
    rows = ["id,waiting,desk"] + [f"{i},{float(v)!r},{'AB'[i % 2]}" for i, v in enumerate(x)]
    (d / "data.csv").write_text("\n".join(rows) + "\n")
    (d / "bad.csv").write_text("id,waiting\n1,2.5\n2,3.0\n3,abc\n4,1.0\n5,2\n6,x?\n")
    (d / "holes.csv").write_text("id,waiting\n1,2.5\n2,\n3,1.5\n4,NA\n")
    (d / "header_only.csv").write_text("id,waiting\n")
    (d / "negative.csv").write_text("waiting\n2.5\n-1.0\n3.5\n")
    (d / "ragged.csv").write_text("id,waiting,desk\n1,2.5,A\n2,3.0,B\n3,1.5\n4\n5,2.0,A\n")
    (d / "cache").mkdir()
    return d


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}


def _env(d, name=None):
    """The worker's persistent cache (tests/conftest.py), where the in-process fits of
    the same models at n = 200 put their programs; else one of the test's own. ``name``:
    one of several processes running at once, given a directory of its own."""
    env = dict(os.environ)
    env.setdefault("JAXMLE_CACHE_DIR", str(d / "cache"))
    return env if name is None else private_cache_env(env, name)


def _cli(d, *args):
    return subprocess.run([sys.executable, "-m", "jaxmle.cli", *args], cwd=d, env=_env(d),
                          capture_output=True, text=True, timeout=600)


def test_happy_path_json_plot_and_a_skipped_candidate(workdir):
    before = _digests(workdir)
    out = _cli(workdir, "fit", "data.csv", "--column", "waiting", "--dist",
               "gamma,weibull,beta,binomial", "--json", "out.json", "--plot", "fit.png")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "Warning" not in out.stderr
    text = out.stdout
    assert f"Data: column 'waiting' of 'data.csv', n = {N}" in text
    assert "jaxmle fit results: Gamma" in text and "jaxmle fit results: Weibull" in text
    assert "Distribution comparison (ranked by AIC)" in text
    assert "Skipped Beta: needs values in [0, 1]" in text
    # the hint in the command line's syntax, not the Python API's fixed={...}
    assert ("Skipped Binomial: parameter 'total_count' is integer-valued and is not estimated by "
            "maximum likelihood here; give it, e.g. --fixed total_count=20") in text
    assert "fixed={" not in text
    result = json.loads((workdir / "out.json").read_text())
    reference = jm.compare_distributions(waiting_times(), [dist.Gamma, dist.Weibull])
    assert [r["distribution"] for r in result["ranking"]] == reference.names
    assert result["input"] == {"file": "data.csv", "column": "waiting", "n": N,
                               "missing_dropped": 0, "missing_lines": []}
    assert "Beta" in result["skipped"]
    assert result["skipped"]["Binomial"].endswith("give it, e.g. --fixed total_count=20")
    for name in reference.names:
        fit = result["fits"][name]
        for key, value in reference[name].params.items():
            np.testing.assert_allclose(fit["params"][key], value, rtol=1e-10)
            np.testing.assert_allclose(fit["stderr"][key], reference[name].stderr[key], rtol=1e-8)
        assert fit["converged"] is True
    png = (workdir / "fit.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    after = _digests(workdir)
    assert {k: after[k] for k in before} == before  # the input files are never modified


BAD_INPUTS = {
    "missing file": (["fit", "nope.csv"], 2, "error: cannot read 'nope.csv': no such file"),
    "unknown column": (["fit", "data.csv", "--column", "wait"], 2,
                       "error: unknown column 'wait': the columns are 'id', 'waiting', 'desk'"),
    "non-numeric": (["fit", "bad.csv", "-c", "waiting"], 2,
                    "error: column 'waiting' has 2 non-numeric value(s): line 4 'abc', line 7 'x?'"),
    "missing with --strict": (["fit", "holes.csv", "-c", "waiting", "--strict"], 2,
                              "error: column 'waiting' has 2 missing value(s) at line(s) 3, 5 "
                              "(--strict)"),
    "empty data": (["fit", "header_only.csv", "-c", "waiting"], 2,
                   "error: column 'waiting' has no numeric values"),
    "ragged row": (["fit", "ragged.csv", "-c", "waiting"], 2,
                   "error: line 4 has 2 fields, the header has 3 (also line(s) 5)"),
    "binomial without total_count": (["fit", "negative.csv", "--dist", "binomial"], 1,
                                     "error: no candidate could be fitted: Binomial: parameter "
                                     "'total_count' is integer-valued and is not estimated by "
                                     "maximum likelihood here; give it, e.g. --fixed "
                                     "total_count=20"),
    "outside every support": (["fit", "negative.csv", "--dist", "gamma,lognormal"], 1,
                              "error: no candidate could be fitted: Gamma: needs values > 0, but "
                              "1 of 3 observations are outside: index 1 (value -1)"),
}


def stdin_text():
    """The waiting times as whitespace text, with an NA (line 5) and a blank row (line 9)."""
    lines = ["a b"] + [f"{i} {float(v)!r}" for i, v in enumerate(waiting_times())]
    lines.insert(4, "99 NA")
    lines.insert(8, "")
    return "\n".join(lines) + "\n"


OTHER_RUNS = {  # name: (arguments, standard input)
    "fit help": (["fit", "--help"], None),
    "stdin": (["fit", "-", "-c", "1", "--dist", "gamma", "--json", "-", "-q"], stdin_text()),
}


@pytest.fixture(scope="module")
def concurrent_runs(workdir):
    """Every bad input, the help page and the stdin run at the same time; the file digests.

    (The stdin run finds the Gamma fit compiled by the happy path in the persistent cache.)
    """
    before = _digests(workdir)
    cases = {**{k: (args, None) for k, (args, _, _) in BAD_INPUTS.items()}, **OTHER_RUNS}
    # only the stdin run fits anything: it alone reads the cache the happy path wrote to
    procs = {name: subprocess.Popen([sys.executable, "-m", "jaxmle.cli", *args], cwd=workdir,
                                    env=_env(workdir, None if name == "stdin" else name),
                                    stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (args, _) in cases.items()}
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(input=cases[name][1], timeout=600)
        results[name] = (proc.returncode, stdout, stderr)
    return results, before, _digests(workdir)


def test_stdin_whitespace_text_missing_values_dropped_and_json_to_stdout(concurrent_runs):
    status, stdout, stderr = concurrent_runs[0]["stdin"]
    assert status == 0, stderr
    assert f"n = {N}; 2 missing value(s) dropped (lines 5, 9)" in stderr  # the report on stderr
    result = json.loads(stdout)                                           # JSON on stdout
    assert result["input"]["missing_dropped"] == 2 and result["input"]["missing_lines"] == [5, 9]
    ref = jm.fit_distribution(dist.Gamma, waiting_times())
    np.testing.assert_allclose(result["fits"]["Gamma"]["params"]["rate"], ref.params["rate"],
                               rtol=1e-10)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_every_bad_input_is_one_error_line_and_a_nonzero_exit(concurrent_runs, name):
    results, before, after = concurrent_runs
    status, _, stderr = results[name]
    _, expected_status, message = BAD_INPUTS[name]
    assert status == expected_status, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), stderr
    assert after == before  # nothing written, no input modified


def test_help_is_complete(concurrent_runs):
    status, sub, _ = concurrent_runs[0]["fit help"]
    assert status == 0 and sub.startswith("usage: jaxmle fit")
    for option in ("--column", "--dist", "--fixed", "--criterion", "--plot", "--json", "--strict",
                   "--quiet", "--no-cache", "exit status", "lognorm", "expon", "standard input"):
        assert option in sub, option
    top = cli._parser().format_help()  # the same parser `jaxmle --help` prints
    assert "fit" in top and "demo" in top and "COMMAND --help" in top


# In-process: these fail before any fit (and --no-cache leaves JAX's configuration alone).
@pytest.mark.parametrize("args, message", [
    (["-c", "3"], "error: column index 3 is out of range: the data have 3 column(s), 0 to 2"),
    ([], "error: the data have 3 columns ('id', 'waiting', 'desk'); choose one with --column"),
    (["-c", "waiting", "--fixed", "total_count"], "error: --fixed 'total_count': expected NAME=VALUE"),
    (["-c", "waiting", "--fixed", "loc=abc"], "error: --fixed 'loc=abc': 'abc' is not a number"),
    (["-c", "waiting", "--plot", "no/such/dir/fit.png"], "error: --plot 'no/such/dir/fit.png': "
                                                         "directory"),
    (["-c", "waiting", "--dist", ","], "error: --dist is empty"),
    (["-c", "waiting", "--json", "data.csv"], "error: --json 'data.csv' is the input file"),
    (["-c", "waiting", "--dist", "gamma,gama", "--no-cache"],
     "error: unknown distribution 'gama'; did you mean 'gamma'"),
])
def test_more_bad_options(workdir, capsys, monkeypatch, args, message):
    monkeypatch.chdir(workdir)
    assert cli.main(["fit", "data.csv", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


@pytest.mark.parametrize("args, message", [
    (["fit"], "error: the following arguments are required: file (see 'jaxmle fit --help')"),
    (["fit", "x.csv", "--criterion", "hqic"], "error: argument --criterion: invalid choice"),
])
def test_usage_errors_are_one_line_too(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


# The reader behind the command (no JAX involved).
@pytest.mark.parametrize("text, column, values, missing", [
    ("a;b\n1;2,5\n3;4\n", "a", [1, 3], ()),                        # ';' delimiter
    ("# comment\nx\n1\n\n2\n\n", None, [1, 2], (4,)),              # blank line inside = missing
    ('name,v\n"Smith, J",1.5\n"Doe, A",2\n', "v", [1.5, 2], ()),    # quoted cells
    ("1 2\n3 4\n5 6\n", "1", [2, 4, 6], ()),                        # no header: index
    ("v\tw\n1\tNA\n2\t5\n", "W", [5], (2,)),                       # tab, case-insensitive name
])
def test_reading_a_column(tmp_path, text, column, values, missing):
    path = tmp_path / "in.txt"
    path.write_text(text)
    col = _io.read_column(str(path), column)
    np.testing.assert_array_equal(col.values, values)
    assert col.missing_lines == missing


def test_reading_refuses_infinite_values_and_names_without_a_header(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("x\n1\ninf\n")
    with pytest.raises(_io.InputError, match=r"1 infinite value\(s\) at line\(s\) 3"):
        _io.read_column(str(path))
    path.write_text("1 2\n3 4\n")
    with pytest.raises(_io.InputError, match="no header row: use a 0-based column index"):
        _io.read_column(str(path), "x")
    path.write_text("")
    with pytest.raises(_io.InputError, match="contains no data"):
        _io.read_column(str(path))


@pytest.mark.parametrize("text, message", [
    ("a,b,c\n1,2,3\n4,5\n6,7,8\n", "line 3 has 2 fields, the header has 3"),
    ("a,b,c\n1,2,3\n4\n6,7,8\n", "line 3 has 1 field, the header has 3"),   # was "unknown column"
    ("a,b\n1,2\n3,4,5\n", "line 3 has 3 fields, the header has 2"),
    ("1 2 3\n4 5 6\n7 8\n", "line 3 has 2 fields, line 1 has 3"),          # no header
    ("a;b\n1;2\n\n3\n", "line 4 has 1 field, the header has 2"),            # blank line is fine
])
def test_a_ragged_row_names_its_line_and_field_count(tmp_path, text, message):
    path = tmp_path / "in.txt"
    path.write_text(text)
    with pytest.raises(_io.InputError, match=message):
        _io.read_column(str(path), "1" if text[0] == "1" else "b")


def test_a_trailing_empty_field_is_not_ragged(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2,\n3,4\n")
    np.testing.assert_array_equal(_io.read_column(str(path), "b").values, [2, 4])


def test_the_python_api_keeps_the_python_hint_and_the_cli_rewrites_it():
    from jaxmle.distributions.fit import cli_hints

    with pytest.raises(ValueError, match=r"give it, e\.g\. fixed=\{'total_count': 20\}"):
        jm.fit_distribution(dist.Binomial, [1.0, 2.0, 3.0])
    assert cli_hints("x; give it, e.g. fixed={'total_count': 20}") == \
        "x; give it, e.g. --fixed total_count=20"

"""The documentation matches the code: the API reference is in the repository and names
every public object, ``help(jm.fit)``'s example runs, and no docstring or message calls
Newton a trust-region method (it is a line search with Levenberg–Marquardt damping)."""

import doctest
import pathlib
import re

import jaxmle as jm
import jaxmle.core.typing as _typing
from jaxmle import _api

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_api_reference_is_in_the_repository_and_names_every_public_object():
    api = (ROOT / "docs" / "API.md").read_text()
    missing = [name for name in jm.__all__ if name not in api]
    assert not missing, f"docs/API.md does not mention {missing}"
    readme = (ROOT / "README.md").read_text()
    assert "(docs/API.md)" in readme and "docs/API.md" in jm.__doc__
    assert "`API.md`" not in readme            # the old reference to a file outside the repo


def test_every_file_the_readme_links_exists():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#:]+)\)", readme)
    assert links and all((ROOT / link).exists() for link in links), links


def test_no_docstring_or_message_calls_newton_a_trust_region_method():
    offenders = [p.name for p in (ROOT / "jaxmle").glob("*.py")
                 if "trust region" in p.read_text().lower()]
    assert not offenders
    assert "Levenberg–Marquardt" in _api.fit.__doc__ and "line search" in _api.fit.__doc__
    assert "Levenberg–Marquardt" in _typing.STATUS_MESSAGES[_typing.Status.STALLED]


def test_the_fit_docstring_example_runs_and_defines_the_loglik_once():
    doc = _api.fit.__doc__
    code = [ln for ln in doc.splitlines() if ln.strip().startswith((">>>", "..."))]
    assert code and not any("lambda" in ln for ln in code)
    assert any(ln.strip().startswith(">>> def loglik(") for ln in code)
    for container in ("DataFrame", "Series", "dict", "list"):
        assert container in doc.split("data :")[1].split("init :")[0], container
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(_api.fit, "fit", globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5

"""The module graph: no import cycles (imports inside functions count), and the layers
the architecture map (docs/ARCHITECTURE.md) promises."""

import ast
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import jaxmle
import jaxmle.core.space as _space
import jaxmle.results.result as _result

PKG = os.path.dirname(jaxmle.__file__)


def _modules() -> dict[str, str]:
    mods = {}
    top = os.path.dirname(PKG)
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                name = os.path.relpath(path, top)[:-3].replace(os.sep, ".")
                mods[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def _imports(mods: dict[str, str]) -> dict[str, set[str]]:
    """Every module → the package modules it imports anywhere (top level, functions,
    ``if TYPE_CHECKING:`` blocks)."""
    edges = {m: set() for m in mods}
    for m, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".")
                    keep = len(base) - node.level + (1 if is_pkg else 0)
                    prefix = ".".join(base[:keep] + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = ([] if node.level and not node.module else [prefix]) + \
                    [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            edges[m].update(t for t in targets if t in mods and t != m)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return [c for c in comps if len(c) > 1]


def test_no_import_cycles():
    edges = _imports(_modules())
    cycles = _cycles(edges)
    detail = [f"{a} -> {b}" for c in cycles for a in c for b in sorted(edges[a] & set(c))]
    assert not cycles, f"import cycles: {cycles}\n" + "\n".join(detail)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# The layers of docs/ARCHITECTURE.md, lowest first: a module imports only its own group
# and lower layers (two groups on one layer do not import each other). jaxmle.plots draws
# and imports no jaxmle module, so any result's .plot() may import it.
LAYERS = (
    ("core",),                       # pure, traceable: space, objective, solvers, inference
    ("results",),                    # FitResult & co. as pytrees, and their exports
    ("fitting",),                    # host-side preparation, compiled kernels, drivers
    ("inference", "random"),         # profiles/bootstrap/...; random effects by Laplace
    ("_api",),                       # jm.fit / jm.fit_batch: dispatch to random or plain
    ("model", "distributions"),      # NumPyro models; distribution fitting
    ("top",),                        # jaxmle/__init__, cli, demo: the public face
)


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (parts[1] == "_api" or any(parts[1] in g for g in LAYERS[:-1])):
        return parts[1]
    return "top"


def _rank(group: str) -> int:
    for i, groups in enumerate(LAYERS):
        if group in groups:
            return i
    raise AssertionError(f"module group {group!r} is in no layer of LAYERS")


def test_layers():
    edges = _imports(_modules())
    assert not {e for e in edges["jaxmle.plots"] if e != "jaxmle"}, edges["jaxmle.plots"]
    wrong = []
    for module, targets in edges.items():
        if module == "jaxmle.plots":
            continue
        g = _group(module)
        for t in targets:
            h = _group(t)
            if t == "jaxmle.plots" or h == g:
                continue
            if _rank(h) >= _rank(g):
                wrong.append(f"{module} -> {t}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_modules_stay_small():
    sizes = {m: sum(1 for _ in open(p, encoding="utf-8")) for m, p in _modules().items()}
    assert not {m: n for m, n in sizes.items() if n > 400}, sorted(sizes.items(), key=lambda x: -x[1])[:5]


def test_every_result_method_has_its_implementation():
    for name in ("profile", "profile_intervals", "delta", "bootstrap", "laplace", "summary"):
        assert callable(_result.feature(name)), name


# --------------------------------------------------------------------------- lazy imports
# ``import jaxmle`` costs little more than ``import jax`` (issue 14): NumPyro (and the SciPy
# it pulls in through numpyro.diagnostics), optax, pandas, matplotlib and tqdm are imported
# only by the features that need them (constraints other than the real line, priors,
# fit_model, the distributions, L-BFGS/Adam, exports, plots, fit_batch's progress bar).

HEAVY = ("numpyro", "optax", "scipy", "pandas", "matplotlib", "tqdm")

# Still imported at ``import jaxmle`` by a top-level import in a module being rewritten
# elsewhere; each entry names the line to make lazy.
_PROBE = """
import json, sys
import jaxmle
after_import = sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)
import jax.numpy as jnp
import numpy as np
x = np.linspace(-1.0, 2.0, 20)
res = jaxmle.fit(lambda p, x: -0.5 * ((x - p["mu"]) / jnp.exp(p["ls"])) ** 2 - p["ls"],
                 x, {"mu": 0.0, "ls": 0.0})
assert bool(res.converged)
after_fit = sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)
print(json.dumps({"import": after_import, "fit": after_fit}))
"""


@pytest.fixture(scope="module")
def fresh_interpreter():
    """The heavy modules loaded by ``import jaxmle``, then by a plain fit (no constraints,
    no priors), in a fresh interpreter."""
    code = f"HEAVY = {HEAVY!r}\n" + _PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(PKG), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", HEAVY)
def test_import_jaxmle_leaves_heavy_packages_unimported(fresh_interpreter, name):
    loaded = [m for m in fresh_interpreter["import"] if m.split(".")[0] == name]
    assert not loaded, f"`import jaxmle` imported {name}: {loaded[:5]}"


@pytest.mark.parametrize("name", ["numpyro", "optax", "pandas", "matplotlib", "tqdm"])
def test_a_plain_fit_needs_no_heavy_package(fresh_interpreter, name):
    # (SciPy is left out: jaxlib loads its LAPACK through SciPy when a CPU program with a
    # linear solve is first compiled.)
    loaded = [m for m in fresh_interpreter["fit"] if m.split(".")[0] == name]
    assert not loaded, f"a plain jm.fit imported {name}: {loaded[:5]}"


def test_the_lazy_public_names_resolve():
    import jaxmle.distributions
    import jaxmle.distributions.compare
    import jaxmle.distributions.result
    import jaxmle.inference.lrt
    import jaxmle.model.numpyro_model
    import jaxmle.results.batch

    assert set(jaxmle.__all__) <= set(dir(jaxmle))
    for name in jaxmle.__all__:
        assert getattr(jaxmle, name) is not None, name
    from jaxmle import DistributionFit, fit_model   # noqa: F401  (the from-import form)
    assert jaxmle.fit_model is jaxmle.model.numpyro_model.fit_model
    assert jaxmle.fit_distribution is jaxmle.distributions.fit_distribution
    assert jaxmle.compare_distributions is jaxmle.distributions.compare_distributions
    compare = sys.modules["jaxmle.distributions.compare"]   # jaxmle.distributions.compare: a function
    assert jaxmle.DistributionComparison is compare.DistributionComparison
    assert jaxmle.DistributionFit is jaxmle.distributions.result.DistributionFit
    assert jaxmle.BatchFitResult is jaxmle.results.batch.BatchFitResult
    assert jaxmle.lrt is jaxmle.inference.lrt.lrt
    with pytest.raises(AttributeError):
        jaxmle.no_such_name   # noqa: B018


def test_the_real_line_needs_no_numpyro():
    from numpyro.distributions import constraints

    x = [np.zeros(()), np.zeros(3)]
    plain = _space.build_space(x, ("a", "b"), None, None)
    given = _space.build_space(x, ("a", "b"), None, {"a": constraints.real})
    assert plain == given   # one compile key for the real line, given or not
    assert all(l.constraint is _space.REAL and l.transform is _space.IDENTITY
               for l in plain.leaves + given.leaves)
    assert plain.is_identity and plain.is_elementwise and repr(_space.REAL) == "Real()"
    assert pickle.loads(pickle.dumps(_space.REAL)) is _space.REAL
    assert pickle.loads(pickle.dumps(_space.IDENTITY)) is _space.IDENTITY
    assert _space.is_real_line(constraints.real) and _space.is_real_line(constraints.real_vector)
    assert not _space.is_real_line(constraints.positive)
    assert not _space.build_space(x, ("a", "b"), None, {"b": constraints.positive}).is_identity

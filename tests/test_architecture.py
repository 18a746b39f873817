"""The module graph: no import cycles (imports inside functions count), and the layers
the architecture map (docs/ARCHITECTURE.md) promises."""

import ast
import os

import jaxmle
from jaxmle import _result

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


def test_layers():
    edges = _imports(_modules())
    # the drawing module and the result classes import nothing that fits
    assert not {e for e in edges["jaxmle.plots"] if e != "jaxmle"}, edges["jaxmle.plots"]
    fitting = {"jaxmle._api", "jaxmle._fit", "jaxmle._batch", "jaxmle._random",
               "jaxmle._multistart", "jaxmle._profile", "jaxmle._bootstrap", "jaxmle._laplace"}
    assert not edges["jaxmle._result"] & fitting, edges["jaxmle._result"]
    # the solvers know nothing of fits, results or data handling
    for solver in ("jaxmle._solvers", "jaxmle._proximal", "jaxmle._random_inner"):
        assert not edges[solver] & (fitting | {"jaxmle._kernel", "jaxmle._result"}), solver


def test_every_result_method_has_its_implementation():
    for name in ("profile", "profile_intervals", "delta", "bootstrap", "laplace", "summary"):
        assert callable(_result.feature(name)), name

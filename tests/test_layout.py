"""The layout's rules, checked on the source (README "Layout"; ../shared/design-sketch.md).

Why a test: each rule was broken once without anyone noticing, because Python only finds
an import circle when the two modules happen to be imported in the wrong order, and an
import inside a function hides it until that function runs. So imports are read from the
syntax tree, function bodies included:

* no import circle among our modules;
* ``transforms`` never imports ``pipelines`` (choices are passed down, never imported up);
* the pure core (``transforms.mapping``, ``transforms.fhir``) imports no Beam;
* no module over 600 lines (the JSONPath port excepted), at most 8 modules at the root of
  ``pipelines/`` (the rest live in folders by job);
* no module under ``tests/`` imports a test module: shared helpers and fixtures live in
  fixture modules (``*_fixtures.py``, ``conftest.py``), so one test file's edits and
  collection never reach another's.
"""
import ast
import pathlib
from typing import Dict, List, Set

from conftest import REPO

PACKAGES = ("pipelines", "transforms")
MAX_LINES = 600
LONG_BY_NATURE = {"transforms/mapping/jsonpath_newtonsoft.py"}  # a port kept line-for-line reviewable
PURE = ("transforms.mapping", "transforms.fhir")


def _modules() -> Dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: Dict[str, pathlib.Path]) -> str:
    """The longest of our module names that ``name`` (a module or ``module.attr``) starts with."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: pathlib.Path, modules: Dict[str, pathlib.Path]) -> Set[str]:
    """Every module of ours ``module`` imports, at any depth of its code (also the ``x`` of
    ``from package import x`` when ``x`` is a module)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            target = _resolve(name, modules)
            if target and target != module and target.split(".")[0] in PACKAGES:
                found.add(target)
    return found


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # a package's __init__ is imported on the way to its modules, not a dependency of theirs
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle_and_an_import_hidden_in_a_function(tmp_path):
    # the rules below can only pass for a reason if the reader sees what they forbid
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pipelines.b import x\n")
    modules = {"pipelines.a": a, "pipelines.b": tmp_path / "b.py"}
    assert _imports("pipelines.a", a, modules) == {"pipelines.b"}
    assert _cycles({"pipelines.a": {"pipelines.b"}, "pipelines.b": {"pipelines.a"}}) == [
        ["pipelines.a", "pipelines.b"]]


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_transforms_never_import_pipelines():
    graph = _graph()
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("transforms")
                    for t in ts if t.startswith("pipelines"))
    assert upward == []


def test_the_pure_core_imports_no_beam():
    modules = _modules()
    beam = []
    for m, path in modules.items():
        if not m.startswith(PURE):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            beam += [f"{m}: {n}" for n in names if n.split(".")[0] == "apache_beam"]
    assert beam == []


def test_no_module_over_600_lines():
    long = sorted(f"{p.relative_to(REPO)}: {n}" for p in _modules().values()
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
                  and str(p.relative_to(REPO)) not in LONG_BY_NATURE)
    assert long == []


def test_pipelines_root_holds_at_most_8_modules():
    root = sorted(p.name for p in (REPO / "pipelines").glob("*.py"))
    assert len(root) <= 8, root


def _test_module_imports(path: pathlib.Path) -> List[str]:
    """``path``'s imports of test modules (``test_*``), at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0].startswith("test_")]
    return found


def test_the_checker_finds_a_test_module_imported_inside_a_function(tmp_path):
    helper = tmp_path / "helper_fixtures.py"
    helper.write_text("import json\n\ndef f():\n    from test_pipeline import FHIR\n")
    assert _test_module_imports(helper) == ["helper_fixtures.py:4: test_pipeline"]


def test_no_test_module_imports_another():
    found = [hit for path in sorted((REPO / "tests").glob("*.py")) for hit in _test_module_imports(path)]
    assert found == []

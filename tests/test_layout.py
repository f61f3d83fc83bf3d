"""The package's structure (issue 25): no import cycle inside tunesmith/, function-level imports included;
tunesmith/server/ imports nothing from the CLI; no module over 500 lines. Read from the source with ast,
so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tunesmith"
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package's name for its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
        or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST):
    """Every import statement under `node`, inside functions and classes too, but for `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that importing `name` runs (at any level of its code): each imported module and
    the packages above it, but for the packages `name` itself lies in (already being imported)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = package
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        module = ".".join(p for p in (base if node.level else "", node.module or "") if p)
        targets.add(module)
        targets.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known)
    ran = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            above = ".".join(parts[:i])
            if above in known and not (name == above or name.startswith(above + ".")):
                ran.add(above)
    return ran


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_checks_see_cycles_and_function_level_imports(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    module = tmp_path / "m.py"
    module.write_text("import os\ndef f():\n    from .x import y\nif TYPE_CHECKING:\n    from .z import w\n")
    known = {"tunesmith.m": module, "tunesmith.x": module, "tunesmith.x.y": module, "tunesmith.z": module}
    assert imports("tunesmith.m", module, known) == {"tunesmith.x", "tunesmith.x.y"}


def test_no_import_cycle_inside_the_package():
    edges = graph()
    assert len(edges) > 100 and "tunesmith.clip" in edges["tunesmith.generation"]
    assert cycles(edges) == []


def test_the_server_imports_nothing_from_the_cli():
    edges = graph()
    server = [name for name in edges if name == "tunesmith.server" or name.startswith("tunesmith.server.")]
    assert len(server) > 10
    for name in server:
        cli = sorted(m for m in reachable(edges, name) if m == "tunesmith.cli" or m.startswith("tunesmith.cli."))
        assert cli == [], f"{name} imports {cli}"


def test_no_module_is_over_500_lines():
    long = {str(path.relative_to(REPO)): n for path in modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}

"""The package's plan, checked against its imports: every arrow points down the layers of
docs/architecture.md, no import cycle anywhere, Streamlit only in the glue, plotly only where
figures are made, and no file grows past the size a reader can hold.

Imports are read from the source (ast), not run: a lazy import inside a function is an arrow
too, since it runs as soon as the function does; one under `if TYPE_CHECKING:` is not."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dashboard"

# Bottom to top: a module may import its own layer and those below it, never one above.
LAYERS = ("base", "data", "models", "analysis", "training", "figures", "report", "ui", "cli")
STREAMLIT_ALLOWED = {"ui"}
PLOTLY_ALLOWED = {"figures", "report", "ui"}
MAX_MODULE_LINES = 800
MAX_PAGE_LINES = 300


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


MODULES = {module_name(p): p for p in source_files()}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except what sits under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imported_names(path: Path) -> set[str]:
    """The dotted modules a file imports at run time (for `from X import y`, X.y when y is a
    module of ours, else X)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in MODULES else node.module)
    return names


def ours(name: str) -> bool:
    return name == "dashboard" or name.startswith("dashboard.")


def edges() -> dict[str, set[str]]:
    """Module → the modules of ours it imports, with the packages Python initializes on the way
    (importing dashboard.models.checkpoints runs dashboard/models/__init__.py first); the
    root package, which only reads sys.argv, is left out. A module's own packages are
    initialized before it runs, so passing through them is no arrow (importing one by name is)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        own = {".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)}
        targets: set[str] = set()
        for imported in filter(ours, imported_names(path)):
            parts = imported.split(".")
            passed = {".".join(parts[:depth]) for depth in range(2, len(parts))}
            targets.update({imported} | (passed - own))
        targets.discard(name)
        graph[name] = {t for t in targets if t in MODULES and t != "dashboard"}
    return graph


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_sits_in_a_layer() -> None:
    loose = [
        n for n in MODULES if layer(n) is None and n not in ("dashboard", "dashboard.__main__")
    ]
    assert loose == [], f"modules outside the layers of docs/architecture.md: {loose}"


def test_no_import_cycles() -> None:
    assert cycles(edges()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The oracle itself: a loop of three and a lone self-import-free pair."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_arrows_point_down() -> None:
    upward = []
    for source, targets in edges().items():
        here = layer(source)
        if here is None:
            continue
        for target in targets:
            there = layer(target)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{source} → {target}")
    assert upward == [], "imports that run up the layers:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize(
    ("library", "allowed"), [("streamlit", STREAMLIT_ALLOWED), ("plotly", PLOTLY_ALLOWED)]
)
def test_libraries_only_where_allowed(library: str, allowed: set[str]) -> None:
    misplaced = [
        name
        for name, path in MODULES.items()
        if layer(name) not in allowed
        and any(i == library or i.startswith(library + ".") for i in imported_names(path))
    ]
    assert misplaced == [], f"{library} imported outside {sorted(allowed)}: {misplaced}"


def test_modules_are_short_enough() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in [*source_files(), *(ROOT / "bench").glob("*.py")]
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"over {MAX_MODULE_LINES} lines: {long}"


def test_pages_are_layout_and_wiring() -> None:
    long = {
        p.name: n
        for p in [ROOT / "app.py", *(ROOT / "pages").glob("*.py")]
        if (n := len(p.read_text().splitlines())) > MAX_PAGE_LINES
    }
    assert long == {}, f"pages over {MAX_PAGE_LINES} lines: {long}"


def test_architecture_map_names_every_package() -> None:
    """docs/architecture.md is the map: every layer is described there, in this order."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    places = [text.find(f"`{name}/`") for name in LAYERS]
    assert -1 not in places, [n for n, p in zip(LAYERS, places, strict=True) if p == -1]
    assert places == sorted(places, reverse=True), "the map lists the layers from the top down"

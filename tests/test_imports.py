"""No import circles between the project's modules.

A circle can work by accident (Python hands out a half-initialised module, and the import order of
the day happens to fill it in time) and then break when someone imports the other module first,
or it hides behind `if TYPE_CHECKING:`. So the graph is read from the source: every import at
module level, `TYPE_CHECKING` blocks included; imports inside functions are lazy by design and not
counted. Then each formerly circular module is imported first in a fresh interpreter."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "model", "storage", "flows")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def module_level_imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """Project modules `module` imports when it is itself imported (not inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            else:
                yield from walk(ast.iter_child_nodes(node))

    found = set()
    for name in walk(ast.parse(path.read_text()).body):
        while name and name not in modules:  # `import a.b.c` of a non-module attribute: its module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    circles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return circles


def test_the_import_graph_finds_a_circle_when_there_is_one():
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circles_between_project_modules():
    modules = project_modules()
    graph = {name: module_level_imports(path, name, modules) for name, path in modules.items()}
    # Sanity: the reader sees imports, the TYPE_CHECKING kind included.
    assert "pipeline.minhash" in graph["pipeline.dedup"] and "flows.cli_flow" in graph["flows.cli"]
    circles = [" → ".join(c) for c in find_circles(graph)]
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("module", ["flows.cli_flow", "flows.cli", "pipeline.minhash", "pipeline.dedup"])
def test_each_formerly_circular_module_imports_first_in_a_fresh_interpreter(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

"""The package's layers, as the design draws them: cli -> platform -> core -> workloads -> api.

Checked from the source (every `import` statement, also those inside functions), so a shortcut taken
in a hurry shows up here rather than as a drift between the two platforms.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "tandem"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return {name for name in out if name.startswith("tandem")}


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("tandem.platform.local", "tandem.platform.kubernetes"),
        ("tandem.platform.kubernetes", "tandem.platform.local"),
        ("tandem.core", "tandem.platform"),
        ("tandem.workloads", "tandem.platform"),
        ("tandem.workloads", "tandem.core"),
        ("tandem.api", "tandem.workloads"),
    ],
)
def test_a_layer_does_not_import_what_it_must_not(layer: str, forbidden: str) -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module, path in _modules().items()
        if module.startswith(layer)
        for name in _imports(path, top_level_only=False)
        if name == forbidden or name.startswith(forbidden + ".")
    )
    assert not offenders, offenders


def test_no_import_cycle_among_modules() -> None:
    modules = _modules()
    graph = {
        module: {name for name in _imports(path, top_level_only=False) if name in modules and name != module}
        for module, path in modules.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state:
                found = visit(target, [*path, module])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            # A package importing its own submodule is not a cycle worth the name (`__init__` re-exports).
            assert cycle is None or cycle[-1].startswith(cycle[-2] + "."), " -> ".join(cycle or [])

"""The third-party modules a set of tandem modules imports, following tandem's own imports (including
those inside functions), read from the source with `ast`. Standard library only: the image smoke tests
run this file with each image's own Python, over the tandem package installed in the image, and import
every module found there; tests/unit/test_images.py uses the same function over the source tree.

    python import_closure.py MODULE...    (in an image: prints {"imports": [...], "failed": {...}} as JSON)

An import inside `try: ... except ImportError` (or ModuleNotFoundError) is optional and left out.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
from pathlib import Path

OPTIONAL = {"ImportError", "ModuleNotFoundError"}


def _module_file(base: Path, module: str) -> Path | None:
    path = base / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _optional_imports(tree: ast.AST) -> set[int]:
    """ids of the import nodes guarded by an `except ImportError`."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {k.id for k in kinds if isinstance(k, ast.Name)}
        if caught & OPTIONAL:
            for statement in node.body:
                guarded |= {id(n) for n in ast.walk(statement) if isinstance(n, ast.Import | ast.ImportFrom)}
    return guarded


def third_party_imports(base: Path, *roots: str) -> set[str]:
    """Top-level third-party modules that these tandem modules (under `base`, the folder holding the
    `tandem` package) import, and the tandem modules they import, and so on."""
    seen: set[str] = set()
    found: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(base, module)
        if path is None:
            continue
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # parent packages' __init__ run first
        tree = ast.parse(path.read_text())
        optional = _optional_imports(tree)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    prefix = f"{parent}.{node.module}" if node.module else parent
                    names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
                elif node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top == "tandem":
                    todo.append(name)
                elif top not in sys.stdlib_module_names and top != "__future__" and id(node) not in optional:
                    found.add(top)
    return found


def workload_modules(base: Path) -> list[str]:
    """Every module of tandem.workloads (what the worker and gateway images run)."""
    return [
        ".".join(p.relative_to(base).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted((base / "tandem" / "workloads").rglob("*.py"))
    ]


def main(roots: list[str]) -> int:
    spec = importlib.util.find_spec("tandem")
    assert spec is not None and spec.submodule_search_locations, "tandem is not installed"
    base = Path(next(iter(spec.submodule_search_locations))).parent
    if roots == ["--workloads"]:
        roots = workload_modules(base)
    elif roots == ["--workloads-but-gateway"]:
        roots = [m for m in workload_modules(base) if ".gateway" not in m]
    imports = sorted(third_party_imports(base, *roots))
    failed = {}
    for module in imports:
        try:
            importlib.import_module(module)
        except Exception as e:  # an ImportError, or a package that fails as it loads
            failed[module] = f"{type(e).__name__}: {e}"
    print(json.dumps({"base": str(base), "imports": imports, "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

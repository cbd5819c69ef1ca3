"""Imports flow one way: the folder layout is the layering. Each module imports only from its
own layer or those below it, with no cycles, and the estimator never loads plotting."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "gmvae"
# Bottom to top: the top-level base modules, the four subpackages, then the two interfaces.
LAYERS = [
    {"errors", "storage", "version"},
    {"data"},
    {"model"},
    {"train"},
    {"run"},
    {"estimator", "cli", "__main__", "__init__"},
]


def layer(module: str) -> int:
    """The layer of a module named relative to the package, e.g. "train.objective"."""
    return next(i for i, names in enumerate(LAYERS) if module.split(".")[0] in names)


def imports() -> dict[str, set[str]]:
    """Each module's imports of the package's other modules (relative dotted names), at module
    level or inside functions alike."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gmvae"):
                parent = node.module.removeprefix("gmvae").removeprefix(".")
                for alias in node.names:  # `from gmvae.run import plots` names a module
                    child = f"{parent}.{alias.name}".strip(".")
                    is_module = (PACKAGE / f"{child.replace('.', '/')}.py").exists()
                    names.add(child if is_module else parent)
        found[module] = names - {module, ""}
    return found


def test_every_module_imports_only_from_its_own_layer_or_lower_ones():
    graph = imports()
    assert {"data.files", "model.network", "train.objective", "run.assembly"} <= set(graph)
    upward = [(m, d) for m, deps in graph.items() for d in deps if layer(d) > layer(m)]
    assert upward == []


def test_there_is_no_import_cycle():
    graph = imports()

    def reaches(start: str, target: str, seen: frozenset[str]) -> bool:
        for d in graph.get(start, ()):
            if d == target or (d not in seen and reaches(d, target, seen | {d})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, frozenset())] == []


def test_the_estimator_does_not_depend_on_plotting():
    graph, todo, seen = imports(), ["estimator"], set()
    while todo:
        for d in graph.get(todo.pop(), set()) - seen:
            seen.add(d)
            todo.append(d)
    assert not seen & {"run.plots", "run.report", "run.experiment", "run.selection", "cli"}

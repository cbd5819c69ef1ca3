"""Imports flow one way: each module of the package imports only from its own layer or those
below it, with no cycles, and the estimator never loads plotting."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "gmvae"
# Bottom to top; the README's Layout section shows the same order.
LAYERS = [
    ["errors", "storage", "version"],
    ["files", "preprocessing", "data", "labels", "metrics", "losses", "augment", "distributed"],
    ["model", "inference", "neighbours", "batches", "checkpoint"],
    ["objective", "naming", "pretraining"],
    ["training"],
    ["settings", "assembly"],
    ["selection", "plots", "report", "experiment"],
    ["estimator", "cli", "__main__", "__init__"],
]
LAYER = {module: i for i, modules in enumerate(LAYERS) for module in modules}


def imports() -> dict[str, set[str]]:
    """Each module's imports of other modules of the package, module-level or inside
    functions alike."""
    found = {}
    for path in PACKAGE.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gmvae"):
                parts = node.module.split(".")
                names |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        found[path.stem] = names - {path.stem}
    return found


def test_every_module_has_a_layer_and_imports_only_from_its_own_or_lower_ones():
    graph = imports()
    assert set(graph) == set(LAYER)
    upward = [(m, d) for m, deps in graph.items() for d in deps if LAYER[d] > LAYER[m]]
    assert upward == []


def test_there_is_no_import_cycle():
    graph = imports()

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for d in graph[start]:
            if d == target or (d not in seen and reaches(d, target, seen | {d})):
                return True
        return False

    assert [m for m in graph if reaches(m, m, set())] == []


def test_the_estimator_does_not_depend_on_plotting():
    graph, todo, seen = imports(), ["estimator"], set()
    while todo:
        for d in graph[todo.pop()] - seen:
            seen.add(d)
            todo.append(d)
    assert not seen & {"plots", "report", "experiment", "cli"}

"""The package's shape: packages by pipeline stage, imports that point downward only.

docs/architecture.md draws these layers; this test keeps the drawing true. An import written
under ``if TYPE_CHECKING:`` (annotations only, never run) is exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "zoo"

# Lowest first: a module may import its own layer and the layers before it, never after.
LAYERS = [
    ("zoo.errors", "zoo.console", "zoo.kinds"),
    ("zoo.store",),
    ("zoo.data",),
    ("zoo.scoring",),
    ("zoo.models",),
    ("zoo.recipes",),
    ("zoo.training",),
    ("zoo.inference",),
    ("zoo.ensembles",),
    ("zoo.evaluation",),
    ("zoo.publish",),
    ("zoo.deploy",),
    ("zoo.api",),
    ("zoo.cli", "zoo.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def layer_of(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every zoo import that runs, top-level or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        found += [(node.lineno, n) for n in names if n.startswith("zoo.")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))  # zoo/__init__.py first: it loads zoo.api on first use
KNOWN = {module_name(p) for p in MODULES}


def resolve(name: str) -> str | None:
    """The zoo module an import name refers to (``zoo.store.names.check_name`` → the module)."""
    while name and name not in KNOWN:
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_has_a_layer():
    assert [module_name(p) for p in MODULES if layer_of(module_name(p)) is None] == ["zoo"]


@pytest.mark.parametrize("path", MODULES[1:], ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_point_downward(path):
    here = module_name(path)
    rank = layer_of(here)
    upward = []
    for line, name in imports_of(path):
        target = resolve(name)
        if target in (None, "zoo", here):
            continue
        if layer_of(target) > rank:
            upward.append(f"line {line}: {target}")
    assert upward == [], f"{here} imports upward: {upward}"


def test_no_import_circles():
    graph = {module_name(p): set() for p in MODULES}
    for path in MODULES:
        here = module_name(path)
        for _, name in imports_of(path):
            target = resolve(name)
            if target not in (None, "zoo", here):
                graph[here].add(target)
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(node) :]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*trail, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_few_modules_loose_at_the_top():
    loose = sorted(
        p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    )
    assert len(loose) <= 10, loose

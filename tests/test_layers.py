"""The house plan: every package of medsyn imports only the packages below it, lazy imports inside functions
included, so the pipeline's order is the import order and there are no package loops."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import medsyn

ROOT = Path(medsyn.__file__).parent

# bottom to top; a package may import only packages on an earlier line. `classify` sits below `audit` although the
# audit runs first in a study: the audit's label-trained CNN is trained by the classifier's loop.
LAYERS = (
    ("medsyn", "errors", "timing"),
    ("config",),
    ("fileio",),
    ("metrics", "tensors"),
    ("data",),
    ("generators",),
    ("synth",),
    ("classify",),
    ("audit",),
    ("stats",),
    ("report",),
    ("app",),
    ("study",),
    ("cli",),
    ("__main__",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _package(module: str) -> str:
    """medsyn.data.loader -> data; medsyn.config -> config; medsyn -> medsyn."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The medsyn modules an import statement names, relative imports resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "medsyn"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "medsyn":
        return []
    if source == "medsyn":  # `from medsyn import data, config`: each name is a package or a root attribute
        return [f"medsyn.{a.name}" if (ROOT / a.name).is_dir() or (ROOT / f"{a.name}.py").is_file() else "medsyn"
                for a in node.names]
    return [source]


def package_imports() -> dict[tuple[str, str], Counter]:
    """(package, imported package) -> Counter of 'top' (module level) and 'lazy' (inside a function) imports."""
    edges: dict[tuple[str, str], Counter] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            for target in _targets(node, module, path.name == "__init__.py"):
                source, imported = _package(module), _package(target)
                if source != imported:
                    kind = "top" if id(node) in top_level else "lazy"
                    edges.setdefault((source, imported), Counter())[kind] += 1
    return edges


def test_every_package_has_a_layer():
    packages = {_package(_module_name(p)) for p in ROOT.rglob("*.py")}
    assert packages - set(RANK) == set(), "a new package needs its place in LAYERS"


def test_packages_import_only_downward_lazy_imports_included():
    upward = [f"{source} -> {imported} ({dict(kinds)})" for (source, imported), kinds in package_imports().items()
              if RANK[imported] >= RANK[source]]
    assert upward == []


def test_the_import_checker_sees_lazy_and_relative_imports():
    """The checker itself: an upward import hidden in a function, written relatively, is found."""
    tree = ast.parse("def f():\n    from ..study import plan\n")
    node = tree.body[0].body[0]
    assert _targets(node, "medsyn.data.loader", is_package=False) == ["medsyn.study"]
    assert _targets(ast.parse("from medsyn import data, __version__").body[0], "medsyn.cli", True) == \
        ["medsyn.data", "medsyn"]

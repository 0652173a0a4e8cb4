"""The layering of our packages: `shared` stands alone, and no module imports its way back to itself."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "worker", "shared", "benchmark", "whisperq")


def module_name(root: Path, path: Path) -> str:
    """The dotted name of a source file under root; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of the given packages under root, by dotted name; a missing package folder is skipped."""
    files: dict[str, Path] = {}
    for package in packages:
        folder = root / package
        if folder.is_dir():
            for path in sorted(folder.rglob("*.py")):
                files[module_name(root, path)] = path
    return files


def is_type_checking(test: ast.expr) -> bool:
    """Whether an `if` test is `TYPE_CHECKING` or `typing.TYPE_CHECKING`."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below node, leaving out the bodies of `if TYPE_CHECKING:` blocks (their `else` stays)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from runtime_nodes(other)
            continue
        yield child
        yield from runtime_nodes(child)


def base_of(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names, resolving dots against the importing module's package."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def import_targets(tree: ast.AST, module: str, is_package: bool, modules: Mapping[str, Path]) -> set[str]:
    """The dotted names a module imports at run time, `from pkg import sub` going to `pkg.sub` when that is a module."""
    targets: set[str] = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = base_of(module, is_package, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    return targets


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """For each of our modules under root, the set of our modules it imports (lazy imports included)."""
    names = tuple(packages)
    modules = module_files(root, names)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = import_targets(tree, module, path.name == "__init__.py", modules)
        graph[module] = {target for target in targets if target.split(".")[0] in names}
    return graph


def violations(graph: Mapping[str, set[str]], package: str, allowed: Iterable[str]) -> list[str]:
    """Each `module -> import` where a module of package imports one outside the allowed packages."""
    keep = set(allowed)
    return [
        f"{module} -> {target}"
        for module in sorted(graph)
        if module.split(".")[0] == package
        for target in sorted(graph[module])
        if target.split(".")[0] not in keep
    ]


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A cycle of imports as a path that ends where it starts, or None; self-loops do not count."""
    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            cycle = cycle_from(graph, start, [], done)
            if cycle is not None:
                return cycle
    return None


def cycle_from(graph: Mapping[str, set[str]], module: str, path: list[str], done: set[str]) -> list[str] | None:
    """Depth-first search from module with path on the stack; the first cycle met, or None."""
    if module in path:
        return [*path[path.index(module) :], module]
    if module in done:
        return None
    path.append(module)
    for target in sorted(graph.get(module, set()) - {module}):
        cycle = cycle_from(graph, target, path, done)
        if cycle is not None:
            return cycle
    path.pop()
    done.add(module)
    return None


def test_shared_depends_on_nothing_of_ours_but_itself() -> None:
    graph = import_graph(PROJECT, PACKAGES)
    assert any(module.split(".")[0] == "shared" for module in graph), "no shared modules found"
    found = violations(graph, "shared", {"shared"})
    assert not found, "shared imports from outside shared:\n" + "\n".join(found)


def test_no_import_cycle_between_our_modules() -> None:
    cycle = find_cycle(import_graph(PROJECT, PACKAGES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def write(root: Path, files: Mapping[str, str]) -> None:
    """Create each file under root with its text."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_the_checker_catches_a_layering_violation_and_a_cycle(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "shared/__init__.py": "",
            "shared/a.py": "def late() -> None:\n    from api import b\n",
            "api/__init__.py": "",
            "api/b.py": "import shared.a\n",
        },
    )
    graph = import_graph(tmp_path, PACKAGES)
    assert graph == {"shared": set(), "shared.a": {"api.b"}, "api": set(), "api.b": {"shared.a"}}
    assert violations(graph, "shared", {"shared"}) == ["shared.a -> api.b"]
    assert find_cycle(graph) in (["shared.a", "api.b", "shared.a"], ["api.b", "shared.a", "api.b"])

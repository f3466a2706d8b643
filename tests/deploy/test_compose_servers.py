"""compose/ runs the servers devstack runs, configured as devstack configures them.

The isolation the end-to-end tests prove against the dev stack is the isolation that ships: the
customer Postgres' pg_hba and settings, the customer Redis' configuration and fixed users, and a
stack deployer that can install the stacks' egress rules on the engine host. Compose's side is
read from `docker-compose config` (anchors merged, variables substituted), devstack's side is
asked of devstack's own code.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack import customer_pg, customer_redis
from devstack.network import OVERRIDE_VARIABLE
from devstack.profile import Ports, Profile, Secrets
from devstack.stack import PLATFORM_MAX_CONNECTIONS
from shared.plans import load_plans
from tests.deploy.compose_files import COMPOSE_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_LAUNCHER = COMPOSE_DIR / "images" / "redis" / "customer_redis.py"
REDIS_LAUNCHER_IN_IMAGE = "/usr/local/bin/spinup-customer-redis"
STACK_DEPLOYER_DOCKERFILE = REPO_ROOT / "services" / "stack-deployer" / "Dockerfile"
#: What the redis.conf of the container may set differently: where it listens and keeps files.
CONTAINER_OWN = {"bind", "port", "dir", "aclfile"}
#: Where a client of the customer Postgres may come from, besides the customer-pg network.
ELSEWHERE = ("127.0.0.1", "198.51.100.7", "172.17.0.2", "192.168.1.20", "10.0.0.5", "::1")


@pytest.fixture
def tenant_address(monkeypatch: pytest.MonkeyPatch) -> str:
    """devstack's tenant address pinned, so no engine is needed to compute it."""
    monkeypatch.setenv(OVERRIDE_VARIABLE, "192.0.2.10")
    return "192.0.2.10"


def _durable_profile(root: Path) -> Profile:
    """A profile like ``make run``'s (production keeps its data: durable)."""
    return Profile(name="compose-check", root=root, ports=Ports.dev(), durable=True)


# --- customer Postgres ---------------------------------------------------------------------------


def _hba_rules(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _address_matches(address: str, client: str) -> bool:
    if address == "all":
        return True
    if address in {"samehost", "samenet"}:
        # Addresses of the server's own host: a client from elsewhere never matches.
        return False
    network = ipaddress.ip_network(address, strict=False)
    ip = ipaddress.ip_address(client)
    return ip.version == network.version and ip in network


def _first_match(rules: list[list[str]], database: str, user: str, client: str) -> str | None:
    """The method of the first TCP rule that matches (pg_hba is first-match); None: refused."""
    for rule in rules:
        if not rule[0].startswith("host"):
            continue  # a Unix-socket rule (no address field)
        _, databases, users, address, method = rule[:5]
        names = databases.split(",")
        if not ("all" in names or database in names or ("sameuser" in names and database == user)):
            continue
        if not ("all" in users.split(",") or user in users.split(",")):
            continue
        if _address_matches(address, client):
            return method
    return None


def _customer_pg_network(config: dict[str, Any]) -> tuple[ipaddress.IPv4Network, str]:
    (pool,) = config["networks"]["customer-pg"]["ipam"]["config"]
    return ipaddress.IPv4Network(pool["subnet"]), pool["gateway"]


def test_customer_postgres_lets_tenants_into_their_own_database_only(
    config: dict[str, Any],
) -> None:
    rules = _hba_rules(config["services"]["customer-pg"]["environment"]["POSTGRES_HBA"])
    subnet, gateway = _customer_pg_network(config)
    members = list(subnet.hosts())
    for client in [*(str(ip) for ip in members[::37]), gateway, *ELSEWHERE]:
        # A tenant role reaches its own database, with a password, and no other.
        assert _first_match(rules, "t_a", "t_a", client) == "scram-sha-256", client
        for other in ("t_b", "postgres", "template1", "spinup"):
            assert _first_match(rules, other, "t_a", client) in {None, "reject"}, (other, client)
    # Every rule but the admin's names `sameuser`: no `all all`, whatever the address.
    for kind, database, user, *_ in rules:
        if kind.startswith("host") and user != "postgres":
            assert database == "sameuser", (kind, database, user)


def test_customer_postgres_admin_logs_in_only_from_pg_provisioners_network(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    rules = _hba_rules(services["customer-pg"]["environment"]["POSTGRES_HBA"])
    subnet, gateway = _customer_pg_network(config)
    # docker-proxy brings every client of the published port from the gateway: refused there.
    assert _first_match(rules, "postgres", "postgres", gateway) == "reject"
    for client in (str(ip) for ip in subnet.hosts()):
        expected = "reject" if client == gateway else "scram-sha-256"
        for database in ("postgres", "t_a", "template1"):
            assert _first_match(rules, database, "postgres", client) == expected, client
    for client in ELSEWHERE:
        assert _first_match(rules, "postgres", "postgres", client) == "reject", client
    # That network holds the server and pg-provisioner, which logs in there as the admin.
    members = {
        name for name, spec in services.items() if "customer-pg" in (spec.get("networks") or {})
    }
    assert members == {"customer-pg", "pg-provisioner"}
    admin = urlsplit(services["pg-provisioner"]["environment"]["SPINUP_CUSTOMER_PG_ADMIN_DSN"])
    assert (admin.username, admin.hostname) == ("postgres", "customer-pg")


def test_customer_postgres_has_devstacks_rules_and_settings(
    config: dict[str, Any], tmp_path: Path
) -> None:
    server = customer_pg.make_server(_durable_profile(tmp_path), Secrets())
    service = config["services"]["customer-pg"]
    ours = _hba_rules(service["environment"]["POSTGRES_HBA"])
    theirs = _hba_rules("\n".join(server.hba))
    # The same local rule, and tenants on the same terms: `sameuser`, scram-sha-256.
    assert [rule for rule in ours if rule[0] == "local"] == [
        rule for rule in theirs if rule[0] == "local"
    ]

    def tenant_terms(rules: list[list[str]]) -> set[tuple[str, str, str]]:
        return {(r[1], r[2], r[4]) for r in rules if r[0] == "host" and r[2] != "postgres"}

    assert tenant_terms(ours) == tenant_terms(theirs) == {("sameuser", "all", "scram-sha-256")}
    admin_methods = {r[4] for r in ours if r[0] == "host" and r[2] == "postgres"}
    assert admin_methods == {"scram-sha-256", "reject"}
    # Settings: the command's `-c name=value` pairs are devstack's, exactly.
    command: list[str] = service["command"]
    assert command[0] == "spinup-postgres"
    pairs = command[1:]
    assert pairs[::2] == ["-c"] * (len(pairs) // 2)
    settings = dict(pair.split("=", 1) for pair in pairs[1::2])
    # The extension allowlist lives where each writes it; its contents come from plans.yaml.
    assert settings.pop("extension_control_path") == "/var/lib/postgresql/extensions"
    assert {**settings, "extension_control_path": "x"} == {
        **server.settings,
        "extension_control_path": "x",
    }
    tiers = load_plans(REPO_ROOT / "plans.yaml").tiers.values()
    allowed = {name for tier in tiers for name in tier.postgres.extensions}
    assert set(service["environment"]["POSTGRES_EXTENSIONS"].split(",")) == allowed
    assert service["image"] == config["services"]["platform-pg"]["image"]


def test_the_platform_postgres_has_devstacks_connection_budget(config: dict[str, Any]) -> None:
    # Every service opens its pools whole at start (shared/postgres/pool.py): the default 100
    # is short.
    command = config["services"]["platform-pg"]["command"]
    assert command == ["spinup-postgres", "-c", f"max_connections={PLATFORM_MAX_CONNECTIONS}"]


# --- customer Redis ------------------------------------------------------------------------------


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spinup_customer_redis", REDIS_LAUNCHER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Execed(Exception):  # noqa: N818  (a signal for the test, not an error)
    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.argv = argv


def _start_container_redis(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, run_dir: Path, password: str
) -> tuple[Any, list[str]]:
    """Run the image's launcher up to its exec; the server and the argv it would become."""
    launcher = _launcher()

    def execv(_path: str, argv: list[str]) -> None:
        raise _Execed(argv)

    monkeypatch.setattr(launcher.os, "execv", execv)
    monkeypatch.setattr(launcher.os, "chdir", lambda _path: None)
    server = launcher.make_server(password, data_dir=data_dir, run_dir=run_dir)
    server.init()
    with pytest.raises(_Execed) as execed:
        server.start()
    return server, execed.value.argv


def _directives(text: str) -> dict[str, str]:
    directives: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] not in directives, f"{words[0]} set twice"
            directives[words[0]] = " ".join(words[1:])
    return directives


def test_customer_redis_runs_devstacks_config_and_users(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tenant_address: str
) -> None:
    password = "not-a-secret"
    server, argv = _start_container_redis(
        monkeypatch, tmp_path / "data", tmp_path / "run", password
    )
    assert argv[1:] == [str(server.conf_path)]
    ours = _directives(server.conf_path.read_text())
    dev = customer_redis.make_server(_durable_profile(tmp_path), Secrets(customer_redis=password))
    dev.init()
    theirs = _directives(dev.config())
    assert theirs["bind"] == f"127.0.0.1 {tenant_address}"
    # Every directive devstack sets, with devstack's value, bar where the container listens and
    # keeps its files; nothing devstack does not set.
    assert set(ours) == set(theirs)
    for key in set(theirs) - CONTAINER_OWN:
        assert ours[key] == theirs[key], key
    assert ours["bind"] == "0.0.0.0"  # noqa: S104  (the container's own addresses)
    assert ours["port"] == "6379"
    assert Path(ours["aclfile"]) == server.data_dir / customer_redis.ACL_FILE
    assert Path(ours["dir"]) == server.data_dir
    # What devstack's hardening is (so this test fails if both lose it at once).
    for key, value in {
        "acl-pubsub-default": "resetchannels",
        "enable-debug-command": "no",
        "enable-module-command": "no",
        "enable-protected-configs": "no",
        "appendonly": "yes",
        "appendfsync": "everysec",
    }.items():
        assert ours[key] == value, key
    assert "requirepass" not in ours
    # The same fixed users: `default` off, the admin with its password hashed.
    acl = (server.data_dir / customer_redis.ACL_FILE).read_text()
    assert acl == dev.acl_path.read_text()
    assert acl.splitlines()[0].startswith("user default off ")
    assert password not in acl


@pytest.mark.usefixtures("tenant_address")
def test_customer_redis_restates_the_fixed_users_alone_on_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _start_container_redis(monkeypatch, data, tmp_path / "run", "old-secret")
    acl = data / customer_redis.ACL_FILE
    tenant = "user t_abc on #00 resetchannels ~t_abc:* &t_abc:* +@all"
    acl.write_text(acl.read_text() + "user default on nopass ~* +@all\n" + tenant + "\n")
    _start_container_redis(monkeypatch, data, tmp_path / "run", "new-secret")
    dev = customer_redis.make_server(
        _durable_profile(tmp_path), Secrets(customer_redis="new-secret")
    )
    dev.init()
    # A tenant line an older version saved goes: redis-provisioner puts tenants back from the
    # log (ADR 0045), and the line could hold a user the log has deleted since.
    assert acl.read_text() == dev.acl_path.read_text()
    assert "t_abc" not in acl.read_text()


def test_compose_starts_the_customer_redis_with_the_launcher(config: dict[str, Any]) -> None:
    services = config["services"]
    redis = services["customer-redis"]
    assert redis["image"] == "spinup/redis:latest"
    assert redis["command"] == ["python", REDIS_LAUNCHER_IN_IMAGE]
    assert redis["healthcheck"]["test"] == ["CMD", "python", REDIS_LAUNCHER_IN_IMAGE, "--check"]
    # The provisioner logs in as devstack's admin user (`default` is off).
    url = urlsplit(services["redis-provisioner"]["environment"]["SPINUP_CUSTOMER_REDIS_URL"])
    assert (url.username, url.hostname) == (customer_redis.ADMIN_USER, "customer-redis")
    # The image holds the launcher and devstack (the project's wheel) to run it.
    build = services["platform-redis"]["build"]
    copied = [
        rest for word, rest in _instructions(REPO_ROOT / build["dockerfile"]) if word == "COPY"
    ]
    assert ".spinup/project/ /project/" in copied
    assert f"compose/images/redis/customer_redis.py {REDIS_LAUNCHER_IN_IMAGE}" in copied


# --- stack-deployer ------------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line[:-1]}" if line.endswith("\\") else f"{pending} {line}"
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), " ".join(rest.split())))
            pending = ""
    return instructions


def test_stack_deployer_runs_in_the_host_network_with_net_admin(config: dict[str, Any]) -> None:
    services = config["services"]
    deployer = services["stack-deployer"]
    assert deployer["network_mode"] == "host"
    assert "networks" not in deployer
    assert "ports" not in deployer
    # Outside the engine's user-namespace remapping (a remapped root holds no capability over
    # the host's network), as root (added capabilities reach root only), NET_ADMIN and no other.
    assert deployer["userns_mode"] == "host"
    assert str(deployer["user"]).split(":")[0] in {"0", "root"}
    assert deployer["cap_add"] == ["NET_ADMIN"]
    assert deployer["cap_drop"] == ["ALL"]
    assert "privileged" not in deployer
    sockets = [v for v in deployer["volumes"] if str(v).startswith("/var/run/docker.sock:")]
    assert sockets == ["/var/run/docker.sock:/var/run/docker.sock:rw"]
    # It reaches platform NATS and Postgres at their ports on this machine's loopback.
    environment = deployer["environment"]
    for variable, server, port in (
        ("SPINUP_NATS_URL", "platform-nats", 4222),
        ("SPINUP_PLATFORM_DSN", "platform-pg", 5432),
    ):
        url = urlsplit(environment[variable])
        published = [str(p).split("/")[0].split(":") for p in services[server]["ports"]]
        assert [url.hostname, str(url.port), str(port)] in published, variable
    for variable in ("SPINUP_STACK_SCOPE", "SPINUP_STACK_BASE_IMAGE", "SPINUP_CONTENT_URL"):
        assert environment.get(variable), variable


def test_the_stack_deployer_image_installs_iptables() -> None:
    instructions = _instructions(STACK_DEPLOYER_DOCKERFILE)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final = instructions[last_from:]
    installs = [
        shlex.split(rest) for word, rest in final if word == "RUN" and "apt-get install" in rest
    ]
    packages: set[str] = set()
    for argv in installs:
        rest = argv[argv.index("install") + 1 :]
        rest = rest[: rest.index("&&")] if "&&" in rest else rest
        packages |= {arg for arg in rest if not arg.startswith("-")}
    assert "iptables" in packages, installs

"""SecantusDB 0.7.0b3 with its tenant-isolation gaps closed: ``python -m devstack.secantusd``.

Why this exists: SecantusDB authorises a command by looking it up in a table
(``secantus.commands._COMMAND_ACTIONS``) and lets every command that is missing from it run
with no privilege check at all. Measured against 0.7.0b3 with ``--auth``, a user holding only
``readWrite`` on ``t_a`` could:

- ``bulkWrite`` (admin command, MongoDB 8) with ``nsInfo: [{ns: "t_b.c"}]``: insert, update and
  delete in ANY database (mongod checks each namespace);
- ``renameCollection: "t_a.c", to: "t_b.c", dropTarget: true``: move a collection into, or
  replace one in, another database (only the source database was checked);
- ``killAllSessions`` / ``killAllSessionsByPattern`` / ``killSessions``: abort every open
  transaction on the server (mongod requires ``killAnySession`` on the cluster);
- ``replSetGetStatus`` / ``replSetStepDown``: cluster commands (mongod requires cluster actions).

This launcher adds the missing checks, with mongod's semantics, then runs the unchanged
``secantus.cli.main``. Nothing else changes: the provisioner speaks standard MongoDB and would
run unchanged against a real mongod, which refuses all of the above by itself. Imports of
``secantus`` happen inside ``main`` (devstack is stdlib-only at import time).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

Reply = dict[str, Any]
Dispatch = Callable[[dict[str, Any], Any], Reply]

_UNAUTHORIZED = 13
#: Commands SecantusDB leaves unchecked that only a cluster administrator may run.
_CLUSTER_ONLY = {
    "killSessions": "killop",
    "killAllSessions": "killop",
    "killAllSessionsByPattern": "killop",
    "replSetGetStatus": "serverStatus",
    "replSetStepDown": "fsync",
}
#: The action each kind of ``bulkWrite`` operation needs on its namespace.
_BULK_WRITE_ACTIONS = {"insert": "insert", "update": "update", "delete": "remove"}


def _refusal(action: str, database: str) -> Reply:
    return {
        "ok": 0.0,
        "errmsg": f"not authorized on {database} to execute command (action: {action})",
        "code": _UNAUTHORIZED,
        "codeName": "Unauthorized",
    }


def _database_of(namespace: object) -> str | None:
    if isinstance(namespace, str) and "." in namespace:
        return namespace.split(".", 1)[0]
    return None


def _needed_privileges(name: str, doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (action, database) pairs a command needs beyond what SecantusDB checks itself."""
    if name == "bulkWrite":
        namespaces = [
            entry.get("ns") for entry in doc.get("nsInfo") or [] if isinstance(entry, dict)
        ]
        needed: list[tuple[str, str]] = []
        for op in doc.get("ops") or []:
            for kind, action in _BULK_WRITE_ACTIONS.items():
                index = op.get(kind) if isinstance(op, dict) else None
                if isinstance(index, int) and 0 <= index < len(namespaces):
                    database = _database_of(namespaces[index])
                    # A malformed namespace is the handler's to reject; "" matches no grant.
                    needed.append((action, database or ""))
        return needed
    if name == "renameCollection":
        source, target = _database_of(doc.get("renameCollection")), _database_of(doc.get("to"))
        if source is None or target is None or source == target:
            return []  # same-database renames are checked by SecantusDB (renameCollectionSameDB)
        needed = [("find", source), ("dropCollection", source)]
        needed += [("insert", target), ("createCollection", target), ("createIndex", target)]
        if doc.get("dropTarget"):
            needed.append(("dropCollection", target))
        return needed
    return []


def guarded(dispatch: Dispatch, check_privilege: Callable[..., bool]) -> Dispatch:
    """Wrap SecantusDB's ``dispatch`` with the cross-database checks it lacks."""

    def guarded_dispatch(doc: dict[str, Any], ctx: Any) -> Reply:  # noqa: ANN401 (secantus type)
        auth = ctx.connection_auth
        if ctx.require_auth and auth is not None and auth.is_authenticated:
            name = next(iter(doc), "")
            for action, database in _needed_privileges(name, doc):
                if not check_privilege(
                    auth.effective_roles,
                    action,
                    target_db=database,
                    cluster=False,
                    role_resolver=ctx.storage.get_role,
                ):
                    return _refusal(action, database)
        return dispatch(doc, ctx)

    return guarded_dispatch


def main() -> int:
    """Close the gaps, then run SecantusDB's own command line (same flags)."""
    commands: Any = importlib.import_module("secantus.commands")
    server: Any = importlib.import_module("secantus.server")
    rbac: Any = importlib.import_module("secantus.rbac")
    cli: Any = importlib.import_module("secantus.cli")
    for name, action in _CLUSTER_ONLY.items():
        commands._COMMAND_ACTIONS.setdefault(name, (action, rbac.SCOPE_CLUSTER))  # noqa: SLF001
    # The server module bound ``dispatch`` at import; every wire path calls it through there.
    server.dispatch = guarded(commands.dispatch, rbac.check_privilege)
    return int(cli.main())


if __name__ == "__main__":
    raise SystemExit(main())

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

It also computes a connection's roles once, at login: ``updateUser`` (new roles), a role
revoke or ``dropUser`` reached only the connection that ran it, so an open connection kept
writing after the provisioner took ``readWrite`` away (the over-quota write block) or dropped
the user. mongod updates its user cache at once and every connection's next command sees the
change (SERVER-11980); a user that no longer exists is logged out.

This launcher adds the missing checks, with mongod's semantics, then runs the unchanged
``secantus.cli.main``. Nothing else changes: the provisioner speaks standard MongoDB and would
run unchanged against a real mongod, which refuses all of the above by itself. Imports of
``secantus`` happen inside ``main`` (devstack is stdlib-only at import time).
"""

from __future__ import annotations

import functools
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


class UserChanges:
    """Counts writes to user records, so a connection can tell its roles are out of date."""

    #: The attribute of a connection's ``ConnectionAuth`` holding the count its roles reflect.
    STAMP = "spinup_user_changes_seen"

    def __init__(self) -> None:
        """Start at zero: no connection has a stamp yet, so each reads its roles once."""
        self.count = 0

    def counting(self, write: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a ``Storage`` method that writes a user record to count each call."""

        @functools.wraps(write)
        def counted(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 (secantus signature)
            try:
                return write(*args, **kwargs)
            finally:
                # After the write: a connection that reads this count afterwards also reads
                # the new record (reading the count first, then the records, never misses one).
                self.count += 1

        return counted

    def refresh(self, auth: Any, storage: Any) -> None:  # noqa: ANN401 (secantus types)
        """Re-read the roles of ``auth``'s users if any user record changed since last time.

        As on mongod: a user dropped since login is logged out of this connection, and the
        roles are those of the user records now (one lookup per user, only after a change).
        """
        seen = self.count
        if getattr(auth, self.STAMP, None) == seen:
            return
        principals: list[tuple[str, str]] = []
        roles: list[dict[str, Any]] = []
        for database, user in auth.authenticated_principals:
            record = storage.get_user(database, user)
            if record is None:
                continue
            principals.append((database, user))
            roles += [role for role in record.get("roles") or [] if isinstance(role, dict)]
        auth.authenticated_principals = principals
        auth.effective_roles = []
        auth.add_principal_roles(roles)
        setattr(auth, self.STAMP, seen)


def guarded(
    dispatch: Dispatch,
    check_privilege: Callable[..., bool],
    user_changes: UserChanges | None = None,
) -> Dispatch:
    """Wrap SecantusDB's ``dispatch`` with the checks it lacks.

    With ``user_changes``, a connection's roles follow its user's record before every command.
    """

    def guarded_dispatch(doc: dict[str, Any], ctx: Any) -> Reply:  # noqa: ANN401 (secantus type)
        auth = ctx.connection_auth
        if user_changes is not None and auth is not None and auth.is_authenticated:
            user_changes.refresh(auth, ctx.storage)
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
    storage: Any = importlib.import_module("secantus.storage")
    for name, action in _CLUSTER_ONLY.items():
        commands._COMMAND_ACTIONS.setdefault(name, (action, rbac.SCOPE_CLUSTER))  # noqa: SLF001
    # Every user command (createUser, updateUser, grant/revoke, dropUser, dropAllUsers...)
    # writes through these two methods.
    user_changes = UserChanges()
    storage.Storage.add_user = user_changes.counting(storage.Storage.add_user)
    storage.Storage.drop_user = user_changes.counting(storage.Storage.drop_user)
    # The server module bound ``dispatch`` at import; every wire path calls it through there.
    server.dispatch = guarded(commands.dispatch, rbac.check_privilege, user_changes)
    return int(cli.main())


if __name__ == "__main__":
    raise SystemExit(main())

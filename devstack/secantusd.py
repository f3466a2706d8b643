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

And it refuses ``listDatabases`` to every user without the cluster-wide ``listDatabases``
privilege, even for the user's own database. mongod checks no privilege before the command;
the command itself lists only the databases the user has some privilege on when it lacks that
privilege (``authorizedDatabases`` defaults to true for such a user), and refuses only an
explicit ``authorizedDatabases: false`` from it. Drivers and tools (``list_database_names``,
Compass) call it first.

And it derives every SCRAM-SHA-256 verifier with mongod's default of 15,000 PBKDF2 iterations,
with no way to choose fewer: a ``createUser`` spent about 3.4 ms of the server's CPU on it, most
of what a tenant create costs the server. mongod takes ``--setParameter
scramSHA256IterationCount=N`` (5,000 at least); so does this launcher (docs/adr/0038).

And it reports ``serverStatus.connections.available: 0`` always, though it counts its open
connections (``current``) and refuses every new one past its ``max_connections`` (its command line
sets none: ``DEFAULT_MAX_CONNECTIONS``, 1,000). mongod reports there how many more it would
accept, its ``maxIncomingConnections`` less ``current``, so ``current + available`` is the
server's connection ceiling, which the provisioner watches (``SharedServer.capacity``): a server
reporting 0 looks full. This launcher notes each server's ``max_connections`` on its metrics and
reports ``max_connections - current`` there, never below 0.

And it lets ``getMore`` and ``killCursors`` run with no privilege check (``getMore`` compares
the cursor's namespace with the one the command names, not with what the caller may read), so
anyone who learns another tenant's cursor id can page through or kill it; mongod allows a
cursor to the user who opened it only. And it holds at most 10,000 open cursors for the whole
server, each alive for 10 idle minutes, and answers ``internal server error`` past that: an
exploratory attack (2026-12-07) filled it in 3.5 s with ``find``s of ``batchSize: 1`` on its
own two documents, and every other tenant's query of more than one batch failed for ten
minutes. This launcher refuses both commands unless the caller may read the database they name
(a ``killCursors`` kills only cursors of that namespace), holds up to ``MAX_CURSORS`` for the
server, and refuses a user its next cursor past ``MAX_CURSORS_PER_USER``, saying so.

This launcher adds the missing checks, with mongod's semantics, then runs the unchanged
``secantus.cli.main``. Nothing else changes: the provisioner speaks standard MongoDB and would
run unchanged against a real mongod, which refuses all of the above by itself. Imports of
``secantus`` happen inside ``main`` (devstack is stdlib-only at import time).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

Reply = dict[str, Any]
Dispatch = Callable[[dict[str, Any], Any], Reply]

_UNAUTHORIZED = 13
#: ``--setParameter`` names this launcher honours, as mongod spells them.
SCRAM_ITERATIONS_PARAMETER = "scramSHA256IterationCount"
#: mongod refuses fewer iterations than this (and pymongo fewer than 4,096).
MIN_SCRAM_ITERATIONS = 5000
#: Commands SecantusDB leaves unchecked that only a cluster administrator may run.
_CLUSTER_ONLY = {
    "killSessions": "killop",
    "killAllSessions": "killop",
    "killAllSessionsByPattern": "killop",
    "replSetGetStatus": "serverStatus",
    "replSetStepDown": "fsync",
}
#: Open cursors the server holds for all its users together (SecantusDB's own cap is 10,000).
MAX_CURSORS = 100_000
#: Open cursors one user may hold: SecantusDB keeps a cursor's whole result in memory, and the
#: server's cap is shared. An application pages through a few at a time.
MAX_CURSORS_PER_USER = 100
#: Commands whose answer may leave a cursor open.
_CURSOR_COMMANDS = frozenset({"find", "aggregate", "listCollections", "listIndexes"})
_OPERATION_FAILED = 96
#: The action each kind of ``bulkWrite`` operation needs on its namespace.
_BULK_WRITE_ACTIONS = {"insert": "insert", "update": "update", "delete": "remove"}


#: mongod's answer to ``authorizedDatabases: false`` from a user who may not list every database.
_LIST_ALL_REFUSAL: Reply = {
    "ok": 0.0,
    "errmsg": "Insufficient permissions to list all databases",
    "code": _UNAUTHORIZED,
    "codeName": "Unauthorized",
}


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
    if name in {"getMore", "killCursors"}:
        # Only a cursor of a database the caller may read: SecantusDB checks neither.
        database = doc.get("$db")
        return [("find", database if isinstance(database, str) else "")]
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


class CursorOwners:
    """Which user opened each open cursor, so that one user cannot hold the server's every one.

    A cursor is counted from the answer that opened it until the registry no longer holds it
    (exhausted, killed, or idle past its timeout).
    """

    def __init__(self, per_user: int = MAX_CURSORS_PER_USER) -> None:
        self.per_user = per_user
        self._lock = threading.Lock()
        self._by_user: dict[tuple[str, str], set[int]] = {}

    def full(self, user: tuple[str, str], registry: Any) -> bool:  # noqa: ANN401 (secantus type)
        """Whether ``user`` holds ``per_user`` cursors the registry still has."""
        live = registry._cursors  # noqa: SLF001  (membership only; the registry has no lookup)
        with self._lock:
            held = {cursor for cursor in self._by_user.get(user, ()) if cursor in live}
            if held:
                self._by_user[user] = held
            else:
                self._by_user.pop(user, None)
            return len(held) >= self.per_user

    def note(self, user: tuple[str, str], reply: Reply) -> None:
        """Count the cursor ``reply`` left open for ``user``, if any."""
        cursor = reply.get("cursor")
        cursor_id = cursor.get("id") if isinstance(cursor, dict) else None
        if isinstance(cursor_id, int) and cursor_id:
            with self._lock:
                self._by_user.setdefault(user, set()).add(int(cursor_id))

    def refusal(self) -> Reply:
        """The answer to a user at its limit."""
        return {
            "ok": 0.0,
            "errmsg": (
                f"this user holds {self.per_user} open cursors, the most it may: read them to"
                " the end, close them (killCursors), or let them time out (10 idle minutes)"
                " before opening another"
            ),
            "code": _OPERATION_FAILED,
            "codeName": "OperationFailed",
        }


def namespaced_kill(kill_cursors: Dispatch) -> Dispatch:
    """Wrap ``killCursors`` so it kills only cursors of the namespace it names, as mongod does.

    The others are answered in ``cursorsNotFound`` and left open.
    """

    def kill_in_namespace(doc: dict[str, Any], ctx: Any) -> Reply:  # noqa: ANN401 (secantus)
        ids = doc.get("cursors")
        if not isinstance(ids, list) or ctx.cursors is None:
            return kill_cursors(doc, ctx)
        namespace = f"{doc.get('$db')}.{doc.get('killCursors')}"
        live = ctx.cursors._cursors  # noqa: SLF001  (read only; get() would refresh its age)
        elsewhere = [
            cursor
            for cursor in ids
            if isinstance(cursor, int)
            and (entry := live.get(int(cursor))) is not None
            and entry.namespace != namespace
        ]
        reply = kill_cursors({**doc, "cursors": [c for c in ids if c not in elsewhere]}, ctx)
        if elsewhere and isinstance(reply.get("cursorsNotFound"), list):
            reply["cursorsNotFound"] += [int(cursor) for cursor in elsewhere]
        return reply

    return kill_in_namespace


def holding_more_cursors(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``SecantusDBServer.__init__`` to let its registry hold ``MAX_CURSORS``."""

    @functools.wraps(init)
    def init_and_raise(server: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 (secantus)
        init(server, *args, **kwargs)
        server.cursors.max_cursors = MAX_CURSORS

    return init_and_raise


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
    cursor_owners: CursorOwners | None = None,
) -> Dispatch:
    """Wrap SecantusDB's ``dispatch`` with the checks it lacks.

    With ``user_changes``, a connection's roles follow its user's record before every command;
    with ``cursor_owners``, a user holds at most its number of open cursors.
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
            user = auth.authenticated_principals[0]
            # Tenants sign in on their own database; the platform's users on admin, uncounted.
            counted = user[0] != "admin" and ctx.cursors is not None
            if cursor_owners is not None and name in _CURSOR_COMMANDS and counted:
                if cursor_owners.full(user, ctx.cursors):
                    return cursor_owners.refusal()
                reply = dispatch(doc, ctx)
                cursor_owners.note(user, reply)
                return reply
        return dispatch(doc, ctx)

    return guarded_dispatch


class _ListedOnly:
    """A ``Storage`` whose ``list_databases`` answers ``names``; everything else is the real one.

    Given to SecantusDB's own ``listDatabases`` handler, so the reply keeps its shape (sizes,
    ``filter``, ``nameOnly``) and sizes are computed for the listed databases only: sizing
    scans every document, and a tenant must not make the server scan every tenant's data.
    """

    def __init__(self, storage: Any, names: list[str]) -> None:  # noqa: ANN401 (secantus type)
        self._storage = storage
        self._names = names

    def list_databases(self) -> list[str]:
        return list(self._names)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (whatever Storage has)
        return getattr(self._storage, name)


def authorized_listing(
    list_databases: Dispatch, check_privilege: Callable[..., bool], actions: frozenset[str]
) -> Dispatch:
    """Wrap SecantusDB's ``listDatabases`` handler with mongod's ``authorizedDatabases``.

    A user with the cluster-wide ``listDatabases`` privilege gets every database, unless it
    asks for ``authorizedDatabases: true``. Any other user gets the databases on which one of
    its roles grants some action (any of ``actions``), and is refused if it asks for
    ``authorizedDatabases: false``. Without ``--auth`` nothing changes.
    """

    def listing(doc: dict[str, Any], ctx: Any) -> Reply:  # noqa: ANN401 (secantus type)
        auth = ctx.connection_auth
        if not ctx.require_auth or auth is None or not auth.is_authenticated:
            return list_databases(doc, ctx)

        def grants(action: str, database: str | None) -> bool:
            return check_privilege(
                auth.effective_roles,
                action,
                target_db=database,
                cluster=database is None,
                role_resolver=ctx.storage.get_role,
            )

        may_list_all = grants("listDatabases", None)
        asked = doc.get("authorizedDatabases")
        if asked is not None and not asked and not may_list_all:
            return dict(_LIST_ALL_REFUSAL)
        if not (bool(asked) if asked is not None else not may_list_all):
            return list_databases(doc, ctx)
        names = [
            name
            for name in ctx.storage.list_databases()
            if any(grants(action, name) for action in actions)
        ]
        return list_databases(
            doc, dataclasses.replace(ctx, storage=_ListedOnly(ctx.storage, names))
        )

    return listing


class LauncherArgsError(ValueError):
    """A ``--setParameter`` this launcher cannot honour."""


def split_parameters(argv: list[str]) -> tuple[dict[str, int], list[str]]:
    """Take mongod's ``--setParameter name=value`` out of ``argv``; the rest is SecantusDB's.

    Only ``scramSHA256IterationCount`` is known; like mongod, anything else is refused rather
    than ignored, and so is a count under ``MIN_SCRAM_ITERATIONS``.

    Raises:
        LauncherArgsError: an unknown parameter, a missing value, or a count out of range.
    """
    parameters: dict[str, int] = {}
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--setParameter":
            setting = next(args, None)
        elif arg.startswith("--setParameter="):
            setting = arg.removeprefix("--setParameter=")
        else:
            rest.append(arg)
            continue
        name, _, value = (setting or "").partition("=")
        if name != SCRAM_ITERATIONS_PARAMETER:
            known = SCRAM_ITERATIONS_PARAMETER
            msg = f"unknown --setParameter {name!r}; this launcher knows {known}"
            raise LauncherArgsError(msg)
        if not value.isdigit() or int(value) < MIN_SCRAM_ITERATIONS:
            msg = f"{SCRAM_ITERATIONS_PARAMETER} must be an integer >= {MIN_SCRAM_ITERATIONS}"
            raise LauncherArgsError(msg)
        parameters[name] = int(value)
    return parameters, rest


def reporting(get_parameter: Dispatch, parameters: Mapping[str, int]) -> Dispatch:
    """Wrap ``getParameter`` so it reports the ``--setParameter`` values, as mongod does."""

    def report(doc: dict[str, Any], ctx: Any) -> Reply:  # noqa: ANN401 (secantus type)
        reply = get_parameter(doc, ctx)
        every = doc.get("getParameter") == "*"
        if reply.get("ok"):
            reply.update(
                {name: value for name, value in parameters.items() if every or name in doc}
            )
        return reply

    return report


#: The attribute of a server's ``Metrics`` holding the server's ``max_connections``.
MAX_CONNECTIONS = "spinup_max_connections"


def recording_max_connections(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``SecantusDBServer.__init__`` to note the server's ``max_connections`` on its metrics.

    ``serverStatus`` sees the server's ``Metrics`` (``ctx.metrics``), not the server.
    """

    @functools.wraps(init)
    def init_and_record(server: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 (secantus)
        init(server, *args, **kwargs)
        setattr(server.metrics, MAX_CONNECTIONS, server.max_connections)

    return init_and_record


def available_connections(server_status: Dispatch) -> Dispatch:
    """Wrap ``serverStatus`` so ``connections.available`` is what the server would still accept.

    That is, as on mongod, the server's ceiling less ``current``, never below 0. A context
    without a server's metrics (no ceiling noted) keeps SecantusDB's answer.
    """

    def status(doc: dict[str, Any], ctx: Any) -> Reply:  # noqa: ANN401 (secantus type)
        reply = server_status(doc, ctx)
        ceiling = getattr(ctx.metrics, MAX_CONNECTIONS, None)
        connections = reply.get("connections")
        if reply.get("ok") and isinstance(ceiling, int) and isinstance(connections, dict):
            current = connections.get("current")
            if isinstance(current, int):
                connections["available"] = max(ceiling - current, 0)
        return reply

    return status


def main(argv: list[str] | None = None) -> int:
    """Close the gaps, then run SecantusDB's own command line.

    It takes SecantusDB's flags, and mongod's ``--setParameter scramSHA256IterationCount=N``.
    """
    try:
        parameters, secantus_argv = split_parameters(sys.argv[1:] if argv is None else argv)
    except LauncherArgsError as exc:
        sys.stderr.write(f"devstack.secantusd: {exc}\n")
        return 2
    commands: Any = importlib.import_module("secantus.commands")
    server: Any = importlib.import_module("secantus.server")
    rbac: Any = importlib.import_module("secantus.rbac")
    cli: Any = importlib.import_module("secantus.cli")
    storage: Any = importlib.import_module("secantus.storage")
    auth: Any = importlib.import_module("secantus.auth")
    if SCRAM_ITERATIONS_PARAMETER in parameters:
        # createUser and updateUser derive through auth.derive_credentials, which reads this
        # table at each call; verifiers made before keep their own count (logins read it).
        scram = auth._MECH_PARAMS[auth.SCRAM_SHA_256]  # noqa: SLF001
        scram["default_iterations"] = parameters[SCRAM_ITERATIONS_PARAMETER]
    commands._HANDLERS["getParameter"] = reporting(  # noqa: SLF001
        commands._HANDLERS["getParameter"],  # noqa: SLF001
        parameters,
    )
    for name, action in _CLUSTER_ONLY.items():
        commands._COMMAND_ACTIONS.setdefault(name, (action, rbac.SCOPE_CLUSTER))  # noqa: SLF001
    # listDatabases needs no privilege up front, as on mongod: the command decides what to list.
    commands._COMMAND_ACTIONS.pop("listDatabases", None)  # noqa: SLF001
    every_action = frozenset().union(*(role.actions for role in rbac.BUILT_IN_ROLES.values()))
    commands._HANDLERS["listDatabases"] = authorized_listing(  # noqa: SLF001
        commands._HANDLERS["listDatabases"],  # noqa: SLF001
        rbac.check_privilege,
        every_action,
    )
    server.SecantusDBServer.__init__ = holding_more_cursors(
        recording_max_connections(server.SecantusDBServer.__init__)
    )
    commands._HANDLERS["killCursors"] = namespaced_kill(commands._HANDLERS["killCursors"])  # noqa: SLF001
    commands._HANDLERS["serverStatus"] = available_connections(  # noqa: SLF001
        commands._HANDLERS["serverStatus"]  # noqa: SLF001
    )
    # Every user command (createUser, updateUser, grant/revoke, dropUser, dropAllUsers...)
    # writes through these two methods.
    user_changes = UserChanges()
    storage.Storage.add_user = user_changes.counting(storage.Storage.add_user)
    storage.Storage.drop_user = user_changes.counting(storage.Storage.drop_user)
    # The server module bound ``dispatch`` at import; every wire path calls it through there.
    server.dispatch = guarded(commands.dispatch, rbac.check_privilege, user_changes, CursorOwners())
    return int(cli.main(secantus_argv))


if __name__ == "__main__":
    raise SystemExit(main())

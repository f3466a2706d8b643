#!/bin/sh
# Postgres the way devstack.servers.PostgresCluster runs it:
# - first start: initdb with the same flags (peer locally, scram-sha-256 over TCP, UTF8, C.UTF-8),
#   the superuser `postgres` with the password of POSTGRES_PASSWORD_FILE (a compose secret), and
#   an application role and database when POSTGRES_APP_USER is set (the platform's);
# - every start: pg_hba.conf is written whole from POSTGRES_HBA (compose.yaml holds each
#   cluster's rules: the customer one is devstack/customer_pg.py's `sameuser` for tenants, the
#   admin only from pg-provisioner), so a changed rule takes effect on the next start and no
#   rule of an older image survives;
# - every start: POSTGRES_EXTENSIONS (comma-separated) become the extensions tenants may create;
# - the server runs with the arguments given (the settings, as `-c name=value`).
set -eu
: "${POSTGRES_HBA:?POSTGRES_HBA must hold the whole of pg_hba.conf (compose.yaml)}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --auth-local=peer --auth-host=scram-sha-256 --username=postgres \
        --encoding=UTF8 --locale=C.UTF-8 \
        --pwfile="$POSTGRES_PASSWORD_FILE" -D "$PGDATA" >/dev/null
    if [ -n "${POSTGRES_APP_USER:-}" ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        password="$(cat "$POSTGRES_APP_PASSWORD_FILE")"
        psql -v ON_ERROR_STOP=1 -q -d postgres \
            -c "CREATE ROLE \"$POSTGRES_APP_USER\" LOGIN PASSWORD '$password'" \
            -c "CREATE DATABASE \"$POSTGRES_APP_USER\" OWNER \"$POSTGRES_APP_USER\""
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
fi
umask 077
printf '%s\n' "$POSTGRES_HBA" >"$PGDATA/pg_hba.conf"
# The customer cluster: control files of the extensions tenants may create, marked trusted, in
# the directory its extension_control_path names (devstack/customer_pg.py does the same).
if [ -n "${POSTGRES_EXTENSIONS:-}" ]; then
    installed="$(pg_config --sharedir)/extension"
    overlay=/var/lib/postgresql/extensions/extension
    rm -rf "$overlay" && mkdir -p "$overlay"
    for name in plpgsql $(printf '%s' "$POSTGRES_EXTENSIONS" | tr ',' ' '); do
        if [ ! -f "$installed/$name.control" ]; then
            echo "POSTGRES_EXTENSIONS names $name, which this PostgreSQL lacks" >&2
            exit 1
        fi
        { cat "$installed/$name.control"
          printf "directory = '%s'\ntrusted = true\n" "$installed"; } >"$overlay/$name.control"
    done
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"

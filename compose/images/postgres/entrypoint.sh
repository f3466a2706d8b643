#!/bin/sh
# First start: initdb with the superuser password from POSTGRES_PASSWORD_FILE (a compose secret),
# an application role and database when POSTGRES_APP_USER is set, and password logins from the
# network. Later starts only run the server.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --auth-local=peer --auth-host=scram-sha-256 --username=postgres \
        --pwfile="$POSTGRES_PASSWORD_FILE" -D "$PGDATA" >/dev/null
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ -n "${POSTGRES_APP_USER:-}" ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        password="$(cat "$POSTGRES_APP_PASSWORD_FILE")"
        psql -v ON_ERROR_STOP=1 -q -d postgres \
            -c "CREATE ROLE \"$POSTGRES_APP_USER\" LOGIN PASSWORD '$password'" \
            -c "CREATE DATABASE \"$POSTGRES_APP_USER\" OWNER \"$POSTGRES_APP_USER\""
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'

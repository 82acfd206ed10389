#!/bin/sh
# Starts PostgreSQL in the foreground as pid 1, after making the cluster on
# the first start (an empty $PGDATA). The first start creates the role
# $POSTGRES_USER (superuser, password $POSTGRES_PASSWORD) and the database
# $POSTGRES_DB; later starts use what the volume holds and ignore them.
# Network clients need the password (scram-sha-256); without one they are
# trusted, and a warning says so. Local socket clients are trusted.
# Exit codes: whatever postgres returns; 1 if the first set-up fails.
set -eu
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PATH="/usr/lib/postgresql/15/bin:$PATH"

if [ "${1:-postgres}" = postgres ]; then
    [ $# -gt 0 ] && shift
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        echo "mandrill-postgres: first start: initdb in $PGDATA (user $user, database $db)"
        auth=scram-sha-256
        if [ -z "${POSTGRES_PASSWORD:-}" ]; then
            echo "mandrill-postgres: WARNING: no POSTGRES_PASSWORD; network clients are trusted" >&2
            auth=trust
        fi
        pwfile=$(mktemp)
        printf '%s\n' "${POSTGRES_PASSWORD:-unused}" > "$pwfile"
        initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host="$auth" \
               --encoding=UTF8 --locale=C.UTF-8 >/dev/null || { rm -f "$pwfile"; exit 1; }
        rm -f "$pwfile"
        # Any address may connect; listen_addresses decides where we listen.
        printf 'host all all 0.0.0.0/0 %s\nhost all all ::/0 %s\n' "$auth" "$auth" >> "$PGDATA/pg_hba.conf"
        if [ "$db" != postgres ]; then
            echo "CREATE DATABASE \"$db\" OWNER \"$user\";" \
                | postgres --single -D "$PGDATA" postgres >/dev/null
        fi
        echo "mandrill-postgres: cluster ready"
    fi
    # Default: every address, as the official image; "-c listen_addresses=..."
    # in the command comes later and wins.
    exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"

# Throwaway PostgreSQL cluster on 127.0.0.1 for the storage tests (sourced by .ci/run; also handy by hand:
#   source .ci/postgres.sh && start_postgres && export REMOTEGLM_TEST_POSTGRES_URL).
PG_PORT="${PG_PORT:-55432}"

start_postgres() {
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    PG_DATA="$(mktemp -d /tmp/remoteglm-pg.XXXXXX)"
    chown postgres "$PG_DATA"
    su postgres -c "$bin/initdb -D $PG_DATA -A trust -U postgres -E UTF8" >/dev/null
    su postgres -c "$bin/pg_ctl -D $PG_DATA -l $PG_DATA/server.log -w start \
        -o '-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1'" >/dev/null
    su postgres -c "$bin/createdb -h 127.0.0.1 -p $PG_PORT -U postgres remoteglm_test"
    PG_BIN="$bin"
    REMOTEGLM_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/remoteglm_test"
    echo "PostgreSQL ready at $REMOTEGLM_TEST_POSTGRES_URL"
}

stop_postgres() {
    [ -n "${PG_DATA:-}" ] || return 0
    su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -m fast -w stop" >/dev/null || true
    rm -rf "$PG_DATA"
}

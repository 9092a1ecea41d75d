#!/usr/bin/env bash
# test/pgtap/run.sh: run the pgTAP contract suite (test/pgtap/*.sql).
#
# Run from the repository root as a user that may run PostgreSQL (not
# root).  Creates a throwaway cluster that preloads jobq, creates the
# database jobq_tap with pgtap and jobq, runs pg_prove against it, stops
# the cluster and exits with pg_prove's status.  Every test file runs in a
# transaction that it rolls back, so jobs it enqueues never run.
#
#   JOBQ_TAP_PORT   port to use (default: the first free one from 55433)
set -uo pipefail

export PATH=/usr/lib/postgresql/15/bin:$PATH

if [ "$(id -u)" = 0 ]; then
    echo "run.sh: PostgreSQL refuses to run as root; run me as postgres" >&2
    exit 2
fi

root=$(pwd)
shopt -s nullglob
tests=(test/pgtap/*.sql)
shopt -u nullglob
if [ ${#tests[@]} -eq 0 ]; then
    echo "run.sh: no test/pgtap/*.sql under $root (run me from the repository root)" >&2
    exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/jobq-pgtap.XXXXXX") || exit 2
data=$tmp/data
log=$tmp/server.log
started=0
status=1

port_in_use() {
    # a socket file or a TCP listener on the port
    [ -e "$tmp/.s.PGSQL.$1" ] && return 0
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    return 1
}

cleanup() {
    if [ "$started" = 1 ]; then
        pg_ctl -D "$data" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ "$status" != 0 ] && [ -f "$log" ]; then
        echo "---- server log (last 60 lines): $log"
        tail -n 60 "$log"
        echo "(cluster kept in $tmp)"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=${JOBQ_TAP_PORT:-}
if [ -z "$port" ]; then
    for p in $(seq 55433 55533); do
        case $p in 55432|5499) continue ;; esac
        if ! port_in_use "$p"; then
            port=$p
            break
        fi
    done
fi
if [ -z "$port" ]; then
    echo "run.sh: no free port" >&2
    exit 1
fi

echo "== initdb ($data, port $port)"
if ! initdb -D "$data" -A trust -U postgres --no-sync -E UTF8 --locale=C \
        >"$tmp/initdb.log" 2>&1; then
    cat "$tmp/initdb.log"
    exit 1
fi
cat >>"$data/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$tmp'
shared_preload_libraries = 'jobq'
jobq.database = 'jobq_tap'
jobq.workers = 1
jobq.poll_interval = 1s
max_worker_processes = 16
fsync = off
log_line_prefix = '%m [%p] %b '
EOF

if ! pg_ctl -D "$data" -l "$log" -w -t 60 start >/dev/null; then
    echo "run.sh: server did not start"
    exit 1
fi
started=1

export PGHOST=$tmp PGPORT=$port PGUSER=postgres
unset PGDATABASE PGSERVICE PGOPTIONS

if ! createdb jobq_tap ||
   ! psql -X -q -v ON_ERROR_STOP=1 -d jobq_tap \
        -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION jobq'; then
    echo "run.sh: could not set up database jobq_tap"
    exit 1
fi

echo "== pg_prove"
pg_prove -d jobq_tap "${tests[@]}"
status=$?
exit $status

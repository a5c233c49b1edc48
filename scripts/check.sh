#!/bin/bash
# check.sh - `make check`: runs the C unit tests (store tests against a dev
# database started here in a temporary directory) and the pytest end-to-end
# suite, printing each runner's summary. Exit status is non-zero on any failure.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BUILD:-build/rel}

tmp=$(mktemp -d /tmp/mailcell-check.XXXXXX)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { scripts/devdb.sh stop "$tmp" || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

scripts/devdb.sh start "$tmp" "$port" || exit 1
export MAILCELL_TEST_MONGODB_URI="mongodb://127.0.0.1:$port"

# libmongoc's per-process shared-memory counters are of no use here; a
# segment leaked by a killed process makes a later one with the same pid warn.
export MONGOC_DISABLE_SHM=1

status=0
echo "== C unit tests ($build)"
scripts/run-unit.sh "$build"/tests/test_* || status=1

echo "== end-to-end tests (pytest)"
MAILCELL_BUILD="$build" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e "$@" || status=1

if [ $status -eq 0 ]; then echo "make check: all tests passed"; else echo "make check: FAILED"; fi
exit $status

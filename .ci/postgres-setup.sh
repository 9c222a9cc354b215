#!/usr/bin/env bash
# A real PostgreSQL server for the store tests (`tests/store.rs`, the `*_postgres` tests): Debian's
# `postgresql` package, installed when missing (needs root or passwordless sudo), its cluster started
# on 127.0.0.1:5432, and a role `cardinal` (password `cardinal`) that may create databases (each
# test makes its own). Prints the URL the tests read from POSTGRES_TEST_URL.
set -euo pipefail

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo -n"
fi
if ! command -v pg_lsclusters >/dev/null 2>&1 || [[ -z $(ls /usr/lib/postgresql 2>/dev/null) ]]; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    $sudo pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
    $sudo pg_ctlcluster "$version" main start
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
for _ in $(seq 1 50); do
    if pg_isready -q -h 127.0.0.1 -p "$port"; then break; fi
    sleep 0.2
done
psql_as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then
        su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -qtAc \"$1\""
    else
        sudo -n -u postgres psql -p "$port" -v ON_ERROR_STOP=1 -qtAc "$1"
    fi
}
if [[ $(psql_as_postgres "SELECT 1 FROM pg_roles WHERE rolname = 'cardinal'") != 1 ]]; then
    psql_as_postgres "CREATE ROLE cardinal LOGIN CREATEDB PASSWORD 'cardinal'"
fi
echo "postgres: $(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"')"
echo "POSTGRES_TEST_URL=postgres://cardinal:cardinal@127.0.0.1:${port}/postgres"

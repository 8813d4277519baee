#!/usr/bin/env bash
# Third-party churn data for the backtest: runs the ChurnSim simulator of the `fightchurn` package
# (PyPI, version 1.2.0; default model socialnet7) once per seed against the local PostgreSQL server
# (scripts/services.sh) and exports the simulated tables as CSV.
#
# Usage: scripts/fightchurn.sh OUT_DIR SEED [SEED...]
#
# For each seed N this writes OUT_DIR/seed-N/{account,subscription,event,event_type}.csv (with a header
# line), OUT_DIR/seed-N/socialnet7/ (the simulator's own copy of its configuration and plans: the converter
# reads the simulation end there), simulation.log (its output) and generation_seconds (simulation plus
# export). Then `churnsignal import fightchurn --dir OUT_DIR/seed-N --events ...` converts them into events.
# Rerunning a seed replaces its files (force=True has the simulator drop its schema first).
#
# fightchurn pins SQLAlchemy 1.4 and narrow ranges of pandas, numba, xgboost and more, so it lives in its own
# virtual environment, var/fightchurn-venv, created on the first run (it never goes into .venv).
#
# Environment:
#   FIGHTCHURN_PYTHON   interpreter for that environment (default python3.11)
#   FIGHTCHURN_VENV     its location (default var/fightchurn-venv)
#   FIGHTCHURN_PG_HOST, FIGHTCHURN_PG_PORT   the PostgreSQL server (default 127.0.0.1, 55432)
#   FIGHTCHURN_PG_SUPERUSER                  a superuser role there, to create the role below (default postgres)
#   FIGHTCHURN_DB, FIGHTCHURN_DB_USER, FIGHTCHURN_DB_PASS  the simulator's database and role (default churnsim)
#
# One run at a time (a lock file under var/ makes a second one wait): every run uses the same schema, and the
# simulator keeps its customer-id counter in a fixed file of the temporary directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FC_VERSION="1.2.0"
MODEL="socialnet7"
FC_PYTHON="${FIGHTCHURN_PYTHON:-python3.11}"
VENV="${FIGHTCHURN_VENV:-$ROOT/var/fightchurn-venv}"
PG_HOST="${FIGHTCHURN_PG_HOST:-127.0.0.1}"
PG_PORT="${FIGHTCHURN_PG_PORT:-55432}"
PG_SUPERUSER="${FIGHTCHURN_PG_SUPERUSER:-postgres}"
DB="${FIGHTCHURN_DB:-churnsim}"
DB_USER="${FIGHTCHURN_DB_USER:-churnsim}"
DB_PASS="${FIGHTCHURN_DB_PASS:-churnsim}"
TABLES=(account subscription event event_type)
# Each table in a fixed order (every column of `event`, which has no key), so that the same seed always
# gives the same files: the converter numbers the event rows.
declare -A ORDER=([account]="1" [subscription]="1, 3, 2, 4" [event]="1, 2, 3, 4, 5" [event_type]="1")

log() { printf '[fightchurn] %s\n' "$*" >&2; }
die() { printf '[fightchurn] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '6p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
OUT_DIR="$1"
shift
for seed in "$@"; do
    [[ "$seed" =~ ^[0-9]+$ ]] || die "bad seed '$seed': expected a whole number"
done
command -v psql >/dev/null || die "psql not found (the PostgreSQL client is needed to prepare the database and export the tables)"
mkdir -p "$OUT_DIR" "$ROOT/var"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
exec 9>"$ROOT/var/.fightchurn.lock"
if ! flock -n 9; then
    log "another scripts/fightchurn.sh runs; waiting for it to finish"
    flock 9
fi

# ------------------------------------------------------------------------ the simulator's environment

installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("fightchurn"))' 2>/dev/null
}
if [[ -x "$VENV/bin/python" && "$(installed_version || true)" == "$FC_VERSION" ]]; then
    log "fightchurn $FC_VERSION already installed in $VENV"
else
    command -v "$FC_PYTHON" >/dev/null || die "$FC_PYTHON not found (fightchurn $FC_VERSION needs Python 3.9 to 3.12)"
    log "creating $VENV and installing fightchurn==$FC_VERSION (a few minutes the first time)"
    "$FC_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "fightchurn==$FC_VERSION" \
        || die "pip install fightchurn==$FC_VERSION failed (see the messages above)"
fi

# ------------------------------------------------------------------------ database and role

# libpq (psql, and psycopg2 inside the simulator) reads the port from PGPORT: the simulator builds its
# connection from CHURN_DB_HOST alone and would otherwise use 5432.
export PGPORT="$PG_PORT"
admin_psql() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -U "$PG_SUPERUSER" -d postgres "$@"
}
admin_psql -Atc 'SELECT 1' >/dev/null 2>&1 \
    || die "cannot reach PostgreSQL as $PG_SUPERUSER on $PG_HOST:$PG_PORT (start it with: make services)"

# The simulator creates its schema and tables, then runs `ALTER TABLE ... OWNER to postgres` on each, which
# PostgreSQL refuses to a plain role ("must be member of role "postgres""). So the role is made a member of
# `postgres`: not a superuser itself, but able to act as one (SET ROLE postgres). Acceptable for this local,
# loopback-only throwaway server; the database holds nothing but simulated data.
[[ "$DB_USER" != "postgres" && "$DB_USER" != "$PG_SUPERUSER" ]] \
    || die "FIGHTCHURN_DB_USER must be a role of its own, not $DB_USER (this script alters it)"
if [[ "$(admin_psql -Atc "SELECT count(*) FROM pg_roles WHERE rolname = '$DB_USER'")" == "0" ]]; then
    log "creating the role $DB_USER (a member of postgres, see the comment in this script)"
    admin_psql -c "CREATE ROLE \"$DB_USER\" LOGIN NOSUPERUSER PASSWORD '$DB_PASS'"
else
    admin_psql -c "ALTER ROLE \"$DB_USER\" LOGIN NOSUPERUSER PASSWORD '$DB_PASS'"
fi
if [[ "$(admin_psql -Atc "SELECT pg_has_role('$DB_USER', 'postgres', 'MEMBER')")" != "t" ]]; then
    admin_psql -c "GRANT postgres TO \"$DB_USER\""
fi
if [[ "$(admin_psql -Atc "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" == "0" ]]; then
    log "creating the database $DB"
    admin_psql -c "CREATE DATABASE \"$DB\" OWNER \"$DB_USER\""
fi

export CHURN_DB="$DB" CHURN_DB_USER="$DB_USER" CHURN_DB_PASS="$DB_PASS" CHURN_DB_HOST="$PG_HOST"
export PGPASSWORD="$DB_PASS"
sim_psql() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -U "$DB_USER" -d "$DB" "$@"
}
sim_psql -Atc 'SELECT 1' >/dev/null || die "cannot connect to the database $DB as $DB_USER"

# ------------------------------------------------------------------------ one simulation per seed

for seed in "$@"; do
    dir="$OUT_DIR/seed-$seed"
    mkdir -p "$dir"
    log "seed $seed: simulating $MODEL (1000 initial customers, 2020-01-01..2020-06-01) into $DB.$MODEL"
    started=$SECONDS
    # force=True drops and recreates the schema without asking. The simulator's output goes to
    # simulation.log; it runs in the seed's directory, where Hydra leaves its (empty) churnsim.log.
    if ! (cd "$dir" && CHURN_OUT_DIR="$dir" "$VENV/bin/python" -m fightchurn.churnsim.churnsim \
            init_customers=1000 growth_rate=0.1 start_date=2020-01-01 end_date=2020-06-01 \
            n_parallel=1 force=True random_seed="$seed" >"$dir/simulation.log" 2>&1); then
        tail -n 20 "$dir/simulation.log" | sed 's/^/    /' >&2
        die "seed $seed: the simulation failed (whole output in $dir/simulation.log)"
    fi
    sim_s=$((SECONDS - started))
    log "seed $seed: simulated in ${sim_s} s; exporting ${TABLES[*]} to $dir"
    for table in "${TABLES[@]}"; do
        rm -f "$dir/$table.csv.part"
        sim_psql -c "\\copy (SELECT * FROM $MODEL.$table ORDER BY ${ORDER[$table]}) TO '$dir/$table.csv.part' WITH (FORMAT csv, HEADER)"
        mv "$dir/$table.csv.part" "$dir/$table.csv"
    done
    counts="$(sim_psql -Atc "SELECT (SELECT count(*) FROM $MODEL.account) || ' accounts, '
        || (SELECT count(*) FROM $MODEL.subscription) || ' subscriptions, '
        || (SELECT count(*) FROM $MODEL.event) || ' events'")"
    printf '%s\n' "$((SECONDS - started))" >"$dir/generation_seconds"
    log "seed $seed: done in $((SECONDS - started)) s: $counts"
done

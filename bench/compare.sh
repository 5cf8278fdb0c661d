#!/usr/bin/env bash
# Tenantry against two hand-built implementations of the same routes
# (issue 17): Express + pg and FastAPI + SQLAlchemy (bench/compare/), both on
# this machine's PostgreSQL ($PG_URL). In one invocation, one after another,
# the load generator of bench/load.sh (every tenant shared) runs against
# Tenantry on SQLite, Tenantry on PostgreSQL, Express and FastAPI; each run's
# table is printed as it ends, then one table of all four with the ratios of
# Tenantry's req/s to each hand-built app's.
#
#   bench/compare.sh [tenants=1000] [records=20] [seconds=10] [connections=32]
#
# Installs the apps' dependencies on first use: `npm ci` in
# bench/compare/express, a venv at ${XDG_CACHE_HOME:-~/.cache}/tenantry/compare-venv
# (made anew when requirements.txt changes).
source "$(dirname "$0")/lib.sh"
ARGS=("${1:-1000}" "${2:-20}" "${3:-10}" "${4:-32}" 0)
# Ports PORT..PORT+3, away from the 18089/18090 of the other bench scripts:
# a server already listening there would answer /readyz in ours' place.
PORT=${PORT:-18290}
COMPARE=bench/compare
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/tenantry/compare-venv
JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
OUT=$(mktemp -d)
DIRS+=("$OUT")

install_express() {
  local dir=$COMPARE/express
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "installing Express's dependencies (npm ci)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

install_fastapi() {
  local want
  want=$(sha256sum "$COMPARE/fastapi/requirements.txt" | cut -d' ' -f1)
  if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    echo "installing FastAPI's dependencies into $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$COMPARE/fastapi/requirements.txt" >&2
    echo "$want" >"$VENV/.requirements.sha256"
  fi
}

# Refuses a port something already listens on, and (after the start) a
# server that has exited: either way /readyz would not be ours.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port $1 is in use (set PORT to another base)" >&2
    exit 1
  fi
}
still_running() {
  kill -0 "$PID" 2>/dev/null || { echo "the server on $BASE exited" >&2; exit 1; }
}

# Runs the load against $BASE; its table goes to $OUT/<key>.md and the screen.
measure() {
  local key=$1 log=${2:-}
  if ! load "${ARGS[@]}" | tee "$OUT/$key.md"; then
    if [ -n "$log" ]; then
      echo "load failed; the app's log:" >&2
      tail -40 "$log" >&2
    fi
    exit 1
  fi
  echo
}

run_tenantry() {
  local key=$1 title=$2 port=$3 pg=${4:-}
  echo "## $title"
  port_free "$port"
  start_server "$port" "$pg"
  still_running
  measure "$key"
  stop_server
}

# A hand-built app on a fresh database of its own, with ../schema.sql loaded.
run_app() {
  local key=$1 title=$2 port=$3
  shift 3
  echo "## $title"
  port_free "$port"
  local db="compare_${key}_$$" dir
  DATABASES+=("$PG_URL $db")
  psql "$PG_URL/postgres" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
  psql "$PG_URL/$db" -q -v ON_ERROR_STOP=1 -f "$COMPARE/schema.sql"
  dir=$(mktemp -d)
  DIRS+=("$dir")
  env PORT="$port" DATABASE_URL="$PG_URL/$db" ADMIN_EMAIL="$ADMIN_EMAIL" \
    ADMIN_PASSWORD="$ADMIN_PASSWORD" JWT_SECRET="$JWT_SECRET" "$@" >"$dir/server.log" 2>&1 &
  PID=$!
  BASE="http://127.0.0.1:$port"
  wait_ready "$BASE/readyz" "$dir/server.log"
  still_running
  measure "$key" "$dir/server.log"
  stop_server
}

install_express
install_fastapi

py_version() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
echo "# Tenantry vs hand-built, $(date -u '+%Y-%m-%d %H:%M UTC'): tenants=${ARGS[0]} records=${ARGS[1]} seconds=${ARGS[2]} connections=${ARGS[3]}, all shared"
echo "node $(node --version), express $(node -p "require('./$COMPARE/express/node_modules/express/package.json').version"), pg $(node -p "require('./$COMPARE/express/node_modules/pg/package.json').version");" \
  "python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'), fastapi $(py_version fastapi), sqlalchemy $(py_version sqlalchemy), uvicorn $(py_version uvicorn);" \
  "$(psql "$PG_URL/postgres" -qAt -c 'SHOW server_version' | sed 's/ .*//;s/^/PostgreSQL /')"
echo

run_tenantry sqlite "Tenantry on SQLite" "$PORT"
run_tenantry postgres "Tenantry on PostgreSQL" "$((PORT + 1))" "$PG_URL"
run_app express "Express + pg (cluster, 2 workers, pool 16 each)" "$((PORT + 2))" \
  NODE_ENV=production node "$COMPARE/express/server.js"
run_app fastapi "FastAPI + SQLAlchemy (uvicorn, 2 workers, pool 16 each)" "$((PORT + 3))" \
  "$VENV/bin/uvicorn" app:app --app-dir "$COMPARE/fastapi" --host 127.0.0.1 --port "$((PORT + 3))" \
  --workers 2 --no-access-log

# One cell of a run's table: column 3 req/s, 5 p50, 6 p99, 7 errors.
cell() {
  awk -F'|' -v e="$2" -v c="$3" '{ gsub(/ /, "", $2) } $2 == e { gsub(/ /, "", $c); print $c; exit }' "$OUT/$1.md"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

SYSTEMS=(sqlite postgres express fastapi)
declare -A NAME=([sqlite]="Tenantry SQLite" [postgres]="Tenantry PG" [express]=Express [fastapi]=FastAPI)
echo "## All four (req/s; p50 and p99 in ms; ratios are req/s over req/s)"
echo
header="| endpoint" rule="| ---"
for s in "${SYSTEMS[@]}"; do
  header+=" | ${NAME[$s]} req/s | p50 | p99"
  rule+=" | ---: | ---: | ---:"
done
for t in sqlite postgres; do
  for h in express fastapi; do
    header+=" | ${NAME[$t]} ÷ ${NAME[$h]}"
    rule+=" | ---:"
  done
done
echo "$header |"
echo "$rule |"
errors=0
for e in healthz get-by-id list-50 create; do
  row="| $e"
  for s in "${SYSTEMS[@]}"; do
    row+=" | $(cell "$s" "$e" 3) | $(cell "$s" "$e" 5) | $(cell "$s" "$e" 6)"
    errors=$((errors + $(cell "$s" "$e" 7)))
  done
  for t in sqlite postgres; do
    for h in express fastapi; do
      row+=" | $(ratio "$(cell "$t" "$e" 3)" "$(cell "$h" "$e" 3)")"
    done
  done
  echo "$row |"
done
echo
if [ "$errors" -ne 0 ]; then
  echo "$errors failed requests in all (see each run's errors column): the figures are not comparable" >&2
  exit 1
fi
echo "errors: 0 in every run"

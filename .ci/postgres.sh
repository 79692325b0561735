#!/usr/bin/env bash
# A throwaway PostgreSQL for the storage-parametrised tests: PostgreSQL + pgvector from the
# `pgserver` wheel, a fresh cluster in a temp dir, on a loopback port, as a non-root user.
#
#   source .ci/postgres.sh        # sets and prints VARS_TEST_POSTGRES_URL (CI does this)
#   bash .ci/postgres.sh          # prints `export VARS_TEST_POSTGRES_URL=...` (eval it)
#   bash .ci/postgres.sh stop     # stops the server and removes its data dir
#
# Idempotent and fast: nothing is built; a server already answering on
# the port is reused; otherwise a fresh cluster is made (~3 s). Settings (env): VARS_PG_PORT
# (55432), VARS_PG_DIR (/tmp/vars-pg-$PORT), VARS_PG_DB (vars_test), VARS_PG_BINDIR (a
# PostgreSQL bin dir to use instead of the pgserver wheel's).
# Test-only server: fsync off, trust auth on 127.0.0.1.
# Safe to `source` under `set -euo pipefail`: everything runs in functions that `return`.

_vars_pg_log() { echo "postgres.sh: $*" >&2; }

# PostgreSQL + pgvector from a package: the `pgserver` wheel (the [test] extra) ships a
# relocatable PostgreSQL 16 in pgserver/pginstall (bin/initdb, bin/postgres, pgvector 0.6.2's
# vector.so). Found without importing pgserver. Else Debian's postgresql (no pgvector: those
# tests skip).
_vars_pg_wheel_bindir() {
  local py
  py=$(command -v python || command -v python3 || true)
  [ -n "$py" ] || return 0
  "$py" - <<'PY' 2>/dev/null || true
import importlib.util, os
spec = importlib.util.find_spec("pgserver")
for root in (spec.submodule_search_locations or []) if spec else []:
    bindir = os.path.join(root, "pginstall", "bin")
    if os.access(os.path.join(bindir, "initdb"), os.X_OK):
        print(bindir)
        break
PY
}

_vars_pg_bindir() {
  if [ -n "${VARS_PG_BINDIR:-}" ]; then echo "$VARS_PG_BINDIR"; return 0; fi
  local d
  d=$(_vars_pg_wheel_bindir)
  if [ -z "$d" ]; then
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  echo "$d"
}

_vars_pg_install() {
  local bindir
  bindir=$(_vars_pg_bindir)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    if [ "$(id -u)" != 0 ]; then
      _vars_pg_log "no PostgreSQL: pip install pgserver (the [test] extra), or set VARS_PG_BINDIR"
      return 1
    fi
    _vars_pg_log "pgserver wheel not found; installing Debian's postgresql (without pgvector)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql >/dev/null
    bindir=$(_vars_pg_bindir)
  fi
  echo "$bindir"
}

# As root the server runs as another user, who must reach the binaries: a wheel in a venv under
# a private folder (e.g. /root) is copied once to a world-readable place.
_vars_pg_reachable() {
  local bindir="$1" user="${VARS_PG_USER:-postgres}" dest
  if [ "$(id -u)" != 0 ] || runuser -u "$user" -- test -x "$bindir/initdb"; then
    echo "$bindir"; return 0
  fi
  # <site>/pgserver/pginstall/bin: the binaries find their libraries in <site>/pgserver.libs
  local site
  site=$(cd "$bindir/../../.." && pwd)
  dest="/usr/local/lib/vars-pgserver/$(echo "$bindir" | md5sum | cut -c1-12)"
  if [ ! -x "$dest/pgserver/pginstall/bin/initdb" ]; then
    _vars_pg_log "copying PostgreSQL from $site to $dest (readable by $user)"
    mkdir -p "$dest/pgserver" \
      && cp -a "$site/pgserver/pginstall" "$dest/pgserver/" \
      && { [ ! -d "$site/pgserver.libs" ] || cp -a "$site/pgserver.libs" "$dest/"; } \
      && chmod -R a+rX "$dest" || return 1
  fi
  echo "$dest/pgserver/pginstall/bin"
}

# Run a command as the server's (non-root) owner.
_vars_pg_as() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "${VARS_PG_USER:-postgres}" -- "$@"
  else
    "$@"
  fi
}

_vars_pg_start() {
  local port="${VARS_PG_PORT:-55432}"
  local dir="${VARS_PG_DIR:-/tmp/vars-pg-$port}"
  local db="${VARS_PG_DB:-vars_test}"
  local bindir
  bindir=$(_vars_pg_install) || return 1
  local url="postgresql://postgres@127.0.0.1:${port}/${db}"

  if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
    _vars_pg_log "reusing the server on port $port"
  else
    if [ "$(id -u)" = 0 ] && ! id "${VARS_PG_USER:-postgres}" >/dev/null 2>&1; then
      useradd --system --no-create-home "${VARS_PG_USER:-postgres}"
    fi
    bindir=$(_vars_pg_reachable "$bindir") || return 1
    # not running: a fresh cluster (never a leftover data dir from an earlier run)
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "${VARS_PG_USER:-postgres}" "$dir"
    chmod 700 "$dir"
    _vars_pg_as "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
      --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
    _vars_pg_as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
      "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off \
       -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB" >/dev/null \
      || { tail -n 30 "$dir/server.log" >&2; return 1; }
  fi
  if ! "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE $db" \
      || return 1
  fi
  export VARS_TEST_POSTGRES_URL="$url"
  echo "export VARS_TEST_POSTGRES_URL=$url"
}

_vars_pg_stop() {
  local port="${VARS_PG_PORT:-55432}"
  local dir="${VARS_PG_DIR:-/tmp/vars-pg-$port}"
  local bindir
  bindir=$(_vars_pg_bindir)
  bindir=$(_vars_pg_reachable "$bindir") || return 1
  if [ -s "$dir/data/postmaster.pid" ]; then
    _vars_pg_as "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$dir"
}

if [ "${1:-}" = "stop" ]; then
  _vars_pg_stop
else
  _vars_pg_start
fi

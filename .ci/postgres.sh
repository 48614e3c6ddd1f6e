#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tuning test (optuna RDBStorage through psycopg2).
#
#   source .ci/postgres.sh            start (installing Debian's postgresql if missing, when root) and export
#                                     MEDHASH_TEST_POSTGRES_URL / MEDHASH_TEST_POSTGRES_DIR; stopped on shell exit
#   .ci/postgres.sh start [--no-install]   start, print `export ...` lines for eval; the server keeps running
#   .ci/postgres.sh stop [DIR]             stop the server started in DIR (default $MEDHASH_TEST_POSTGRES_DIR)
#
# The cluster lives in a fresh `mktemp -d` folder (trust auth, fsync off, a free port, socket in that folder),
# owned by the `postgres` user when run as root (initdb refuses root). Progress goes to stderr; a failure
# returns non-zero without killing a sourcing shell. tests/test_tuning.py calls `start --no-install` itself
# when MEDHASH_TEST_POSTGRES_URL is unset and skips with the reason when no server can be started.

_medhash_pg_log() { echo "postgres.sh: $*" >&2; }

_medhash_pg_bindir() {
  local d
  if command -v pg_ctl >/dev/null 2>&1 && [ -x "$(dirname "$(readlink -f "$(command -v pg_ctl)")")/createdb" ]; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"  # /usr/local/bin may hold only some symlinks
    return 0
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then
    echo "$d"
    return 0
  fi
  return 1
}

_medhash_pg_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    _medhash_pg_log "PostgreSQL binaries not found and cannot install them (need root and apt-get)"
    return 1
  fi
  _medhash_pg_log "installing postgresql from Debian packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
}

# Run a command as the cluster owner (the postgres user when we are root).
_medhash_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$MEDHASH_PG_OWNER" -- "$@"
  else
    "$@"
  fi
}

_medhash_pg_start() {
  local install=1 bindir dir port url
  [ "${1:-}" = "--no-install" ] && install=0
  if ! bindir=$(_medhash_pg_bindir); then
    [ "$install" = 1 ] && _medhash_pg_install || return 1
    bindir=$(_medhash_pg_bindir) || { _medhash_pg_log "no initdb/pg_ctl after installing"; return 1; }
  fi
  MEDHASH_PG_OWNER=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    MEDHASH_PG_OWNER=postgres
    if ! id postgres >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin postgres >&2 || return 1
    fi
  fi
  dir=$(mktemp -d "${TMPDIR:-/tmp}/medhash-pg.XXXXXX") || return 1
  chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown "$MEDHASH_PG_OWNER" "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()') || return 1
  _medhash_pg_log "initdb in $dir/data (owner $MEDHASH_PG_OWNER, $bindir)"
  _medhash_pg_as_owner "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { _medhash_pg_log "initdb failed: $(tail -n 3 "$dir/initdb.log" | tr '\n' ' ')"; rm -rf "$dir"; return 1; }
  _medhash_pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c max_connections=50" \
    start >&2 || { _medhash_pg_log "server failed to start: $(tail -n 3 "$dir/server.log" 2>/dev/null | tr '\n' ' ')"; rm -rf "$dir"; return 1; }
  _medhash_pg_as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres medhash_test >&2 ||
    { _medhash_pg_log "createdb failed"; _medhash_pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >&2; rm -rf "$dir"; return 1; }
  url="postgresql+psycopg2://postgres@127.0.0.1:$port/medhash_test"
  printf '%s\n' "$url" >"$dir/url"
  printf '%s\n' "$bindir" >"$dir/bindir"
  printf '%s\n' "$MEDHASH_PG_OWNER" >"$dir/owner"
  export MEDHASH_TEST_POSTGRES_URL="$url" MEDHASH_TEST_POSTGRES_DIR="$dir"
  _medhash_pg_log "server up: $url"
  return 0
}

_medhash_pg_stop() {
  local dir="${1:-${MEDHASH_TEST_POSTGRES_DIR:-}}"
  [ -n "$dir" ] && [ -f "$dir/bindir" ] || { _medhash_pg_log "nothing to stop (no server folder given)"; return 0; }
  MEDHASH_PG_OWNER=$(cat "$dir/owner")
  _medhash_pg_as_owner "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
  return 0
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced (by .ci/run): start, export the URL, stop when that shell exits.
  if _medhash_pg_start; then
    trap '_medhash_pg_stop "$MEDHASH_TEST_POSTGRES_DIR"' EXIT
  else
    return 1
  fi
else
  case "${1:-}" in
    start)
      shift
      _medhash_pg_start "$@" || exit 1
      printf 'export MEDHASH_TEST_POSTGRES_URL=%q\nexport MEDHASH_TEST_POSTGRES_DIR=%q\n' \
        "$MEDHASH_TEST_POSTGRES_URL" "$MEDHASH_TEST_POSTGRES_DIR"
      ;;
    stop)
      shift
      _medhash_pg_stop "$@"
      ;;
    *)
      echo "usage: $0 start [--no-install] | stop [DIR]   (or: source $0)" >&2
      exit 2
      ;;
  esac
fi

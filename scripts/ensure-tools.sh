#!/usr/bin/env bash
# Install the command-line tools the operations tests (tests/ops/) need, when missing.
#
#   promtool         checks and unit-tests alerts/*.yml, parses dashboard PromQL
#   systemd-analyze  verifies systemd/*.service and *.timer
#   ShellCheck       lints the bootstrap scripts of the hosts (terraform/host-files/bootstrap/)
#   aws, jq, curl    run docs/runbook.md's commands against the rehearsal fleet (the Debian
#                    packages cloud-init installs on the hosts: awscli, jq, curl)
#   faketime         libfaketime: the rehearsal's "yesterday" (tests/ops/_rehearsal.py)
#   terraform        `terraform fmt -check` and the offline renders of terraform/host-files and
#                    terraform/monitoring (see below: not installable here)
#   prometheus, prometheus-alertmanager, amtool, prometheus-node-exporter
#                    the monitoring stack `make demo` runs beside the fleet and
#                    tests/ops/test_prometheus_loop.py fires every alert through (issue #17)
#
# Idempotent and quick when everything is present (a few `command -v` calls).
# Exit status: 0 when every tool but terraform is available afterwards, 1 otherwise.
# terraform is reported but never fatal here: the test that needs it fails loudly by itself.
#
# promtool comes from Debian's `prometheus` package, but we do NOT `apt-get install` it: that
# package ships an init script and a systemd unit, and its maintainer scripts may start a
# Prometheus server (port 9090, the same port our /metrics endpoints use) on a machine without
# policy-rc.d. Instead we `apt-get download` the .deb and unpack only /usr/bin/promtool, which
# depends on nothing but libc. The Prometheus server, Alertmanager (+ amtool) and node exporter
# come the same way, binaries only, from `prometheus`, `prometheus-alertmanager` and
# `prometheus-node-exporter`: no maintainer script runs, so no system service is started on
# 9090/9093/9100, and the binaries keep Debian's names. The HTTP API needs no web assets.
set -euo pipefail

PREFIX_BIN="${KALSHI_TOOLS_BIN:-/usr/local/bin}"
status=0

log() { printf 'ensure-tools: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
        log "need root for: $*"; return 1; fi
}

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        # Only refresh the package lists when they are empty (a fresh container).
        if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
            as_root apt-get update -qq
        fi
        apt_updated=1
    fi
}

ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then return 0; fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "promtool missing and apt-get unavailable: install Prometheus' promtool (>= 2.37) onto PATH"
        return 1
    fi
    log "promtool missing: unpacking it from Debian's prometheus package into $PREFIX_BIN"
    apt_update_once
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    # _apt cannot write into a root-owned mktemp dir; let it download there anyway.
    chmod 0777 "$tmp"
    (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1) || {
        apt_updated=0; as_root apt-get update -qq; apt_updated=1
        (cd "$tmp" && apt-get download -q prometheus >/dev/null)
    }
    local deb
    deb="$(ls "$tmp"/prometheus_*.deb | head -n1)"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./usr/bin/promtool >"$tmp/promtool"
    chmod 0755 "$tmp/promtool"
    "$tmp/promtool" --version >/dev/null
    as_root install -m 0755 "$tmp/promtool" "$PREFIX_BIN/promtool"
    case ":$PATH:" in *":$PREFIX_BIN:"*) ;; *) log "note: $PREFIX_BIN is not on PATH" ;; esac
    log "installed $("$PREFIX_BIN/promtool" --version 2>&1 | head -n1)"
}

ensure_systemd_analyze() {
    if command -v systemd-analyze >/dev/null 2>&1; then return 0; fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "systemd-analyze missing and apt-get unavailable: install systemd"
        return 1
    fi
    log "systemd-analyze missing: apt-get install systemd"
    apt_update_once
    # policy-rc.d-less containers: installing systemd does not start it as PID 1.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
}

# --- the monitoring stack (issue #17): files unpacked from Debian packages, no maintainer scripts --
# deb_unpack PACKAGE DIR MEMBER...: apt-get download PACKAGE and extract MEMBERs (./usr/...) into DIR.
deb_unpack() {
    local pkg="$1" dest="$2"; shift 2
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get unavailable: install Debian's $pkg (or the upstream release) by hand"
        return 1
    fi
    apt_update_once
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    chmod 0777 "$tmp"
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
        apt_updated=0; as_root apt-get update -qq; apt_updated=1
        (cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
    }
    local debs=("$tmp"/"${pkg}"_*.deb)
    dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$dest" "$@"
}

# unpack_deb_binaries PACKAGE BINARY...: install ./usr/bin/BINARY... of PACKAGE into PREFIX_BIN.
unpack_deb_binaries() {
    local pkg="$1"; shift
    log "$* missing: unpacking from Debian's $pkg package into $PREFIX_BIN (no service is started)"
    local tmp bin
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    deb_unpack "$pkg" "$tmp" "${@/#/./usr/bin/}" || return 1
    for bin in "$@"; do
        "$tmp/usr/bin/$bin" --version >/dev/null 2>&1
        as_root install -m 0755 "$tmp/usr/bin/$bin" "$PREFIX_BIN/$bin"
        log "installed $("$PREFIX_BIN/$bin" --version 2>&1 | head -n1)"
    done
}

ensure_prometheus_server() {
    command -v prometheus >/dev/null 2>&1 && return 0
    unpack_deb_binaries prometheus prometheus
}

# Debian's Alertmanager reads its notification templates from here (a Debian patch).
AM_TEMPLATES=/usr/share/prometheus/alertmanager
ensure_alertmanager() {
    # Debian names the server prometheus-alertmanager; upstream tarballs call it alertmanager.
    if ! { command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1; } \
        || ! command -v amtool >/dev/null 2>&1; then
        unpack_deb_binaries prometheus-alertmanager prometheus-alertmanager amtool || return 1
    fi
    if command -v prometheus-alertmanager >/dev/null 2>&1 && [ ! -f "$AM_TEMPLATES/default.tmpl" ]; then
        log "unpacking Alertmanager's notification templates into $AM_TEMPLATES"
        as_root mkdir -p "$AM_TEMPLATES"
        local tmp
        tmp="$(mktemp -d)"
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" RETURN
        deb_unpack prometheus-alertmanager "$tmp" ./usr/share/prometheus/alertmanager/default.tmpl \
            ./usr/share/prometheus/alertmanager/email.tmpl || return 1
        as_root install -m 0644 "$tmp$AM_TEMPLATES/default.tmpl" "$tmp$AM_TEMPLATES/email.tmpl" "$AM_TEMPLATES/"
    fi
}

ensure_node_exporter() {
    if command -v prometheus-node-exporter >/dev/null 2>&1 || command -v node_exporter >/dev/null 2>&1; then
        return 0
    fi
    unpack_deb_binaries prometheus-node-exporter prometheus-node-exporter
}

# Debian packages whose command is all we need: install the missing ones in one apt-get run.
ensure_debian_tools() {
    local missing=() pkg cmd
    for pair in shellcheck:shellcheck aws:awscli jq:jq curl:curl faketime:faketime; do
        cmd="${pair%%:*}" pkg="${pair##*:}"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing and apt-get unavailable: ${missing[*]} (install them onto PATH)"
        return 1
    fi
    log "apt-get install ${missing[*]}"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_terraform() {
    if command -v terraform >/dev/null 2>&1; then return 0; fi
    # HashiCorp's binary is distributed from its own release site, which is neither Debian, PyPI
    # nor npm; nothing in those registries ships it. We do not fetch it from elsewhere.
    log "terraform not on PATH and not installable from the package registries this project uses;"
    log "  tests/ops/test_terraform.py::test_terraform_fmt_check will FAIL until terraform >= 1.5 is on PATH"
}

ensure_promtool || status=1
ensure_systemd_analyze || status=1
ensure_prometheus_server || status=1
ensure_alertmanager || status=1
ensure_node_exporter || status=1
ensure_debian_tools || status=1
check_terraform

for t in promtool systemd-analyze prometheus amtool shellcheck aws jq curl faketime; do
    command -v "$t" >/dev/null 2>&1 || { log "MISSING: $t"; status=1; }
done
exit "$status"

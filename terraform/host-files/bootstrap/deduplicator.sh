#!/bin/bash
# First-boot setup of the deduplicator host (run once by cloud-init; safe to re-run).
# The RDS master password is written only to /etc/kalshi/migrator.pgpass (0600, kalshi), which
# the migrator needs; the deduplicator's and analyst's passwords go only into PostgreSQL.
set -euo pipefail
# Written by cloud-init from terraform/host-files/templates/bootstrap-*.env.tftpl.
# shellcheck source=/dev/null
. /etc/kalshi/bootstrap.env
export AWS_DEFAULT_REGION DEBIAN_FRONTEND=noninteractive
log() { echo "kalshi-bootstrap: $*"; }

id kalshi >/dev/null 2>&1 || useradd --system --home-dir /var/lib/kalshi --shell /usr/sbin/nologin kalshi
install -d -o kalshi -g kalshi -m 0750 /var/lib/kalshi
chgrp kalshi /etc/kalshi/*.yaml /etc/kalshi/*.env && chmod 0640 /etc/kalshi/*.yaml /etc/kalshi/*.env
# node exporter's textfile collector picks up the export's metrics
install -d -o kalshi -g kalshi -m 0755 /var/lib/prometheus/node-exporter

secret() { aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text; }

master="$(secret "$RDS_MASTER_SECRET")"
umask 077
printf '%s:%s:%s:%s:%s\n' "$RDS_HOST" "$RDS_PORT" "$RDS_DB" "$RDS_ADMIN_USER" "${master//:/\\:}" >/etc/kalshi/migrator.pgpass
chown kalshi:kalshi /etc/kalshi/migrator.pgpass
umask 022

# Wait for RDS, then make sure the deduplicator and analyst login roles exist with a password.
export PGPASSFILE=/etc/kalshi/migrator.pgpass PGSSLMODE=require
for _ in $(seq 1 60); do
    pg_isready -q -h "$RDS_HOST" -p "$RDS_PORT" && break
    sleep 10
done
psql_admin() { psql -v ON_ERROR_STOP=1 -q -h "$RDS_HOST" -p "$RDS_PORT" -U "$RDS_ADMIN_USER" -d "$RDS_DB"; }
psql_admin <<'SQL'
SELECT 'CREATE ROLE deduplicator LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'deduplicator')\gexec
SELECT 'CREATE ROLE analyst LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analyst')\gexec
SQL
set_password() { # role secret-name
    local pw
    pw="$(secret "$2")"
    printf "ALTER ROLE %s PASSWORD %s;\n" "$1" "'${pw//\'/\'\'}'" | psql_admin
}
set_password deduplicator "$DEDUPLICATOR_DB_SECRET"
set_password analyst "$ANALYST_DB_SECRET"

python3 -m venv /opt/kalshi-data/.venv
/opt/kalshi-data/.venv/bin/pip install -q --upgrade pip
/opt/kalshi-data/.venv/bin/pip install -q "$KALSHI_DATA_PACKAGE"
systemctl daemon-reload
systemctl enable --now prometheus-node-exporter
systemctl enable kalshi-migrator.service kalshi-deduplicator.service kalshi-export.timer
systemctl start kalshi-migrator.service
systemctl start kalshi-deduplicator.service kalshi-export.timer
log "deduplicator bootstrapped"

#!/bin/bash
# First-boot setup of a gatherer host (run once by cloud-init; safe to re-run).
# Reads /etc/kalshi/bootstrap.env; passwords come from Secrets Manager and go only into
# PostgreSQL (ALTER ROLE over the local socket), never onto disk.
set -euo pipefail
# Written by cloud-init from terraform/host-files/templates/bootstrap-*.env.tftpl.
# shellcheck source=/dev/null
. /etc/kalshi/bootstrap.env
export AWS_DEFAULT_REGION DEBIAN_FRONTEND=noninteractive
log() { echo "kalshi-bootstrap: $*"; }

# 1. kalshi user and install prefix
id kalshi >/dev/null 2>&1 || useradd --system --home-dir /var/lib/kalshi --shell /usr/sbin/nologin kalshi
install -d -o kalshi -g kalshi -m 0750 /var/lib/kalshi
chgrp kalshi /etc/kalshi/*.yaml /etc/kalshi/*.env && chmod 0640 /etc/kalshi/*.yaml /etc/kalshi/*.env

# 2. data volume for PostgreSQL: the first disk that is neither the root disk nor partitioned
root_disk="/dev/$(lsblk -no PKNAME "$(findmnt -no SOURCE /)")"
data_disk=""
for _ in $(seq 1 60); do
    data_disk="$(lsblk -dnpo NAME,TYPE | awk '$2 == "disk" {print $1}' | grep -vx "$root_disk" | head -n1 || true)"
    [ -n "$data_disk" ] && break
    sleep 5
done
[ -n "$data_disk" ] || { log "no data volume attached"; exit 1; }
blkid "$data_disk" >/dev/null 2>&1 || mkfs.ext4 -q -L kalshi-pgdata "$data_disk"
install -d /var/lib/postgresql
grep -q 'LABEL=kalshi-pgdata' /etc/fstab || echo 'LABEL=kalshi-pgdata /var/lib/postgresql ext4 defaults,noatime,nofail 0 2' >>/etc/fstab
mountpoint -q /var/lib/postgresql || mount /var/lib/postgresql

# 3. PostgreSQL from PGDG; TimescaleDB from Timescale's repository when it has a build
# shellcheck source=/dev/null
codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
install -d /usr/share/keyrings
curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc | gpg --dearmor --yes -o /usr/share/keyrings/pgdg.gpg
echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt ${codename}-pgdg main" >/etc/apt/sources.list.d/pgdg.list
if curl -fsSL https://packagecloud.io/timescale/timescaledb/gpgkey | gpg --dearmor --yes -o /usr/share/keyrings/timescaledb.gpg; then
    echo "deb [signed-by=/usr/share/keyrings/timescaledb.gpg] https://packagecloud.io/timescale/timescaledb/debian/ ${codename} main" >/etc/apt/sources.list.d/timescaledb.list
fi
apt-get update -q
apt-get install -y -q "postgresql-${PG_VERSION}"
timescale=0
if apt-get install -y -q "timescaledb-2-postgresql-${PG_VERSION}"; then timescale=1; else
    log "TimescaleDB not installable: using plain PostgreSQL partitions"; fi

conf="/etc/postgresql/${PG_VERSION}/main"
mem_kb="$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
cat >"$conf/conf.d/kalshi.conf" <<CONF
listen_addresses = '*'
ssl = on
max_connections = 200
shared_buffers = $((mem_kb / 4 / 1024))MB
effective_cache_size = $((mem_kb / 2 / 1024))MB
maintenance_work_mem = 1GB
wal_compression = on
max_wal_size = 16GB
checkpoint_timeout = 15min
synchronous_commit = on
$( [ "$timescale" = 1 ] && echo "shared_preload_libraries = 'timescaledb'" )
CONF
hba="$conf/pg_hba.conf"
if ! grep -q kalshi-data "$hba"; then
    {
        echo "# kalshi-data"
        echo "local   kalshi_ts  kalshi                              peer"
        echo "local   kalshi_ts  gatherer                            scram-sha-256"
        echo "hostssl kalshi_ts  dedup_reader  ${DEDUP_READER_NETWORK}  scram-sha-256"
        cat "$hba"
    } >"$hba.new" && mv "$hba.new" "$hba"
fi
systemctl restart "postgresql@${PG_VERSION}-main"

# 4. database, owner role (peer-authenticated OS user kalshi), login roles with passwords
runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q <<'SQL'
SELECT 'CREATE ROLE kalshi LOGIN CREATEROLE' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kalshi')\gexec
SELECT 'CREATE DATABASE kalshi_ts OWNER kalshi' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'kalshi_ts')\gexec
SELECT 'CREATE ROLE gatherer LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gatherer')\gexec
SELECT 'CREATE ROLE dedup_reader LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dedup_reader')\gexec
SQL
[ "$timescale" = 1 ] && runuser -u postgres -- psql -q -d kalshi_ts -c 'CREATE EXTENSION IF NOT EXISTS timescaledb'
set_password() { # role secret-name
    local pw
    pw="$(aws secretsmanager get-secret-value --secret-id "$2" --query SecretString --output text)"
    printf "ALTER ROLE %s PASSWORD %s;\n" "$1" "'${pw//\'/\'\'}'" | runuser -u postgres -- psql -q -v ON_ERROR_STOP=1
}
set_password gatherer "$GATHERER_SECRET"
set_password dedup_reader "$DEDUP_READER_SECRET"

# 5. kalshi-data package and units
python3 -m venv /opt/kalshi-data/.venv
/opt/kalshi-data/.venv/bin/pip install -q --upgrade pip
/opt/kalshi-data/.venv/bin/pip install -q "$KALSHI_DATA_PACKAGE"
systemctl daemon-reload
systemctl enable --now prometheus-node-exporter
systemctl enable kalshi-migrator.service kalshi-gatherer.service
systemctl start kalshi-migrator.service
systemctl start kalshi-gatherer.service
log "gatherer ${GATHERER_ID} bootstrapped (timescaledb=${timescale})"

# Every file terraform puts on a host, rendered with templatefile() from plain values.
#
#   gatherer-N:    /etc/kalshi/{gatherer.yaml, gatherer.env, migrator.env, bootstrap.env},
#                  kalshi-gatherer.service, kalshi-migrator.service, /usr/local/sbin/kalshi-bootstrap
#   deduplicator:  /etc/kalshi/{deduplicator.yaml, deduplicator.env, export.yaml, export.env,
#                  migrator.env, bootstrap.env}, kalshi-{deduplicator,migrator,export}.service,
#                  kalshi-export.timer, /usr/local/sbin/kalshi-bootstrap
#
# The units come verbatim from ../../systemd/ and the bootstrap scripts from bootstrap/; the rest
# from templates/. No file holds a secret: configs name them in Secrets Manager.

locals {
  secret_path  = "${var.project}/${var.environment}"
  gatherer_ids = [for i in range(var.gatherer_count) : "gatherer-${i + 1}"]
  systemd_dir  = "${path.module}/../../systemd"
  gatherer_db  = "kalshi_ts"

  # Secrets Manager names (operations.md); the root module creates secrets under the same names.
  secret_names = merge(
    { for s in ["rds-master-password", "gatherer-db-password", "dedup-reader-password",
    "deduplicator-db-password", "analyst-password"] : s => "${local.secret_path}/${s}" },
    { for i, id in local.gatherer_ids : "kalshi-api-key-${i + 1}" => "${local.secret_path}/kalshi-api-key-${i + 1}" },
    { for i, id in local.gatherer_ids : "admin-token-${i + 1}" => "${local.secret_path}/admin-token-${i + 1}" },
  )

  # Kalshi's recommended hosts: REST and WebSocket on separate dedicated hosts
  # (docs.kalshi.com/getting_started/api_environments; the shared api.elections.kalshi.com and
  # demo-api.kalshi.co hosts still work).
  kalshi_urls = {
    prod = {
      rest = "https://external-api.kalshi.com/trade-api/v2"
      ws   = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
    }
    demo = {
      rest = "https://external-api.demo.kalshi.co/trade-api/v2"
      ws   = "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"
    }
  }

  # The local PostgreSQL socket of a gatherer host (Debian's postgresql package).
  pg_socket_dir = "/var/run/postgresql"

  common = {
    aws_region       = var.aws_region
    package          = var.kalshi_data_package
    postgres_version = var.postgres_major_version
    ports            = var.ports
    gatherer_db      = local.gatherer_db
    pg_socket_dir    = local.pg_socket_dir
    secrets          = local.secret_names
  }
  # Only the deduplicator's files name production: gatherers never wait for RDS to exist.
  production = merge(local.common, {
    rds_host       = var.rds_host
    rds_port       = var.rds_port
    rds_db         = var.rds_db
    rds_admin_user = var.rds_admin_user
  })

  gatherer_files = [
    for i, id in local.gatherer_ids : {
      "/etc/kalshi/gatherer.yaml" = templatefile("${path.module}/templates/gatherer.yaml.tftpl", merge(local.common, {
        gatherer_id = id
        kalshi_env  = var.kalshi_env
        rest_url    = local.kalshi_urls[var.kalshi_env].rest
        ws_url      = local.kalshi_urls[var.kalshi_env].ws
        n           = i + 1
      }))
      "/etc/kalshi/gatherer.env"                    = templatefile("${path.module}/templates/service.env.tftpl", local.common)
      "/etc/kalshi/migrator.env"                    = templatefile("${path.module}/templates/migrator-gatherer.env.tftpl", local.common)
      "/etc/kalshi/bootstrap.env"                   = templatefile("${path.module}/templates/bootstrap-gatherer.env.tftpl", merge(local.common, { gatherer_id = id, dedup_reader_network = var.vpc_cidr }))
      "/etc/systemd/system/kalshi-gatherer.service" = file("${local.systemd_dir}/kalshi-gatherer.service")
      "/etc/systemd/system/kalshi-migrator.service" = file("${local.systemd_dir}/kalshi-migrator.service")
      "/usr/local/sbin/kalshi-bootstrap"            = file("${path.module}/bootstrap/gatherer.sh")
    }
  ]

  deduplicator_files = {
    "/etc/kalshi/deduplicator.yaml" = templatefile("${path.module}/templates/deduplicator.yaml.tftpl", merge(local.production, {
      gatherers = [for id in local.gatherer_ids : { id = id, host = "${id}.${var.private_dns_zone}" }]
    }))
    "/etc/kalshi/deduplicator.env"                    = templatefile("${path.module}/templates/service.env.tftpl", local.common)
    "/etc/kalshi/export.yaml"                         = templatefile("${path.module}/templates/export.yaml.tftpl", merge(local.production, { archive_bucket = var.archive_bucket }))
    "/etc/kalshi/export.env"                          = templatefile("${path.module}/templates/service.env.tftpl", local.common)
    "/etc/kalshi/migrator.env"                        = templatefile("${path.module}/templates/migrator-production.env.tftpl", local.production)
    "/etc/kalshi/bootstrap.env"                       = templatefile("${path.module}/templates/bootstrap-deduplicator.env.tftpl", local.production)
    "/etc/systemd/system/kalshi-deduplicator.service" = file("${local.systemd_dir}/kalshi-deduplicator.service")
    "/etc/systemd/system/kalshi-migrator.service"     = file("${local.systemd_dir}/kalshi-migrator.service")
    "/etc/systemd/system/kalshi-export.service"       = file("${local.systemd_dir}/kalshi-export.service")
    "/etc/systemd/system/kalshi-export.timer"         = file("${local.systemd_dir}/kalshi-export.timer")
    "/usr/local/sbin/kalshi-bootstrap"                = file("${path.module}/bootstrap/deduplicator.sh")
  }

  # Debian packages cloud-init installs before the bootstrap runs (awscli: secrets into
  # PostgreSQL; jq/curl: the runbook's checks; postgresql-client: the runbook's psql).
  gatherer_packages     = ["ca-certificates", "curl", "gnupg", "jq", "awscli", "python3-venv", "prometheus-node-exporter"]
  deduplicator_packages = ["ca-certificates", "curl", "jq", "awscli", "python3-venv", "postgresql-client", "prometheus-node-exporter"]
}

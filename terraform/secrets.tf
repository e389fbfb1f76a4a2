# Secrets Manager entries, named <project>/<environment>/<name> (operations.md); the rendered
# configs (hosts.tf) name the same entries.
# Database passwords and the gatherers' admin API tokens are generated here (they live in the
# state: use an encrypted backend). Kalshi API keys are never known to terraform: each
# kalshi-api-key-N secret is created empty and an operator uploads one JSON document
# {"key_id": ..., "private_key_pem": ...} into it (docs/runbook.md, "Deploy and change"); a key
# rotation is one more upload and a gatherer restart, no terraform change.

locals {
  generated_password_secrets = {
    rds-master-password      = "production RDS master user (migrations only)"
    gatherer-db-password     = "role gatherer on each gatherer's local database"
    dedup-reader-password    = "role dedup_reader on each gatherer's local database"
    deduplicator-db-password = "role deduplicator on production"
    analyst-password         = "role analyst on production (read-only: the archive export, analysts)"
  }
  # A disposable environment deletes its secrets at once, so the next apply can reuse the names.
  secret_recovery_window = var.disposable ? 0 : var.secret_recovery_window_days
}

resource "random_password" "db" {
  for_each = local.generated_password_secrets

  length           = 40
  special          = true
  override_special = "-_.~"
}

resource "aws_secretsmanager_secret" "db" {
  for_each = local.generated_password_secrets

  name                    = "${local.secret_path}/${each.key}"
  description             = "kalshi-data: password of the ${each.value}"
  recovery_window_in_days = local.secret_recovery_window
}

resource "aws_secretsmanager_secret_version" "db" {
  for_each = local.generated_password_secrets

  secret_id     = aws_secretsmanager_secret.db[each.key].id
  secret_string = random_password.db[each.key].result
}

resource "aws_secretsmanager_secret" "kalshi_api_key" {
  count = var.gatherer_count

  name                    = "${local.secret_path}/kalshi-api-key-${count.index + 1}"
  description             = "kalshi-data: Kalshi API key of ${local.gatherer_ids[count.index]} as JSON {\"key_id\", \"private_key_pem\"}; uploaded by an operator"
  recovery_window_in_days = local.secret_recovery_window
}

# Bearer token of each gatherer's admin API (POST /admin/poll-market, /admin/resync on
# 127.0.0.1:8081). Its gatherer reads it at start; an operator reads it in an SSM session on that
# host (docs/runbook.md, "SequenceGapsDetected").
resource "random_password" "admin_token" {
  count = var.gatherer_count

  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "admin_token" {
  count = var.gatherer_count

  name                    = "${local.secret_path}/admin-token-${count.index + 1}"
  description             = "kalshi-data: admin API bearer token of ${local.gatherer_ids[count.index]}"
  recovery_window_in_days = local.secret_recovery_window
}

resource "aws_secretsmanager_secret_version" "admin_token" {
  count = var.gatherer_count

  secret_id     = aws_secretsmanager_secret.admin_token[count.index].id
  secret_string = random_password.admin_token[count.index].result
}

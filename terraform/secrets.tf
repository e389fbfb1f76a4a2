# Secrets Manager entries, named <project>/<environment>/<name> (operations.md).
# Database passwords are generated here (they live in the state: use an encrypted backend).
# Kalshi API private keys are never known to terraform: the secrets are created empty and an
# operator uploads each key (see docs/runbook.md, "Rotate or install a Kalshi API key").

locals {
  generated_password_secrets = {
    rds-master-password      = "production RDS master user (migrations only)"
    gatherer-db-password     = "role gatherer on each gatherer's local database"
    dedup-reader-password    = "role dedup_reader on each gatherer's local database"
    deduplicator-db-password = "role deduplicator on production"
  }
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
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "db" {
  for_each = local.generated_password_secrets

  secret_id     = aws_secretsmanager_secret.db[each.key].id
  secret_string = random_password.db[each.key].result
}

resource "aws_secretsmanager_secret" "kalshi_api_key" {
  count = var.gatherer_count

  name                    = "${local.secret_path}/kalshi-api-key-${count.index + 1}"
  description             = "kalshi-data: Kalshi API key id + PEM private key of ${local.gatherer_ids[count.index]}; uploaded by an operator"
  recovery_window_in_days = var.secret_recovery_window_days
}

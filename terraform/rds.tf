# Production PostgreSQL (kalshi_prod). Plain PostgreSQL: RDS has no TimescaleDB, and the schema
# uses native daily range partitions there (data-model.md).

resource "aws_db_subnet_group" "production" {
  name       = "${local.name}-production"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "production" {
  name   = "${local.name}-pg${var.rds_engine_version}"
  family = "postgres${var.rds_engine_version}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name         = "shared_preload_libraries"
    value        = "pg_stat_statements"
    apply_method = "pending-reboot"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "idle_in_transaction_session_timeout"
    value = "600000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "production" {
  identifier     = local.name
  engine         = "postgres"
  engine_version = var.rds_engine_version
  instance_class = var.rds_instance_class

  db_name  = local.production_db
  username = local.production_admin_user
  password = random_password.db["rds-master-password"].result
  port     = local.postgres_port

  allocated_storage     = var.rds_storage_size
  max_allocated_storage = var.rds_storage_size * 2
  storage_type          = "gp3"
  storage_encrypted     = true

  multi_az               = var.rds_multi_az
  db_subnet_group_name   = aws_db_subnet_group.production.name
  vpc_security_group_ids = [aws_security_group.rds.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.production.name

  backup_retention_period = var.rds_backup_retention_days
  backup_window           = "03:00-04:00"
  maintenance_window      = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot   = true
  # Teardown (docs/runbook.md, "Tear down"): production keeps a final snapshot and its automated
  # backups and is protected from deletion; a disposable environment keeps nothing.
  delete_automated_backups  = var.disposable
  deletion_protection       = var.rds_deletion_protection && !var.disposable
  skip_final_snapshot       = var.disposable
  final_snapshot_identifier = var.disposable ? null : "${local.name}-final"

  auto_minor_version_upgrade      = true
  allow_major_version_upgrade     = false
  performance_insights_enabled    = true
  enabled_cloudwatch_logs_exports = ["postgresql"]
  apply_immediately               = false
}

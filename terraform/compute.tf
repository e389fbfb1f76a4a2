# Three gatherers (t4g.2xlarge, each with a gp3 data volume for its local PostgreSQL/TimescaleDB)
# spread over the private subnets, and one deduplicator (t4g.xlarge). cloud-init installs the
# package, the systemd units of ../systemd/ and the configuration; see cloud-init/.

locals {
  gatherer_configs = [
    for i, id in local.gatherer_ids : yamlencode({
      gatherer_id = id
      kalshi = {
        env                = var.kalshi_env
        rest_url           = local.kalshi_urls[var.kalshi_env].rest
        ws_url             = local.kalshi_urls[var.kalshi_env].ws
        api_key_id         = length(var.kalshi_api_key_ids) > i ? var.kalshi_api_key_ids[i] : ""
        private_key_secret = aws_secretsmanager_secret.kalshi_api_key[i].name
      }
      database = {
        host            = "/var/run/postgresql"
        port            = local.postgres_port
        dbname          = "kalshi_ts"
        user            = "gatherer"
        password_secret = aws_secretsmanager_secret.db["gatherer-db-password"].name
      }
      health  = { host = "0.0.0.0", port = local.health_port }
      metrics = { host = "0.0.0.0", port = local.metrics_port }
      logging = { level = "INFO", format = "json" }
    })
  ]

  deduplicator_config = yamlencode({
    gatherers = [
      for i, id in local.gatherer_ids : {
        id              = id
        host            = aws_instance.gatherer[i].private_ip
        port            = local.postgres_port
        dbname          = "kalshi_ts"
        user            = "dedup_reader"
        password_secret = aws_secretsmanager_secret.db["dedup-reader-password"].name
      }
    ]
    production = {
      host            = aws_db_instance.production.address
      port            = aws_db_instance.production.port
      dbname          = aws_db_instance.production.db_name
      user            = "deduplicator"
      password_secret = aws_secretsmanager_secret.db["deduplicator-db-password"].name
    }
    health  = { host = "0.0.0.0", port = local.health_port }
    metrics = { host = "0.0.0.0", port = local.metrics_port }
    logging = { level = "INFO", format = "json" }
  })

  common_template_vars = {
    aws_region       = var.aws_region
    package          = var.kalshi_data_package
    migrator_unit    = file("${path.module}/../systemd/kalshi-migrator.service")
    postgres_version = var.postgres_major_version
  }
}

resource "aws_instance" "gatherer" {
  count = var.gatherer_count

  ami                    = local.ami_id
  instance_type          = var.gatherer_instance_type
  subnet_id              = aws_subnet.private[count.index % var.az_count].id
  vpc_security_group_ids = [aws_security_group.gatherer.id]
  iam_instance_profile   = aws_iam_instance_profile.gatherer[count.index].name
  ebs_optimized          = true
  monitoring             = true

  # t4g: unlimited CPU credits so bursts of 50,000 msg/s are never throttled.
  credit_specification {
    cpu_credits = "unlimited"
  }

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = 30
    encrypted             = true
    delete_on_termination = true
  }

  user_data_base64 = base64gzip(templatefile("${path.module}/cloud-init/gatherer.yaml.tftpl", merge(local.common_template_vars, {
    gatherer_id          = local.gatherer_ids[count.index]
    gatherer_config      = local.gatherer_configs[count.index]
    gatherer_unit        = file("${path.module}/../systemd/kalshi-gatherer.service")
    bootstrap_script     = file("${path.module}/cloud-init/bootstrap-gatherer.sh")
    gatherer_secret      = aws_secretsmanager_secret.db["gatherer-db-password"].name
    dedup_reader_secret  = aws_secretsmanager_secret.db["dedup-reader-password"].name
    dedup_reader_network = var.vpc_cidr
  })))

  tags = { Name = "${local.name}-${local.gatherer_ids[count.index]}", Role = "gatherer", GathererId = local.gatherer_ids[count.index] }

  lifecycle {
    # A newer AMI or a changed bootstrap must never replace a host that holds unmerged data.
    ignore_changes = [ami, user_data_base64]
  }
}

# The local database lives on its own volume, so the instance can be rebuilt without losing it.
resource "aws_ebs_volume" "gatherer_data" {
  count = var.gatherer_count

  availability_zone = aws_instance.gatherer[count.index].availability_zone
  type              = "gp3"
  size              = var.gatherer_volume_size
  iops              = var.gatherer_volume_iops
  throughput        = var.gatherer_volume_throughput
  encrypted         = true

  tags = { Name = "${local.name}-${local.gatherer_ids[count.index]}-pgdata" }
}

resource "aws_volume_attachment" "gatherer_data" {
  count = var.gatherer_count

  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.gatherer_data[count.index].id
  instance_id = aws_instance.gatherer[count.index].id
}

resource "aws_instance" "deduplicator" {
  ami                    = local.ami_id
  instance_type          = var.deduplicator_instance_type
  subnet_id              = aws_subnet.private[0].id
  vpc_security_group_ids = [aws_security_group.deduplicator.id]
  iam_instance_profile   = aws_iam_instance_profile.deduplicator.name
  ebs_optimized          = true
  monitoring             = true

  credit_specification {
    cpu_credits = "unlimited"
  }

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = 50
    encrypted             = true
    delete_on_termination = true
  }

  user_data_base64 = base64gzip(templatefile("${path.module}/cloud-init/deduplicator.yaml.tftpl", merge(local.common_template_vars, {
    deduplicator_config    = local.deduplicator_config
    deduplicator_unit      = file("${path.module}/../systemd/kalshi-deduplicator.service")
    export_service         = file("${path.module}/../systemd/kalshi-export.service")
    export_timer           = file("${path.module}/../systemd/kalshi-export.timer")
    bootstrap_script       = file("${path.module}/cloud-init/bootstrap-deduplicator.sh")
    archive_bucket         = aws_s3_bucket.archive.bucket
    rds_host               = aws_db_instance.production.address
    rds_port               = aws_db_instance.production.port
    rds_db                 = aws_db_instance.production.db_name
    rds_admin_user         = aws_db_instance.production.username
    rds_master_secret      = aws_secretsmanager_secret.db["rds-master-password"].name
    deduplicator_db_secret = aws_secretsmanager_secret.db["deduplicator-db-password"].name
  })))

  # Stateless apart from sync_cursors in production: a changed config (e.g. a new gatherer)
  # replaces the host, whose cloud-init then writes the new deduplicator.yaml.
  user_data_replace_on_change = true

  tags = { Name = "${local.name}-deduplicator", Role = "deduplicator" }

  lifecycle {
    ignore_changes = [ami]
  }
}

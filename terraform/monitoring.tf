# Optional monitoring host (monitoring_enabled = true): Prometheus, Alertmanager, node exporter and
# Grafana on one instance in a private subnet, provisioned from this repository's files
# (alerts/prometheus.yml, the rule files, alerts/alertmanager.yml, grafana/), scraping every
# gatherer and the deduplicator over the private network. Its UIs (Grafana 3000, Prometheus 9090,
# Alertmanager 9093) are reachable only from monitoring_cidrs.
#
# ./monitoring renders every file (no provider; tests/ops/test_monitoring_host.py renders it
# offline); the files go to a private bucket because they exceed EC2's 16 KiB of user data, and
# the host's bootstrap syncs them. Alerting secrets: put the PagerDuty routing key and the Slack
# webhook URL into <project>/<environment>/alertmanager-pagerduty-routing-key and
# .../alertmanager-slack-webhook-url, then re-run /usr/local/sbin/kalshi-monitoring-bootstrap.

locals {
  monitoring_count    = var.monitoring_enabled ? 1 : 0
  monitoring_ui_ports = { grafana = 3000, prometheus = 9090, alertmanager = 9093 }
  monitoring_secrets = {
    pagerduty = "${local.secret_path}/alertmanager-pagerduty-routing-key"
    slack     = "${local.secret_path}/alertmanager-slack-webhook-url"
    grafana   = "${local.secret_path}/grafana-admin-password"
  }
  # What the monitoring host scrapes on the fleet's hosts.
  scraped_ports = { metrics = local.metrics_port, node_exporter = local.node_exporter_port }
}

module "monitoring_files" {
  source = "./monitoring"
  count  = local.monitoring_count

  aws_region           = var.aws_region
  gatherer_ips         = aws_instance.gatherer[*].private_ip
  deduplicator_ip      = aws_instance.deduplicator.private_ip
  metrics_port         = local.metrics_port
  node_exporter_port   = local.node_exporter_port
  config_bucket        = aws_s3_bucket.monitoring[0].bucket
  pagerduty_secret     = local.monitoring_secrets.pagerduty
  slack_secret         = local.monitoring_secrets.slack
  grafana_admin_secret = local.monitoring_secrets.grafana
  prometheus_retention = var.prometheus_retention
}

# --- the rendered files ---------------------------------------------------------------------

resource "aws_s3_bucket" "monitoring" {
  count = local.monitoring_count

  bucket_prefix = "${local.name}-monitoring-"
  force_destroy = true # configuration only; the repository is its source

  tags = { Name = "${local.name}-monitoring-config" }
}

resource "aws_s3_bucket_public_access_block" "monitoring" {
  count = local.monitoring_count

  bucket                  = aws_s3_bucket.monitoring[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "monitoring" {
  count = local.monitoring_count

  bucket = aws_s3_bucket.monitoring[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_object" "monitoring" {
  for_each = toset(var.monitoring_enabled ? keys(module.monitoring_files[0].files) : [])

  bucket  = aws_s3_bucket.monitoring[0].id
  key     = trimprefix(each.key, "/")
  content = module.monitoring_files[0].files[each.key]
}

# --- secrets ----------------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "monitoring" {
  for_each = var.monitoring_enabled ? local.monitoring_secrets : {}

  name                    = each.value
  description             = "kalshi-data monitoring: ${each.key}"
  recovery_window_in_days = local.secret_recovery_window
}

resource "random_password" "grafana_admin" {
  count = local.monitoring_count

  length  = 32
  special = false
}

resource "aws_secretsmanager_secret_version" "grafana_admin" {
  count = local.monitoring_count

  secret_id     = aws_secretsmanager_secret.monitoring["grafana"].id
  secret_string = random_password.grafana_admin[0].result
}

# --- IAM: read its bucket and its three secrets, Session Manager --------------------------------

resource "aws_iam_role" "monitoring" {
  count = local.monitoring_count

  name               = "${local.name}-monitoring"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

data "aws_iam_policy_document" "monitoring" {
  count = local.monitoring_count

  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [for s in aws_secretsmanager_secret.monitoring : s.arn]
  }

  statement {
    sid       = "ReadConfigBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.monitoring[0].arn]
  }

  statement {
    sid       = "ReadConfigObjects"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.monitoring[0].arn}/*"]
  }
}

resource "aws_iam_role_policy" "monitoring" {
  count = local.monitoring_count

  name   = "monitoring"
  role   = aws_iam_role.monitoring[0].id
  policy = data.aws_iam_policy_document.monitoring[0].json
}

resource "aws_iam_role_policy_attachment" "monitoring_ssm" {
  count = local.monitoring_count

  role       = aws_iam_role.monitoring[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "monitoring" {
  count = local.monitoring_count

  name = "${local.name}-monitoring"
  role = aws_iam_role.monitoring[0].name
}

# --- network: UIs from monitoring_cidrs only; scrapes to the fleet over the private network -----

resource "aws_security_group" "monitoring" {
  count = local.monitoring_count

  name        = "${local.name}-monitoring"
  description = "kalshi-data monitoring host"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-monitoring" }
}

resource "aws_vpc_security_group_ingress_rule" "monitoring_ui" {
  for_each = var.monitoring_enabled ? {
    for pair in setproduct(keys(local.monitoring_ui_ports), var.monitoring_cidrs) : "${pair[0]}-${pair[1]}" => {
      port = local.monitoring_ui_ports[pair[0]]
      cidr = pair[1]
      name = pair[0]
    }
  } : {}

  security_group_id = aws_security_group.monitoring[0].id
  description       = "${each.value.name} from monitoring_cidrs"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_egress_rule" "monitoring_https" {
  count = local.monitoring_count

  security_group_id = aws_security_group.monitoring[0].id
  description       = "AWS APIs, PagerDuty, Slack, Grafana's APT repository"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "monitoring_http" {
  count = local.monitoring_count

  security_group_id = aws_security_group.monitoring[0].id
  description       = "Debian package mirrors (apt verifies signatures)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

locals {
  # {"<role>-<port name>" => {...}}: each fleet group and port the monitoring host scrapes.
  monitoring_scrapes = var.monitoring_enabled ? merge([
    for role, sg in { gatherer = aws_security_group.gatherer.id, deduplicator = aws_security_group.deduplicator.id } : {
      for name, port in local.scraped_ports : "${role}-${name}" => { sg = sg, port = port, role = role, name = name }
    }
  ]...) : {}
}

resource "aws_vpc_security_group_egress_rule" "monitoring_scrape" {
  for_each = local.monitoring_scrapes

  security_group_id            = aws_security_group.monitoring[0].id
  description                  = "scrape ${each.value.name} of the ${each.value.role}s"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.sg
}

resource "aws_vpc_security_group_ingress_rule" "scraped_by_monitoring" {
  for_each = local.monitoring_scrapes

  security_group_id            = each.value.sg
  description                  = "${each.value.name} scraped by the monitoring host"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.monitoring[0].id
}

# --- the host ---------------------------------------------------------------------------------

resource "aws_instance" "monitoring" {
  count = local.monitoring_count

  ami                    = local.ami_id
  instance_type          = var.monitoring_instance_type
  subnet_id              = aws_subnet.private[0].id
  vpc_security_group_ids = [aws_security_group.monitoring[0].id]
  iam_instance_profile   = aws_iam_instance_profile.monitoring[0].name
  monitoring             = true

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.monitoring_volume_size
    encrypted             = true
    delete_on_termination = true
  }

  user_data_base64 = base64gzip(module.monitoring_files[0].cloud_config)

  tags = { Name = "${local.name}-monitoring", Role = "monitoring" }

  # The bootstrap pulls the files at first boot; later changes: re-run it (see the top).
  depends_on = [aws_s3_object.monitoring, aws_secretsmanager_secret_version.grafana_admin]

  lifecycle {
    # Prometheus' history lives on this host: a newer AMI must not replace it.
    ignore_changes = [ami, user_data_base64]
  }
}

output "monitoring_ip" {
  description = "Private IP of the monitoring host (null unless monitoring_enabled)."
  value       = var.monitoring_enabled ? aws_instance.monitoring[0].private_ip : null
}

output "monitoring_urls" {
  description = "Grafana, Prometheus and Alertmanager on the monitoring host (reachable from monitoring_cidrs)."
  value = var.monitoring_enabled ? {
    for name, port in local.monitoring_ui_ports : name => "http://${aws_instance.monitoring[0].private_ip}:${port}"
  } : null
}

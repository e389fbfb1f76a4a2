# Security groups, least privilege:
#   gatherer:      5432 only from the deduplicator; 8080/9090/9100 only from monitoring_cidrs
#   deduplicator:  8080/9090/9100 only from monitoring_cidrs
#   rds:           5432 only from the deduplicator and the reconcile group
#   reconcile:     attached to gatherer-1 only (kalshi-reconcile.service); no ingress, egress
#                  5432 to RDS only
# No SSH anywhere: operators use SSM Session Manager (see iam.tf).
# Egress: HTTPS (Kalshi, AWS APIs, package mirrors) and HTTP (Debian mirrors, signed), plus
# PostgreSQL to exactly the groups it must reach.

resource "aws_security_group" "gatherer" {
  name        = "${local.name}-gatherer"
  description = "kalshi-data gatherers"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-gatherer" }
}

resource "aws_security_group" "deduplicator" {
  name        = "${local.name}-deduplicator"
  description = "kalshi-data deduplicator"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-deduplicator" }
}

resource "aws_security_group" "reconcile" {
  name        = "${local.name}-reconcile"
  description = "kalshi-data daily reconciliation (gatherer-1 only)"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-reconcile" }
}

resource "aws_security_group" "rds" {
  name        = "${local.name}-rds"
  description = "kalshi-data production PostgreSQL"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-rds" }
}

locals {
  monitoring_ports = {
    health        = local.health_port
    metrics       = local.metrics_port
    node_exporter = local.node_exporter_port
  }

  # {"<role>-<port name>-<cidr>" => {...}} for every monitored group, port and monitoring CIDR.
  monitoring_rules = merge([
    for role, sg in { gatherer = aws_security_group.gatherer.id, deduplicator = aws_security_group.deduplicator.id } : {
      for pair in setproduct(keys(local.monitoring_ports), var.monitoring_cidrs) :
      "${role}-${pair[0]}-${pair[1]}" => {
        security_group_id = sg
        port              = local.monitoring_ports[pair[0]]
        cidr              = pair[1]
        description       = "${pair[0]} scrape from monitoring"
      }
    }
  ]...)
}

# --- ingress ---------------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "gatherer_postgres_from_deduplicator" {
  security_group_id            = aws_security_group.gatherer.id
  description                  = "local PostgreSQL, read by the deduplicator only"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.deduplicator.id
}

resource "aws_vpc_security_group_ingress_rule" "rds_postgres_from_deduplicator" {
  security_group_id            = aws_security_group.rds.id
  description                  = "production PostgreSQL, written by the deduplicator only"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.deduplicator.id
}

resource "aws_vpc_security_group_ingress_rule" "rds_postgres_from_reconcile" {
  security_group_id            = aws_security_group.rds.id
  description                  = "production PostgreSQL, reconcile_runs written by gatherer-1's reconciliation"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.reconcile.id
}

resource "aws_vpc_security_group_ingress_rule" "monitoring" {
  for_each = local.monitoring_rules

  security_group_id = each.value.security_group_id
  description       = each.value.description
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

# --- egress ----------------------------------------------------------------------------------

resource "aws_vpc_security_group_egress_rule" "gatherer_https" {
  security_group_id = aws_security_group.gatherer.id
  description       = "Kalshi REST/WebSocket, AWS APIs, package mirrors"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "gatherer_http" {
  security_group_id = aws_security_group.gatherer.id
  description       = "Debian package mirrors (apt verifies signatures)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "deduplicator_https" {
  security_group_id = aws_security_group.deduplicator.id
  description       = "AWS APIs (Secrets Manager, S3), package mirrors"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "deduplicator_http" {
  security_group_id = aws_security_group.deduplicator.id
  description       = "Debian package mirrors (apt verifies signatures)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "deduplicator_to_gatherers" {
  security_group_id            = aws_security_group.deduplicator.id
  description                  = "pull from the gatherer databases"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.gatherer.id
}

resource "aws_vpc_security_group_egress_rule" "deduplicator_to_rds" {
  security_group_id            = aws_security_group.deduplicator.id
  description                  = "merge into production"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.rds.id
}

resource "aws_vpc_security_group_egress_rule" "reconcile_to_rds" {
  security_group_id            = aws_security_group.reconcile.id
  description                  = "compare with production, record reconcile_runs"
  ip_protocol                  = "tcp"
  from_port                    = local.postgres_port
  to_port                      = local.postgres_port
  referenced_security_group_id = aws_security_group.rds.id
}

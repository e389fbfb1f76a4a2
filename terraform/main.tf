locals {
  name         = "${var.project}-${var.environment}"
  secret_path  = "${var.project}/${var.environment}"
  azs          = slice(data.aws_availability_zones.available.names, 0, var.az_count)
  gatherer_ids = [for i in range(var.gatherer_count) : "gatherer-${i + 1}"]
  ami_id       = var.ami_id != "" ? var.ami_id : data.aws_ami.debian.id

  # Production database and its master user (rds.tf); the migrator connects as that user.
  production_db         = "kalshi_prod"
  production_admin_user = "kalshi_admin"

  # Ports every kalshi process serves (observability.md); the admin API listens on loopback.
  health_port        = 8080
  metrics_port       = 9090
  admin_port         = 8081
  node_exporter_port = 9100
  postgres_port      = 5432
}

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Debian's official arm64 images (Graviton): Python 3.11, systemd 252, PostgreSQL from PGDG.
data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-12-arm64-*"]
  }

  filter {
    name   = "architecture"
    values = ["arm64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

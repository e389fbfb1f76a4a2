locals {
  name         = "${var.project}-${var.environment}"
  secret_path  = "${var.project}/${var.environment}"
  azs          = slice(data.aws_availability_zones.available.names, 0, var.az_count)
  gatherer_ids = [for i in range(var.gatherer_count) : "gatherer-${i + 1}"]
  ami_id       = var.ami_id != "" ? var.ami_id : data.aws_ami.debian.id

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

  # Ports every kalshi process serves (observability.md).
  health_port        = 8080
  metrics_port       = 9090
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

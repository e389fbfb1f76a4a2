# Variables read from the runbook's prod.tfvars (see examples/prod.tfvars.example).

variable "project" {
  description = "Project name: prefix of every resource and of the Secrets Manager names (<project>/<environment>/...)."
  type        = string
  default     = "kalshi"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.project))
    error_message = "project must be 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (prod, staging, ...)."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be 2-16 lowercase letters, digits or dashes."
  }
}

variable "aws_region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; split into one public and one private /20 (or smaller) subnet per AZ."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be a valid IPv4 CIDR block."
  }
}

variable "az_count" {
  description = "Number of availability zones to spread subnets (and gatherers) over."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6
    error_message = "az_count must be between 2 (RDS needs two) and 6."
  }
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per AZ (survives an AZ outage) instead of a single shared one."
  type        = bool
  default     = true
}

variable "gatherer_count" {
  description = "Number of gatherer hosts, each with its own Kalshi API key."
  type        = number
  default     = 3

  validation {
    condition     = var.gatherer_count >= 1 && var.gatherer_count <= 9
    error_message = "gatherer_count must be between 1 and 9."
  }
}

variable "gatherer_instance_type" {
  description = "EC2 type of a gatherer (Graviton; the process and its local PostgreSQL share it)."
  type        = string
  default     = "t4g.2xlarge"
}

variable "deduplicator_instance_type" {
  description = "EC2 type of the deduplicator host."
  type        = string
  default     = "t4g.xlarge"
}

variable "rds_instance_class" {
  description = "RDS instance class of the production database."
  type        = string
  default     = "db.t4g.large"
}

variable "gatherer_volume_size" {
  description = "Size in GiB of each gatherer's gp3 data volume (local PostgreSQL/TimescaleDB)."
  type        = number
  default     = 200

  validation {
    condition     = var.gatherer_volume_size >= 50
    error_message = "gatherer_volume_size must be at least 50 GiB."
  }
}

variable "gatherer_volume_iops" {
  description = "Provisioned IOPS of each gatherer gp3 data volume (3000 is the gp3 baseline)."
  type        = number
  default     = 6000
}

variable "gatherer_volume_throughput" {
  description = "Provisioned throughput (MiB/s) of each gatherer gp3 data volume (125 is the gp3 baseline)."
  type        = number
  default     = 250
}

variable "rds_storage_size" {
  description = "Allocated storage in GiB of the production RDS instance (gp3, autoscaling up to twice this)."
  type        = number
  default     = 500

  validation {
    condition     = var.rds_storage_size >= 20
    error_message = "rds_storage_size must be at least 20 GiB."
  }
}

variable "rds_engine_version" {
  description = "PostgreSQL major version for RDS (the schema needs >= 14)."
  type        = string
  default     = "16"
}

variable "rds_multi_az" {
  description = "Run production RDS Multi-AZ (switch off for a cheaper staging)."
  type        = bool
  default     = true
}

variable "rds_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 14

  validation {
    condition     = var.rds_backup_retention_days >= 1 && var.rds_backup_retention_days <= 35
    error_message = "rds_backup_retention_days must be between 1 and 35 (0 would disable backups)."
  }
}

variable "rds_deletion_protection" {
  description = "Protect the production database from deletion."
  type        = bool
  default     = true
}

variable "postgres_major_version" {
  description = "PostgreSQL major version installed on the gatherers by cloud-init."
  type        = string
  default     = "16"
}

variable "monitoring_cidrs" {
  description = "CIDRs of the Prometheus/Grafana hosts allowed to reach /metrics (9090), /health (8080) and node exporter (9100). Required: without one, nothing can watch the fleet."
  type        = list(string)

  validation {
    condition     = length(var.monitoring_cidrs) > 0
    error_message = "monitoring_cidrs must list at least one CIDR (your Prometheus/Grafana hosts), or no one can reach /health and /metrics."
  }

  validation {
    condition     = alltrue([for c in var.monitoring_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "monitoring_cidrs must be valid IPv4 CIDRs and never 0.0.0.0/0."
  }
}

variable "kalshi_env" {
  description = "Kalshi environment the gatherers connect to: prod or demo."
  type        = string
  default     = "prod"

  validation {
    condition     = contains(["prod", "demo"], var.kalshi_env)
    error_message = "kalshi_env must be prod or demo."
  }
}

variable "kalshi_data_package" {
  description = "pip requirement cloud-init installs into /opt/kalshi-data/.venv (a version pin or a wheel URL)."
  type        = string
  default     = "kalshi-data"
}

variable "ami_id" {
  description = "AMI for all hosts; empty selects the latest Debian 12 arm64 image."
  type        = string
  default     = ""
}

variable "archive_ia_after_days" {
  description = "Days after which archive objects move to S3 Standard-IA."
  type        = number
  default     = 30
}

variable "archive_glacier_after_days" {
  description = "Days after which archive objects move to S3 Glacier Instant Retrieval."
  type        = number
  default     = 180
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can still be restored."
  type        = number
  default     = 7
}

variable "private_dns_zone" {
  description = "Private Route 53 zone of the VPC: gatherer-1..N, deduplicator and production-rds resolve in it (and, through the DHCP search list, by their short names)."
  type        = string
  default     = "internal"
}

variable "disposable" {
  description = "A throwaway environment (staging, a rehearsal): no RDS deletion protection or final snapshot, a bucket that `terraform destroy` empties, secrets deleted without a recovery window. Never set it on production."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# --- monitoring host (monitoring.tf) ------------------------------------------------------------

variable "monitoring_enabled" {
  description = "Create the monitoring host: Prometheus, Alertmanager and Grafana provisioned from alerts/ and grafana/, reachable from monitoring_cidrs."
  type        = bool
  default     = false
}

variable "monitoring_instance_type" {
  description = "EC2 type of the monitoring host."
  type        = string
  default     = "t4g.medium"
}

variable "monitoring_volume_size" {
  description = "Size in GiB of the monitoring host's gp3 root volume (Prometheus' TSDB lives there)."
  type        = number
  default     = 50

  validation {
    condition     = var.monitoring_volume_size >= 20
    error_message = "monitoring_volume_size must be at least 20 GiB."
  }
}

variable "prometheus_retention" {
  description = "How long the monitoring host's Prometheus keeps samples."
  type        = string
  default     = "30d"

  validation {
    condition     = can(regex("^[0-9]+(h|d|w|y)$", var.prometheus_retention))
    error_message = "prometheus_retention must be a Prometheus duration such as 30d."
  }
}

# --- Glue catalog over the archive (glue.tf) -----------------------------------------------------

variable "glue_catalog" {
  description = "Create a Glue Data Catalog database and tables (partition projection on date) over the Parquet archive, so Athena can query it (terraform/glue.tf)."
  type        = bool
  default     = false
}

variable "glue_archive_prefix" {
  description = "Key prefix of the archive inside the bucket; must equal archive.prefix of the kalshi-data export config."
  type        = string
  default     = ""
}

variable "glue_projection_start" {
  description = "First day (YYYY-MM-DD) the Glue tables' date projection covers."
  type        = string
  default     = "2026-01-01"
}

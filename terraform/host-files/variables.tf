# Plain values only: names, addresses, ports. The root module (../hosts.tf) passes its variables
# and the few attributes AWS assigns at apply time (RDS address, bucket name); a test passes the
# same from examples/prod.tfvars.example with stand-ins for those attributes and renders every
# file offline (tests/ops/test_host_files.py). This module declares no provider and creates no
# resource.

variable "project" {
  description = "Project name; secrets are named <project>/<environment>/<name>."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.project) != ""
    error_message = "project must not be empty."
  }
}

variable "environment" {
  description = "Environment name (prod, staging, ...)."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.environment) != ""
    error_message = "environment must not be empty."
  }
}

variable "aws_region" {
  description = "AWS region: AWS_DEFAULT_REGION of every kalshi process (Secrets Manager, S3)."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.aws_region) != ""
    error_message = "aws_region must not be empty."
  }
}

variable "gatherer_count" {
  description = "Number of gatherer hosts (gatherer-1..N)."
  type        = number
  nullable    = false
}

variable "kalshi_env" {
  description = "Kalshi environment the gatherers connect to: prod or demo."
  type        = string
  nullable    = false

  validation {
    condition     = contains(["prod", "demo"], var.kalshi_env)
    error_message = "kalshi_env must be prod or demo."
  }
}

variable "kalshi_data_package" {
  description = "pip requirement the bootstrap installs into /opt/kalshi-data/.venv."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.kalshi_data_package) != ""
    error_message = "kalshi_data_package must not be empty."
  }
}

variable "postgres_major_version" {
  description = "PostgreSQL major version of the gatherer-local databases."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.postgres_major_version) != ""
    error_message = "postgres_major_version must not be empty."
  }
}

variable "vpc_cidr" {
  description = "CIDR the deduplicator connects from (pg_hba.conf line for dedup_reader)."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.vpc_cidr) != ""
    error_message = "vpc_cidr must not be empty."
  }
}

variable "private_dns_zone" {
  description = "Private DNS zone holding gatherer-N, deduplicator and production-rds records."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.private_dns_zone) != ""
    error_message = "private_dns_zone must not be empty."
  }
}

variable "rds_host" {
  description = "Address (host name only) of the production PostgreSQL."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.rds_host) != ""
    error_message = "rds_host must not be empty."
  }
}

variable "rds_port" {
  description = "Port of the production PostgreSQL."
  type        = number
  nullable    = false
}

variable "rds_db" {
  description = "Database name on production."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.rds_db) != ""
    error_message = "rds_db must not be empty."
  }
}

variable "rds_admin_user" {
  description = "Master user of production (runs the production migrations)."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.rds_admin_user) != ""
    error_message = "rds_admin_user must not be empty."
  }
}

variable "archive_bucket" {
  description = "S3 bucket of the Parquet archive."
  type        = string
  nullable    = false

  validation {
    condition     = trimspace(var.archive_bucket) != ""
    error_message = "archive_bucket must not be empty."
  }
}

variable "ports" {
  description = "Ports every kalshi process serves and the local PostgreSQL port (observability.md)."
  nullable    = false
  type = object({
    health   = number
    metrics  = number
    admin    = number
    postgres = number
  })
}

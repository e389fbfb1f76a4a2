# Plain values only: this module renders files and creates nothing, so it needs no provider and
# tests/ops/test_monitoring_host.py renders it offline with the terraform binary.

variable "aws_region" {
  description = "Region of the secrets and the config bucket."
  type        = string
}

variable "gatherer_ips" {
  description = "Private IPs of gatherer-1..N, in order."
  type        = list(string)
}

variable "deduplicator_ip" {
  description = "Private IP of the deduplicator."
  type        = string
}

variable "metrics_port" {
  description = "Port of /metrics on every kalshi host."
  type        = number
}

variable "node_exporter_port" {
  description = "Port of node exporter on every host."
  type        = number
}

variable "config_bucket" {
  description = "S3 bucket the rendered files are uploaded to and the monitoring host syncs from."
  type        = string
}

variable "pagerduty_secret" {
  description = "Secrets Manager name of the PagerDuty Events v2 routing key (critical alerts)."
  type        = string
}

variable "slack_secret" {
  description = "Secrets Manager name of the Slack incoming-webhook URL (warning and info alerts)."
  type        = string
}

variable "grafana_admin_secret" {
  description = "Secrets Manager name of Grafana's admin password."
  type        = string
}

variable "prometheus_retention" {
  description = "How long Prometheus keeps samples (its --storage.tsdb.retention.time)."
  type        = string
  default     = "30d"
}

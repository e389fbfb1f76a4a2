# Every file of the monitoring host, rendered with templatefile()/file() from plain values.
#
#   /etc/prometheus/kalshi/prometheus.yml      alerts/prometheus.yml, verbatim (scrape jobs, rules, Alertmanager)
#   /etc/prometheus/kalshi/rules/*.yml         the rule files of alerts/, verbatim
#   /etc/prometheus/kalshi/targets/*.json      the fleet's private IPs (file_sd), instance = gatherer-N / deduplicator
#   /etc/prometheus/kalshi/alertmanager.yml    alerts/alertmanager.yml, verbatim (its secrets come from files)
#   /etc/grafana/provisioning/...              grafana/provisioning/*.yml, verbatim
#   /var/lib/grafana/dashboards/kalshi-data/   grafana/dashboards/*.json, verbatim
#   /etc/default/{prometheus,prometheus-alertmanager,grafana-server}   flags and environment
#
# The files are too large for EC2 user data (16 KiB): the root module uploads them to a private
# bucket, and the bootstrap (templates/bootstrap.sh.tftpl, in the small cloud-config) syncs them
# and writes the alerting secrets from Secrets Manager into /etc/alertmanager/secrets/.

locals {
  repo          = "${path.module}/../.."
  alerts_dir    = "${local.repo}/alerts"
  config_files  = ["prometheus.yml", "alertmanager.yml"]
  rule_files    = sort([for f in fileset(local.alerts_dir, "*.yml") : f if !contains(local.config_files, f)])
  dashboards    = sort(fileset("${local.repo}/grafana/dashboards", "*.json"))
  gatherer_ids  = [for i in range(length(var.gatherer_ips)) : "gatherer-${i + 1}"]
  prometheus_ds = "prometheus-kalshi"

  targets = {
    "kalshi-gatherer" = [for i, ip in var.gatherer_ips : {
      targets = ["${ip}:${var.metrics_port}"]
      labels  = { instance = local.gatherer_ids[i] }
    }]
    "kalshi-deduplicator" = [{
      targets = ["${var.deduplicator_ip}:${var.metrics_port}"]
      labels  = { instance = "deduplicator" }
    }]
    node = concat(
      [for i, ip in var.gatherer_ips : { targets = ["${ip}:${var.node_exporter_port}"], labels = { instance = local.gatherer_ids[i] } }],
      [{ targets = ["${var.deduplicator_ip}:${var.node_exporter_port}"], labels = { instance = "deduplicator" } }],
      [{ targets = ["localhost:${var.node_exporter_port}"], labels = { instance = "monitoring" } }],
    )
    alertmanager = [{ targets = ["localhost:9093"] }]
  }

  files = merge(
    {
      "/etc/prometheus/kalshi/prometheus.yml"                 = file("${local.alerts_dir}/prometheus.yml")
      "/etc/prometheus/kalshi/alertmanager.yml"               = file("${local.alerts_dir}/alertmanager.yml")
      "/etc/grafana/provisioning/datasources/kalshi-data.yml" = file("${local.repo}/grafana/provisioning/datasources.yml")
      "/etc/grafana/provisioning/dashboards/kalshi-data.yml"  = file("${local.repo}/grafana/provisioning/dashboards.yml")
      "/etc/default/prometheus" = templatefile("${path.module}/templates/prometheus.default.tftpl", {
        retention = var.prometheus_retention
      })
      "/etc/default/prometheus-alertmanager" = templatefile("${path.module}/templates/alertmanager.default.tftpl", {})
      "/etc/default/grafana-server.kalshi" = templatefile("${path.module}/templates/grafana-server.env.tftpl", {
        prometheus_ds_uid = local.prometheus_ds
        prometheus_url    = "http://localhost:9090"
      })
    },
    { for f in local.rule_files : "/etc/prometheus/kalshi/rules/${f}" => file("${local.alerts_dir}/${f}") },
    { for name, t in local.targets : "/etc/prometheus/kalshi/targets/${name}.json" => jsonencode(t) },
    { for f in local.dashboards : "/var/lib/grafana/dashboards/kalshi-data/${f}" => file("${local.repo}/grafana/dashboards/${f}") },
  )

  bootstrap = templatefile("${path.module}/templates/bootstrap.sh.tftpl", {
    aws_region           = var.aws_region
    config_bucket        = var.config_bucket
    pagerduty_secret     = var.pagerduty_secret
    slack_secret         = var.slack_secret
    grafana_admin_secret = var.grafana_admin_secret
  })

  cloud_config = templatefile("${path.module}/templates/cloud-config.yaml.tftpl", {
    packages  = ["ca-certificates", "curl", "gnupg", "awscli", "prometheus", "prometheus-alertmanager", "prometheus-node-exporter"]
    bootstrap = local.bootstrap
  })
}

output "gatherer_ips" {
  description = "Private IPs of the gatherers, in gatherer-1..N order."
  value       = aws_instance.gatherer[*].private_ip
}

output "deduplicator_ip" {
  description = "Private IP of the deduplicator."
  value       = aws_instance.deduplicator.private_ip
}

output "rds_endpoint" {
  description = "Production PostgreSQL endpoint (host:port)."
  value       = aws_db_instance.production.endpoint
}

output "s3_bucket" {
  description = "Name of the Parquet archive bucket."
  value       = aws_s3_bucket.archive.bucket
}

output "secret_names" {
  description = "Secrets Manager names the configs refer to (values are never output)."
  value = concat(
    [for s in aws_secretsmanager_secret.db : s.name],
    aws_secretsmanager_secret.kalshi_api_key[*].name,
  )
}

output "prometheus_scrape_config" {
  description = "scrape_configs for the Prometheus in monitoring_cidrs: job names match alerts/*.yml."
  value = yamlencode({
    scrape_configs = [
      {
        job_name = "kalshi-gatherer"
        static_configs = [for i, ip in aws_instance.gatherer[*].private_ip : {
          targets = ["${ip}:${local.metrics_port}"]
          labels  = { instance = local.gatherer_ids[i] }
        }]
      },
      {
        job_name = "kalshi-deduplicator"
        static_configs = [{
          targets = ["${aws_instance.deduplicator.private_ip}:${local.metrics_port}"]
          labels  = { instance = "deduplicator" }
        }]
      },
      {
        job_name = "node"
        static_configs = [{
          targets = [for ip in concat(aws_instance.gatherer[*].private_ip, [aws_instance.deduplicator.private_ip]) : "${ip}:${local.node_exporter_port}"]
        }]
      },
    ]
  })
}

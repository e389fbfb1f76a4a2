output "gatherer_ips" {
  description = "Private IPs of the gatherers, in gatherer-1..N order."
  value       = aws_instance.gatherer[*].private_ip
}

output "deduplicator_ip" {
  description = "Private IP of the deduplicator."
  value       = aws_instance.deduplicator.private_ip
}

output "rds_endpoint" {
  description = "Host name of the production PostgreSQL (psql -h); the port is rds_port."
  value       = aws_db_instance.production.address
}

output "rds_port" {
  description = "Port of the production PostgreSQL."
  value       = aws_db_instance.production.port
}

output "private_dns_names" {
  description = "Names the hosts resolve inside the VPC (private zone var.private_dns_zone)."
  value = merge(
    { for i, id in local.gatherer_ids : id => aws_route53_record.gatherer[i].fqdn },
    { deduplicator = aws_route53_record.deduplicator.fqdn, production-rds = aws_route53_record.production_rds.fqdn },
  )
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
    aws_secretsmanager_secret.admin_token[*].name,
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

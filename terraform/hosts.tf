# Every file the hosts get (configs, env files, units, bootstrap), rendered by ./host-files from
# plain values: this module's variables and the few attributes AWS assigns at apply time.
# tests/ops/test_host_files.py renders this very block offline (no provider, no cloud) from
# examples/prod.tfvars.example, with stand-ins for those attributes.

module "host_files" {
  source = "./host-files"

  project                = var.project
  environment            = var.environment
  aws_region             = var.aws_region
  gatherer_count         = var.gatherer_count
  kalshi_env             = var.kalshi_env
  kalshi_data_package    = var.kalshi_data_package
  postgres_major_version = var.postgres_major_version
  vpc_cidr               = var.vpc_cidr
  private_dns_zone       = var.private_dns_zone
  rds_host               = aws_db_instance.production.address
  rds_port               = aws_db_instance.production.port
  rds_db                 = local.production_db
  rds_admin_user         = local.production_admin_user
  archive_bucket         = aws_s3_bucket.archive.bucket
  ports = {
    health   = local.health_port
    metrics  = local.metrics_port
    admin    = local.admin_port
    postgres = local.postgres_port
  }
}

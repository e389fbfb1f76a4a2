# Private DNS: the names the runbooks use resolve inside the VPC.
#   gatherer-1..N.internal   A      each gatherer's private address
#   deduplicator.internal    A      the deduplicator's private address
#   production-rds.internal  CNAME  the RDS endpoint (follows a Multi-AZ failover)
# The VPC's DHCP options put the zone on every host's DNS search list after the region's default
# domain, so the short names (`psql -h production-rds`, `curl deduplicator:8080/health`) resolve
# too, and the instances' own ip-*.compute.internal names keep resolving.

locals {
  ec2_domain = var.aws_region == "us-east-1" ? "ec2.internal" : "${var.aws_region}.compute.internal"
}

resource "aws_route53_zone" "private" {
  name          = var.private_dns_zone
  comment       = "kalshi-data ${local.name}: hosts of the fleet"
  force_destroy = var.disposable

  vpc {
    vpc_id = aws_vpc.main.id
  }
}

resource "aws_route53_record" "gatherer" {
  count = var.gatherer_count

  zone_id = aws_route53_zone.private.zone_id
  name    = "${local.gatherer_ids[count.index]}.${var.private_dns_zone}"
  type    = "A"
  ttl     = 60
  records = [aws_instance.gatherer[count.index].private_ip]
}

resource "aws_route53_record" "deduplicator" {
  zone_id = aws_route53_zone.private.zone_id
  name    = "deduplicator.${var.private_dns_zone}"
  type    = "A"
  ttl     = 60
  records = [aws_instance.deduplicator.private_ip]
}

resource "aws_route53_record" "production_rds" {
  zone_id = aws_route53_zone.private.zone_id
  name    = "production-rds.${var.private_dns_zone}"
  type    = "CNAME"
  ttl     = 60
  records = [aws_db_instance.production.address]
}

resource "aws_vpc_dhcp_options" "main" {
  domain_name         = "${local.ec2_domain} ${var.private_dns_zone}"
  domain_name_servers = ["AmazonProvidedDNS"]

  tags = { Name = local.name }
}

resource "aws_vpc_dhcp_options_association" "main" {
  vpc_id          = aws_vpc.main.id
  dhcp_options_id = aws_vpc_dhcp_options.main.id
}

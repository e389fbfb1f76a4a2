# Three gatherers (t4g.2xlarge, each with a gp3 data volume for its local PostgreSQL/TimescaleDB)
# spread over the private subnets, and one deduplicator (t4g.xlarge). Their user data (files and
# bootstrap) is rendered by module.host_files (hosts.tf); cloud-init writes it and runs the
# bootstrap, which installs the package and enables the units of ../systemd/.

resource "aws_instance" "gatherer" {
  count = var.gatherer_count

  ami                    = local.ami_id
  instance_type          = var.gatherer_instance_type
  subnet_id              = aws_subnet.private[count.index % var.az_count].id
  vpc_security_group_ids = [aws_security_group.gatherer.id]
  iam_instance_profile   = aws_iam_instance_profile.gatherer[count.index].name
  ebs_optimized          = true
  monitoring             = true

  # t4g: unlimited CPU credits so bursts of 50,000 msg/s are never throttled.
  credit_specification {
    cpu_credits = "unlimited"
  }

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = 30
    encrypted             = true
    delete_on_termination = true
  }

  user_data_base64 = base64gzip(module.host_files.gatherer_user_data[count.index])

  tags = { Name = "${local.name}-${local.gatherer_ids[count.index]}", Role = "gatherer", GathererId = local.gatherer_ids[count.index] }

  lifecycle {
    # A newer AMI or a changed bootstrap must never replace a host that holds unmerged data.
    ignore_changes = [ami, user_data_base64]
  }
}

# The local database lives on its own volume, so the instance can be rebuilt without losing it.
resource "aws_ebs_volume" "gatherer_data" {
  count = var.gatherer_count

  availability_zone = aws_instance.gatherer[count.index].availability_zone
  type              = "gp3"
  size              = var.gatherer_volume_size
  iops              = var.gatherer_volume_iops
  throughput        = var.gatherer_volume_throughput
  encrypted         = true

  tags = { Name = "${local.name}-${local.gatherer_ids[count.index]}-pgdata" }
}

resource "aws_volume_attachment" "gatherer_data" {
  count = var.gatherer_count

  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.gatherer_data[count.index].id
  instance_id = aws_instance.gatherer[count.index].id
}

resource "aws_instance" "deduplicator" {
  ami                    = local.ami_id
  instance_type          = var.deduplicator_instance_type
  subnet_id              = aws_subnet.private[0].id
  vpc_security_group_ids = [aws_security_group.deduplicator.id]
  iam_instance_profile   = aws_iam_instance_profile.deduplicator.name
  ebs_optimized          = true
  monitoring             = true

  credit_specification {
    cpu_credits = "unlimited"
  }

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = 50
    encrypted             = true
    delete_on_termination = true
  }

  user_data_base64 = base64gzip(module.host_files.deduplicator_user_data)

  # Stateless apart from sync_cursors in production: a changed config (e.g. a new gatherer)
  # replaces the host, whose cloud-init then writes the new deduplicator.yaml.
  user_data_replace_on_change = true

  tags = { Name = "${local.name}-deduplicator", Role = "deduplicator" }

  lifecycle {
    ignore_changes = [ami]
  }
}

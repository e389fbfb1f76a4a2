# One role per gatherer (it reads its own Kalshi key, its own admin token and the two
# local-database passwords) and one for the deduplicator (production passwords, the dedup_reader
# password, the archive bucket).
# Every secret is named by ARN: no wildcard over the project's secrets. All hosts get the SSM
# managed policy for Session Manager (no SSH, no inbound port).

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# --- gatherers -------------------------------------------------------------------------------

resource "aws_iam_role" "gatherer" {
  count = var.gatherer_count

  name               = "${local.name}-${local.gatherer_ids[count.index]}"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

data "aws_iam_policy_document" "gatherer" {
  count = var.gatherer_count

  statement {
    sid     = "ReadOwnSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [
      aws_secretsmanager_secret.kalshi_api_key[count.index].arn,
      aws_secretsmanager_secret.admin_token[count.index].arn,
      aws_secretsmanager_secret.db["gatherer-db-password"].arn,
      aws_secretsmanager_secret.db["dedup-reader-password"].arn,
    ]
  }
}

resource "aws_iam_role_policy" "gatherer" {
  count = var.gatherer_count

  name   = "secrets"
  role   = aws_iam_role.gatherer[count.index].id
  policy = data.aws_iam_policy_document.gatherer[count.index].json
}

resource "aws_iam_role_policy_attachment" "gatherer_ssm" {
  count = var.gatherer_count

  role       = aws_iam_role.gatherer[count.index].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gatherer" {
  count = var.gatherer_count

  name = "${local.name}-${local.gatherer_ids[count.index]}"
  role = aws_iam_role.gatherer[count.index].name
}

# --- deduplicator ----------------------------------------------------------------------------

resource "aws_iam_role" "deduplicator" {
  name               = "${local.name}-deduplicator"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

data "aws_iam_policy_document" "deduplicator" {
  statement {
    sid     = "ReadOwnSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [
      aws_secretsmanager_secret.db["rds-master-password"].arn,
      aws_secretsmanager_secret.db["deduplicator-db-password"].arn,
      aws_secretsmanager_secret.db["dedup-reader-password"].arn,
      aws_secretsmanager_secret.db["analyst-password"].arn,
    ]
  }

  statement {
    sid       = "ListArchive"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.archive.arn]
  }

  statement {
    sid = "ReadWriteArchiveObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
  }
}

resource "aws_iam_role_policy" "deduplicator" {
  name   = "secrets-and-archive"
  role   = aws_iam_role.deduplicator.id
  policy = data.aws_iam_policy_document.deduplicator.json
}

resource "aws_iam_role_policy_attachment" "deduplicator_ssm" {
  role       = aws_iam_role.deduplicator.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "deduplicator" {
  name = "${local.name}-deduplicator"
  role = aws_iam_role.deduplicator.name
}

# The data stores: PostgreSQL (RDS, Multi-AZ; one database and one login per
# service inside it), Redis (ElastiCache, Multi-AZ with failover) and the
# certificate bucket (S3, Object Lock). Everything encrypted at rest with a
# customer-managed KMS key (AES-256), TLS required in transit, nothing public.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "key" {
  # The account administers the key; services get use of it through their own roles' policies.
  # checkov:skip=CKV_AWS_111:a key policy's "*" resource is the key itself; the account's IAM policies then decide who writes
  # checkov:skip=CKV_AWS_356:same: in a KMS key policy the resource "*" means this key only
  # checkov:skip=CKV_AWS_109:the account root administering its own key is AWS's default key policy (without it the key is unmanageable)
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogsEncrypts"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "data" {
  description             = "${var.name}: data at rest (RDS, ElastiCache, S3, secrets, logs)"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}-data"
  target_key_id = aws_kms_key.data.key_id
}

# --- PostgreSQL -------------------------------------------------------------

# Each store admits only the services' tasks, on its own port.
locals {
  store_ports = { database = 5432, redis = 6379 }
}

resource "aws_security_group" "store" {
  for_each    = local.store_ports
  name        = "${var.name}-${each.key}"
  description = "${each.key}, from the services' tasks only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "store" {
  for_each = {
    # Keyed by names known at plan time (the groups' ids are not, before apply).
    for pair in setproduct(keys(local.store_ports), keys(var.client_security_groups)) : "${pair[0]}/${pair[1]}" => pair
  }
  security_group_id            = aws_security_group.store[each.value[0]].id
  referenced_security_group_id = var.client_security_groups[each.value[1]]
  ip_protocol                  = "tcp"
  from_port                    = local.store_ports[each.value[0]]
  to_port                      = local.store_ports[each.value[0]]
  description                  = "${each.value[0]} from a service's tasks"
}

resource "aws_db_subnet_group" "main" {
  name       = "${var.name}-database"
  subnet_ids = var.subnet_ids
}

resource "aws_db_parameter_group" "main" {
  name   = "${var.name}-postgres"
  family = "postgres${split(".", var.postgres_version)[0]}"
  parameter {
    name  = "rds.force_ssl" # TLS required for every connection
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement" # statements slower than a second are logged
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
}

resource "aws_iam_role" "monitoring" {
  name = "${var.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "monitoring.rds.amazonaws.com" } }]
  })
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "main" {
  identifier                            = "${var.name}-postgres"
  engine                                = "postgres"
  engine_version                        = var.postgres_version
  instance_class                        = var.database_instance_class
  allocated_storage                     = var.database_storage_gb
  max_allocated_storage                 = var.database_max_storage_gb
  storage_type                          = "gp3"
  storage_encrypted                     = true
  kms_key_id                            = aws_kms_key.data.arn
  multi_az                              = true
  db_subnet_group_name                  = aws_db_subnet_group.main.name
  vpc_security_group_ids                = [aws_security_group.store["database"].id]
  parameter_group_name                  = aws_db_parameter_group.main.name
  publicly_accessible                   = false
  username                              = "bmc_admin" # administers; each service logs in as its own role
  manage_master_user_password           = true        # in Secrets Manager, rotated by RDS
  master_user_secret_kms_key_id         = aws_kms_key.data.arn
  iam_database_authentication_enabled   = true
  backup_retention_period               = var.backup_retention_days # point-in-time recovery within it
  copy_tags_to_snapshot                 = true
  deletion_protection                   = true
  skip_final_snapshot                   = false
  final_snapshot_identifier             = "${var.name}-postgres-final"
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.data.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  auto_minor_version_upgrade            = true
}

# --- Redis --------------------------------------------------------------------

resource "aws_elasticache_subnet_group" "main" {
  name       = "${var.name}-redis"
  subnet_ids = var.subnet_ids
}

resource "aws_secretsmanager_secret" "redis_auth" {
  name       = "${var.name}/redis-auth"
  kms_key_id = aws_kms_key.data.arn
  # checkov:skip=CKV2_AWS_57:an ElastiCache AUTH token is rotated with the replication group's auth_token_update_strategy (ROTATE then SET), a deploy step, not a Lambda
}

data "aws_secretsmanager_random_password" "redis_auth" {
  password_length     = 64
  exclude_punctuation = true # AUTH tokens take printable characters except a few; letters and digits are safe
}

resource "aws_secretsmanager_secret_version" "redis_auth" {
  secret_id     = aws_secretsmanager_secret.redis_auth.id
  secret_string = data.aws_secretsmanager_random_password.redis_auth.random_password
  lifecycle {
    ignore_changes = [secret_string] # generated once; rotation replaces it deliberately
  }
}

resource "aws_elasticache_replication_group" "main" {
  replication_group_id       = "${var.name}-redis"
  description                = "${var.name}: product cache and event streams"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis_node_type
  num_cache_clusters         = 3 # a primary and a replica in each other Availability Zone
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.main.name
  security_group_ids         = [aws_security_group.store["redis"].id]
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.data.arn
  transit_encryption_enabled = true
  auth_token                 = aws_secretsmanager_secret_version.redis_auth.secret_string
  snapshot_retention_limit   = 7
  auto_minor_version_upgrade = true
  apply_immediately          = false
}

# --- The certificate bucket ---------------------------------------------------

resource "aws_s3_bucket" "certificates" {
  bucket              = "${var.name}-certificates"
  object_lock_enabled = true
  # checkov:skip=CKV_AWS_144:S3 keeps every object across at least three AZs, under Object Lock; a copy in another region is a business decision (ADR pending)
  # checkov:skip=CKV_AWS_21:versioning is on, set for both buckets by aws_s3_bucket_versioning.bucket's for_each (checkov does not follow it)
  # checkov:skip=CKV2_AWS_6:the public access block is aws_s3_bucket_public_access_block.bucket, for_each over both buckets
  # checkov:skip=CKV2_AWS_62:no consumer needs S3 event notifications; issuance events flow through the certificate service's outbox
}

resource "aws_s3_bucket_server_side_encryption_configuration" "certificates" {
  bucket = aws_s3_bucket.certificates.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.data.arn
    }
    bucket_key_enabled = true
  }
}

# What both buckets share: versions kept, and no public access of any kind.
locals {
  buckets = { certificates = aws_s3_bucket.certificates.id, access_logs = aws_s3_bucket.access_logs.id }
}

resource "aws_s3_bucket_versioning" "bucket" {
  for_each = local.buckets
  bucket   = each.value
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "bucket" {
  for_each                = local.buckets
  bucket                  = each.value
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Certificates back tax exemptions DIAN may audit and are merchants' supporting
# papers: Ley 962 de 2005, art. 28 (books and papers kept ten years) is the
# longest of the terms that apply (the tax audit term of Estatuto Tributario
# art. 714 is shorter). COMPLIANCE mode: no one, root included, deletes or
# shortens it before then.
resource "aws_s3_bucket_object_lock_configuration" "certificates" {
  bucket = aws_s3_bucket.certificates.id
  rule {
    default_retention {
      mode  = "COMPLIANCE"
      years = var.certificate_retention_years
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "certificates" {
  bucket = aws_s3_bucket.certificates.id
  rule {
    id     = "archive-old-certificates"
    status = "Enabled"
    filter {}
    transition {
      days          = 365
      storage_class = "GLACIER_IR" # still readable at once, for the verification page
    }
    noncurrent_version_expiration {
      noncurrent_days = var.certificate_retention_years * 366
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "certificates" {
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.certificates.arn, "${aws_s3_bucket.certificates.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
  statement {
    sid       = "Tls12OrLater" # S3 accepts no TLS 1.3-only condition; 1.2 is the floor it can enforce
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.certificates.arn, "${aws_s3_bucket.certificates.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "certificates" {
  bucket = aws_s3_bucket.certificates.id
  policy = data.aws_iam_policy_document.certificates.json
}

resource "aws_s3_bucket_logging" "certificates" {
  bucket        = aws_s3_bucket.certificates.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "s3/${var.name}-certificates/"
}

# Where S3 writes the certificate bucket's access logs. S3 server access
# logging can deliver only to a bucket encrypted with SSE-S3 (AES-256).
resource "aws_s3_bucket" "access_logs" {
  bucket = "${var.name}-access-logs"
  # checkov:skip=CKV_AWS_145:S3 server access logs can only be delivered to SSE-S3 (AES-256) buckets, not SSE-KMS
  # checkov:skip=CKV_AWS_18:the access-log bucket does not log its own access (that would loop)
  # checkov:skip=CKV_AWS_144:access logs are not replicated across regions
  # checkov:skip=CKV2_AWS_62:no consumer needs event notifications of access logs
  # checkov:skip=CKV_AWS_21:versioning is on, set for both buckets by aws_s3_bucket_versioning.bucket's for_each (checkov does not follow it)
  # checkov:skip=CKV2_AWS_6:the public access block is aws_s3_bucket_public_access_block.bucket, for_each over both buckets
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 400
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# --- Secrets the services read --------------------------------------------------

# One login per service, each in its own secret: a service's execution role
# reads its own and no other (database per service). The values are set by
# the one-off migration task that creates each database and its role.
resource "aws_secretsmanager_secret" "database" {
  for_each   = toset(var.services)
  name       = "${var.name}/${each.value}/database-url"
  kms_key_id = aws_kms_key.data.arn
  # checkov:skip=CKV2_AWS_57:rotated by the deploy's migration task (ALTER ROLE ... PASSWORD, then a new secret version), not a rotation Lambda
}

resource "aws_secretsmanager_secret" "redis_url" {
  name       = "${var.name}/redis-url"
  kms_key_id = aws_kms_key.data.arn
  # checkov:skip=CKV2_AWS_57:holds the AUTH token of redis-auth, rotated with it
}

# The certificate service's document-signing key (PKCS#8 PEM) and its certificate chain.
resource "aws_secretsmanager_secret" "signing_key" {
  name       = "${var.name}/certificate/signing-key"
  kms_key_id = aws_kms_key.data.arn
  # checkov:skip=CKV2_AWS_57:a signing key is rolled by issuing a new certificate from the CA, a deliberate ceremony
}

# The data stores' security and availability properties, on a plan made
# with a mocked AWS provider (no account needed).

mock_provider "aws" {
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mocked" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::bmc-test-certificates" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_secretsmanager_random_password" {
    defaults = { random_password = "MockedAuthTokenOfSixtyFourCharactersMockedAuthTokenOfSixtyFour1" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  name                    = "bmc-test"
  region                  = "us-east-1"
  vpc_id                  = "vpc-0123456789abcdef0"
  subnet_ids              = ["subnet-a", "subnet-b", "subnet-c"]
  client_security_groups  = { invoice = "sg-invoice", product = "sg-product" }
  database_instance_class = "db.r7g.xlarge"
  database_storage_gb     = 300
  database_max_storage_gb = 1000
  redis_node_type         = "cache.r7g.large"
}

run "every_store_is_encrypted_with_the_customer_managed_key" {
  command = apply # (mocked) so that the key's ARN is known and can be compared

  assert {
    condition = alltrue([
      aws_db_instance.main.kms_key_id == aws_kms_key.data.arn,
      aws_db_instance.main.performance_insights_kms_key_id == aws_kms_key.data.arn,
      aws_elasticache_replication_group.main.kms_key_id == aws_kms_key.data.arn,
      aws_secretsmanager_secret.redis_auth.kms_key_id == aws_kms_key.data.arn,
      one(one(aws_s3_bucket_server_side_encryption_configuration.certificates.rule).apply_server_side_encryption_by_default).kms_master_key_id == aws_kms_key.data.arn,
    ])
    error_message = "every store must be encrypted with the estate's customer-managed key, not an AWS-managed one"
  }

  assert {
    condition     = aws_kms_key.data.enable_key_rotation
    error_message = "the data key must rotate"
  }
  assert {
    condition     = aws_db_instance.main.storage_encrypted
    error_message = "PostgreSQL must be encrypted at rest"
  }
  assert {
    condition     = aws_elasticache_replication_group.main.at_rest_encryption_enabled && aws_elasticache_replication_group.main.transit_encryption_enabled
    error_message = "Redis must be encrypted at rest and in transit"
  }
  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.certificates.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    error_message = "certificates must be encrypted with the KMS key"
  }
  assert {
    condition     = one([for p in aws_db_parameter_group.main.parameter : p.value if p.name == "rds.force_ssl"]) == "1"
    error_message = "PostgreSQL must refuse connections without TLS"
  }
}

run "the_stores_survive_the_loss_of_an_availability_zone" {
  command = plan

  assert {
    condition     = aws_db_instance.main.multi_az
    error_message = "PostgreSQL must be Multi-AZ"
  }
  assert {
    condition     = aws_elasticache_replication_group.main.multi_az_enabled && aws_elasticache_replication_group.main.automatic_failover_enabled && aws_elasticache_replication_group.main.num_cache_clusters >= 2
    error_message = "Redis must be Multi-AZ with automatic failover"
  }
  assert {
    condition     = aws_db_instance.main.backup_retention_period >= 7 && aws_db_instance.main.deletion_protection
    error_message = "PostgreSQL keeps backups (PITR) and cannot be deleted by accident"
  }
}

run "nothing_is_public" {
  command = plan

  assert {
    condition     = !aws_db_instance.main.publicly_accessible
    error_message = "PostgreSQL must not be publicly accessible"
  }
  assert {
    condition     = aws_s3_bucket_public_access_block.bucket["certificates"].block_public_acls && aws_s3_bucket_public_access_block.bucket["certificates"].block_public_policy && aws_s3_bucket_public_access_block.bucket["certificates"].restrict_public_buckets
    error_message = "the certificate bucket blocks every public access"
  }
  assert {
    condition     = alltrue([for rule in aws_vpc_security_group_ingress_rule.store : rule.referenced_security_group_id != null && rule.cidr_ipv4 == null])
    error_message = "only the services' security groups reach PostgreSQL and Redis, never an address range"
  }
  assert {
    condition     = length([for key, rule in aws_vpc_security_group_ingress_rule.store : key if startswith(key, "database/")]) == length(var.client_security_groups)
    error_message = "one PostgreSQL rule per service"
  }
}

run "certificates_are_kept_ten_years_unalterable" {
  command = plan

  assert {
    condition     = one(one(aws_s3_bucket_object_lock_configuration.certificates.rule).default_retention).mode == "COMPLIANCE"
    error_message = "Object Lock must be in COMPLIANCE mode"
  }
  assert {
    condition     = one(one(aws_s3_bucket_object_lock_configuration.certificates.rule).default_retention).years >= 10
    error_message = "certificates are kept at least ten years (Ley 962 de 2005, art. 28)"
  }
}

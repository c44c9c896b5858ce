output "kms_key_arn" {
  value = aws_kms_key.data.arn
}

output "database_endpoint" {
  value = aws_db_instance.main.address
}

output "database_secret_arn" {
  value = one(aws_db_instance.main.master_user_secret[*].secret_arn)
}

output "redis_endpoint" {
  value = aws_elasticache_replication_group.main.primary_endpoint_address
}

output "redis_auth_secret_arn" {
  value = aws_secretsmanager_secret.redis_auth.arn
}

output "certificate_bucket" {
  value = aws_s3_bucket.certificates.id
}

output "database_secret_arns" {
  description = "Each service's own database URL secret."
  value       = { for name, secret in aws_secretsmanager_secret.database : name => secret.arn }
}

output "redis_url_secret_arn" {
  value = aws_secretsmanager_secret.redis_url.arn
}

output "signing_key_secret_arn" {
  value = aws_secretsmanager_secret.signing_key.arn
}

output "certificate_bucket_arn" {
  value = aws_s3_bucket.certificates.arn
}

output "database_id" {
  value = aws_db_instance.main.identifier
}

output "redis_id" {
  value = aws_elasticache_replication_group.main.id
}

output "vpc_id" {
  value = module.network.vpc_id
}

output "database_endpoint" {
  value = module.data.database_endpoint
}

output "redis_endpoint" {
  value = module.data.redis_endpoint
}

output "certificate_bucket" {
  value = module.data.certificate_bucket
}

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

output "api_endpoint" {
  value = module.edge.api_endpoint
}

output "token_url" {
  value = module.edge.token_url
}

output "client_ids" {
  value = module.edge.client_ids
}

output "repositories" {
  value = { for name, repo in aws_ecr_repository.image : name => repo.repository_url }
}

output "alarm_topic_arn" {
  value = module.observability.topic_arn
}
